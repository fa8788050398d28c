package broker

import (
	"fmt"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// handleSubscribe adds or replaces subscriptions, answers with SUBACK (one
// code per filter, in order [MQTT-3.8.4-6] [MQTT-3.9.3-1]) and then sends
// matching retained messages as each subscription's Retain Handling asks.
func (c *client) handleSubscribe(p *packet.Subscribe) error {
	var subID uint32
	if len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	codes := make([]packet.ReasonCode, len(p.Subs))
	type retainReq struct {
		filter string
		qos    byte
		rap    bool
		id     uint32
	}
	var want []retainReq
	t := c.srv.newTxn()
	durable := c.isDurable()
	for i, o := range p.Subs {
		if err := topics.ValidFilter(o.Filter); err != nil {
			codes[i] = packet.TopicFilterInvalid // [MQTT-4.7.1-1]; 3.1.1 gets 0x80
			c.logger().Debug("subscribe refused", "filter", o.Filter, "err", err)
			continue
		}
		_, _, shared := topics.ParseShared(o.Filter)
		if shared && o.NoLocal {
			c.srv.commitWait(t) // the filters before it are in place
			return protoErr(packet.ProtocolError, "No Local on shared subscription %q [MQTT-3.8.3-4]", o.Filter)
		}
		granted := min(o.QoS, 2)
		sub := topics.Subscription{
			ClientID: c.id, Filter: o.Filter, QoS: granted, NoLocal: o.NoLocal,
			RetainAsPublished: o.RetainAsPublished, RetainHandling: o.RetainHandling, ID: subID,
		}
		replaced := c.srv.trie.Subscribe(sub) // an identical filter replaces the old subscription [MQTT-3.8.4-3]
		if durable {
			t.add(session.Change{Kind: session.PutSub, ClientID: c.id, Sub: sub})
		}
		codes[i] = packet.ReasonCode(granted) // [MQTT-3.8.4-7]
		// Retained messages: handling 0 always, 1 only for a new
		// subscription, 2 never [MQTT-3.3.1-9..11]; none for shared
		// subscriptions [MQTT-4.8.2-... v5 §4.8.2].
		if !shared && (o.RetainHandling == 0 || (o.RetainHandling == 1 && !replaced)) {
			want = append(want, retainReq{o.Filter, granted, o.RetainAsPublished, subID})
		}
	}
	if err := c.srv.commitWait(t); err != nil {
		// Stored subscriptions are what survives a restart: a client
		// told they exist must be able to rely on it.
		return fmt.Errorf("storing subscriptions: %w", errStoreFailed)
	}
	c.appendPacket(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
	c.markDirty(c)
	now := c.srv.now()
	rt := c.srv.newTxn()
	defer c.srv.commit(rt, nil)
	for _, w := range want {
		c.srv.retained.Match(w.filter, func(_ string, m *session.Message) bool {
			if m.Expired(now) {
				return true
			}
			d := session.Delivery{Msg: m, QoS: min(m.QoS, w.qos), Retain: true} // [MQTT-3.3.1-6]
			if w.id != 0 {
				d.SubIDs = []uint32{w.id}
			}
			c.srv.deliver(c.id, d, c, rt)
			return true
		})
	}
	return nil
}

// handleUnsubscribe removes subscriptions and answers UNSUBACK; v5 says per
// filter whether it existed [MQTT-3.11.3-1].
func (c *client) handleUnsubscribe(p *packet.Unsubscribe) error {
	codes := make([]packet.ReasonCode, len(p.Filters))
	t := c.srv.newTxn()
	durable := c.isDurable()
	for i, f := range p.Filters {
		switch {
		case topics.ValidFilter(f) != nil:
			codes[i] = packet.TopicFilterInvalid
		case c.srv.trie.Unsubscribe(c.id, f):
			codes[i] = packet.Success
			if durable {
				t.add(session.Change{Kind: session.DelSub, ClientID: c.id, Sub: topics.Subscription{Filter: f}})
			}
		default:
			codes[i] = packet.NoSubscriptionExisted
		}
	}
	if err := c.srv.commitWait(t); err != nil {
		return fmt.Errorf("removing subscriptions: %w", errStoreFailed)
	}
	c.appendPacket(&packet.Unsuback{PacketID: p.PacketID, ReasonCodes: codes}) // [MQTT-3.10.4-4]
	c.markDirty(c)
	return nil
}

// isDurable reports whether the client's session is kept in the store.
func (c *client) isDurable() bool {
	c.ss.mu.Lock()
	defer c.ss.mu.Unlock()
	return c.ss.durable
}
