package packet

import (
	"fmt"
	"math/bits"
)

// MaxSubscriptionID is the largest Subscription Identifier (a Variable Byte
// Integer, 1..268435455) [MQTT-3.8.2.1.2].
const MaxSubscriptionID = MaxRemainingLength

func bit(id PropID) uint64 { return 1 << id }

// Which property may appear on which packet: MQTT 5.0 §2.2.2.2, Table 2-4.
const (
	maskConnect = 1<<PropSessionExpiry | 1<<PropAuthMethod | 1<<PropAuthData |
		1<<PropRequestProblemInfo | 1<<PropRequestResponseInfo | 1<<PropReceiveMaximum |
		1<<PropTopicAliasMaximum | 1<<PropUserProperty | 1<<PropMaximumPacketSize
	maskWill = 1<<PropPayloadFormat | 1<<PropMessageExpiry | 1<<PropContentType |
		1<<PropResponseTopic | 1<<PropCorrelationData | 1<<PropWillDelay | 1<<PropUserProperty
	maskConnack = 1<<PropSessionExpiry | 1<<PropAssignedClientID | 1<<PropServerKeepAlive |
		1<<PropAuthMethod | 1<<PropAuthData | 1<<PropResponseInfo | 1<<PropServerReference |
		1<<PropReasonString | 1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum |
		1<<PropMaximumQoS | 1<<PropRetainAvailable | 1<<PropUserProperty |
		1<<PropMaximumPacketSize | 1<<PropWildcardSubAvailable | 1<<PropSubIDAvailable |
		1<<PropSharedSubAvailable
	maskPublish = 1<<PropPayloadFormat | 1<<PropMessageExpiry | 1<<PropContentType |
		1<<PropResponseTopic | 1<<PropCorrelationData | 1<<PropSubscriptionID |
		1<<PropTopicAlias | 1<<PropUserProperty
	maskAck         = 1<<PropReasonString | 1<<PropUserProperty // PUBACK..PUBCOMP, SUBACK, UNSUBACK
	maskSubscribe   = 1<<PropSubscriptionID | 1<<PropUserProperty
	maskUnsubscribe = 1 << PropUserProperty
	maskDisconnect  = 1<<PropSessionExpiry | 1<<PropServerReference | 1<<PropReasonString |
		1<<PropUserProperty
	maskAuth = 1<<PropAuthMethod | 1<<PropAuthData | 1<<PropReasonString | 1<<PropUserProperty
)

var propNames = [64]string{
	PropPayloadFormat: "payload format indicator", PropMessageExpiry: "message expiry interval",
	PropContentType: "content type", PropResponseTopic: "response topic",
	PropCorrelationData: "correlation data", PropSubscriptionID: "subscription identifier",
	PropSessionExpiry: "session expiry interval", PropAssignedClientID: "assigned client identifier",
	PropServerKeepAlive: "server keep alive", PropAuthMethod: "authentication method",
	PropAuthData: "authentication data", PropRequestProblemInfo: "request problem information",
	PropWillDelay: "will delay interval", PropRequestResponseInfo: "request response information",
	PropResponseInfo: "response information", PropServerReference: "server reference",
	PropReasonString: "reason string", PropReceiveMaximum: "receive maximum",
	PropTopicAliasMaximum: "topic alias maximum", PropTopicAlias: "topic alias",
	PropMaximumQoS: "maximum QoS", PropRetainAvailable: "retain available",
	PropUserProperty: "user property", PropMaximumPacketSize: "maximum packet size",
	PropWildcardSubAvailable: "wildcard subscription available",
	PropSubIDAvailable:       "subscription identifier available",
	PropSharedSubAvailable:   "shared subscription available",
}

// String is the property's name as in the specification, e.g. "topic alias".
func (id PropID) String() string {
	if int(id) < len(propNames) && propNames[id] != "" {
		return propNames[id]
	}
	return fmt.Sprintf("property 0x%02X", byte(id))
}

