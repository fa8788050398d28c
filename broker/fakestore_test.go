package broker

import (
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// fakeStore is a durable session.Store in memory for tests: commits are
// applied in order by one worker goroutine, only then become visible to
// reads, and can be held (to prove nothing is acknowledged early) or
// failed. Its state survives Close, so a second Server on the same
// fakeStore is a restart.
type fakeStore struct {
	mu      sync.Mutex
	cond    sync.Cond
	reqs    []fakeReq
	holding bool
	closed  bool
	fail    error // the next commits that add data fail with it
	done    chan struct{}
	commits int

	sess map[string]session.Info
	subs map[string]map[string]topics.Subscription
	q    map[string]map[uint64]session.Delivery
	infl map[string]map[uint16]session.SavedInflight
	in2  map[string]map[uint16]bool
	ret  map[string]*session.Message
}

type fakeReq struct {
	ch   []session.Change
	done func(error)
}

func newFakeStore() *fakeStore {
	f := &fakeStore{
		sess: map[string]session.Info{},
		subs: map[string]map[string]topics.Subscription{},
		q:    map[string]map[uint64]session.Delivery{},
		infl: map[string]map[uint16]session.SavedInflight{},
		in2:  map[string]map[uint16]bool{},
		ret:  map[string]*session.Message{},
	}
	f.cond.L = &f.mu
	f.start()
	return f
}

// start runs the worker (again, after Close: a restart).
func (f *fakeStore) start() {
	f.mu.Lock()
	f.closed = false
	f.done = make(chan struct{})
	f.mu.Unlock()
	go f.worker()
}

// hold stops commits from completing until release.
func (f *fakeStore) hold() { f.mu.Lock(); f.holding = true; f.mu.Unlock() }

func (f *fakeStore) release() {
	f.mu.Lock()
	f.holding = false
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fakeStore) failWith(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

func (f *fakeStore) Durable() bool { return true }

func (f *fakeStore) Commit(b *session.Batch, done func(error)) {
	var ch []session.Change
	if b != nil {
		ch = slices.Clone(b.Changes)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		done(errors.New("fake store closed"))
		return
	}
	f.reqs = append(f.reqs, fakeReq{ch, done})
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fakeStore) worker() {
	defer close(f.done)
	f.mu.Lock()
	for {
		for (len(f.reqs) == 0 || f.holding) && !f.closed {
			f.cond.Wait()
		}
		if len(f.reqs) == 0 || (f.holding && f.closed) {
			f.mu.Unlock()
			return
		}
		r := f.reqs[0]
		f.reqs = f.reqs[1:]
		err := f.fail
		if err != nil && !grows(r.ch) {
			err = nil
		}
		if err == nil {
			f.apply(r.ch)
		}
		f.commits++
		f.mu.Unlock()
		r.done(err)
		f.mu.Lock()
	}
}

// grows reports whether a batch adds data, which a full store refuses
// (as persist does: moves into flight and session rewrites pass).
func grows(ch []session.Change) bool {
	for _, c := range ch {
		switch c.Kind {
		case session.PutSub, session.PutQueued, session.PutQoS2In, session.PutRetained, session.PutOutbox:
			return true
		}
	}
	return false
}

func sub2[K comparable, V any](m map[string]map[K]V, id string) map[K]V {
	if m[id] == nil {
		m[id] = map[K]V{}
	}
	return m[id]
}

func (f *fakeStore) apply(chs []session.Change) {
	for _, c := range chs {
		id := c.ClientID
		switch c.Kind {
		case session.PutSession:
			f.sess[id] = c.Info
		case session.DelSession:
			delete(f.sess, id)
			delete(f.subs, id)
			delete(f.q, id)
			delete(f.infl, id)
			delete(f.in2, id)
		case session.PutSub:
			sub2(f.subs, id)[c.Sub.Filter] = c.Sub
		case session.DelSub:
			delete(f.subs[id], c.Sub.Filter)
		case session.PutQueued:
			sub2(f.q, id)[c.Seq] = c.D
		case session.DelQueued:
			delete(f.q[id], c.Seq)
		case session.PutInflight:
			in := session.SavedInflight{Inflight: session.Inflight{ID: c.PacketID, D: c.D, Phase: c.Phase}, Seq: c.Seq}
			sub2(f.infl, id)[c.PacketID] = in
		case session.DelInflight:
			delete(f.infl[id], c.PacketID)
		case session.PutQoS2In:
			sub2(f.in2, id)[c.PacketID] = true
		case session.DelQoS2In:
			delete(f.in2[id], c.PacketID)
		case session.PutRetained:
			f.ret[c.D.Msg.Topic] = c.D.Msg
		case session.DelRetained:
			delete(f.ret, c.Topic)
		}
	}
}

func (f *fakeStore) Load(fn func(*session.Saved) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(f.sess)) {
		sv := &session.Saved{ClientID: id, Info: f.sess[id]}
		for _, s := range f.subs[id] {
			sv.Subs = append(sv.Subs, s)
		}
		for _, in := range f.infl[id] {
			sv.Inflight = append(sv.Inflight, in)
			sv.NextSeq = max(sv.NextSeq, in.Seq+1)
		}
		slices.SortFunc(sv.Inflight, func(a, b session.SavedInflight) int { return int(a.Seq) - int(b.Seq) })
		for pid := range f.in2[id] {
			sv.QoS2In = append(sv.QoS2In, pid)
		}
		if seqs := slices.Sorted(maps.Keys(f.q[id])); len(seqs) > 0 {
			sv.QueueFirst, sv.QueueNext, sv.QueueLen = seqs[0], seqs[len(seqs)-1]+1, len(seqs)
			sv.NextSeq = max(sv.NextSeq, sv.QueueNext)
		}
		if err := fn(sv); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeStore) LoadRetained(fn func(*session.Message) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.ret {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeStore) ReadQueue(id string, from, to uint64, n int, fn func(uint64, session.Delivery)) error {
	f.mu.Lock()
	var seqs []uint64
	for seq := range f.q[id] {
		if seq >= from && seq < to {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	if len(seqs) > n {
		seqs = seqs[:n]
	}
	ds := make([]session.Delivery, len(seqs))
	for i, seq := range seqs {
		ds[i] = f.q[id][seq]
	}
	f.mu.Unlock()
	for i, seq := range seqs {
		fn(seq, ds[i])
	}
	return nil
}

// Close lets pending commits finish (unless held) and stops the worker.
func (f *fakeStore) Close() error {
	f.mu.Lock()
	f.closed = true
	f.cond.Broadcast()
	done := f.done
	f.mu.Unlock()
	<-done
	return nil
}

// queued is how many deliveries of id are stored in its queue.
func (f *fakeStore) queued(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.q[id])
}
