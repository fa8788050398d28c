package persist

//go:generate go tool msgp -file=records.go -io=false

import (
	"fmt"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/tinylib/msgp/msgp"
)

// The value records of the v1 key schema (see the package documentation).
// Field tags are short and stable: a tag is never reused for another
// meaning and new fields get new tags. Readers skip unknown fields. Every
// field is omitempty, so a zero field costs nothing on disk; decode into a
// zero record (the generated code leaves omitted fields untouched).

// MessageRecord is a message with, for a queued or inflight delivery, the
// per-delivery parts (DQoS, DRetain, SubIDs). It is the value of
// v1/q/<client>/<seq>, v1/ret/<topic> and v1/out/<bridge>/<seq>, and is
// embedded in InflightRecord.
type MessageRecord struct {
	Topic   string `msg:"t,omitempty"`
	Payload []byte `msg:"p,omitempty"`
	QoS     uint8  `msg:"q,omitempty"`
	Retain  bool   `msg:"r,omitempty"`

	// The publication properties forwarded with the message. Payload
	// Format and Correlation Data have presence flags: a property sent
	// with its zero value is not the same as an absent one.
	HasPayloadFormat bool              `msg:"pfp,omitempty"`
	PayloadFormat    uint8             `msg:"pf,omitempty"`
	ContentType      string            `msg:"ct,omitempty"`
	ResponseTopic    string            `msg:"rt,omitempty"`
	HasCorrelation   bool              `msg:"cdp,omitempty"`
	CorrelationData  []byte            `msg:"cd,omitempty"`
	User             []UserPropertyRec `msg:"u,omitempty"`

	// Expiry is the message expiry in Unix nanoseconds; 0 means none.
	Expiry int64 `msg:"x,omitempty"`
	// Origin is the publishing client id (for No Local).
	Origin string `msg:"o,omitempty"`
	// Stamp is when an outbox entry entered the outbox, in Unix
	// nanoseconds (backlog age, message ids). Unused elsewhere.
	Stamp int64 `msg:"ts,omitempty"`

	// Per delivery: the QoS granted, the RETAIN flag to send and the
	// matching subscription identifiers. Unused in retained and outbox
	// records.
	DQoS    uint8    `msg:"dq,omitempty"`
	DRetain bool     `msg:"dr,omitempty"`
	SubIDs  []uint32 `msg:"si,omitempty"`
}

// UserPropertyRec is one User Property, encoded as a 2-element array
// [key, value] to keep records small.
//
//msgp:tuple UserPropertyRec
type UserPropertyRec struct {
	Key   string
	Value string
}

// SessionRecord is the value of v1/sess/<client>.
type SessionRecord struct {
	// Version is the protocol version of the last connection (3, 4, 5).
	Version uint8 `msg:"v,omitempty"`
	// Expiry is the Session Expiry Interval in seconds.
	Expiry uint32 `msg:"e,omitempty"`
	// DisconnectedAt is when the last connection ended, in Unix
	// nanoseconds; 0 while a connection is attached.
	DisconnectedAt int64 `msg:"d,omitempty"`
}

// SubscriptionRecord is the value of v1/sub/<client>/<filter>.
type SubscriptionRecord struct {
	QoS               uint8  `msg:"q,omitempty"`
	NoLocal           bool   `msg:"nl,omitempty"`
	RetainAsPublished bool   `msg:"rap,omitempty"`
	RetainHandling    uint8  `msg:"rh,omitempty"`
	ID                uint32 `msg:"id,omitempty"`
}

// InflightRecord is the value of v1/infl/<client>/<pid>.
type InflightRecord struct {
	// Seq is the delivery's seq (its resend order).
	Seq uint64 `msg:"s,omitempty"`
	// Phase is the session.Phase of the handshake.
	Phase uint8 `msg:"ph,omitempty"`
	// Msg is the message and its delivery parts; nil in AwaitPubcomp.
	Msg *MessageRecord `msg:"m,omitempty"`
}

// setMessage fills the message fields of r from m. r keeps references to
// m's slices; marshal it before m may change.
func (r *MessageRecord) setMessage(m *session.Message) {
	p := &m.Props
	r.Topic, r.Payload, r.QoS, r.Retain = m.Topic, m.Payload, m.QoS, m.Retain
	r.HasPayloadFormat, r.PayloadFormat = p.Has(packet.PropPayloadFormat), p.PayloadFormat
	r.ContentType, r.ResponseTopic = p.ContentType, p.ResponseTopic
	r.HasCorrelation, r.CorrelationData = p.Has(packet.PropCorrelationData), p.CorrelationData
	r.User = r.User[:0]
	for _, u := range p.User {
		r.User = append(r.User, UserPropertyRec(u))
	}
	r.Expiry = 0
	if !m.Expiry.IsZero() {
		r.Expiry = m.Expiry.UnixNano()
	}
	r.Origin = m.Origin
}

// setDelivery fills r from d: its message and its delivery parts.
func (r *MessageRecord) setDelivery(d *session.Delivery) {
	r.setMessage(d.Msg)
	r.DQoS, r.DRetain, r.SubIDs = d.QoS, d.Retain, d.SubIDs
}

// message returns the message r holds. It shares r's slices.
func (r *MessageRecord) message() *session.Message {
	m := &session.Message{
		Topic:   r.Topic,
		Payload: nilIfEmpty(r.Payload),
		QoS:     r.QoS,
		Retain:  r.Retain,
		Origin:  r.Origin,
	}
	p := &m.Props
	if r.HasPayloadFormat {
		p.Mark(packet.PropPayloadFormat)
	}
	p.PayloadFormat = r.PayloadFormat
	p.ContentType, p.ResponseTopic = r.ContentType, r.ResponseTopic
	if r.HasCorrelation {
		p.Mark(packet.PropCorrelationData)
	}
	p.CorrelationData = nilIfEmpty(r.CorrelationData)
	if len(r.User) > 0 {
		p.User = make([]packet.UserProperty, len(r.User))
		for i, u := range r.User {
			p.User[i] = packet.UserProperty(u)
		}
	}
	if r.Expiry != 0 {
		m.Expiry = time.Unix(0, r.Expiry)
	}
	return m
}

// delivery returns the delivery r holds. It shares r's slices.
func (r *MessageRecord) delivery() session.Delivery {
	var ids []uint32
	if len(r.SubIDs) > 0 {
		ids = r.SubIDs
	}
	return session.Delivery{Msg: r.message(), QoS: r.DQoS, Retain: r.DRetain, SubIDs: ids}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// unmarshal decodes a whole record from v into u (which must be zero: the
// generated code leaves omitted fields as they are). Decoding copies every
// byte slice and string, so v may be reused afterwards. Trailing bytes are
// an error.
func unmarshal(u msgp.Unmarshaler, v []byte) error {
	rest, err := u.UnmarshalMsg(v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d trailing bytes", len(rest))
	}
	return nil
}