// str returns the value of a string property.
func (p *Properties) str(id PropID) string {
	switch id {
	case PropContentType:
		return p.ContentType
	case PropResponseTopic:
		return p.ResponseTopic
	case PropAssignedClientID:
		return p.AssignedClientID
	case PropAuthMethod:
		return p.AuthMethod
	case PropResponseInfo:
		return p.ResponseInfo
	case PropServerReference:
		return p.ServerReference
	case PropReasonString:
		return p.ReasonString
	}
	return ""
}

func (p *Properties) setStr(id PropID, s string) {
	switch id {
	case PropContentType:
		p.ContentType = s
	case PropResponseTopic:
		p.ResponseTopic = s
	case PropAssignedClientID:
		p.AssignedClientID = s
	case PropAuthMethod:
		p.AuthMethod = s
	case PropResponseInfo:
		p.ResponseInfo = s
	case PropServerReference:
		p.ServerReference = s
	case PropReasonString:
		p.ReasonString = s
	}
	p.Mark(id)
}

// num returns the value of a numeric (byte, two- or four-byte) property.
func (p *Properties) num(id PropID) uint32 {
	switch id {
	case PropPayloadFormat:
		return uint32(p.PayloadFormat)
	case PropRequestProblemInfo:
		return uint32(p.RequestProblemInfo)
	case PropRequestResponseInfo:
		return uint32(p.RequestResponseInfo)
	case PropMaximumQoS:
		return uint32(p.MaximumQoS)
	case PropRetainAvailable:
		return uint32(p.RetainAvailable)
	case PropWildcardSubAvailable:
		return uint32(p.WildcardSubAvailable)
	case PropSubIDAvailable:
		return uint32(p.SubIDAvailable)
	case PropSharedSubAvailable:
		return uint32(p.SharedSubAvailable)
	case PropServerKeepAlive:
		return uint32(p.ServerKeepAlive)
	case PropReceiveMaximum:
		return uint32(p.ReceiveMaximum)
	case PropTopicAliasMaximum:
		return uint32(p.TopicAliasMaximum)
	case PropTopicAlias:
		return uint32(p.TopicAlias)
	case PropMessageExpiry:
		return p.MessageExpiry
	case PropSessionExpiry:
		return p.SessionExpiry
	case PropWillDelay:
		return p.WillDelay
	case PropMaximumPacketSize:
		return p.MaximumPacketSize
	}
	return 0
}

// propKind is the wire data type of a property.
type propKind byte

const (
	kindUnknown propKind = iota
	kindByte
	kindUint16
	kindUint32
	kindVarint
	kindString
	kindBinary
	kindPair
)

var propKinds = func() (k [64]propKind) {
	set := func(kind propKind, ids ...PropID) {
		for _, id := range ids {
			k[id] = kind
		}
	}
	set(kindByte, PropPayloadFormat, PropRequestProblemInfo, PropRequestResponseInfo, PropMaximumQoS,
		PropRetainAvailable, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable)
	set(kindUint16, PropServerKeepAlive, PropReceiveMaximum, PropTopicAliasMaximum, PropTopicAlias)
	set(kindUint32, PropMessageExpiry, PropSessionExpiry, PropWillDelay, PropMaximumPacketSize)
	set(kindVarint, PropSubscriptionID)
	set(kindString, PropContentType, PropResponseTopic, PropAssignedClientID, PropAuthMethod,
		PropResponseInfo, PropServerReference, PropReasonString)
	set(kindBinary, PropCorrelationData, PropAuthData)
	set(kindPair, PropUserProperty)
	return k
}()

// propFields holds the field names a property list reports in errors,
// precomputed so that decoding allocates nothing for them.
type propFields struct {
	list, length, userKey, userVal string
	names                          [64]string
}

