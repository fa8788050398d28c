package broker

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

var resultPool = sync.Pool{New: func() any { return new(topics.Result) }}

// route delivers m to every matching subscription. A client with several
// matching subscriptions gets one copy at the highest granted QoS with
// every matching subscription identifier [MQTT-3.3.4-2] [MQTT-3.3.4-3]; a
// shared group gets one copy for one member [MQTT-4.8.2-3]. from is the
// publishing connection (nil for wills): its goroutine flushes the
// receivers after its read batch. Durable destinations are added to t.
func (s *Server) route(m *session.Message, from *client, t *txn) {
	r := resultPool.Get().(*topics.Result)
	r.Reset()
	s.trie.Match(m.Topic, r)
	subs := r.Subs
	if len(subs) > 1 {
		slices.SortFunc(subs, func(a, b topics.Subscription) int { return strings.Compare(a.ClientID, b.ClientID) })
	}
	for i := 0; i < len(subs); {
		j := i + 1
		for j < len(subs) && subs[j].ClientID == subs[i].ClientID {
			j++
		}
		if d, ok := merge(m, subs[i:j]); ok {
			s.deliver(subs[i].ClientID, d, from, t)
		}
		i = j
	}
	for gi := range r.Groups {
		if sub, ok := s.pickShared(&r.Groups[gi]); ok {
			d := session.Delivery{Msg: m, QoS: min(m.QoS, sub.QoS), Retain: m.Retain && sub.RetainAsPublished}
			if sub.ID != 0 {
				d.SubIDs = []uint32{sub.ID}
			}
			s.deliver(sub.ClientID, d, from, t)
		}
	}
	r.Reset()
	resultPool.Put(r)
}

// merge folds one client's matching subscriptions into one delivery.
// Subscriptions with No Local do not match the publisher's own messages
// [MQTT-3.8.3-3]. RETAIN is kept only under Retain As Published
// [MQTT-3.3.1-12] (3.1.1 clears it [MQTT-3.3.1-9]).
func merge(m *session.Message, subs []topics.Subscription) (session.Delivery, bool) {
	d := session.Delivery{Msg: m}
	matched := false
	for i := range subs {
		sub := &subs[i]
		if sub.NoLocal && sub.ClientID == m.Origin {
			continue
		}
		matched = true
		if sub.QoS > d.QoS {
			d.QoS = sub.QoS
		}
		if sub.RetainAsPublished && m.Retain {
			d.Retain = true
		}
		if sub.ID != 0 {
			d.SubIDs = append(d.SubIDs, sub.ID)
		}
	}
	d.QoS = min(d.QoS, m.QoS) // [MQTT-3.8.4-8]
	return d, matched
}

// pickShared chooses the group member for one message: round robin,
// preferring members that are online.
func (s *Server) pickShared(g *topics.Group) (topics.Subscription, bool) {
	if len(g.Members) == 0 {
		return topics.Subscription{}, false
	}
	key := g.Name + "\x00" + g.Filter
	v, ok := s.shareRR.Load(key)
	if !ok {
		v, _ = s.shareRR.LoadOrStore(key, new(atomic.Uint32))
	}
	start := int(v.(*atomic.Uint32).Add(1)) % len(g.Members)
	for k := range len(g.Members) {
		sub := g.Members[(start+k)%len(g.Members)]
		if ss := s.lookup(sub.ClientID); ss != nil {
			ss.mu.Lock()
			online := ss.c != nil
			ss.mu.Unlock()
			if online {
				return sub, true
			}
		}
	}
	return g.Members[start], true
}

// deliver hands one delivery to a session: at once when its client is
// online and the inflight window has room, otherwise into its queue (on
// disk for a durable session, recorded in t). QoS 0 is never queued for an
// offline client.
func (s *Server) deliver(clientID string, d session.Delivery, from *client, t *txn) {
	ss := s.lookup(clientID)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	c := ss.c
	if d.QoS == 0 {
		if c == nil {
			ss.mu.Unlock()
			s.stats.DroppedOffline.Add(1)
			return
		}
		c.wmu.Lock()
		if int64(len(c.out)) > s.cfg.Limits.MaxQueuedBytes {
			c.wmu.Unlock()
			ss.mu.Unlock()
			s.stats.DroppedQoS0.Add(1) // a slow subscriber loses QoS 0, nobody waits
			return
		}
		c.encodePublishLocked(d, 0, false)
		c.wmu.Unlock()
	} else {
		s.enqueueLocked(ss, d, t)
		if c != nil {
			if t != nil && d.Msg.Held() {
				t.held = append(t.held, ss)
			}
			c.pumpLocked(ss, t)
		}
	}
	ss.mu.Unlock()
	if c != nil {
		if from != nil {
			from.markDirty(c)
		} else {
			c.flush()
		}
	}
}

