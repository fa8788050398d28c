package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// The forwarder drains the outbox to the upstream, in seq order. It runs
// on the link loop goroutine only (one per bridge), so its state needs no
// lock; confirmations arrive from the adapters' goroutines through
// results.
//
// fifo holds every entry read since the last deleted one, in read order:
// sent and awaiting confirmation, or done (confirmed, dead-lettered,
// dropped, expired). Done entries leave from the front; their seqs are
// deleted from the log in ranges (delFrom..). When the link is lost, the
// cursor goes back to the first entry not done and everything after it
// is read again (entries already done are skipped): at most the inflight
// window is sent twice.
type forwarder struct {
	b   *Bridge
	cfg *Config

	cursor  uint64 // next seq to read
	delFrom uint64 // first seq whose delete is not yet committed
	delTo   uint64 // seqs below it are done and may be deleted
	fifo    []*flight
	head    int
	waiting int                // flights sent and awaiting confirmation
	skip    map[uint64]*flight // done flights past a rewind
	peeked  *flight
	rbuf    []*flight // read ahead from disk
	rpos    int
	dead    []session.Change // dead letters not yet committed
	retry   []*flight        // rejected, waiting to be sent again
	// rejects counts the rejections of entries not yet done, by seq: it
	// outlives a link (an MQTT upstream may drop the link after refusing).
	rejects map[uint64]int

	sentHigh uint64 // above every seq sent so far (resends are counted)
	gen      uint64 // link generation: results of older links are ignored
	mu       sync.Mutex
	results  []result

	tokens float64 // max_rate token bucket
	last   time.Time
}

type flight struct {
	seq    uint64
	stamp  int64
	size   int64
	msg    *session.Message
	sentAt time.Time
	tries  int // rejections so far
	done   bool
	sent   bool
	// awaiting: sent on this link, confirmation not yet in.
	awaiting bool
	// retryAt: rejected, to be sent again then (zero: not waiting).
	retryAt time.Time
}

type result struct {
	fl  *flight
	gen uint64
	err error
}

// maxRejects is how many times the upstream may reject a message before it
// goes to the dead-letter log; retryDelay is the wait before the first
// resend of a rejected message (doubling after each rejection).
const (
	maxRejects = 3
	retryDelay = time.Second
)

// deleteBatch is how many done entries are deleted from the log at once.
const deleteBatch = 256

var errConfirmTimeout = errors.New("bridge: no confirmation within confirm_timeout: the link is half-open")

func newForwarder(b *Bridge, first uint64) *forwarder {
	return &forwarder{b: b, cfg: &b.cfg, cursor: first, delFrom: first, delTo: first, skip: map[uint64]*flight{}, rejects: map[uint64]int{}}
}

// loop connects, forwards until the link fails, and reconnects after a
// backoff, until ctx ends.
func (f *forwarder) loop(ctx context.Context) {
	b := f.b
	bo := Backoff{Min: f.cfg.Reconnect.Min, Max: f.cfg.Reconnect.Max}
	defer f.flushDeletes(true)
	for ctx.Err() == nil {
		b.setState(StateConnecting)
		up := b.opts.Dial()
		cctx, cancel := context.WithTimeout(ctx, max(f.cfg.ConfirmTimeout, 5*time.Second))
		err := up.Connect(cctx, b.handleInbound)
		cancel()
		if err != nil {
			b.stats.ConnectErrs.Add(1)
			if ctx.Err() == nil {
				b.log.Warn("bridge cannot connect to its upstream", "upstream", f.cfg.Upstream, "err", err)
			}
			up.Close()
			f.idle(ctx, bo.Next())
			continue
		}
		b.stats.Connects.Add(1)
		b.log.Info("bridge connected", "upstream", f.cfg.Upstream)
		since := time.Now()
		err = f.forward(ctx, up)
		b.up.Store(false)
		b.setState(StateDown)
		if ctx.Err() == nil {
			// Before Close, which may wait for a dead peer.
			b.stats.LinkLosses.Add(1)
			b.log.Warn("bridge link lost", "err", err, "connected_for", time.Since(since).Round(time.Millisecond))
		} else if !b.inject.wait(stopSettle) {
			// Stopping: acknowledge upstream what is stored here first.
			// What is not stored yet is sent again by the upstream.
			b.log.Warn("bridge stopping with downlink messages not yet stored; the upstream sends them again", "waited", stopSettle)
		}
		up.Close()
		f.drainLive()
		f.rewind()
		if ctx.Err() != nil {
			return
		}
		if time.Since(since) > 30*time.Second {
			bo.Reset()
		}
		f.idle(ctx, bo.Next())
	}
}

