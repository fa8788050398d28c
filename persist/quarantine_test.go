package persist

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/session"
)

// The damage tests build one real store through Apply with Sync
// durability: quarFirst records, closed (Badger flushes them to a table),
// reopened, the rest of quarRecords written, a copy taken while it is open
// (what kill -9 leaves: the table, a write-ahead log .mem and the value
// log) and closed again (two tables, no .mem). They damage copies of those
// two states and open them with OpenOrQuarantine.

const (
	quarFirst   = 6000
	quarRecords = 8000
)

func quarKey(i int) []byte { return fmt.Appendf(nil, "qtest/%06d", i) }

// quarValue: every 7th value is over the profile's 1 KB ValueThreshold and
// goes to the value log, the others stay in the LSM tables.
func quarValue(i int) []byte {
	n := 500
	if i%7 == 0 {
		n = 3000
	}
	v := make([]byte, n)
	x := uint32(i)*2654435761 + 1
	for j := range v {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		v[j] = byte(x)
	}
	return v
}

// quarLog is a logger whose output the test can read.
type quarLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (q *quarLog) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.buf.Write(p)
}

func (q *quarLog) String() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.buf.String()
}

func (q *quarLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(q, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func quarQuiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// quarStores builds the two states of the damage tests' store in a
// temporary directory of t.
func quarStores(t *testing.T) (clean, crash string) {
	t.Helper()
	base := t.TempDir()
	clean, crash = filepath.Join(base, "clean"), filepath.Join(base, "crash")
	if err := quarBuild(clean, crash); err != nil {
		t.Fatal(err)
	}
	return clean, crash
}

// quarSmallStore is a closed store with a few records, for the tests
// that need a store but not damage.
func quarSmallStore(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "store")
	s, err := Open(Options{Dir: d, Logger: quarQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := applySync(s, Put(quarKey(i), quarValue(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return d
}

func quarBuild(dir, crashCopy string) error {
	write := func(s *Store, from, to int) error {
		for i := from; i < to; i += 100 {
			var ops []Op
			for j := i; j < i+100 && j < to; j++ {
				ops = append(ops, Put(quarKey(j), quarValue(j)))
			}
			ch := make(chan error, 1)
			s.Apply(ops, func(err error) { ch <- err })
			if err := <-ch; err != nil {
				return err
			}
		}
		return nil
	}
	opts := Options{Dir: dir, Logger: quarQuiet(), GCInterval: -1}
	s, err := Open(opts)
	if err != nil {
		return err
	}
	if err := write(s, 0, quarFirst); err != nil {
		s.Close()
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	if s, err = Open(opts); err != nil {
		return err
	}
	if err := write(s, quarFirst, quarRecords); err != nil {
		s.Close()
		return err
	}
	// Sync durability: everything acknowledged is on disk, so a copy now
	// is what a kill -9 would leave.
	if err := quarCopyDir(dir, crashCopy); err != nil {
		s.Close()
		return err
	}
	return s.Close()
}

// quarCopyDir copies the regular files of src (not LOCK) into dst.
func quarCopyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// quarCopy copies src to a new directory of the test.
func quarCopy(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "store")
	if err := quarCopyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// quarFile is the first file of dir matching glob; with largest, the
// largest one.
func quarFile(t *testing.T, dir, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, glob))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", glob, dir)
	}
	best, bestSize := m[0], int64(-1)
	for _, p := range m {
		if fi, err := os.Stat(p); err == nil && fi.Size() > bestSize {
			best, bestSize = p, fi.Size()
		}
	}
	return best
}

// quarDataEnd is the size of f without its trailing zero bytes (.mem and
// the last .vlog of an open store are preallocated).
func quarDataEnd(b []byte) int {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return n
}

type quarDamage func(t *testing.T, dir string)

// truncAt cuts the largest file matching glob at frac of its data.
func truncAt(glob string, frac float64) quarDamage {
	return func(t *testing.T, dir string) {
		p := quarFile(t, dir, glob)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, int64(float64(quarDataEnd(b))*frac)); err != nil {
			t.Fatal(err)
		}
	}
}

// truncTail cuts n bytes off the data of the largest file matching glob.
func truncTail(glob string, n int) quarDamage {
	return func(t *testing.T, dir string) {
		p := quarFile(t, dir, glob)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, int64(quarDataEnd(b)-n)); err != nil {
			t.Fatal(err)
		}
	}
}

// garble writes n random bytes at frac of the data of the largest file
// matching glob.
func garble(glob string, frac float64, n int) quarDamage {
	return func(t *testing.T, dir string) {
		p := quarFile(t, dir, glob)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		off := int(float64(quarDataEnd(b)) * frac)
		if off+n > len(b) {
			n = len(b) - off
		}
		rand.New(rand.NewSource(int64(off))).Read(b[off : off+n])
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func remove(glob string) quarDamage {
	return func(t *testing.T, dir string) {
		if err := os.Remove(quarFile(t, dir, glob)); err != nil {
			t.Fatal(err)
		}
	}
}

// strayTable copies the largest table to an id no MANIFEST entry has: what
// a crash between writing a table and recording it in the MANIFEST leaves.
func strayTable(t *testing.T, dir string) {
	b, err := os.ReadFile(quarFile(t, dir, "*.sst"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "000900.sst"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Outcomes a damage case may have.
const (
	quarantined = 1 << iota // moved aside, a fresh store opened
	intact                  // opened with every record, every byte right
	prefix                  // opened with records 0..k-1 (a log tail cut), every byte right
	holes                   // opened without some records, every byte of the others right
)

func quarOutcomeName(o int) string {
	var s []string
	for _, x := range []struct {
		bit  int
		name string
	}{{quarantined, "quarantined"}, {intact, "intact"}, {prefix, "prefix"}, {holes, "holes"}} {
		if o&x.bit != 0 {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, "|")
}

// quarReadAll reads every qtest record of s: how many there are, whether
// they are records 0..n-1 (a prefix of what was written), and whether
// anything was wrong (a key never written, a wrong value, an error).
func quarReadAll(s *Store) (n int, isPrefix, ok bool, detail string) {
	ok, isPrefix = true, true
	err := s.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("qtest/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var i int
			if _, err := fmt.Sscanf(string(item.Key()), "qtest/%06d", &i); err != nil || i < 0 || i >= quarRecords {
				ok, detail = false, fmt.Sprintf("unexpected key %q", item.Key())
				return nil
			}
			if i != n {
				isPrefix = false
			}
			if err := item.Value(func(v []byte) error {
				if !bytes.Equal(v, quarValue(i)) {
					return fmt.Errorf("wrong value (%d bytes)", len(v))
				}
				return nil
			}); err != nil {
				ok, detail = false, fmt.Sprintf("%s: %v", item.Key(), err)
				return nil
			}
			n++
		}
		return nil
	})
	if err != nil {
		ok, detail = false, err.Error()
	}
	return n, isPrefix, ok, detail
}

// quarDirState lists dir's files and sizes, to show a refused store was
// not touched.
func quarDirState(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d %x\n", e.Name(), len(data), sha256.Sum256(data))
	}
	return b.String()
}

func quarSiblings(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(dir + ".corrupt-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestQuarantineDamage(t *testing.T) {
	clean, crash := quarStores(t)
	none := func(*testing.T, string) {}
	for _, tc := range []struct {
		name   string
		src    string
		damage quarDamage
		want   int
		// batch: open with Batch durability (the stores were written with
		// Sync).
		batch bool
	}{
		{"undamaged, closed", clean, none, intact, false},
		{"undamaged, not closed (kill -9)", crash, none, intact, false},
		{"sst truncated to half", clean, truncAt("*.sst", 0.5), quarantined, false},
		{"sst last 10 bytes cut", clean, truncTail("*.sst", 10), quarantined, false},
		{"sst truncated to 0", clean, truncAt("*.sst", 0), quarantined, false},
		{"sst random bytes in the middle", clean, garble("*.sst", 0.5, 4096), quarantined, false},
		{"sst random bytes at the start", clean, garble("*.sst", 0, 64), quarantined, false},
		{"sst random bytes in the index", clean, garble("*.sst", 0.97, 1000), quarantined, false},
		{"sst deleted", clean, remove("*.sst"), quarantined, false},
		{"sst stray, closed store", clean, strayTable, quarantined, false},
		{"MANIFEST random bytes after the magic", clean, garble("MANIFEST", 0.3, 16), quarantined, false},
		{"MANIFEST magic garbled", clean, garble("MANIFEST", 0, 4), quarantined, false},
		{"MANIFEST last entry cut", clean, truncTail("MANIFEST", 5), quarantined, false},
		{"MANIFEST truncated to 0", clean, truncAt("MANIFEST", 0), quarantined, false},
		{"MANIFEST deleted", clean, remove("MANIFEST"), quarantined, false},
		{"KEYREGISTRY random bytes", clean, garble("KEYREGISTRY", 0.5, 8), quarantined, false},
		{"KEYREGISTRY truncated", clean, truncTail("KEYREGISTRY", 10), quarantined, false},
		{"KEYREGISTRY deleted", clean, remove("KEYREGISTRY"), intact, false},
		{"DISCARD random bytes", clean, garble("DISCARD", 0, 4096), intact, false},
		{"vlog truncated mid-record", clean, truncAt("*.vlog", 0.5), quarantined, false},
		{"vlog random bytes in the middle", clean, garble("*.vlog", 0.5, 4096), quarantined, false},
		{"vlog header garbled", clean, garble("*.vlog", 0, 20), quarantined, false},
		{"vlog deleted", clean, remove("*.vlog"), quarantined, false},

		{"crash: mem truncated mid-record", crash, truncAt("*.mem", 0.5), prefix, false},
		{"crash: mem last 7 bytes cut", crash, truncTail("*.mem", 7), prefix, false},
		// Badger cannot tell random bytes inside its write-ahead log from
		// a torn last write: it keeps the entries before them.
		{"crash: mem random bytes in the middle", crash, garble("*.mem", 0.5, 4096), prefix, false},
		{"crash: mem header garbled", crash, garble("*.mem", 0, 20), quarantined, false},
		{"crash: mem deleted", crash, remove("*.mem"), prefix | quarantined, false},
		{"crash: sst random bytes in the middle", crash, garble("*.sst", 0.5, 4096), quarantined, false},
		{"crash: sst stray (interrupted flush)", crash, strayTable, intact, false},
		{"crash: MANIFEST deleted", crash, remove("MANIFEST"), quarantined, false},
		// Badger syncs the value log before its write-ahead log points
		// into it: with Sync durability a value missing after replay is
		// damage.
		{"crash: vlog truncated mid-record", crash, truncAt("*.vlog", 0.5), quarantined, false},
		{"crash: vlog random bytes in the middle", crash, garble("*.vlog", 0.5, 4096), quarantined, false},
		// With Batch durability it may be a write a power cut caught
		// before its fsync: the keys are deleted, the rest kept.
		{"crash, batch: vlog truncated mid-record", crash, truncAt("*.vlog", 0.5), holes, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// refuse: an error wrapping ErrStoreCorrupt and, for a
			// cleanly closed store, nothing touched. (Damage in the logs
			// of a store that was not closed cleanly shows only once
			// Badger has replayed them, which rewrites files.)
			if tc.want&quarantined != 0 && tc.want&^quarantined == 0 {
				d := quarCopy(t, tc.src)
				tc.damage(t, d)
				before := quarDirState(t, d)
				s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, true)
				if err == nil {
					s.Close()
					t.Fatalf("refuse: opened a damaged store")
				}
				if !errors.Is(err, ErrStoreCorrupt) || !IsCorrupt(err) || moved != "" || !strings.Contains(err.Error(), d) {
					t.Fatalf("refuse: moved %q, err %v: want ErrStoreCorrupt naming %s", moved, err, d)
				}
				if after := quarDirState(t, d); after != before && tc.src == clean {
					t.Fatalf("refuse changed the directory:\n%s\nwas\n%s", after, before)
				}
				if sib := quarSiblings(t, d); len(sib) != 0 {
					t.Fatalf("refuse left %v", sib)
				}
			}

			d := quarCopy(t, tc.src)
			tc.damage(t, d)
			var lg quarLog
			opts := Options{Dir: d, Logger: lg.logger(), GCInterval: -1}
			if tc.batch {
				opts.Durability = Batch
			}
			s, moved, err := OpenOrQuarantine(opts, false)
			if err != nil {
				t.Fatalf("OpenOrQuarantine: %v", err)
			}
			defer s.Close()
			got := 0
			var n int
			if moved != "" {
				got = quarantined
				if sib := quarSiblings(t, d); len(sib) != 1 || sib[0] != moved {
					t.Fatalf("moved to %q, siblings %v", moved, sib)
				}
				if _, err := os.Stat(filepath.Join(moved, "KEYREGISTRY")); err != nil && tc.name != "KEYREGISTRY deleted" {
					t.Errorf("quarantined directory lacks the old files: %v", err)
				}
				out := lg.String()
				if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, moved) {
					t.Errorf("the log does not name %s at error level:\n%s", moved, out)
				}
				// The new store is empty and works.
				if n, _, ok, detail := quarReadAll(s); n != 0 || !ok {
					t.Fatalf("new store holds %d records (%s)", n, detail)
				}
				if err := applySync(s, Put(quarKey(0), quarValue(0))); err != nil {
					t.Fatalf("new store: %v", err)
				}
				t.Logf("quarantined: %s", lastLogErr(lg.String()))
			} else {
				nn, isPrefix, ok, detail := quarReadAll(s)
				n = nn
				switch {
				case !ok:
					t.Fatalf("opened with %d good records, then %s", n, detail)
				case n == quarRecords:
					got = intact
				case isPrefix && n > 0:
					got = prefix
				case n > 0:
					got = holes
					if out := lg.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "deleted") {
						t.Errorf("records lost without an error in the log:\n%s", out)
					}
				default:
					t.Fatalf("opened with no record")
				}
				t.Logf("opened: %d of %d records (%s), every byte right", n, quarRecords, quarOutcomeName(got))
			}
			if got&tc.want == 0 {
				t.Fatalf("outcome %s (%d records), want %s", quarOutcomeName(got), n, quarOutcomeName(tc.want))
			}
		})
	}
}

// lastLogErr is the err attribute of the last log line, for the test log.
func lastLogErr(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	l := lines[len(lines)-1]
	if i := strings.Index(l, " err="); i >= 0 {
		return l[i+5:]
	}
	return l
}

func TestQuarantineNewAndMemory(t *testing.T) {
	d := filepath.Join(t.TempDir(), "new")
	s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, false)
	if err != nil || moved != "" {
		t.Fatalf("new store: moved %q, err %v", moved, err)
	}
	s.Close()
	s, moved, err = OpenOrQuarantine(Options{Durability: Memory, Logger: quarQuiet()}, false)
	if err != nil || moved != "" {
		t.Fatalf("memory: moved %q, err %v", moved, err)
	}
	s.Close()
}

// quarNotMoved asserts that err is returned for dir, not a quarantine.
func quarNotMoved(t *testing.T, dir string, s *Store, moved string, err error, want string) {
	t.Helper()
	if err == nil {
		s.Close()
		t.Fatalf("opened; want an error containing %q", want)
	}
	if moved != "" || IsCorrupt(err) || errors.Is(err, ErrStoreCorrupt) {
		t.Fatalf("moved %q, err %v: not corruption", moved, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want it to contain %q", err, want)
	}
	if sib := quarSiblings(t, dir); len(sib) != 0 {
		t.Fatalf("moved aside: %v", sib)
	}
}

func TestQuarantineNotOnLock(t *testing.T) {
	d := quarSmallStore(t)
	held, err := Open(Options{Dir: d, Logger: quarQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, refuse := range []bool{false, true} {
		s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, refuse)
		quarNotMoved(t, d, s, moved, err, "Cannot acquire directory lock")
	}
}

// TestQuarantineNotOnLockOtherProcess holds the store open in a child
// process (this test binary, re-executed).
func TestQuarantineNotOnLockOtherProcess(t *testing.T) {
	if d := os.Getenv("FERRYMQ_QUARANTINE_HOLD"); d != "" {
		s, err := Open(Options{Dir: d, Logger: quarQuiet()})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		fmt.Println("held")
		io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
		s.Close()
		os.Exit(0)
	}
	d := quarSmallStore(t)
	cmd := quarChild(os.Args[0], "-test.run=^TestQuarantineNotOnLockOtherProcess$")
	cmd.Env = append(os.Environ(), "FERRYMQ_QUARANTINE_HOLD="+d)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line := make([]byte, 5)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "held\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, false)
	quarNotMoved(t, d, s, moved, err, "Cannot acquire directory lock")
}

// quarChild is the command running the test binary exe again. When this
// binary runs under qemu-user (go test -exec qemu-arm-static) and the
// kernel cannot run it directly, the child runs under qemu too.
func quarChild(exe string, args ...string) *exec.Cmd {
	if err := exec.Command(exe, "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		qemu := map[string]string{"arm": "arm", "arm64": "aarch64", "386": "i386"}[runtime.GOARCH]
		if q, lerr := exec.LookPath("qemu-" + qemu + "-static"); qemu != "" && lerr == nil {
			return exec.Command(q, append([]string{exe}, args...)...)
		}
	}
	return exec.Command(exe, args...)
}

func TestQuarantineNotOnNewerFormat(t *testing.T) {
	d := filepath.Join(t.TempDir(), "store")
	db, err := badger.Open(Options{Dir: d, Logger: quarQuiet()}.withDefaults().badgerOptions())
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, FormatVersion+1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, refuse := range []bool{false, true} {
		s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, refuse)
		quarNotMoved(t, d, s, moved, err, "newer ferrymq")
		if !errors.Is(err, ErrNewerFormat) {
			t.Fatalf("err %v, want ErrNewerFormat", err)
		}
	}
}

// TestQuarantineNotOnPermission: a directory this process may not read.
// As root (permissions do not apply) the check runs in a child process as
// user nobody.
func TestQuarantineNotOnPermission(t *testing.T) {
	if d := os.Getenv("FERRYMQ_QUARANTINE_PERM"); d != "" {
		s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, false)
		if err == nil {
			s.Close()
		}
		fmt.Printf("moved=%q corrupt=%v err=%v\n", moved, IsCorrupt(err), err)
		os.Exit(0)
	}
	src := quarSmallStore(t)
	base := t.TempDir()
	d := filepath.Join(base, "store")
	if err := quarCopyDir(src, d); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := os.Chmod(d, 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(d, 0o700)
		s, moved, err := OpenOrQuarantine(Options{Dir: d, Logger: quarQuiet()}, false)
		quarNotMoved(t, d, s, moved, err, "permission denied")
		return
	}
	// Root: run this test binary as nobody. The binary and the path to
	// the store's parent must be reachable by nobody.
	exe := filepath.Join(base, "test.bin")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := base; p != "/" && p != "."; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				t.Skipf("cannot open the path to %s to nobody: %v", base, err)
			}
			defer os.Chmod(p, fi.Mode().Perm())
		}
	}
	cmd := quarChild(exe, "-test.run=^TestQuarantineNotOnPermission$")
	cmd.Env = append(os.Environ(), "FERRYMQ_QUARANTINE_PERM="+d)
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run as nobody: %v %s", err, out)
	}
	res := string(out)
	if !strings.Contains(res, `moved="" corrupt=false`) || !strings.Contains(res, "permission denied") {
		t.Fatalf("as nobody: %s", res)
	}
	if sib := quarSiblings(t, d); len(sib) != 0 {
		t.Fatalf("moved aside: %v", sib)
	}
	t.Logf("as nobody: %s", strings.TrimSpace(res))
}

