// Package session holds per-client MQTT session state with no I/O: packet
// identifier allocation, the outbound inflight window, the offline queue,
// incoming QoS 2 dedupe, and message expiry. The broker guards each State
// with its own lock; this package never blocks and never touches a socket.
// It declares the small Store interface that persistence implements.
package session

import (
	"sync/atomic"
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

	// hold is the one mutable part: holdHeld while the publish of a QoS 2
	// message is not yet durable (queues keep it and what follows it),
	// holdDropped if that write failed (queues discard it).
	hold atomic.Int32
}

const (
	holdReady int32 = iota
	holdHeld
	holdDropped
)

// Hold keeps the message in every queue until Release or Drop.
func (m *Message) Hold() { m.hold.Store(holdHeld) }

// Release lets held deliveries of the message go.
func (m *Message) Release() { m.hold.Store(holdReady) }

// Drop makes queues discard the message (its publish was refused).
func (m *Message) Drop() { m.hold.Store(holdDropped) }

// Held reports whether deliveries of the message must wait.
func (m *Message) Held() bool { return m.hold.Load() == holdHeld }

// Dropped reports whether the message must be discarded.
func (m *Message) Dropped() bool { return m.hold.Load() == holdDropped }

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
