package persist

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// quotaOptions returns options with a fast quota tick and a statfs that
// reports *free.
func quotaOptions(t *testing.T, free *atomic.Uint64) Options {
	o := Options{Dir: t.TempDir(), MinFree: 10 << 20, quotaTick: 5 * time.Millisecond}
	o.statfs = func(string) (uint64, error) { return free.Load(), nil }
	return o
}

func putSession(id string) session.Change {
	return session.Change{Kind: session.PutSession, ClientID: id, Info: session.Info{Version: 5}}
}

func TestQuotaMinFree(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	s := openTest(t, quotaOptions(t, &free))
	mustCommit(t, s, putSession("a"), queued("a", 1, "t"), queued("a", 2, "t"))
	if s.Full() {
		t.Fatal("full with 1 GiB free")
	}
	free.Store(5 << 20)
	waitFor(t, "the full state", s.Full)
	// Additions are refused, in order; deletes go on, even with a range,
	// and so do moves into flight and session record rewrites.
	results := make(chan error, 5)
	s.Commit(&session.Batch{Changes: []session.Change{queued("a", 3, "t")}}, func(err error) { results <- err })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: session.DelQueued, ClientID: "a", Seq: 1}}}, func(err error) { results <- err })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: session.DelSession, ClientID: "b"}, putSession("b")}}, func(err error) { results <- err })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: session.DelOutbox, Bridge: "x", Seq: 9}}}, func(err error) { results <- err })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: session.DelQueued, ClientID: "a", Seq: 2},
		{Kind: session.PutInflight, ClientID: "a", PacketID: 1, Seq: 2, D: session.Delivery{Msg: &session.Message{Topic: "t"}, QoS: 1}}}},
		func(err error) { results <- err })
	for i, wantFull := range []bool{true, false, false, false, false} {
		err := <-results
		if errors.Is(err, session.ErrFull) != wantFull || (!wantFull && err != nil) {
			t.Errorf("commit %d: %v", i, err)
		}
	}
	if n := s.Stats().RefusedFull; n != 1 {
		t.Errorf("RefusedFull = %d", n)
	}
	if n := countKeys(t, s, "v1/q/"); n != 0 {
		t.Errorf("%d queued, want 0 (one put refused, one deleted, one moved into flight)", n)
	}
	free.Store(20 << 20)
	waitFor(t, "leaving the full state", func() bool { return !s.Full() })
	mustCommit(t, s, queued("a", 3, "t"))
}

func TestQuotaMaxDisk(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	o := quotaOptions(t, &free)
	o.MaxDisk = 1 << 20
	o.quotaTick = time.Hour // only the measurement at Open and the writer's estimate
	s := openTest(t, o)
	if s.Full() {
		t.Fatal("a new store is full")
	}
	big := make([]byte, 8<<10) // in the value log: allocated at once
	for i := 0; !s.Full(); i++ {
		err := applySync(s, Put(fmt.Appendf(nil, "v1/ret/t%d", i), big))
		if errors.Is(err, session.ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 10000 {
			t.Fatal("80 MB written and the store is not full")
		}
	}
	used, err := dirUsage(o.Dir)
	t.Logf("full at %d bytes used", used)
	if err != nil || used < o.MaxDisk/2 || used > o.MaxDisk*3/2 {
		t.Errorf("full at %d bytes (max disk %d), %v", used, o.MaxDisk, err)
	}
	if err := applySync(s, Put([]byte("v1/ret/x"), nil)); !errors.Is(err, session.ErrFull) {
		t.Errorf("put while full: %v", err)
	}
	if err := applySync(s, Del([]byte("v1/ret/t0"))); err != nil {
		t.Errorf("delete while full: %v", err)
	}
}

// TestNoSpaceFromBadger checks that an ENOSPC commit error wraps ErrFull
// and makes the store full until the next check finds space.
func TestNoSpaceFromBadger(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	o := quotaOptions(t, &free)
	var fail atomic.Bool
	o.commitHook = func(int) error {
		if fail.Load() {
			return fmt.Errorf("write vlog: %w", syscall.ENOSPC)
		}
		return nil
	}
	s := openTest(t, o)
	fail.Store(true)
	if err := applySync(s, Put([]byte("k"), []byte("v"))); !errors.Is(err, session.ErrFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("commit on a full disk: %v", err)
	}
	fail.Store(false)
	// Refused at once (the check has not run yet) or, if it ran, accepted.
	if err := applySync(s, Put([]byte("k"), []byte("v"))); err != nil && !errors.Is(err, session.ErrFull) {
		t.Fatal(err)
	}
	waitFor(t, "leaving the full state", func() bool { return !s.Full() })
	if err := applySync(s, Put([]byte("k"), []byte("v"))); err != nil {
		t.Fatal(err)
	}
	if !isNoSpace(errors.New("writeRequests err: write /x/000001.vlog: no space left on device")) {
		t.Error("flattened ENOSPC text not recognised")
	}
}

func TestQuotaStatfsError(t *testing.T) {
	o := Options{Dir: t.TempDir(), quotaTick: time.Millisecond}
	var calls atomic.Int32
	o.statfs = func(string) (uint64, error) { calls.Add(1); return 0, errors.New("no statfs here") }
	s := openTest(t, o)
	waitFor(t, "several checks", func() bool { return calls.Load() > 3 })
	if s.Full() {
		t.Error("full because statfs fails")
	}
	mustCommit(t, s, putSession("a"))
}

func TestQuotaDisabled(t *testing.T) {
	o := Options{Dir: t.TempDir(), MinFree: -1}
	o.statfs = func(string) (uint64, error) { t.Error("statfs called with MinFree < 0"); return 0, nil }
	s := openTest(t, o)
	s.checkQuota()
	mustCommit(t, s, putSession("a"))
	m := openTest(t, Options{Durability: Memory, MinFree: 1 << 62})
	if m.quotaStop != nil || m.Full() {
		t.Error("memory store checks its disk")
	}
	if err := (&Options{Dir: "x", MaxDisk: -1}).Validate(); err == nil {
		t.Error("negative MaxDisk accepted")
	}
}