// TestQuarantineCorruptRecord: a record that does not decode (ErrCorrupt
// from the broker's load) quarantines the store when the load is the
// check of OpenOrQuarantineCheck.
func TestQuarantineCorruptRecord(t *testing.T) {
	d := filepath.Join(t.TempDir(), "store")
	s, err := Open(Options{Dir: d, Logger: quarQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := applySync(s, Put(appendRetKey(nil, "a/b"), []byte("not a record"))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	loads := 0
	check := func(s *Store) error {
		loads++
		return s.LoadRetained(func(*session.Message) error { return nil })
	}

	_, moved, err := OpenOrQuarantineCheck(Options{Dir: d, Logger: quarQuiet()}, true, check)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrStoreCorrupt) || moved != "" {
		t.Fatalf("refuse: moved %q, err %v", moved, err)
	}

	var lg quarLog
	s, moved, err = OpenOrQuarantineCheck(Options{Dir: d, Logger: lg.logger()}, false, check)
	if err != nil || moved == "" {
		t.Fatalf("moved %q, err %v", moved, err)
	}
	s.Close()
	if loads != 3 {
		t.Errorf("check ran %d times, want 3 (refused, damaged, new store)", loads)
	}
	if !strings.Contains(lg.String(), moved) {
		t.Errorf("log does not name %s: %s", moved, lg.String())
	}

	// A check error that is not corruption closes the store and is
	// returned as is.
	boom := errors.New("boom")
	_, moved, err = OpenOrQuarantineCheck(Options{Dir: d, Logger: quarQuiet()}, false, func(*Store) error { return boom })
	if !errors.Is(err, boom) || moved != "" {
		t.Fatalf("moved %q, err %v", moved, err)
	}
}

func TestQuarantineName(t *testing.T) {
	base := t.TempDir()
	d := filepath.Join(base, "data")
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.FixedZone("X", 3600))
	var names []string
	for i := 0; i < 3; i++ {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		moved, err := Quarantine(d+"/", now)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(moved))
	}
	want := []string{"data.corrupt-20260102T140405Z", "data.corrupt-20260102T140405Z-1", "data.corrupt-20260102T140405Z-2"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("names %v, want %v", names, want)
	}
}

