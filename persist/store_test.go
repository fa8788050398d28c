package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
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

// closedNow reports whether an empty request fails with ErrClosed, i.e.
// Close has started. Only Apply itself reports ErrClosed (the writer
// commits every request it accepted), and it does so before returning.
func closedNow(s *Store) bool {
	var refused atomic.Bool
	s.Apply(nil, func(err error) { refused.Store(errors.Is(err, ErrClosed)) })
	return refused.Load()
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
	db, err := badger.Open(Options{Dir: dir, Logger: quietLogger()}.withDefaults().badgerOptions())
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
	db, err = badger.Open(Options{Dir: dir, Logger: quietLogger()}.withDefaults().badgerOptions())
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

// applyLate applies n requests once Close has started: each must fail
// before Apply returns.
func applyLate(t *testing.T, s *Store, n int, results chan<- error) {
	t.Helper()
	for i := range n {
		var now atomic.Bool
		s.Apply([]Op{Put(fmt.Appendf(nil, "late%d", i), []byte("v"))}, func(err error) {
			now.Store(true)
			results <- err
		})
		if !now.Load() {
			t.Fatal("Apply after Close started did not call done before returning")
		}
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
	var order []int // indexes of committed requests, in done order (writer only)
	results := make(chan error, 2*n)
	for i := range n {
		s.Apply([]Op{Put(fmt.Appendf(nil, "k%d", i), []byte("v"))}, func(err error) {
			if err == nil {
				order = append(order, i)
			}
			results <- err
		})
	}
	<-entered // the writer is stuck in a commit with requests queued
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	// Close cannot finish while the commit is held. Probe with empty
	// requests until one fails at once: Close has then started. Probes
	// accepted before that are committed during the drain.
	probes := 0
	for !closedNow(s) {
		probes++
		runtime.Gosched()
	}
	t.Logf("%d probes accepted before Close started", probes)
	applyLate(t, s, n, results)
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
	// Requests accepted before Close are committed (drained), in order;
	// the others fail with ErrClosed. Every request gets one result.
	if ok != n || closedErrs != n {
		t.Errorf("%d committed, %d ErrClosed; want %d of each", ok, closedErrs, n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("done order %v", order)
		}
	}
	select {
	case err := <-results:
		t.Errorf("extra result %v", err)
	default:
	}
	if err := applySync(s, Put([]byte("x"), nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v", err)
	}
	s2 := openTest(t, Options{Dir: o.Dir})
	for i := range n {
		if _, found := get(t, s2, fmt.Sprintf("k%d", i)); !found {
			t.Errorf("drained request k%d is not stored", i)
		}
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
	// The largest request that fits is committed (Badger counts one
	// extra entry for its commit marker).
	if err := applySync(s, ops[:s.maxCount-2]...); err != nil {
		t.Fatalf("request of %d ops: %v", s.maxCount-2, err)
	}
}

func TestGC(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir(), GCInterval: 5 * time.Millisecond})
	big := make([]byte, 4<<10) // above ValueThreshold: goes to the value log
	for range 3 {
		for i := range 200 {
			if err := applySync(s, Put(fmt.Appendf(nil, "k%d", i), big)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 200 {
		if err := applySync(s, Del(fmt.Appendf(nil, "k%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for s.gcAttempts.Load() < 3 { // several GC ticks
		runtime.Gosched()
	}
	s.runGC() // and one direct run, errors are logged
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDoneOrder checks that done callbacks come in Apply order whatever
// their result, and that done may call Apply (on the writer goroutine).
func TestDoneOrder(t *testing.T) {
	var failNext atomic.Int32 // commits to fail
	o := Options{Durability: Memory, MaxBatch: 8, MaxBatchDelay: -1}
	o.commitHook = func(int) error {
		if failNext.Load() > 0 {
			failNext.Add(-1)
			return errors.New("injected")
		}
		return nil
	}
	s := openTest(t, o)
	tooBig := make([]Op, s.maxCount+1)
	for i := range tooBig {
		tooBig[i] = Put(fmt.Appendf(nil, "big%d", i), nil)
	}
	const n = 2000
	var mu sync.Mutex
	var got []int
	all := make(chan struct{})
	record := func(i int) func(error) {
		return func(error) {
			mu.Lock()
			got = append(got, i)
			if len(got) == 2*n {
				close(all)
			}
			mu.Unlock()
		}
	}
	failNext.Store(3)
	for i := range n {
		ops := []Op{Put(fmt.Appendf(nil, "k%d", i), nil)}
		if i%97 == 0 {
			ops = tooBig
		}
		// Each done applies a follow-up request from the writer; it
		// must come after every request applied before it.
		s.Apply(ops, func(err error) {
			record(i)(err)
			s.Apply(nil, record(n+i))
		})
	}
	<-all
	mu.Lock()
	defer mu.Unlock()
	// The first n results are the first n requests in order; the
	// follow-ups are applied in the order their parents finish.
	seen := 0
	for _, v := range got {
		if v < n {
			if v != seen {
				t.Fatalf("request %d finished when %d was expected", v, seen)
			}
			seen++
		}
	}
	follow := -1
	for _, v := range got {
		if v >= n {
			if v <= follow {
				t.Fatalf("follow-up %d after %d", v-n, follow-n)
			}
			follow = v
		}
	}
}

// TestBatchSyncUnderLoad keeps the writer busy without a pause (each done
// applies the next request) and checks that Batch durability still
// fsyncs every BatchInterval.
func TestBatchSyncUnderLoad(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir(), Durability: Batch, BatchInterval: 2 * time.Millisecond, MaxBatchDelay: -1})
	var stop atomic.Bool
	t.Cleanup(func() { stop.Store(true) }) // before Close, if the test fails
	stopped := make(chan struct{})
	var next func(error)
	next = func(err error) {
		if stop.Load() {
			close(stopped)
			return
		}
		if err != nil {
			t.Error(err)
		}
		s.Apply([]Op{Put([]byte("k"), []byte("v"))}, next)
	}
	next(nil)
	waitFor(t, "periodic fsyncs", func() bool { return s.syncs.Load() >= 5 })
	stop.Store(true)
	<-stopped
}
