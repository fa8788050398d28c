package broker

import (
	"fmt"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// restore loads the sessions and retained messages of a durable store
// before the listeners open: subscriptions go back into the trie, inflight
// messages and incoming QoS 2 ids into their sessions, and queues stay on
// disk until their clients return. A session whose expiry passed while
// the broker was down is deleted. Sessions that were online when the
// broker stopped count their expiry from now.
func (s *Server) restore() error {
	if !s.durable {
		return nil
	}
	start := s.now()
	t := s.newTxn()
	var sessions, expired, queued int
	err := s.store.Load(func(sv *session.Saved) error {
		if s.restoreSession(sv, start, t) {
			sessions++
			queued += sv.QueueLen + len(sv.Inflight)
		} else {
			expired++
		}
		return nil
	})
	if err != nil {
		t.release()
		return fmt.Errorf("loading sessions: %w", err)
	}
	var retained int
	err = s.store.LoadRetained(func(m *session.Message) error {
		if m.Expired(start) {
			t.add(session.Change{Kind: session.DelRetained, Topic: m.Topic})
			return nil
		}
		s.retained.Set(m.Topic, m)
		retained++
		return nil
	})
	if err != nil {
		t.release()
		return fmt.Errorf("loading retained messages: %w", err)
	}
	if err := s.commitWait(t); err != nil {
		return fmt.Errorf("storing restored sessions: %w", err)
	}
	s.log.Info("sessions restored", "sessions", sessions, "expired", expired,
		"queued_messages", queued, "retained", retained, "took", s.now().Sub(start).Round(time.Millisecond))
	return nil
}

// restoreSession rebuilds one stored session; it returns false (and
// deletes it, in t) when it expired while the broker was down.
func (s *Server) restoreSession(sv *session.Saved, now time.Time, t *txn) bool {
	id := sv.ClientID
	info := sv.Info
	var left time.Duration
	if info.Expiry != session.NeverExpire {
		from := info.DisconnectedAt
		if from.IsZero() {
			from = now // it was online when the broker stopped
		}
		left = from.Add(time.Duration(info.Expiry) * time.Second).Sub(now)
		if left <= 0 || info.Expiry == 0 {
			t.add(session.Change{Kind: session.DelSession, ClientID: id})
			return false
		}
	}
	if info.DisconnectedAt.IsZero() {
		info.DisconnectedAt = now
		t.add(session.Change{Kind: session.PutSession, ClientID: id, Info: info})
	}
	st := session.New(id)
	st.Expiry = info.Expiry
	st.Restore(sv.NextSeq, sv.QueueFirst, sv.QueueLen)
	for _, f := range sv.Inflight {
		in := f.Inflight
		in.Seq = f.Seq
		st.RestoreInflight(in)
	}
	for _, pid := range sv.QoS2In {
		st.RestoreQoS2(pid)
	}
	ss := &sess{st: st, durable: true, gen: 1}
	ss.version = packet.Version(info.Version)
	for _, sub := range sv.Subs {
		sub.ClientID = id
		s.trie.Subscribe(sub)
	}
	if info.Expiry != session.NeverExpire {
		gen := ss.gen
		ss.expiryTimer = time.AfterFunc(left, func() { s.expire(ss, id, gen) })
	}
	s.smu.Lock()
	s.sessions[id] = ss
	s.smu.Unlock()
	return true
}
