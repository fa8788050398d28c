package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeStore runs the broker once on dir so that it holds a store, with a
// retained message, and stops it cleanly.
func makeStore(t *testing.T, dir string) {
	t.Helper()
	p := startFerrymq(t, "run", "--listen", "127.0.0.1:0", "--data-dir", dir)
	addr := p.waitLine(t, startedRe)[1]
	c := pahoClient(t, addr, "maker", nil, false)
	waitToken(t, "retained publish", c.Publish("keep/me", 1, true, "v"))
	c.Disconnect(100)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// garbleManifest overwrites the store's MANIFEST with junk.
func garbleManifest(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte(strings.Repeat("junk", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBinaryCorruptStoreQuarantined: by default a damaged store is moved
// aside (its new name logged) and the broker starts empty and serves.
func TestBinaryCorruptStoreQuarantined(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	makeStore(t, dir)
	garbleManifest(t, dir)

	p := startFerrymq(t, "run", "--listen", "127.0.0.1:0", "--data-dir", dir)
	m := p.waitLine(t, regexp.MustCompile(`level=ERROR msg="store is damaged.*?(\S*\.corrupt-\S+)`))
	moved := strings.Trim(m[1], `"`)
	if i := strings.Index(moved, "="); i >= 0 {
		moved = moved[i+1:]
	}
	if _, err := os.Stat(filepath.Join(moved, "MANIFEST")); err != nil {
		t.Fatalf("the damaged store is not kept at %q: %v", moved, err)
	}
	addr := p.waitLine(t, startedRe)[1]
	c := pahoClient(t, addr, "after", nil, false)
	waitToken(t, "publish on the new store", c.Publish("x", 1, false, "y"))
	c.Disconnect(100)
}

// TestBinaryCorruptStoreRefused: with storage.on_corruption: refuse the
// broker exits 1, says why and where, and leaves the store untouched.
func TestBinaryCorruptStoreRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	makeStore(t, dir)
	garbleManifest(t, dir)
	cfg := filepath.Join(t.TempDir(), "f.yaml")
	yaml := "listeners:\n  - address: 127.0.0.1:0\nstorage:\n  dir: " + dir + "\n  on_corruption: refuse\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "run", "-c", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, dir) || !strings.Contains(stderr, "refuse") {
		t.Errorf("stderr does not name the directory and the setting:\n%s", stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "MANIFEST")); string(b) != strings.Repeat("junk", 64) {
		t.Error("the refused store was modified")
	}
	if ms, _ := filepath.Glob(dir + ".corrupt-*"); len(ms) != 0 {
		t.Errorf("moved aside although refuse: %v", ms)
	}
}
