package broker

import (
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// will is a connection's Will Message with its delay.
type will struct {
	msg       *session.Message
	delay     uint32 // Will Delay Interval, seconds (v5)
	expiry    uint32 // Message Expiry Interval, seconds, counted from publication
	hasExpiry bool
}

// willFromConnect builds the will of a CONNECT, or nil when it has none.
func (s *Server) willFromConnect(p *packet.Connect) *will {
	if !p.WillFlag {
		return nil
	}
	m := &session.Message{
		Topic:   p.WillTopic,
		Payload: p.WillPayload,
		QoS:     p.WillQoS,
		Retain:  p.WillRetain,
		Origin:  p.ClientID,
	}
	w := &will{msg: m}
	if p.Version == packet.V5 {
		m.Props = publicationProps(&p.WillProps)
		w.expiry, w.hasExpiry = p.WillProps.MessageExpiry, p.WillProps.Has(packet.PropMessageExpiry)
		w.delay = p.WillProps.WillDelay
	}
	return w
}

// takeWill returns the will to publish for a connection that is ending:
// nil after a normal DISCONNECT, which discards it [MQTT-3.1.2-10], and the
// will after DISCONNECT 0x04, a protocol error, a keep alive timeout, a
// network failure, a takeover or a server shutdown [MQTT-3.1.2-8].
func (c *client) takeWill() *will {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := c.willMsg
	c.willMsg = nil
	return w
}

// publishWill routes a will as if its client had published it; its
// Message Expiry Interval counts from now, when it is published.
func (s *Server) publishWill(w *will) {
	if w.hasExpiry {
		w.msg.Expiry = s.now().Add(time.Duration(w.expiry) * time.Second)
	}
	s.publish(w.msg, nil)
}