// enqueueLocked queues a QoS 1/2 delivery (ss.mu held). A durable session
// writes it to disk (in t) and keeps it in RAM only while its client is
// online and its window has room; a session in memory keeps it in RAM up
// to limits.max_queued_bytes.
func (s *Server) enqueueLocked(ss *sess, d session.Delivery, t *txn) {
	if ss.durable && t != nil {
		keep := ss.c != nil && ss.st.MemQueueLen() < memWindow &&
			ss.st.QueueBytes()+int64(d.Msg.Size()) <= s.cfg.Limits.MaxQueuedBytes
		seq := ss.st.EnqueueDurable(d, keep)
		t.add(session.Change{Kind: session.PutQueued, ClientID: ss.st.ClientID, Seq: seq, D: d})
		t.dests = append(t.dests, destRef{ss, seq})
		return
	}
	if !ss.st.Enqueue(d, s.cfg.Limits.MaxQueuedBytes) {
		s.stats.DroppedQueue.Add(1)
	}
}

// pumpLocked moves queued deliveries into the inflight window while it has
// room (ss.mu held; c is ss.c), reading a durable session's queue back
// from disk as its RAM part empties. Durable changes go to t.
func (c *client) pumpLocked(ss *sess, t *txn) {
	for ss.st.QueueLen() > 0 && ss.st.InflightLen() < c.sendQuota {
		if ss.st.MemQueueLen() == 0 {
			if !c.refillLocked(ss) {
				return
			}
			continue
		}
		c.wmu.Lock()
		more := c.sendQueuedLocked(ss, t)
		c.wmu.Unlock()
		if !more {
			return
		}
	}
}

// refillLocked reads the next part of a durable queue from disk into RAM
// (ss.mu held). It reports whether anything was read.
func (c *client) refillLocked(ss *sess) bool {
	from, to, ok := ss.st.RefillRange()
	if !ok {
		return false
	}
	var n int
	var last uint64
	err := c.srv.store.ReadQueue(ss.st.ClientID, from, to, refillChunk, func(seq uint64, d session.Delivery) {
		ss.st.AppendRefill(seq, d)
		last = seq
		n++
	})
	if err != nil {
		c.srv.stats.StoreErrors.Add(1)
		c.srv.log.Error("reading a queue from the session store failed", "client", ss.st.ClientID, "err", err)
		return n > 0
	}
	if n == refillChunk {
		ss.st.RefillDone(last + 1)
	} else {
		ss.st.RefillDone(to)
	}
	return n > 0
}