func TestIsCorrupt(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{ErrCorrupt, true},
		{fmt.Errorf("x: %w", ErrStoreCorrupt), true},
		{fmt.Errorf("persist: open d: %w", badger.ErrEncryptionKeyMismatch), true},
		{errors.New("persist: open d: manifest has bad magic"), true},
		{errors.New(`Opening table: "d/000001.sst" err: failed to initialize table err: failed to read index. err: proto: cannot parse invalid wire-format data`), true},
		{errors.New("Buffer length: 1392376839 greater than file size: 28. Manifest file might be corrupted"), true},
		{errors.New("file does not exist for table 1"), true},
		{fmt.Errorf("persist: d: %w", ErrNewerFormat), false},
		{errors.New(`Cannot acquire directory lock on "d".  Another process is using this Badger database. err: resource temporarily unavailable`), false},
		{errors.New(`cannot open directory "d" err: open d: permission denied`), false},
		{fmt.Errorf("open: %w", os.ErrPermission), false},
		{fmt.Errorf("write: %w", syscall.ENOSPC), false},
		{errors.New("while mmapping d/000003.vlog with size: 2147483646 err: cannot allocate memory"), false},
		{errors.New("manifest has unsupported version: 9 (we support 8)."), false},
		// Both: the environment wins, the store is not moved.
		{errors.New("checksum mismatch; read d/000001.sst: input/output error"), false},
		{errors.New("something Badger never said"), false},
	} {
		if got := IsCorrupt(tc.err); got != tc.want {
			t.Errorf("IsCorrupt(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