func makePropFields(prefix string) *propFields {
	f := &propFields{list: prefix + "properties", length: prefix + "property length",
		userKey: prefix + "user property name", userVal: prefix + "user property value"}
	for id := range f.names {
		f.names[id] = prefix + PropID(id).String()
	}
	return f
}

var (
	packetFields = makePropFields("")
	willFields   = makePropFields("will ")
)

// props reads a property list [MQTT-2.2.2]: its Variable Byte Integer
// length, then properties until that length is used up. allowed is the set
// the packet may carry; f names the list in errors.
func (d *decoder) props(p *Properties, allowed uint64, f *propFields) error {
	n, err := d.varint(f.length)
	if err != nil {
		return err
	}
	if n > d.left() {
		return d.short(f.length)
	}
	end := d.off + n
	sub := decoder{b: d.b[:end], off: d.off, pt: d.pt}
	for sub.off < end {
		if err := sub.prop(p, allowed, f); err != nil {
			return err
		}
	}
	d.off = end
	return nil
}

// prop reads one property. Unknown identifiers and properties not allowed
// on the packet are Malformed; repeating a property other than User
// Property (and Subscription Identifier in PUBLISH) is a Protocol Error.
func (d *decoder) prop(p *Properties, allowed uint64, f *propFields) error {
	c, _ := d.byte1("") // caller checked there is a byte
	id := PropID(c)
	if c >= 64 || propKinds[id] == kindUnknown {
		return d.fail(MalformedPacket, f.list, fmt.Sprintf("unknown property identifier 0x%02X", c))
	}
	if allowed&bit(id) == 0 {
		return d.fail(MalformedPacket, f.list, id.String()+" is not allowed on "+d.pt.String())
	}
	field := f.names[id]
	repeatable := id == PropUserProperty || (id == PropSubscriptionID && d.pt == PUBLISH)
	if p.Has(id) && !repeatable {
		return d.fail(ProtocolError, field, "included more than once") // e.g. [MQTT-3.8.2.1.2]
	}
	switch propKinds[id] {
	case kindByte:
		v, err := d.byte1(field)
		if err != nil {
			return err
		}
		if v > 1 { // all one-byte properties are 0 or 1 (Payload Format, Maximum QoS, *Available, Request *)
			return d.fail(ProtocolError, field, fmt.Sprintf("value %d is not 0 or 1", v))
		}
		p.SetByte(id, v)
	case kindUint16:
		v, err := d.uint16(field)
		if err != nil {
			return err
		}
		if v == 0 && id == PropReceiveMaximum {
			return d.fail(ProtocolError, field, "must not be 0") // §3.1.2.11.3, §3.2.2.3.3
		}
		p.SetUint16(id, v)
	case kindUint32:
		v, err := d.uint32(field)
		if err != nil {
			return err
		}
		if v == 0 && id == PropMaximumPacketSize {
			return d.fail(ProtocolError, field, "must not be 0") // §3.1.2.11.4, §3.2.2.3.6
		}
		p.SetUint32(id, v)
	default:
		return d.propVar(p, id, f)
	}
	return nil
}

