package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
)

// pending is one publish waiting for its confirmation.
type pending struct {
	dc      *amqp091.DeferredConfirmation // nil when err is already known
	err     error
	key, id string
	seq     uint64
	confirm func(error)
}

// Publish sends m to the exchange with the mandatory flag, persistent, and
// calls confirm once the broker confirmed it (nil), returned it (an error
// wrapping bridge.ErrRejected), nacked it (ErrNacked) or the link was lost
// first (bridge.ErrLinkLost). Confirmations come in Publish order from one
// goroutine. A message AMQP cannot carry (a short string over 255 bytes)
// is confirmed with bridge.ErrRejected without being sent.
//
// Publish blocks while the broker holds the connection back (TCP
// backpressure, a resource alarm: see Blocked) or the link is half-open.
// When ctx ends meanwhile, the link is closed (a frame partly written
// cannot be taken back) and Publish returns an error wrapping
// bridge.ErrLinkLost within a few seconds.
func (u *Upstream) Publish(ctx context.Context, m *bridge.Message, confirm func(error)) error {
	if !u.ready.Load() {
		if err := u.Err(); err != nil {
			return err
		}
		return errNotConnected
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key, msg, perr := publishing(m)
	p := &pending{err: perr, key: key, id: m.ID, seq: m.Seq, confirm: confirm}

	u.pubMu.Lock()
	defer u.pubMu.Unlock()
	if perr == nil {
		dc, err := u.send(ctx, key, msg)
		if err != nil {
			return err
		}
		p.dc = dc
	}
	u.mu.Lock()
	if u.down {
		// The link was lost while we were sending: the confirm loop may
		// have failed the pending publishes already, so this one is not
		// queued behind them; it may or may not have reached the
		// broker.
		err := u.err
		u.mu.Unlock()
		return err
	}
	u.pending = append(u.pending, p)
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
	return nil
}

// send writes one publish (pubMu held). Any failure loses the link: the
// library has already given up on the connection.
func (u *Upstream) send(ctx context.Context, key string, msg amqp091.Publishing) (*amqp091.DeferredConfirmation, error) {
	select {
	case <-u.lost:
		return nil, u.Err()
	default:
	}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			u.linkDown(fmt.Errorf("publish interrupted: %w", context.Cause(ctx)))
		})
	}
	dc, err := u.pub.PublishWithDeferredConfirm(u.cfg.Exchange, key, true, false, msg)
	if !stop() && err == nil {
		// Sent after all, but the link is going down: the confirm loop
		// no longer takes it.
		err = errors.New("publish interrupted")
	}
	if err != nil {
		u.linkDown(fmt.Errorf("publish: %w", err))
		return nil, u.Err()
	}
	return dc, nil
}

// confirmLoop works out the confirmations in publish order and queues them
// for deliverLoop. It never runs the callers' code, so it is always ready
// to take the basic.return notifications, which amqp091-go drops when they
// wait more than 5 s.
func (u *Upstream) confirmLoop() {
	defer u.results.finish()
	rq := &returnQueue{ch: u.returns, log: u.log}
	for {
		u.mu.Lock()
		var p *pending
		if len(u.pending) > 0 {
			p = u.pending[0]
		}
		down := u.down
		u.mu.Unlock()

		if p == nil {
			if down {
				return
			}
			select {
			case <-u.wake:
			case r, ok := <-rq.ch:
				rq.add(r, ok)
			case <-u.lost:
			}
			continue
		}
		if p.dc != nil && !down {
			select {
			case <-p.dc.Done():
			case r, ok := <-rq.ch:
				rq.add(r, ok)
				continue
			case <-u.lost:
				continue
			}
		}
		err := u.outcome(p, rq, down)
		u.mu.Lock()
		u.pending[0] = nil
		u.pending = u.pending[1:]
		if len(u.pending) == 0 {
			u.pending = nil
		}
		u.mu.Unlock()
		u.results.push(p.confirm, err)
	}
}

