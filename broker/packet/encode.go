package packet

import "slices"

// Encode appends p, fixed header included, in the layout of protocol
// version v (any v below V5 is 3.x) and returns the extended slice. It does
// not allocate when dst has enough capacity.
//
// For 3.x everything 5.0-only is left out: properties, reason codes of
// acks and DISCONNECT, Subscription Options other than QoS, the UNSUBACK
// payload. A 3.x CONNACK carries ReasonCode.V3Connack() and a 3.x SUBACK
// maps every failure code (>= 0x80) to 0x80. In 5.0 acks, DISCONNECT and
// AUTH use their shortest form when the reason code is Success and there
// are no properties. Properties are written per the rule on Properties,
// restricted to those the specification allows on the packet (§2.2.2.2):
// others are silently left out, so a Will's Properties can be passed to a
// PUBLISH as is (Will Delay Interval is dropped).
//
// CONNECT is encoded in its own Version (v only when Version is 0) with
// ProtocolName defaulting to "MQTT" ("MQIsdp" for V31); a non-empty
// Username or Password sets its flag.
//
// Encode fails, leaving dst unchanged, only for values that cannot be put
// on the wire: QoS 3, a packet identifier of 0 where one is required, a
// string or binary field over 65535 bytes, a remaining length over
// MaxRemainingLength, no topic filter in SUBSCRIBE/UNSUBSCRIBE, no reason
// code in SUBACK (or 5.0 UNSUBACK), AUTH in 3.x, and the like.
func Encode(dst []byte, p Packet, v Version) ([]byte, error) {
	pl, err := planOf(p, v)
	if err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, 1+varintLen(pl.rem)+pl.rem)
	dst = append(dst, pl.first)
	dst = appendVarint(dst, pl.rem)
	return writeOf(dst, p, &pl), nil
}

// EncodedLen is the number of bytes Encode would append for p in version v,
// or -1 if p cannot be encoded.
func EncodedLen(p Packet, v Version) int {
	pl, err := planOf(p, v)
	if err != nil {
		return -1
	}
	return 1 + varintLen(pl.rem) + pl.rem
}

// plan is what the size pass of an encoding learns and the write pass uses.
type plan struct {
	v5    bool
	ver   Version // CONNECT: the version it is written in
	first byte    // first byte of the fixed header
	rem   int     // remaining length
	props propPlan
	will  propPlan // CONNECT only
}

type propPlan struct {
	mask uint64
	n    int
}

func encErr(pt Type, field, msg string) error {
	return &Error{Code: MalformedPacket, Packet: pt, Field: field, Msg: msg}
}

// sizer adds up field sizes and remembers the first length violation.
type sizer struct {
	n   int
	err error
	pt  Type
}

// str adds a 2-byte length prefixed string or binary field of length n.
func (s *sizer) str(n int, field string) {
	if n > 65535 && s.err == nil {
		s.err = encErr(s.pt, field, "longer than 65535 bytes")
	}
	s.n += 2 + n
}

// props adds a property list with its length prefix; mask is the allowed set.
func (s *sizer) props(p *Properties, allowed uint64) propPlan {
	m := p.wireMask(allowed)
	n, err := p.wireLen(m, s.pt)
	if err != nil && s.err == nil {
		s.err = err
	}
	s.n += varintLen(n) + n
	return propPlan{mask: m, n: n}
}

// done turns the sizes into the remaining length, checking its limit.
func (s *sizer) done(pl *plan) error {
	if s.err != nil {
		return s.err
	}
	if s.n > MaxRemainingLength {
		return encErr(s.pt, "remaining length", "packet larger than 268435455 bytes")
	}
	pl.rem = s.n
	return nil
}

var errNilPacket = &Error{Code: MalformedPacket, Msg: "nil or unknown packet"}

// planOf runs the size pass of p.
func planOf(p Packet, v Version) (plan, error) {
	pl := plan{v5: v >= V5, ver: v}
	var err error
	switch p := p.(type) {
	case *Publish:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Ack:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Connect:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Connack:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	default:
		return planOther(p, pl)
	}
	return pl, err
}

// planOf, continued for the less frequent packets.
func planOther(p Packet, pl plan) (plan, error) {
	var err error
	switch p := p.(type) {
	case *Subscribe:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Suback:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Unsubscribe:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Unsuback:
		if p == nil {
			return pl, errNilPacket
		}
		err = p.plan(&pl)
	case *Pingreq:
		pl.first = byte(PINGREQ) << 4
	case *Pingresp:
		pl.first = byte(PINGRESP) << 4
	case *Disconnect:
		if p == nil {
			return pl, errNilPacket
		}
		err = planCodeProps(&pl, DISCONNECT, p.ReasonCode, &p.Props, maskDisconnect)
	case *Auth:
		if p == nil {
			return pl, errNilPacket
		}
		if !pl.v5 {
			return pl, &Error{Code: ProtocolError, Packet: AUTH, Msg: "AUTH does not exist before MQTT 5"}
		}
		err = planCodeProps(&pl, AUTH, p.ReasonCode, &p.Props, maskAuth)
	default:
		return pl, errNilPacket
	}
	return pl, err
}

