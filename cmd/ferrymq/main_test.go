package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker"
)

// testApp runs commands in-process; getenv sees only env.
func testApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &app{
		stdout:          &stdout,
		stderr:          &stderr,
		getenv:          func(k string) string { return env[k] },
		shutdownTimeout: 5 * time.Second,
	}, &stdout, &stderr
}

// cancelled is a context that is already done, so "run" shuts down as soon
// as it has started.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestCheckConfigExitCodes(t *testing.T) {
	good := writeFile(t, "good.yaml", "listeners:\n  - address: 127.0.0.1:1883\nlimits:\n  max_packet_size: 1MiB\n")
	bad := writeFile(t, "bad.yaml", "listeners:\n  - address: 127.0.0.1:1883\n    port: 1\nlimits:\n  max_inflight: x\n")

	a, stdout, stderr := testApp(nil)
	if code := a.main(context.Background(), []string{"check-config", "-c", good}); code != 0 {
		t.Fatalf("good file: exit %d, stderr %q", code, stderr)
	}
	if got, want := stdout.String(), good+": ok\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}

	a, stdout, stderr = testApp(nil)
	if code := a.main(context.Background(), []string{"check-config", "--config", bad}); code != 1 {
		t.Fatalf("bad file: exit %d", code)
	}
	want := bad + ":3: listeners[0].port: unknown key; valid keys here: address, allow_anonymous\n" +
		bad + ":5: limits.max_inflight: expected a non-negative integer, got \"x\"\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stderr:\n%s\nwant:\n%s\nstdout %q", stderr, want, stdout)
	}

	// The file may also be given as an argument.
	a, _, _ = testApp(nil)
	if code := a.main(context.Background(), []string{"check-config", good}); code != 0 {
		t.Errorf("check-config FILE: exit %d", code)
	}
	for _, args := range [][]string{{"check-config"}, {"check-config", "-x"}, {"check-config", "-c", good, "extra"}} {
		a, _, stderr = testApp(nil)
		if code := a.main(context.Background(), args); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), "Usage: ferrymq check-config") {
			t.Errorf("%q: no usage in stderr %q", args, stderr)
		}
	}
}

func TestHelpAndUnknownCommand(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		a, stdout, _ := testApp(nil)
		if code := a.main(context.Background(), []string{arg}); code != 0 {
			t.Errorf("%s: exit %d", arg, code)
		}
		for _, sub := range []string{"run", "check-config", "version", "help", "--listen", "--data-dir", "--log-level"} {
			if !strings.Contains(stdout.String(), sub) {
				t.Errorf("%s: usage does not mention %s", arg, sub)
			}
		}
	}
	a, stdout, stderr := testApp(nil)
	if code := a.main(context.Background(), []string{"frobnicate"}); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), `unknown command "frobnicate"`) ||
		!strings.Contains(stderr.String(), "check-config") {
		t.Errorf("unknown command: stdout %q stderr %q", stdout, stderr)
	}

	a, stdout, _ = testApp(nil)
	if code := a.main(context.Background(), []string{"run", "-h"}); code != 0 || !strings.Contains(stdout.String(), "--listen") {
		t.Errorf("run -h: exit %d, stdout %q", code, stdout)
	}
}