// propVar reads the variable-length property kinds.
func (d *decoder) propVar(p *Properties, id PropID, f *propFields) error {
	field := f.names[id]
	switch propKinds[id] {
	case kindVarint: // Subscription Identifier
		v, err := d.varint(field)
		if err != nil {
			return err
		}
		if v == 0 {
			return d.fail(ProtocolError, field, "must not be 0") // §3.3.2.3.8, §3.8.2.1.2
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
	case kindString:
		s, err := d.str(field)
		if err != nil {
			return err
		}
		p.setStr(id, s)
	case kindBinary:
		b, err := d.binary(field)
		if err != nil {
			return err
		}
		if id == PropCorrelationData {
			p.CorrelationData = b
		} else {
			p.AuthData = b
		}
	case kindPair:
		k, err := d.str(f.userKey)
		if err != nil {
			return err
		}
		v, err := d.str(f.userVal)
		if err != nil {
			return err
		}
		p.User = append(p.User, UserProperty{Key: k, Value: v})
	}
	p.Mark(id)
	return nil
}

// wireMask is the set of properties Encode writes, limited to allowed:
// numeric ones whose Present bit is set, string and binary ones that are
// marked or non-empty, list ones that are non-empty.
func (p *Properties) wireMask(allowed uint64) uint64 {
	m := p.Present &^ (bit(PropSubscriptionID) | bit(PropUserProperty))
	if p.ContentType != "" {
		m |= bit(PropContentType)
	}
	if p.ResponseTopic != "" {
		m |= bit(PropResponseTopic)
	}
	if len(p.CorrelationData) != 0 {
		m |= bit(PropCorrelationData)
	}
	if len(p.SubscriptionIDs) != 0 {
		m |= bit(PropSubscriptionID)
	}
	if p.AssignedClientID != "" {
		m |= bit(PropAssignedClientID)
	}
	if p.AuthMethod != "" {
		m |= bit(PropAuthMethod)
	}
	if len(p.AuthData) != 0 {
		m |= bit(PropAuthData)
	}
	if p.ResponseInfo != "" {
		m |= bit(PropResponseInfo)
	}
	if p.ServerReference != "" {
		m |= bit(PropServerReference)
	}
	if p.ReasonString != "" {
		m |= bit(PropReasonString)
	}
	if len(p.User) != 0 {
		m |= bit(PropUserProperty)
	}
	return m & allowed
}

// wireLen is the byte length of the properties in mask (without the
// property length prefix). It fails for values that cannot be encoded.
func (p *Properties) wireLen(mask uint64, pt Type) (int, error) {
	n := 0
	for m := mask; m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		switch propKinds[id] {
		case kindByte:
			n += 2
		case kindUint16:
			n += 3
		case kindUint32:
			n += 5
		case kindString:
			n += 3 + len(p.str(id))
			if len(p.str(id)) > 65535 {
				return 0, encErr(pt, id.String(), "longer than 65535 bytes")
			}
		case kindBinary:
			b := p.AuthData
			if id == PropCorrelationData {
				b = p.CorrelationData
			}
			if len(b) > 65535 {
				return 0, encErr(pt, id.String(), "longer than 65535 bytes")
			}
			n += 3 + len(b)
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				if v == 0 || v > MaxSubscriptionID {
					return 0, encErr(pt, id.String(), "out of range 1..268435455")
				}
				n += 1 + varintLen(int(v))
			}
		case kindPair:
			for _, u := range p.User {
				if len(u.Key) > 65535 || len(u.Value) > 65535 {
					return 0, encErr(pt, id.String(), "longer than 65535 bytes")
				}
				n += 5 + len(u.Key) + len(u.Value)
			}
		}
	}
	return n, nil
}

// appendProps appends the property length n and the properties in mask.
func (p *Properties) appendProps(dst []byte, mask uint64, n int) []byte {
	dst = appendVarint(dst, n)
	for m := mask; m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		switch propKinds[id] {
		case kindByte:
			dst = append(dst, byte(id), byte(p.num(id)))
		case kindUint16:
			v := p.num(id)
			dst = append(dst, byte(id), byte(v>>8), byte(v))
		case kindUint32:
			v := p.num(id)
			dst = append(dst, byte(id), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
		case kindString:
			dst = appendString(append(dst, byte(id)), p.str(id))
		case kindBinary:
			b := p.AuthData
			if id == PropCorrelationData {
				b = p.CorrelationData
			}
			dst = appendBytes(append(dst, byte(id)), b)
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				dst = appendVarint(append(dst, byte(id)), int(v))
			}
		case kindPair:
			for _, u := range p.User {
				dst = appendString(appendString(append(dst, byte(id)), u.Key), u.Value)
			}
		}
	}
	return dst
}
