package bridge

import (
	"context"
	"errors"
	"time"
)

// Message is one message crossing the bridge, in either direction. Topic
// is an MQTT topic (levels separated by "/"); an AMQP adapter maps it to
// a routing key ("/" -> ".") and back.
type Message struct {
	Topic   string
	Payload []byte
	// QoS is the MQTT QoS to publish with (1 or 2 forwards wait for a
	// confirmation; 0 is fire-and-forget). AMQP always confirms and
	// publishes persistent messages.
	QoS    byte
	Retain bool
	// ID is the message's stable id (MQTT 5 user property "ferrymq-id",
	// AMQP message-id) and Seq its per-bridge sequence number (user
	// property / header "ferrymq-seq"): consumers dedupe on ID and detect
	// gaps in Seq.
	ID  string
	Seq uint64
	// Request/reply: MQTT 5 Response Topic and Correlation Data map to
	// AMQP reply-to (as a routing key) and correlation-id.
	ResponseTopic   string
	CorrelationData []byte
	ContentType     string
	// Expiry is the remaining message expiry (0: none): MQTT 5 Message
	// Expiry Interval, AMQP expiration.
	Expiry time.Duration
	// User are user properties (MQTT 5) or headers (AMQP), in order.
	User []UserProperty
}

// UserProperty is one MQTT 5 user property or AMQP header.
type UserProperty struct{ Key, Value string }

// Inbound is a message received from the upstream (downlink). Ack must
// be called once the message is durable locally (the upstream then
// forgets it); Nack when it could not be stored (the upstream keeps it
// and redelivers). Exactly one of them, once, from any goroutine.
type Inbound struct {
	Message
	Ack  func()
	Nack func()
}

// Errors an Upstream reports through a Publish confirmation.
var (
	// ErrRejected wraps a permanent refusal of one message by the
	// upstream (AMQP basic.return of a mandatory message, MQTT 5 reason
	// code >= 0x80): retrying the same message on the same link will not
	// help; after a few tries it goes to the dead-letter log.
	ErrRejected = errors.New("bridge: upstream rejected the message")
	// ErrLinkLost is wrapped when the connection ended before the
	// message was confirmed: it is resent after reconnecting.
	ErrLinkLost = errors.New("bridge: link to the upstream lost")
)

// Upstream is one connection to an upstream broker. The bridge owns the
// reconnect loop: it calls Connect, uses the connection until Done is
// closed (or a confirmation times out: a half-open link), Closes it and
// builds a new one after a backoff. Implementations never reconnect by
// themselves and never keep messages of their own: the bridge's outbox is
// the queue.
type Upstream interface {
	// Connect dials and prepares the link: AMQP declares what it needs
	// (the durable downlink queue and its bindings), MQTT subscribes to
	// the receive filters with its fixed client id and a persistent
	// session. Inbound messages go to handle, one at a time or
	// concurrently, until Close. It fails with a clear error when the
	// upstream is unreachable or refuses.
	Connect(ctx context.Context, handle func(*Inbound)) error
	// Publish sends m. confirm is called exactly once, from any
	// goroutine: nil when the upstream confirmed the message (MQTT
	// PUBACK/PUBCOMP, AMQP publisher confirm without a return); an error
	// wrapping ErrRejected for a permanent refusal; another error
	// (wrapping ErrLinkLost when the link died) otherwise. Publish itself
	// returns an error only when m could not be sent at all; confirm is
	// then not called. Messages are sent in Publish order.
	Publish(ctx context.Context, m *Message, confirm func(error)) error
	// Blocked reports whether the upstream asked us to pause publishing
	// (AMQP connection.blocked); the forwarder waits while it is true.
	Blocked() bool
	// Done is closed when the link is lost; Err then says why.
	Done() <-chan struct{}
	Err() error
	// Close ends the link; pending confirmations get ErrLinkLost.
	Close() error
}

// Flusher is implemented by an Upstream that may hold published messages
// in a write buffer: the forwarder calls Flush after each burst of
// Publish calls, so that a burst costs one write instead of one per
// message. An Upstream must still flush by itself, soon, what it buffers
// outside such bursts (heartbeats, acknowledgements, a lone message).
type Flusher interface {
	Flush() error
}
