// Package session holds per-client MQTT session state with no I/O: packet
// identifier allocation, the outbound inflight window, the offline queue,
// incoming QoS 2 dedupe, and message expiry. The broker guards each State
// with its own lock; this package never blocks and never touches a socket.
// It declares the small Store interface that persistence implements.
package session

import (
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Message is one application message as published. It is immutable once
// routed and shared by every delivery of it.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Props carries the publication properties forwarded unchanged:
	// Payload Format, Content Type, Response Topic, Correlation Data and
	// User Properties [MQTT-3.3.2-4] [MQTT-3.3.2-17] [MQTT-3.3.2-18]. Message
	// expiry is kept as the absolute Expiry below; Topic Alias and
	// Subscription Identifiers are per connection and never stored here.
	Props packet.Properties
	// Expiry is when the message expires; zero means never [MQTT-3.3.2-5].
	Expiry time.Time
	// Origin is the publishing client id (for No Local); empty for wills
	// and internal publishers.
	Origin string
}

// Size is the message's approximate footprint in bytes, used for queue
// quotas.
func (m *Message) Size() int {
	n := len(m.Topic) + len(m.Payload) + len(m.Props.ContentType) +
		len(m.Props.ResponseTopic) + len(m.Props.CorrelationData) + 64
	for _, u := range m.Props.User {
		n += len(u.Key) + len(u.Value) + 4
	}
	return n
}

// Expired reports whether the message's expiry has passed at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// RemainingExpiry is the Message Expiry Interval to forward at now, rounded
// up to whole seconds [MQTT-3.3.2-6]; ok is false when the message has no
// expiry.
func (m *Message) RemainingExpiry(now time.Time) (secs uint32, ok bool) {
	if m.Expiry.IsZero() {
		return 0, false
	}
	d := m.Expiry.Sub(now)
	if d <= 0 {
		return 0, true
	}
	return uint32((d + time.Second - 1) / time.Second), true
}

// Delivery is a message on its way to one subscriber: the QoS granted for
// it, the RETAIN flag to send and the matching subscription identifiers.
type Delivery struct {
	Msg    *Message
	QoS    byte
	Retain bool
	SubIDs []uint32
}
