package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTest(t testing.TB, o Options) *Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// applySync applies ops and waits for the result.
func applySync(s *Store, ops ...Op) error {
	ch := make(chan error, 1)
	s.Apply(ops, func(err error) { ch <- err })
	return <-ch
}

func get(t *testing.T, s *Store, key string) (string, bool) {
	t.Helper()
	var (
		val   string
		found bool
	)
	err := s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		v, err := item.ValueCopy(nil)
		val = string(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return val, found
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o   Options
		bad string
	}{
		{Options{Dir: "x"}, ""},
		{Options{Durability: Memory}, ""},
		{Options{}, "Dir is required"},
		{Options{Durability: Batch}, "Dir is required"},
		{Options{Dir: "x", Durability: 7}, "invalid durability"},
		{Options{Dir: "x", MaxBatch: -1}, "MaxBatch"},
		{Options{Dir: "x", BatchInterval: -1}, "BatchInterval"},
		{Options{Dir: "x", MaxBatchDelay: 2 * time.Second}, "MaxBatchDelay"},
	} {
		err := tc.o.Validate()
		if tc.bad == "" && err != nil || tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.bad)
		}
	}
	for _, s := range []string{"sync", "batch", "memory"} {
		d, err := ParseDurability(s)
		if err != nil || d.String() != s {
			t.Errorf("ParseDurability(%q) = %v, %v", s, d, err)
		}
	}
	if _, err := ParseDurability("fast"); err == nil {
		t.Error("ParseDurability(fast) succeeded")
	}
}

func TestReopenKeepsData(t *testing.T) {
	for _, d := range []Durability{Sync, Batch} {
		t.Run(d.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, Options{Dir: dir, Durability: d})
			if err := applySync(s, Put([]byte("v1/sess/a"), []byte("one")), Put([]byte("v1/sess/b"), []byte("two"))); err != nil {
				t.Fatal(err)
			}
			if err := applySync(s, Del([]byte("v1/sess/b"))); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			s = openTest(t, Options{Dir: dir, Durability: d})
			if v, ok := get(t, s, "v1/sess/a"); !ok || v != "one" {
				t.Errorf("after reopen v1/sess/a = %q, %v", v, ok)
			}
			if _, ok := get(t, s, "v1/sess/b"); ok {
				t.Error("deleted key is back after reopen")
			}
		})
	}
}

func TestMemoryDurability(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	if err := applySync(s, Put([]byte("k"), []byte("v"))); err != nil {
		t.Fatal(err)
	}
	if v, ok := get(t, s, "k"); !ok || v != "v" {
		t.Fatalf("k = %q, %v", v, ok)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, FormatVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir, Logger: quietLogger()})
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a store with a newer format")
	}
	if !errors.Is(err, ErrNewerFormat) {
		t.Errorf("error %v does not wrap ErrNewerFormat", err)
	}
	want := fmt.Sprintf("format version is %d, this binary reads up to %d", FormatVersion+1, FormatVersion)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the versions and the directory", err)
	}
	// The refused store is left as it was and can be reopened by Badger
	// (the lock was released).
	db, err = badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func TestFormatKeyWritten(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir()})
	v, ok := get(t, s, "format")
	if !ok || len(v) != 8 || binary.BigEndian.Uint64([]byte(v)) != FormatVersion {
		t.Fatalf("format key = %x, %v", v, ok)
	}
}

func TestGroupCommit(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir(), MaxBatchDelay: 2 * time.Millisecond})
	const n = 200
	var calls [n]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			<-start
			key := fmt.Appendf(nil, "v1/q/c%d/x", i)
			s.Apply([]Op{Put(key, []byte("payload"))}, func(err error) {
				calls[i].Add(1)
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Errorf("request %d: done called %d times", i, c)
		}
	}
	st := s.Stats()
	t.Logf("%d requests in %d commits", st.Requests, st.Commits)
	if st.Requests != n || st.Ops != n {
		t.Errorf("stats %+v, want %d requests and ops", st, n)
	}
	if st.Commits > n/4 {
		t.Errorf("%d commits for %d concurrent requests: no group commit", st.Commits, n)
	}
	for i := range n {
		if _, ok := get(t, s, fmt.Sprintf("v1/q/c%d/x", i)); !ok {
			t.Fatalf("key %d missing", i)
		}
	}
}

