package broker

import (
	"errors"
	"fmt"
	"sync"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// Durability. With a durable store (Store.Durable), every change to a
// session that must survive a restart is collected in a txn while one
// event is handled (a PUBLISH and all its durable destinations, an
// acknowledgement and the deliveries it lets go, a SUBSCRIBE...) and
// committed as one batch. What promises durability to a client waits for
// the commit:
//
//   - PUBACK/PUBREC to a publisher, PUBCOMP after the incoming QoS 2 id is
//     forgotten, and PUBREL after an outbound QoS 2 reaches its PUBREL
//     phase go out from the commit's done callback, in the order the
//     client's packets arrived (client.ackAfter).
//   - SUBACK and UNSUBACK go out after their subscriptions are stored.
//   - A QoS 2 message is held in every queue until its publish is durable
//     (else a crash after a live delivery, and the publisher's resend,
//     would deliver it twice), and a QoS 2 PUBLISH to a durable session
//     is written only once its inflight record (with its packet id) is.
//
// QoS 1 deliveries to online subscribers go out at once, from memory.
// The store calls done callbacks in commit order, on its writer goroutine;
// they take session and client locks in the documented order and never
// block.

// refillChunk is how many queued deliveries a durable session reads back
// from disk at a time; memWindow is how many it keeps in RAM while online.
const (
	refillChunk = 64
	memWindow   = 1024
)

// errStoreFailed ends a connection whose acknowledgement could not be
// made durable (a 3.1.1 publisher keeps and resends its message).
var errStoreFailed = fmt.Errorf("session store write failed: %w", packet.UnspecifiedError)

// txn collects the durable changes made while handling one event and
// what to do once they are committed.
type txn struct {
	b     session.Batch
	msg   *session.Message // a held QoS 2 message released by this commit
	dests []destRef        // durable queue writes: Committed(seq) after the commit
	held  []*sess          // sessions queueing msg while it is held
	sends []sendRef        // QoS 2 PUBLISHes written after their inflight record
	// outRefs are bridge outbox writes: Outlet.Committed after the commit.
	outRefs []outRef
	// refused, when set, is the answer to the publish instead of a commit
	// (an outlet refused it): nothing is written.
	refused error
}

type destRef struct {
	ss  *sess
	seq uint64
}

type sendRef struct {
	ss *sess
	c  *client
	id uint16
}

var txnPool = sync.Pool{New: func() any { return new(txn) }}

// newTxn returns an empty txn, or nil when the store keeps nothing.
func (s *Server) newTxn() *txn {
	if !s.durable {
		return nil
	}
	return txnPool.Get().(*txn)
}

func (t *txn) add(ch session.Change) {
	if t != nil {
		t.b.Add(ch)
	}
}

// lastChange returns the change added last, or nil.
func (t *txn) lastChange() *session.Change {
	if t == nil || len(t.b.Changes) == 0 {
		return nil
	}
	return &t.b.Changes[len(t.b.Changes)-1]
}

// empty reports whether committing t would change nothing on disk.
func (t *txn) empty() bool { return t == nil || t.b.Empty() }

func (t *txn) release() {
	if t == nil {
		return
	}
	t.b.Reset()
	t.msg = nil
	clear(t.dests)
	clear(t.held)
	clear(t.sends)
	clear(t.outRefs)
	t.dests, t.held, t.sends, t.outRefs = t.dests[:0], t.held[:0], t.sends[:0], t.outRefs[:0]
	t.refused = nil
	txnPool.Put(t)
}

// commit stores t and then runs its follow-ups and then(err) (may be
// nil). Without a durable store it runs them at once.
func (s *Server) commit(t *txn, then func(error)) {
	if t == nil {
		if then != nil {
			then(nil)
		}
		return
	}
	if t.empty() && then == nil {
		s.afterCommit(t, nil, false)
		t.release()
		return
	}
	if t.refused != nil {
		// An ordering barrier: the refusal is answered in packet order.
		refused := t.refused
		t.b.Reset()
		s.store.Commit(&t.b, func(error) {
			s.afterCommit(t, refused, true)
			if then != nil {
				then(refused)
			}
			t.release()
		})
		return
	}
	s.store.Commit(&t.b, func(err error) {
		switch {
		case err == nil:
		case errors.Is(err, session.ErrFull):
			// The store logs when it becomes full and when it recovers.
			if then == nil {
				s.stats.DroppedFull.Add(1)
			}
		default:
			s.stats.StoreErrors.Add(1)
			s.log.Error("session store commit failed", "err", err)
		}
		s.afterCommit(t, err, true)
		if then != nil {
			then(err)
		}
		t.release()
	})
}

// commitWait commits t and waits until it is durable (SUBSCRIBE,
// UNSUBSCRIBE: rare, and the client waits for their answer anyway).
func (s *Server) commitWait(t *txn) error {
	if t.empty() {
		s.commit(t, nil)
		return nil
	}
	ch := make(chan error, 1)
	s.commit(t, func(err error) { ch <- err })
	return <-ch
}

// afterCommit releases or drops a held message, tells durable queues
// their writes are over, lets queues move again and writes deferred QoS 2
// PUBLISHes. It runs on the store's writer goroutine (fromStore) or
// inline.
func (s *Server) afterCommit(t *txn, err error, fromStore bool) {
	for _, r := range t.outRefs {
		r.o.Committed(r.seq, err)
	}
	if t.msg != nil {
		if err != nil {
			t.msg.Drop()
		} else {
			t.msg.Release()
		}
	}
	if len(t.dests) == 0 && len(t.held) == 0 && len(t.sends) == 0 {
		return
	}
	next := s.newTxn()
	var touched []*client
	pump := func(ss *sess) {
		if c := ss.c; c != nil {
			c.pumpLocked(ss, next)
			touched = append(touched, c)
		}
	}
	for _, d := range t.dests {
		d.ss.mu.Lock()
		d.ss.st.Committed(d.seq)
		pump(d.ss)
		d.ss.mu.Unlock()
	}
	for _, ss := range t.held {
		ss.mu.Lock()
		pump(ss)
		ss.mu.Unlock()
	}
	for _, r := range t.sends {
		r.ss.mu.Lock()
		if r.ss.c == r.c {
			r.c.sendDeferredLocked(r.ss, r.id, next)
			touched = append(touched, r.c)
		}
		r.ss.mu.Unlock()
	}
	s.commit(next, nil)
	for i, c := range touched {
		if i == 0 || touched[i-1] != c {
			if fromStore {
				s.flushLater(c)
			} else {
				c.flushAsync()
			}
		}
	}
}

// flushLater writes c's output after the store's current batch of
// callbacks (one write for all the acknowledgements of a batch), or at
// once when the store does not say when batches end. Store callbacks only.
func (s *Server) flushLater(c *client) {
	if !s.batchHook {
		c.flushAsync()
		return
	}
	if c.flushQueued.Swap(true) {
		return
	}
	s.flushMu.Lock()
	s.flushq = append(s.flushq, c)
	s.flushMu.Unlock()
}

// flushQueued writes the output queued by flushLater; the store runs it
// after each batch of callbacks.
func (s *Server) flushQueued() {
	s.flushMu.Lock()
	q := s.flushq
	s.flushq = nil
	s.flushMu.Unlock()
	for _, c := range q {
		c.flushQueued.Store(false)
		c.flushAsync()
	}
}

// sendDeferredLocked writes a QoS 2 PUBLISH whose inflight record is now
// durable, if it is still waiting for its PUBREC (ss.mu held).
func (c *client) sendDeferredLocked(ss *sess, id uint16, t *txn) {
	f, ok := ss.st.Get(id)
	if !ok || f.Phase != session.AwaitPubrec || f.D.Msg == nil {
		return
	}
	c.wmu.Lock()
	sent := c.encodePublishLocked(f.D, id, false)
	closed := c.closed
	c.wmu.Unlock()
	if !sent && !closed {
		ss.st.Pubrec(id, true) // too large now: treated as delivered [MQTT-3.1.2-25]
		t.add(session.Change{Kind: session.DelInflight, ClientID: ss.st.ClientID, PacketID: id})
	}
}

// ackAfter sends a (the answer to one of this client's packets) once t is
// durable, after every earlier answer that waits for the store: answers
// keep the order of the packets they answer [MQTT-4.6.0-2]. Only the
// serve goroutine calls it.
func (c *client) ackAfter(t *txn, a packet.Ack) {
	if t.empty() && (t == nil || t.refused == nil) && c.pendingAcks.Load() == 0 {
		c.srv.commit(t, nil)
		c.appendPacket(&a)
		c.markDirty(c)
		return
	}
	c.pendingAcks.Add(1)
	then := func(err error) {
		if err == nil || c.failAck(&a, err) {
			c.appendPacket(&a)
		}
		c.pendingAcks.Add(-1)
		c.srv.flushLater(c)
	}
	if t == nil { // memory store, but an earlier answer is still waiting
		c.srv.store.Commit(nil, then)
		return
	}
	c.srv.commit(t, then)
}

// failAck decides what a client gets when the change an answer depends on
// could not be stored. A v5 publisher gets its PUBACK/PUBREC with 0x97
// (quota exceeded: the disk is full) or 0x80; anyone else is disconnected
// without the answer, so that it resends [MQTT-4.4.0-1]. It reports
// whether a is still to be sent.
func (c *client) failAck(a *packet.Ack, err error) bool {
	if a.Kind == packet.PUBREC {
		// The exchange ends here: a resend is a new message.
		c.ss.mu.Lock()
		c.ss.st.ReleaseQoS2(a.PacketID)
		c.ss.mu.Unlock()
	}
	full := errors.Is(err, session.ErrFull)
	if full {
		c.srv.stats.RefusedFull.Add(1)
	}
	if c.version == packet.V5 && (a.Kind == packet.PUBACK || a.Kind == packet.PUBREC) {
		a.ReasonCode = packet.UnspecifiedError
		if full {
			a.ReasonCode = packet.QuotaExceeded
		}
		return true
	}
	c.srv.goOwned(func() { c.closeWith(fmt.Errorf("%w: %w", errStoreFailed, err)) })
	return false
}
