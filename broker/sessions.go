package broker

import (
	"errors"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// sess is a session in the registry: its state, and the connection it is
// attached to while the client is online.
type sess struct {
	mu      sync.Mutex
	st      *session.State
	c       *client // nil while offline
	version packet.Version
	gen     uint64 // bumped on every attach/detach; stale timers compare it
	gone    bool   // removed from the registry
	durable bool   // kept in the store: it outlives its connection and the store is durable

	expiryTimer *time.Timer
	will        *will // pending delayed will of the last connection
	willTimer   *time.Timer
}

func (ss *sess) stopTimers() {
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
		ss.expiryTimer = nil
	}
	if ss.willTimer != nil {
		ss.willTimer.Stop()
		ss.willTimer = nil
	}
}

// errServerClosing refuses connections that arrive during shutdown.
var errServerClosing = errors.New("server is shutting down")

// attach binds connection c to the session of its client id, taking over
// any connection that holds it [MQTT-3.1.4-3], and starting a fresh
// session on Clean Start [MQTT-3.1.2-4] or resuming the old one
// [MQTT-3.1.2-5]. It returns whether a session was present. Changes to
// store go to t.
func (s *Server) attach(c *client, clean bool, expiry uint32, t *txn) (*sess, bool, error) {
	for {
		s.smu.Lock()
		if s.closing {
			s.smu.Unlock()
			return nil, false, errServerClosing
		}
		ss := s.sessions[c.id]
		if ss == nil {
			ss = &sess{st: session.New(c.id)}
			s.sessions[c.id] = ss
		}
		ss.mu.Lock()
		if old := ss.c; old != nil {
			// Take over: close the old connection and wait until it has
			// detached, then try again [MQTT-3.1.4-3].
			old.takenOver.Store(true)
			ss.mu.Unlock()
			s.smu.Unlock()
			old.closeWith(errTakenOver)
			<-old.done
			continue
		}
		present := ss.gen > 0 // the session existed before this connection [MQTT-3.2.2-2]
		var pending *will
		if ss.will != nil {
			if clean {
				pending = ss.will // the old session ends: its will goes now
			}
			ss.will = nil // a new connection to the session cancels a delayed will [MQTT-3.1.3-9]
		}
		ss.stopTimers()
		if clean {
			if ss.durable {
				t.add(session.Change{Kind: session.DelSession, ClientID: c.id})
				ss.durable = false
			}
			ss.st.Clear()
			s.trie.UnsubscribeAll(c.id)
			present = false
		}
		ss.st.Expiry = expiry
		ss.c = c
		ss.version = c.version
		ss.gen++
		// A resumed durable session stays durable (its queue is on disk)
		// until it ends, whatever expiry this connection asks for.
		ss.durable = t != nil && (ss.durable || expiry > 0)
		if ss.durable {
			t.add(session.Change{Kind: session.PutSession, ClientID: c.id,
				Info: session.Info{Version: byte(c.version), Expiry: expiry}})
		}
		c.ss = ss
		ss.mu.Unlock()
		s.smu.Unlock()
		if pending != nil {
			s.publishWill(pending)
		}
		return ss, present, nil
	}
}

// detach unbinds c from its session when its connection ends, publishes or
// schedules its will, and removes or schedules the expiry of the session.
func (s *Server) detach(c *client) {
	ss := c.ss
	if ss == nil {
		return
	}
	t := s.newTxn()
	defer s.commit(t, nil)
	w := c.takeWill()
	s.smu.Lock()
	ss.mu.Lock()
	if ss.c != c {
		ss.mu.Unlock()
		s.smu.Unlock()
		if w != nil {
			s.publishWill(w)
		}
		return
	}
	ss.c = nil
	ss.gen++
	expiry := ss.st.Expiry
	var now *will
	if w != nil {
		delay := w.delay
		if expiry != session.NeverExpire && delay > expiry {
			delay = expiry // the will goes when the session ends, if sooner [MQTT-3.1.3-9]
		}
		if delay == 0 {
			now = w
		} else {
			// Also on a takeover: the new connection to the session,
			// waiting in attach, cancels it [MQTT-3.1.3-9] (or publishes
			// it at once if it starts a clean session, ending this one).
			ss.will = w
			gen := ss.gen
			ss.willTimer = time.AfterFunc(time.Duration(delay)*time.Second, func() { s.willDue(ss, gen) })
		}
	}
	if c.takenOver.Load() {
		// The session passes to the new connection, which is waiting for
		// this detach: it exists at that CONNECT, so it is resumed
		// [MQTT-3.1.2-5] whatever its expiry.
	} else if expiry == 0 {
		s.removeLocked(ss, c.id, t)
	} else {
		if expiry != session.NeverExpire {
			gen := ss.gen
			ss.expiryTimer = time.AfterFunc(time.Duration(expiry)*time.Second, func() { s.expire(ss, c.id, gen) })
		}
		if ss.durable {
			// Its queue waits on disk; the expiry counts from now, across restarts.
			ss.st.SpillQueue()
			t.add(session.Change{Kind: session.PutSession, ClientID: c.id,
				Info: session.Info{Version: byte(ss.version), Expiry: expiry, DisconnectedAt: s.now()}})
		}
	}
	ss.mu.Unlock()
	s.smu.Unlock()
	if now != nil {
		s.publishWill(now)
	}
}

// removeLocked deletes a session (smu and ss.mu held), from the store too
// (in t). A pending will is published by the caller.
func (s *Server) removeLocked(ss *sess, id string, t *txn) {
	if ss.durable {
		t.add(session.Change{Kind: session.DelSession, ClientID: id})
		ss.durable = false
	}
	ss.gone = true
	ss.stopTimers()
	if s.sessions[id] == ss {
		delete(s.sessions, id)
	}
	s.trie.UnsubscribeAll(id)
	ss.st.Clear()
}

// expire ends an offline session whose expiry interval has passed
// [MQTT-3.1.2-23], publishing a will still waiting for its delay.
func (s *Server) expire(ss *sess, id string, gen uint64) {
	s.smu.Lock()
	ss.mu.Lock()
	if ss.gen != gen || ss.c != nil || ss.gone {
		ss.mu.Unlock()
		s.smu.Unlock()
		return
	}
	w := ss.will
	ss.will = nil
	t := s.newTxn()
	s.removeLocked(ss, id, t)
	ss.mu.Unlock()
	s.smu.Unlock()
	s.commit(t, nil)
	if w != nil {
		s.publishWill(w)
	}
}

// willDue publishes a delayed will whose delay has passed, if the client
// has not come back meanwhile.
func (s *Server) willDue(ss *sess, gen uint64) {
	ss.mu.Lock()
	w := ss.will
	if ss.gen != gen || w == nil {
		ss.mu.Unlock()
		return
	}
	ss.will = nil
	ss.willTimer = nil
	ss.mu.Unlock()
	s.publishWill(w)
}