func TestVersion(t *testing.T) {
	a, stdout, _ := testApp(nil)
	if code := a.main(context.Background(), []string{"version"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	re := regexp.MustCompile(`^ferrymq \S+ \(go[^,]+, ` + runtime.GOOS + `/` + runtime.GOARCH + `\)\n$`)
	if !re.MatchString(stdout.String()) {
		t.Errorf("version %q does not match %s", stdout, re)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--listen", "nope"},
		{"run", "--log-level", "loud"},
		{"run", "--nonsense"},
		{"run", "extra"},
		{"--nonsense"},
	} {
		a, _, stderr := testApp(nil)
		if code := a.main(cancelled(), args); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr)
		}
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	p := writeFile(t, "c.yaml", `listeners:
  - address: 127.0.0.1:1883
  - address: 127.0.0.1:1884
storage:
  dir: /from/file
limits:
  max_inflight: 5
`)
	a, _, _ := testApp(nil)
	o, code := parseRunFlags([]string{"-c", p, "--listen", "127.0.0.1:2000", "-listen", "[::1]:2001", "--data-dir", "/from/flag", "--log-level", "debug"}, a.stdout, a.stderr)
	if o == nil {
		t.Fatalf("parse: exit %d", code)
	}
	cfg, errs := buildConfig(o)
	if len(errs) > 0 {
		t.Fatal(errLines(errs))
	}
	var addrs []string
	for _, l := range cfg.Listeners {
		addrs = append(addrs, l.Address)
	}
	if want := []string{"127.0.0.1:2000", "[::1]:2001"}; !reflect.DeepEqual(addrs, want) {
		t.Errorf("listeners %q, want %q", addrs, want)
	}
	if cfg.Storage.Dir != "/from/flag" {
		t.Errorf("storage.dir %q", cfg.Storage.Dir)
	}
	if cfg.Limits.MaxInflight != 5 {
		t.Errorf("max_inflight %d: the file's value should stay", cfg.Limits.MaxInflight)
	}
	if o.level.level.String() != "DEBUG" {
		t.Errorf("log level %v", o.level.level)
	}

	// Without flags the file wins over the defaults.
	o, _ = parseRunFlags([]string{"-c", p}, a.stdout, a.stderr)
	cfg, errs = buildConfig(o)
	if len(errs) > 0 || len(cfg.Listeners) != 2 || cfg.Storage.Dir != "/from/file" {
		t.Errorf("file only: %+v %v", cfg, errLines(errs))
	}

	// Without anything: the defaults.
	o, _ = parseRunFlags(nil, a.stdout, a.stderr)
	cfg, errs = buildConfig(o)
	if len(errs) > 0 || !reflect.DeepEqual(cfg.Config, broker.Default()) {
		t.Errorf("no flags: %+v %v", cfg, errLines(errs))
	}
}

func TestRunConfigErrors(t *testing.T) {
	p := writeFile(t, "c.yaml", "limits:\n  max_packet_size: 1\n")
	a, _, stderr := testApp(nil)
	if code := a.main(cancelled(), []string{"run", "-c", p, "--listen", "127.0.0.1:0"}); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if want := p + ":2: limits.max_packet_size: 1 is too small (minimum 64)\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}

	// A value that came from a flag names the flag.
	a, _, stderr = testApp(nil)
	if code := a.main(cancelled(), []string{"run", "--listen", "192.0.2.1:1883"}); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.HasPrefix(stderr.String(), "--listen: listeners[0].allow_anonymous: ") {
		t.Errorf("stderr %q", stderr)
	}
}

// TestRunPortInUse: a listener that cannot bind ends run with exit 1 and one
// line on stderr.
func TestRunPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	// Until broker.Server.Start binds listeners there is nothing to test.
	if srv, err := broker.New(broker.Config{Listeners: []broker.Listener{{Address: addr}}}, broker.Options{}); err == nil {
		if srv.Start() == nil {
			srv.Shutdown(context.Background())
			t.Skip("broker.Server.Start does not bind listeners yet")
		}
	}

	a, stdout, stderr := testApp(nil)
	done := make(chan int, 1)
	go func() {
		done <- a.main(context.Background(), []string{"run", "--listen", addr, "--data-dir", t.TempDir()})
	}()
	select {
	case code := <-done:
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	want := regexp.MustCompile(`^ferrymq: listen tcp ` + regexp.QuoteMeta(addr) + `: bind: address already in use\n$`)
	if !want.MatchString(stderr.String()) {
		t.Errorf("stderr %q, want one line matching %s", stderr, want)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q", stdout)
	}
}

// TestRunShutdownAndNotify: run tells systemd READY=1 once started and
// STOPPING=1 when asked to stop, then exits 0.
func TestRunShutdownAndNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancelCause(context.Background())
	a, _, stderr := testApp(map[string]string{"NOTIFY_SOCKET": sock})
	done := make(chan int, 1)
	go func() {
		done <- a.main(ctx, []string{"run", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()})
	}()

	read := func() string {
		t.Helper()
		buf := make([]byte, 256)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading notify socket: %v (stderr %q)", err, stderr)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	cancel(context.Canceled)
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("second notification %q, want STOPPING=1", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if !strings.Contains(stderr.String(), "msg=stopped") {
		t.Errorf("no 'stopped' log line in:\n%s", stderr)
	}
}

func TestSDNotifyWithoutSocket(t *testing.T) {
	if err := sdNotify("", "READY=1"); err != nil {
		t.Errorf("no socket: %v", err)
	}
	if err := sdNotify(filepath.Join(t.TempDir(), "absent"), "READY=1"); err == nil {
		t.Error("absent socket: no error")
	}
}
