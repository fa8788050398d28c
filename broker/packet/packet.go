// Package packet is the MQTT 3.1 / 3.1.1 / 5.0 wire codec: fixed header,
// every control packet, v5 properties and reason codes. It knows nothing of
// the broker: it turns bytes into packet values and back, and checks every
// limit before it allocates.
package packet

// Type is the MQTT control packet type (high nibble of the first byte).
type Type byte

// Control packet types [MQTT-2.1.2].
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC",
	"PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "UNKNOWN"
}

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1
	V5   Version = 5 // MQTT 5.0
)

// Packet is any decoded MQTT control packet. The concrete types are the
// pointer types below (*Connect, *Publish, ...).
type Packet interface {
	Type() Type
}

// UserProperty is one v5 User Property name/value pair (0x26).
type UserProperty struct {
	Key, Value string
}

// Connect is CONNECT [MQTT-3.1].
type Connect struct {
	ProtocolName string // "MQTT" or "MQIsdp"
	Version      Version
	CleanStart   bool // Clean Session in 3.1.1
	KeepAlive    uint16
	Props        Properties

	ClientID string

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties // v5 only
	WillTopic   string
	WillPayload []byte

	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
}

// Connack is CONNACK. In 3.1.1 ReasonCode holds the return code value as
// mapped by ReasonCode.V3Connack when encoding.
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Props          Properties
}

// Publish is PUBLISH [MQTT-3.3]. Payload and Topic may alias the read buffer
// only until the next ReadPacket call when decoded with Reader.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // only when QoS > 0
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP; Kind says which.
// In v5 the reason code and properties may be omitted on the wire when the
// code is Success and there are no properties.
type Ack struct {
	Kind       Type
	PacketID   uint16
	ReasonCode ReasonCode
	Props      Properties
}

// SubOption is one topic filter of a SUBSCRIBE with its options byte.
type SubOption struct {
	Filter            string
	QoS               byte
	NoLocal           bool // v5
	RetainAsPublished bool // v5
	RetainHandling    byte // v5: 0, 1 or 2
}

// Subscribe is SUBSCRIBE [MQTT-3.8].
type Subscribe struct {
	PacketID uint16
	Props    Properties // v5: Subscription Identifier, User Properties
	Subs     []SubOption
}

// Suback is SUBACK; in 3.1.1 the codes are 0, 1, 2 or 0x80.
type Suback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is UNSUBSCRIBE [MQTT-3.10].
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  []string
}

// Unsuback is UNSUBACK; 3.1.1 carries no reason codes (ReasonCodes ignored).
type Unsuback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []ReasonCode
}

// Pingreq is PINGREQ.
type Pingreq struct{}

// Pingresp is PINGRESP.
type Pingresp struct{}

// Disconnect is DISCONNECT; v3 has no variable header.
type Disconnect struct {
	ReasonCode ReasonCode
	Props      Properties
}

// Auth is the v5 AUTH packet.
type Auth struct {
	ReasonCode ReasonCode
	Props      Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (a *Ack) Type() Type       { return a.Kind }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