// outcome is the confirmation of p, the oldest pending publish, once the
// broker confirmed it or the link is down.
//
// A basic.return of a message reaches the returns channel before the
// library processes the basic.ack of the same message (both come from the
// connection's reader goroutine, in that order), and returns come in
// publish order: so when p's confirmation is done, its return, if any, is
// among the returns drained so far, ahead of those of later messages.
func (u *Upstream) outcome(p *pending, rq *returnQueue, down bool) error {
	if p.dc == nil {
		return p.err
	}
	rq.drain()
	if r, ok := rq.take(p); ok {
		return fmt.Errorf("%w: basic.return %d %s (exchange %q, routing key %q)",
			bridge.ErrRejected, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
	}
	switch {
	case p.dc.Acked():
		return nil
	case down:
		return u.Err()
	case u.pub.IsClosed():
		// Nacked because the channel is closing (the library nacks
		// what is pending then): the watcher reports the broker's
		// reason.
		select {
		case <-u.lost:
		case <-time.After(closeTimeout):
			u.linkDown(errors.New("publishing channel closed"))
		}
		return u.Err()
	default:
		return ErrNacked
	}
}

// returnQueue holds the basic.return notifications not yet matched to
// their publish, in arrival (publish) order.
type returnQueue struct {
	ch   <-chan amqp091.Return // nil once closed
	list []amqp091.Return
	log  interface{ Warn(string, ...any) }
}

func (q *returnQueue) add(r amqp091.Return, ok bool) {
	if !ok {
		q.ch = nil
		return
	}
	q.list = append(q.list, r)
}

// drain takes every notification already in the channel.
func (q *returnQueue) drain() {
	for q.ch != nil {
		select {
		case r, ok := <-q.ch:
			q.add(r, ok)
		default:
			return
		}
	}
}

// take removes and returns the return of p, if there is one. Returns ahead
// of it belong to messages already confirmed, which cannot be: they are
// dropped (and logged) so that they do not hide later matches.
func (q *returnQueue) take(p *pending) (amqp091.Return, bool) {
	for i := range q.list {
		if !returnMatches(&q.list[i], p.key, p.id, p.seq) {
			continue
		}
		r := q.list[i]
		if i > 0 {
			q.log.Warn("amqp: basic.return of a message already confirmed, ignored", "count", i, "routing_key", q.list[0].RoutingKey)
		}
		clear(q.list[:i+1])
		q.list = q.list[i+1:]
		if len(q.list) == 0 {
			q.list = nil
		}
		return r, true
	}
	return amqp091.Return{}, false
}

// result is one confirmation to deliver.
type result struct {
	confirm func(error)
	err     error
}

// resultQueue passes confirmations from confirmLoop to deliverLoop, in
// order, without ever blocking confirmLoop.
type resultQueue struct {
	mu       sync.Mutex
	items    []result
	finished bool          // confirmLoop ended: no more items
	wake     chan struct{} // capacity 1
}

func (q *resultQueue) push(confirm func(error), err error) {
	q.mu.Lock()
	q.items = append(q.items, result{confirm, err})
	q.mu.Unlock()
	q.signal()
}

func (q *resultQueue) finish() {
	q.mu.Lock()
	q.finished = true
	q.mu.Unlock()
	q.signal()
}

func (q *resultQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// deliverLoop calls the confirmations in order and closes Done after the
// last one.
func (u *Upstream) deliverLoop() {
	q := &u.results
	var batch []result
	for {
		q.mu.Lock()
		batch, q.items = q.items, batch[:0]
		finished := q.finished
		q.mu.Unlock()
		for i := range batch {
			batch[i].confirm(batch[i].err)
			batch[i] = result{}
		}
		if len(batch) == 0 {
			if finished {
				close(u.done)
				return
			}
			<-q.wake
		}
	}
}