// idle waits d while the link is down, keeping the backlog within its
// bounds.
func (f *forwarder) idle(ctx context.Context, d time.Duration) {
	f.b.setState(StateDown)
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		f.janitor()
		f.flushDeletes(false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-tick.C:
		case <-f.b.kick:
		}
	}
}

// drainLive drops the QoS 0 messages that were waiting for a link that is
// gone.
func (f *forwarder) drainLive() {
	for {
		select {
		case <-f.b.live:
			f.b.stats.DroppedOffline.Add(1)
		default:
			return
		}
	}
}

// forward sends the outbox over up until the link fails or ctx ends.
func (f *forwarder) forward(ctx context.Context, up Upstream) error {
	b := f.b
	f.gen++
	f.last = time.Now()
	f.tokens = 1
	b.up.Store(true)
	b.setState(StateUp)
	period := min(max(f.cfg.ConfirmTimeout/4, 10*time.Millisecond), 250*time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	lastJanitor := time.Now()
	for {
		if err := f.handleResults(ctx, up); err != nil {
			return err
		}
		if up.Blocked() {
			b.setState(StateBlocked)
		} else {
			b.setState(StateUp)
			if err := f.fill(ctx, up); err != nil {
				return err
			}
			if fl, ok := up.(Flusher); ok {
				if err := fl.Flush(); err != nil {
					return err
				}
			}
		}
		f.advance()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-up.Done():
			f.handleResults(ctx, nil)
			if err := up.Err(); err != nil {
				return err
			}
			return ErrLinkLost
		case <-b.ob.wake:
		case m := <-b.live:
			if err := up.Publish(ctx, m, func(error) {}); err != nil {
				return err
			}
			b.stats.Forwarded.Add(1)
		case <-b.kick:
			f.janitor()
		case now := <-tick.C:
			if fl := f.oldestWaiting(); fl != nil && now.Sub(fl.sentAt) > f.cfg.ConfirmTimeout {
				b.stats.Timeouts.Add(1)
				return fmt.Errorf("%w (%v)", errConfirmTimeout, f.cfg.ConfirmTimeout)
			}
			if now.Sub(lastJanitor) >= time.Second {
				lastJanitor = now
				f.janitor()
			}
			if err := f.resendDue(ctx, up, now); err != nil {
				return err
			}
			f.flushDeletes(false)
		}
	}
}

// window is how many messages may await confirmation on up: max_inflight,
// or less when the upstream says so (MQTT Receive Maximum).
func (f *forwarder) window(up Upstream) int {
	w := f.cfg.Replay.MaxInflight
	if rm, ok := up.(interface{ ReceiveMaximum() int }); ok {
		if n := rm.ReceiveMaximum(); n > 0 {
			w = min(w, n)
		}
	}
	return w
}

// fill sends entries while the window and the rate allow.
func (f *forwarder) fill(ctx context.Context, up Upstream) error {
	window := f.window(up)
	for f.waiting < window && f.allow() {
		fl, err := f.read()
		if err != nil {
			return err
		}
		if fl == nil {
			return nil
		}
		f.push(fl)
		if fl.done {
			continue
		}
		if !fl.msg.Expiry.IsZero() && !fl.msg.Expiry.After(f.b.opts.Now()) {
			fl.done = true
			f.b.stats.DroppedExpired.Add(1)
			continue
		}
		if err := f.send(ctx, up, fl); err != nil {
			return err
		}
	}
	return nil
}

// allow takes a token of the max_rate bucket (always true without a rate).
func (f *forwarder) allow() bool {
	rate := f.cfg.Replay.MaxRate
	if rate <= 0 {
		return true
	}
	now := time.Now()
	f.tokens = min(f.tokens+now.Sub(f.last).Seconds()*rate, max(1, rate/10))
	f.last = now
	if f.tokens < 1 {
		return false
	}
	f.tokens--
	return true
}

