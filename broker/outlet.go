package broker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferrymq/ferrymq/session"
)

// Outlet is where a bridge (package bridge, wired in by cmd/ferrymq) takes
// the messages published on this broker (DESIGN.md §5). The broker does
// not know bridges: it offers every message it routes to every outlet,
// writes the change an outlet returns in the same batch as the publish
// (so a QoS 1/2 message is in the bridge's durable outbox before its
// publisher gets PUBACK/PUBREC) and tells the outlet when that batch is
// durable.
//
// Offer and Committed are called from many goroutines at once (Committed
// on the store's writer goroutine); they must not block and must not call
// back into the Server.
type Outlet interface {
	// Offer looks at a message about to be routed. durable reports
	// whether the broker writes changes at all (a durable store). When
	// the outlet keeps the message in its durable outbox it returns the
	// change to commit (a session.PutOutbox) and queued true; the broker
	// then calls Committed with the change's Seq exactly once. An error
	// wrapping session.ErrFull refuses the whole publish (the outbox is
	// full and its policy is to refuse): the message goes nowhere, a v5
	// publisher gets 0x97 (Quota exceeded), a 3.1.1 one is disconnected
	// and resends later.
	Offer(m *session.Message, durable bool) (ch session.Change, queued bool, err error)
	// Committed reports the outcome of the batch that held the change
	// Offer returned for seq: nil once it is durable.
	Committed(seq uint64, err error)
}

// outRef is an outbox write waiting for its commit.
type outRef struct {
	o   Outlet
	seq uint64
}

// AddOutlet attaches a bridge. Call it before Start: outlets are read
// without locks on the publish path.
func (s *Server) AddOutlet(o Outlet) {
	s.outlets = append(s.outlets, o)
}

// OnStop registers fn to run during Shutdown after every connection has
// ended (their wills published) and before the store is closed: bridges
// stop there, so that they still see the last messages and save their
// state.
func (s *Server) OnStop(fn func()) {
	s.onStop = append(s.onStop, fn)
}

// offer hands m to every outlet and adds their outbox writes to t. It
// returns the first refusal (the message must then not be routed).
func (s *Server) offer(m *session.Message, t *txn) error {
	if len(s.outlets) == 0 {
		return nil
	}
	for _, o := range s.outlets {
		ch, queued, err := o.Offer(m, t != nil)
		if err != nil {
			// Outlets that queued it already are told it was not stored.
			for _, r := range t.outs() {
				r.o.Committed(r.seq, err)
			}
			t.clearOuts()
			return err
		}
		if queued {
			t.add(ch)
			t.outRefs = append(t.outRefs, outRef{o: o, seq: ch.Seq})
		}
	}
	return nil
}

func (t *txn) outs() []outRef {
	if t == nil {
		return nil
	}
	return t.outRefs
}

func (t *txn) clearOuts() {
	if t == nil {
		return
	}
	clear(t.outRefs)
	t.outRefs = t.outRefs[:0]
}

// errInjectStopped refuses local publishes once Shutdown has begun.
var errInjectStopped = errors.New("broker: shutting down")

// Inject publishes m on this broker as an internal publisher would: it is
// retained if m.Retain, routed to every matching subscription and offered
// to every outlet (an outlet skips what it injected itself, by m.Origin).
// done (may be nil) is called once every durable destination is stored
// (nil) or could not be (the error): a bridge acknowledges an upstream
// message only then. A QoS 0 message, and any message under "$SYS/", is
// neither stored nor retained on disk.
//
// m must be a fresh message that the caller no longer modifies. Origin
// should name the injector in a way no client id can ("\x00..."; client
// ids never hold U+0000 [MQTT-1.5.4-2]).
func (s *Server) Inject(m *session.Message, done func(error)) {
	s.smu.RLock()
	closing := s.closing
	s.smu.RUnlock()
	if closing {
		if done != nil {
			done(errInjectStopped)
		}
		return
	}
	var t *txn
	if m.QoS > 0 && !strings.HasPrefix(m.Topic, "$SYS/") {
		t = s.newTxn()
	}
	if err := s.offer(m, t); err != nil {
		t.release()
		if done != nil {
			done(fmt.Errorf("broker: publish to %q refused: %w", m.Topic, err))
		}
		return
	}
	if m.QoS == 2 && t != nil {
		m.Hold()
		t.msg = m
	}
	if m.Retain {
		s.retain(m, t)
	}
	s.route(m, nil, t)
	s.commit(t, done)
}