func TestCommitErrorReachesEveryCaller(t *testing.T) {
	boom := errors.New("disk on fire")
	var fail atomic.Bool
	o := Options{Dir: t.TempDir(), MaxBatchDelay: 20 * time.Millisecond}
	var batches sync.Map // batch size of each failed commit
	o.commitHook = func(requests int) error {
		if fail.Load() {
			batches.Store(requests, true)
			return boom
		}
		return nil
	}
	s := openTest(t, o)
	fail.Store(true)
	const n = 50
	var wg sync.WaitGroup
	var got, bad atomic.Int32
	wg.Add(n)
	for i := range n {
		go func() {
			s.Apply([]Op{Put(fmt.Appendf(nil, "k%d", i), []byte("v"))}, func(err error) {
				got.Add(1)
				if !errors.Is(err, boom) {
					bad.Add(1)
				}
				wg.Done()
			})
		}()
	}
	wg.Wait()
	if got.Load() != n || bad.Load() != 0 {
		t.Fatalf("%d callbacks, %d without the commit error", got.Load(), bad.Load())
	}
	multi := false
	batches.Range(func(k, _ any) bool { multi = multi || k.(int) > 1; return true })
	if !multi {
		t.Error("no failed batch held more than one request")
	}
	if _, ok := get(t, s, "k0"); ok {
		t.Error("a failed request was stored")
	}
	fail.Store(false)
	if err := applySync(s, Put([]byte("after"), []byte("v"))); err != nil {
		t.Fatalf("store did not recover after a failed commit: %v", err)
	}
	if st := s.Stats(); st.Errors == 0 {
		t.Errorf("stats %+v count no error", st)
	}
}

func TestClosePending(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	o := Options{Dir: t.TempDir(), MaxBatch: 1}
	o.commitHook = func(int) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return nil
	}
	s := openTest(t, o)
	const n = 20
	results := make(chan error, 2*n)
	for i := range n {
		go s.Apply([]Op{Put(fmt.Appendf(nil, "k%d", i), []byte("v"))}, func(err error) { results <- err })
	}
	<-entered // the writer is stuck in a commit with requests queued
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	// Requests made once Close has started fail with ErrClosed. Close
	// cannot finish while the commit is held, so wait until it marked the
	// store closed.
	for {
		s.mu.RLock()
		c := s.closed
		s.mu.RUnlock()
		if c {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		s.Apply([]Op{Put(fmt.Appendf(nil, "late%d", i), []byte("v"))}, func(err error) { results <- err })
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	var ok, closedErrs int
	for range 2 * n {
		switch err := <-results; {
		case err == nil:
			ok++
		case errors.Is(err, ErrClosed):
			closedErrs++
		default:
			t.Errorf("unexpected result %v", err)
		}
	}
	// Requests accepted before Close are committed (drained); the others
	// fail with ErrClosed. Every request gets exactly one result.
	if ok+closedErrs != 2*n || closedErrs < n {
		t.Errorf("%d committed, %d ErrClosed", ok, closedErrs)
	}
	select {
	case err := <-results:
		t.Errorf("extra result %v", err)
	default:
	}
	if err := applySync(s, Put([]byte("x"), nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v", err)
	}
}

func TestTooBigRequest(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	ops := make([]Op, s.maxCount+1)
	for i := range ops {
		ops[i] = Put(fmt.Appendf(nil, "k%d", i), nil)
	}
	if err := applySync(s, ops...); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversized request: %v", err)
	}
	if err := applySync(s, Put([]byte("k"), nil)); err != nil {
		t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir(), GCInterval: 5 * time.Millisecond})
	big := make([]byte, 4<<10) // above ValueThreshold: goes to the value log
	for round := range 3 {
		for i := range 200 {
			if err := applySync(s, Put(fmt.Appendf(nil, "k%d", i), big)); err != nil {
				t.Fatal(err)
			}
		}
		_ = round
	}
	for i := range 200 {
		if err := applySync(s, Del(fmt.Appendf(nil, "k%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // several GC ticks
	s.runGC()                         // and one direct run, errors are logged
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