// send publishes one entry.
func (f *forwarder) send(ctx context.Context, up Upstream, fl *flight) error {
	b := f.b
	m := toMessage(fl.msg, b.opts.Now())
	m.ID, m.Seq = b.messageID(fl.seq, fl.stamp), fl.seq
	gen := f.gen
	wake := b.ob.wake
	confirm := func(err error) {
		f.mu.Lock()
		f.results = append(f.results, result{fl: fl, gen: gen, err: err})
		f.mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if fl.sent || fl.seq < f.sentHigh {
		b.stats.Resent.Add(1)
	}
	f.sentHigh = max(f.sentHigh, fl.seq+1)
	fl.sent, fl.sentAt, fl.awaiting, fl.retryAt = true, time.Now(), true, time.Time{}
	if err := up.Publish(ctx, m, confirm); err != nil {
		return err
	}
	f.waiting++
	b.stats.Forwarded.Add(1)
	return nil
}

// handleResults applies the confirmations received so far.
func (f *forwarder) handleResults(ctx context.Context, up Upstream) error {
	f.mu.Lock()
	rs := f.results
	f.results = nil
	f.mu.Unlock()
	b := f.b
	var linkErr error
	for _, r := range rs {
		if r.gen != f.gen || r.fl.done {
			continue
		}
		fl := r.fl
		fl.awaiting = false
		switch {
		case r.err == nil:
			f.waiting--
			fl.done = true
			b.stats.Confirmed.Add(1)
		case errors.Is(r.err, ErrRejected):
			f.waiting--
			f.rejects[fl.seq]++
			fl.tries = f.rejects[fl.seq]
			if fl.tries < maxRejects {
				// Later, not at once: a missing binding or permission
				// may be fixed meanwhile. The queue goes on.
				wait := retryDelay << (fl.tries - 1)
				b.log.Warn("upstream rejected a message; sending it again later", "seq", fl.seq, "topic", fl.msg.Topic, "try", fl.tries, "in", wait, "err", r.err)
				fl.retryAt = time.Now().Add(wait)
				f.retry = append(f.retry, fl)
				continue
			}
			b.log.Error("upstream rejected a message for good; moved to the dead-letter log", "seq", fl.seq, "topic", fl.msg.Topic, "err", r.err)
			fl.done = true
			f.dead = append(f.dead, session.Change{Kind: session.PutOutbox, Bridge: DeadLetterLog(f.cfg.Name),
				Seq: fl.seq, Stamp: fl.stamp, D: session.Delivery{Msg: fl.msg, QoS: fl.msg.QoS}})
			b.stats.DeadLetter.Add(1)
		default:
			// Nacked, or the link is going: resend from here on a new link.
			f.waiting--
			if linkErr == nil {
				linkErr = r.err
			}
		}
	}
	return linkErr
}

// oldestWaiting returns the oldest flight awaiting its confirmation.
func (f *forwarder) oldestWaiting() *flight {
	if f.waiting == 0 {
		return nil
	}
	for _, fl := range f.fifo[f.head:] {
		if fl.awaiting {
			return fl
		}
	}
	return nil
}

// resendDue sends again the rejected messages whose retry time has come.
func (f *forwarder) resendDue(ctx context.Context, up Upstream, now time.Time) error {
	keep := f.retry[:0]
	var err error
	for _, fl := range f.retry {
		if err != nil || now.Before(fl.retryAt) {
			keep = append(keep, fl)
			continue
		}
		err = f.send(ctx, up, fl)
	}
	clear(f.retry[len(keep):])
	f.retry = keep
	return err
}

func (f *forwarder) push(fl *flight) { f.fifo = append(f.fifo, fl) }

// advance removes the done flights at the front, settles them in the
// backlog and schedules their deletion.
func (f *forwarder) advance() {
	var n, bytes int64
	for f.head < len(f.fifo) && f.fifo[f.head].done {
		fl := f.fifo[f.head]
		f.fifo[f.head] = nil
		f.head++
		f.delTo = fl.seq + 1
		delete(f.skip, fl.seq)
		if len(f.rejects) > 0 {
			delete(f.rejects, fl.seq)
		}
		n++
		bytes += fl.size
	}
	if f.head == len(f.fifo) {
		f.fifo, f.head = f.fifo[:0], 0
	} else if f.head > 1024 && f.head > len(f.fifo)/2 {
		k := copy(f.fifo, f.fifo[f.head:])
		clear(f.fifo[k:])
		f.fifo, f.head = f.fifo[:k], 0
	}
	if n > 0 {
		f.b.ob.settle(n, bytes)
	}
	f.updateOldest()
	if f.delTo-f.delFrom >= deleteBatch || len(f.dead) > 0 {
		f.flushDeletes(false)
	}
}

// updateOldest records the stamp of the oldest entry not done.
func (f *forwarder) updateOldest() {
	if f.head < len(f.fifo) {
		f.b.oldest.Store(f.fifo[f.head].stamp)
	} else if f.peeked != nil {
		f.b.oldest.Store(f.peeked.stamp)
	}
}

// flushDeletes commits the dead letters, then deletes the done entries
// from the log. With wait it waits until both are stored (Stop).
func (f *forwarder) flushDeletes(wait bool) {
	b := f.b
	var done chan error
	if wait {
		done = make(chan error, 2)
	}
	report := func(what string) func(error) {
		return func(err error) {
			if err != nil {
				b.log.Error("bridge could not "+what, "err", err)
			}
			if done != nil {
				done <- err
			}
		}
	}
	n := 0
	if len(f.dead) > 0 {
		b.opts.Log.Commit(&session.Batch{Changes: f.dead}, report("store dead letters"))
		f.dead = nil
		n++
	}
	if f.delTo > f.delFrom {
		ch := session.Change{Kind: session.DelOutbox, Bridge: f.cfg.Name, From: f.delFrom, Seq: f.delTo}
		b.opts.Log.Commit(&session.Batch{Changes: []session.Change{ch}}, report("delete confirmed outbox entries"))
		f.delFrom = f.delTo
		n++
	}
	for range n {
		if done != nil {
			<-done
		}
	}
}

// rewind forgets the link's flights: reading starts again at the first
// entry not done; done ones after it are skipped when met again.
func (f *forwarder) rewind() {
	f.handleResults(context.Background(), nil)
	f.advance()
	if f.head < len(f.fifo) {
		f.cursor = f.fifo[f.head].seq
		for _, fl := range f.fifo[f.head:] {
			if fl.done {
				f.skip[fl.seq] = fl
			} else {
				fl.sentAt = time.Time{}
			}
		}
	} else if f.peeked != nil {
		f.cursor = f.peeked.seq
	}
	clear(f.fifo)
	clear(f.retry)
	f.fifo, f.head, f.waiting, f.peeked, f.retry = f.fifo[:0], 0, 0, nil, f.retry[:0]
	f.rbuf, f.rpos = nil, 0
	f.b.ob.rewind(f.cursor)
}

// read returns the next entry to forward, nil when none is ready.
func (f *forwarder) read() (*flight, error) {
	if fl := f.peeked; fl != nil {
		f.peeked = nil
		return fl, nil
	}
	for {
		if f.rpos < len(f.rbuf) {
			fl := f.rbuf[f.rpos]
			f.rbuf[f.rpos] = nil
			f.rpos++
			if fl.seq < f.cursor {
				continue
			}
			f.cursor = fl.seq + 1
			return f.known(fl), nil
		}
		e, ok, diskTo := f.b.ob.take(f.cursor)
		if ok {
			f.cursor = e.seq + 1
			if e.state == failed {
				continue
			}
			return f.known(&flight{seq: e.seq, stamp: e.stamp, size: e.size, msg: e.msg}), nil
		}
		if diskTo <= f.cursor {
			return nil, nil
		}
		if err := f.readDisk(diskTo); err != nil {
			return nil, err
		}
	}
}

// known returns the flight already done for fl's seq, if any.
func (f *forwarder) known(fl *flight) *flight {
	if k, ok := f.skip[fl.seq]; ok {
		return k
	}
	return fl
}

// readDisk reads the next entries before diskTo from the log.
func (f *forwarder) readDisk(diskTo uint64) error {
	f.rbuf, f.rpos = f.rbuf[:0], 0
	err := f.b.opts.Log.ReadOutbox(f.cfg.Name, f.cursor, 256, func(seq uint64, stamp int64, m *session.Message) bool {
		if seq >= diskTo {
			return false
		}
		f.rbuf = append(f.rbuf, &flight{seq: seq, stamp: stamp, size: msgSize(m), msg: m})
		return true
	})
	if err != nil {
		return fmt.Errorf("bridge: read outbox: %w", err)
	}
	if len(f.rbuf) == 0 {
		f.cursor = diskTo
	}
	return nil
}

// janitor keeps the backlog within backlog.max_bytes (drop-oldest) and
// backlog.max_age: it drops the oldest entries not yet sent.
func (f *forwarder) janitor() {
	b := f.b
	_, bytes := b.ob.backlog()
	maxBytes := f.cfg.Backlog.MaxBytes
	dropOldest := f.cfg.Backlog.WhenFull == DropOldest
	cutoff := b.opts.Now().Add(-f.cfg.Backlog.MaxAge).UnixNano()
	for {
		over := dropOldest && bytes > maxBytes
		fl, err := f.read()
		if err != nil {
			b.log.Error("bridge janitor", "err", err)
			return
		}
		if fl == nil {
			break
		}
		switch {
		case fl.done:
		case over:
			fl.done = true
			b.stats.DroppedFull.Add(1)
			bytes -= fl.size
		case fl.stamp < cutoff:
			fl.done = true
			b.stats.DroppedAge.Add(1)
			bytes -= fl.size
		default:
			f.peeked = fl
			f.advance()
			return
		}
		f.push(fl)
	}
	f.advance()
}