// writeOf runs the write pass of p after the fixed header.
func writeOf(dst []byte, p Packet, pl *plan) []byte {
	switch p := p.(type) {
	case *Publish:
		return p.write(dst, pl)
	case *Ack:
		return p.write(dst, pl)
	case *Connect:
		return p.write(dst, pl)
	case *Connack:
		return p.write(dst, pl)
	case *Subscribe:
		return p.write(dst, pl)
	case *Suback:
		return p.write(dst, pl)
	case *Unsubscribe:
		return p.write(dst, pl)
	case *Unsuback:
		return p.write(dst, pl)
	case *Disconnect:
		return writeCodeProps(dst, pl, p.ReasonCode, &p.Props)
	case *Auth:
		return writeCodeProps(dst, pl, p.ReasonCode, &p.Props)
	}
	return dst // PINGREQ, PINGRESP: no body
}

func appendUint16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendString(dst []byte, s string) []byte {
	return append(appendUint16(dst, uint16(len(s))), s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	return append(appendUint16(dst, uint16(len(b))), b...)
}

func (p *Publish) plan(pl *plan) error {
	s := sizer{pt: PUBLISH}
	if p.QoS > 2 {
		return encErr(PUBLISH, "QoS", "QoS 3") // [MQTT-3.3.1-4]
	}
	pl.first = byte(PUBLISH)<<4 | p.QoS<<1
	if p.Dup {
		pl.first |= 0x08
	}
	if p.Retain {
		pl.first |= 0x01
	}
	s.str(len(p.Topic), "topic name")
	if p.QoS > 0 {
		if p.PacketID == 0 {
			return encErr(PUBLISH, "packet identifier", "must not be 0") // [MQTT-2.2.1-3]
		}
		s.n += 2
	}
	if pl.v5 {
		pl.props = s.props(&p.Props, maskPublish)
	}
	s.n += len(p.Payload)
	return s.done(pl)
}

func (p *Publish) write(dst []byte, pl *plan) []byte {
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendUint16(dst, p.PacketID)
	}
	if pl.v5 {
		dst = p.Props.appendProps(dst, pl.props.mask, pl.props.n)
	}
	return append(dst, p.Payload...)
}

func (a *Ack) plan(pl *plan) error {
	if a.Kind < PUBACK || a.Kind > PUBCOMP {
		return encErr(a.Kind, "kind", "Ack.Kind must be PUBACK, PUBREC, PUBREL or PUBCOMP")
	}
	if a.PacketID == 0 {
		return encErr(a.Kind, "packet identifier", "must not be 0") // [MQTT-2.2.1-3]
	}
	pl.first = byte(a.Kind) << 4
	if a.Kind == PUBREL {
		pl.first |= 0x02 // [MQTT-3.6.1-1]
	}
	s := sizer{pt: a.Kind, n: 2}
	if pl.v5 {
		pl.props = s.props(&a.Props, maskAck)
		switch {
		case pl.props.mask == 0 && a.ReasonCode == Success:
			s.n = 2 // [MQTT-3.4.2.1] short form: code and property length omitted
		case pl.props.mask == 0:
			s.n = 3 // code, property length omitted
		default:
			s.n++ // code
		}
	}
	return s.done(pl)
}

func (a *Ack) write(dst []byte, pl *plan) []byte {
	dst = appendUint16(dst, a.PacketID)
	if pl.rem > 2 {
		dst = append(dst, byte(a.ReasonCode))
	}
	if pl.rem > 3 {
		dst = a.Props.appendProps(dst, pl.props.mask, pl.props.n)
	}
	return dst
}

func (c *Connack) plan(pl *plan) error {
	pl.first = byte(CONNACK) << 4
	s := sizer{pt: CONNACK, n: 2}
	if pl.v5 {
		pl.props = s.props(&c.Props, maskConnack)
	}
	return s.done(pl)
}

func (c *Connack) write(dst []byte, pl *plan) []byte {
	var flags byte
	if c.SessionPresent {
		flags = 1
	}
	if !pl.v5 {
		return append(dst, flags, c.ReasonCode.V3Connack()) // 3.1.1 §3.2.2.3
	}
	dst = append(dst, flags, byte(c.ReasonCode))
	return c.Props.appendProps(dst, pl.props.mask, pl.props.n)
}

// planCodeProps sizes the DISCONNECT/AUTH layout: nothing in 3.x; in 5.0
// nothing for Success without properties, the code alone without
// properties (DISCONNECT only), else code and properties.
func planCodeProps(pl *plan, t Type, code ReasonCode, p *Properties, mask uint64) error {
	pl.first = byte(t) << 4
	s := sizer{pt: t}
	if pl.v5 {
		pl.props = s.props(p, mask)
		switch {
		case pl.props.mask == 0 && code == Success:
			s.n = 0 // §3.14.2.1, §3.15.2.1
		case pl.props.mask == 0 && t == DISCONNECT:
			s.n = 1 // §3.14.2.2.1: property length may be omitted
		default:
			s.n++
		}
	}
	return s.done(pl)
}

func writeCodeProps(dst []byte, pl *plan, code ReasonCode, p *Properties) []byte {
	if pl.rem > 0 {
		dst = append(dst, byte(code))
	}
	if pl.rem > 1 {
		dst = p.appendProps(dst, pl.props.mask, pl.props.n)
	}
	return dst
}
