package broker

import (
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// handlePublish takes a client's PUBLISH: resolves a topic alias, checks
// the topic and the receive window, stores a retained message, routes the
// message and acknowledges it once every durable destination is stored.
func (c *client) handlePublish(p *packet.Publish) error {
	c.srv.stats.MessagesIn.Add(1)
	topic, err := c.resolveAlias(p)
	if err != nil {
		return err
	}
	if len(p.Props.SubscriptionIDs) > 0 {
		return protoErr(packet.ProtocolError, "PUBLISH from a client carries a Subscription Identifier [MQTT-3.3.4-6]")
	}
	if err := topics.ValidTopicName(topic); err != nil {
		// A wildcard or invalid topic name ends the connection [MQTT-3.3.2-2].
		return protoErr(packet.TopicNameInvalid, "PUBLISH topic %q: %v", topic, err)
	}
	t := c.srv.newTxn()
	if p.QoS == 2 {
		ss := c.ss
		ss.mu.Lock()
		isNew := ss.st.ReceiveQoS2(p.PacketID)
		if isNew && ss.st.PendingQoS2() > int(c.srv.cfg.Limits.ReceiveMaximum) && c.version == packet.V5 {
			ss.st.ReleaseQoS2(p.PacketID)
			ss.mu.Unlock()
			t.release()
			// More unacknowledged QoS 2 than our Receive Maximum
			// [MQTT-3.3.4-7] §3.2.2.3.3. A resent id already awaiting
			// PUBREL is not a new message and does not count.
			return protoErr(packet.ReceiveMaximumExceeded, "more than %d QoS 2 messages awaiting PUBREL", c.srv.cfg.Limits.ReceiveMaximum)
		}
		if isNew && ss.durable {
			// Stored with the message's destinations: exactly once across a restart.
			t.add(session.Change{Kind: session.PutQoS2In, ClientID: c.id, PacketID: p.PacketID})
		}
		ss.mu.Unlock()
		if !isNew {
			// A resent QoS 2 message is acknowledged but not routed again
			// [MQTT-4.3.3-10]: exactly once.
			c.ackAfter(t, packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			return nil
		}
	}
	msg := &session.Message{
		Topic:   topic,
		Payload: p.Payload,
		QoS:     p.QoS,
		Retain:  p.Retain,
		Origin:  c.id,
	}
	if c.version == packet.V5 {
		msg.Props = publicationProps(&p.Props)
		if p.Props.Has(packet.PropMessageExpiry) {
			msg.Expiry = c.srv.now().Add(time.Duration(p.Props.MessageExpiry) * time.Second)
		}
	}
	if err := c.srv.offer(msg, t); err != nil {
		// A bridge's outbox is full and refuses: the message goes nowhere.
		return c.refusePublish(p, t, err)
	}
	if p.QoS == 2 && t != nil {
		msg.Hold() // queues keep it until its publish is durable
		t.msg = msg
	}
	if p.Retain {
		c.srv.retain(msg, t)
	}
	c.srv.route(msg, c, t)
	switch p.QoS {
	case 0:
		c.srv.commit(t, nil)
	case 1:
		c.ackAfter(t, packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID}) // [MQTT-4.3.2-4]
	case 2:
		c.ackAfter(t, packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID}) // [MQTT-4.3.3-8]
	}
	return nil
}

// refusePublish answers a publish an outlet refused (err wraps
// session.ErrFull): QoS 0 is dropped; QoS 1/2 get their PUBACK/PUBREC with
// 0x97 (v5) or the connection is closed (3.1.1), in packet order, and
// nothing of the publish is written.
func (c *client) refusePublish(p *packet.Publish, t *txn, err error) error {
	c.srv.stats.RefusedBridge.Add(1)
	switch {
	case p.QoS == 0:
		c.srv.commit(t, nil)
		return nil
	case t == nil:
		t = &txn{} // a memory store: one txn just to carry the refusal
	}
	t.refused = err
	kind := packet.PUBACK
	if p.QoS == 2 {
		kind = packet.PUBREC
	}
	c.ackAfter(t, packet.Ack{Kind: kind, PacketID: p.PacketID})
	return nil
}

// resolveAlias applies a v5 Topic Alias: a PUBLISH with topic and alias
// sets the alias, one with an empty topic uses it [MQTT-3.3.2-12].
func (c *client) resolveAlias(p *packet.Publish) (string, error) {
	if c.version != packet.V5 || !p.Props.Has(packet.PropTopicAlias) {
		if p.Topic == "" {
			return "", protoErr(packet.ProtocolError, "PUBLISH without topic name or topic alias")
		}
		return p.Topic, nil
	}
	a := p.Props.TopicAlias
	if a == 0 || a > c.srv.cfg.Limits.TopicAliasMaximum {
		// [MQTT-3.3.2-8] [MQTT-3.3.2-9]
		return "", protoErr(packet.TopicAliasInvalid, "topic alias %d outside 1..%d", a, c.srv.cfg.Limits.TopicAliasMaximum)
	}
	if p.Topic == "" {
		t, ok := c.inAliases[a]
		if !ok {
			return "", protoErr(packet.ProtocolError, "topic alias %d was never set", a)
		}
		return t, nil
	}
	if c.inAliases == nil {
		c.inAliases = make(map[uint16]string)
	}
	c.inAliases[a] = p.Topic
	return p.Topic, nil
}

// publicationProps keeps the properties that travel with a message to its
// subscribers unchanged [MQTT-3.3.2-15..20]: Payload Format, Content Type,
// Response Topic, Correlation Data and User Properties.
func publicationProps(in *packet.Properties) packet.Properties {
	var out packet.Properties
	if in.Has(packet.PropPayloadFormat) {
		out.SetByte(packet.PropPayloadFormat, in.PayloadFormat)
	}
	out.ContentType = in.ContentType
	out.ResponseTopic = in.ResponseTopic
	out.CorrelationData = in.CorrelationData
	if in.Has(packet.PropCorrelationData) {
		out.Mark(packet.PropCorrelationData)
	}
	out.User = in.User
	return out
}

// retain stores, replaces or clears (empty payload) a retained message
// [MQTT-3.3.1-5] [MQTT-3.3.1-10] [MQTT-3.3.1-11], on disk too (in t).
func (s *Server) retain(m *session.Message, t *txn) {
	if len(m.Payload) == 0 {
		s.retained.Delete(m.Topic)
		t.add(session.Change{Kind: session.DelRetained, Topic: m.Topic})
		return
	}
	s.retained.Set(m.Topic, m)
	t.add(session.Change{Kind: session.PutRetained, D: session.Delivery{Msg: m, QoS: m.QoS, Retain: true}})
}

// publish routes a message produced inside the broker (wills).
func (s *Server) publish(m *session.Message, from *client) {
	t := s.newTxn()
	if m.Retain {
		s.retain(m, t)
	}
	s.route(m, from, t)
	s.commit(t, nil)
}