// sendQueuedLocked sends RAM-queued deliveries while the window has room
// (ss.mu and c.wmu held). It returns false when it must stop (closed, a
// held message at the head), true when the RAM queue ran empty or the
// window is full.
func (c *client) sendQueuedLocked(ss *sess, t *txn) bool {
	now := c.srv.now()
	cid := ss.st.ClientID
	for ss.st.InflightLen() < c.sendQuota {
		if c.closed {
			// Closing but not yet detached: leave the queue to the session,
			// or the messages below would count as delivered and be lost.
			return false
		}
		head, ok := ss.st.Peek()
		if !ok {
			return true
		}
		if head.Msg.Held() {
			return false // its publish is not durable yet: afterCommit pumps again
		}
		seq, d, _ := ss.st.DequeueSeq()
		if d.Msg.Dropped() || d.Msg.Expired(now) {
			if !d.Msg.Dropped() {
				c.srv.stats.DroppedExpired.Add(1) // [MQTT-3.3.2-5]
			}
			if ss.durable {
				t.add(session.Change{Kind: session.DelQueued, ClientID: cid, Seq: seq})
			}
			continue
		}
		// Cannot fail: fewer than sendQuota (<= 65535) ids are in use.
		id, _ := ss.st.SendSeq(seq, d)
		if ss.durable && t != nil {
			ph := session.AwaitPuback
			if d.QoS == 2 {
				ph = session.AwaitPubrec
			}
			if ch := t.lastChange(); ch != nil && ch.Kind == session.PutQueued && ch.Seq == seq && ch.ClientID == cid {
				// Queued and sent by the same event (the common case for
				// an online subscriber): stored once, straight as inflight.
				ch.Kind, ch.PacketID, ch.Phase = session.PutInflight, id, ph
			} else {
				t.add(session.Change{Kind: session.DelQueued, ClientID: cid, Seq: seq})
				t.add(session.Change{Kind: session.PutInflight, ClientID: cid, PacketID: id, Phase: ph, Seq: seq, D: d})
			}
			if d.QoS == 2 {
				// Written once its packet id is durable: a crash must not
				// make it reach the client twice under two ids.
				t.sends = append(t.sends, sendRef{ss, c, id})
				continue
			}
		}
		if !c.encodePublishLocked(d, id, false) {
			// Too large for this client (or expired): treated as delivered
			// [MQTT-3.1.2-25], so it frees its slot at once. A QoS 2 one is
			// ended as by a failed PUBREC (Puback/Pubcomp refuse its phase).
			if d.QoS == 2 {
				ss.st.Pubrec(id, true)
			} else {
				ss.st.Puback(id)
			}
			if ss.durable {
				t.add(session.Change{Kind: session.DelInflight, ClientID: cid, PacketID: id})
			}
		}
	}
	return true
}

// encodePublishLocked appends one PUBLISH for d (wmu held), with the
// per-connection parts: packet id, DUP, subscription ids, the remaining
// message expiry and an outgoing topic alias. It returns false if the
// packet was not written (closed, expired or larger than the client's
// Maximum Packet Size).
func (c *client) encodePublishLocked(d session.Delivery, id uint16, dup bool) bool {
	if c.closed {
		return false
	}
	m := d.Msg
	p := packet.Publish{Topic: m.Topic, QoS: d.QoS, Retain: d.Retain, PacketID: id, Dup: dup, Payload: m.Payload}
	var newAlias bool
	if c.version == packet.V5 {
		p.Props = m.Props
		if secs, ok := m.RemainingExpiry(c.srv.now()); ok {
			if secs == 0 {
				c.srv.stats.DroppedExpired.Add(1)
				return false
			}
			p.Props.SetUint32(packet.PropMessageExpiry, secs) // [MQTT-3.3.2-6]
		}
		p.Props.SubscriptionIDs = d.SubIDs
		newAlias = c.applyAliasLocked(&p)
	}
	if c.out == nil {
		c.out = getBuf()
	}
	start := len(c.out)
	b, err := packet.Encode(c.out, &p, c.version)
	if err != nil {
		c.srv.log.Warn("encode PUBLISH failed", "client", c.id, "err", err)
		return false
	}
	if c.maxOut > 0 && uint32(len(b)-start) > c.maxOut {
		// Never send more than the client allows [MQTT-3.1.2-24]: discard.
		c.out = b[:start]
		if newAlias {
			delete(c.outAliases, m.Topic)
			c.nextAlias--
		}
		c.srv.stats.DroppedTooBig.Add(1)
		return false
	}
	c.out = b
	c.srv.stats.MessagesOut.Add(1)
	return true
}

// applyAliasLocked replaces the topic by an alias the client already knows,
// or assigns a new one while the client's Topic Alias Maximum allows
// [MQTT-3.3.2-11]. It reports whether a new alias was assigned.
func (c *client) applyAliasLocked(p *packet.Publish) bool {
	if c.aliasMaxOut == 0 {
		return false
	}
	if a, ok := c.outAliases[p.Topic]; ok {
		p.Props.SetUint16(packet.PropTopicAlias, a)
		p.Topic = ""
		return false
	}
	if c.nextAlias >= c.aliasMaxOut {
		return false
	}
	if c.outAliases == nil {
		c.outAliases = make(map[string]uint16)
	}
	c.nextAlias++
	c.outAliases[p.Topic] = c.nextAlias
	p.Props.SetUint16(packet.PropTopicAlias, c.nextAlias)
	return true
}
