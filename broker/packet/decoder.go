package packet

import (
	"bytes"
	"unicode/utf8"
)

// Decode decodes one packet body; len(body) must equal h.Remaining and h
// must come from ParseFixedHeader. v selects the 3.x (V31, V311) or 5.0
// layout; it is ignored for CONNECT, which carries its own level.
//
// []byte fields (Publish.Payload, Connect.WillPayload, Connect.Password,
// Properties.CorrelationData, Properties.AuthData) alias body, with their
// capacity capped at their length, and are nil when empty; strings are
// copied. Every error is an *Error naming the packet and the field.
//
// A CONNECT that fails after its protocol name and level were read is
// returned as a *Connect holding only ProtocolName and Version, together
// with the error, so that the broker can answer in the client's version
// (CONNACK 0x01 in 3.x, 0x84 in 5.0 for UnsupportedProtocolVersion).
// For every other failure the Packet is nil.
func Decode(h FixedHeader, body []byte, v Version) (Packet, error) {
	if len(body) != h.Remaining {
		return nil, errBodyShort
	}
	if err := checkFlags(h.Type, h.Flags); err != nil {
		return nil, err
	}
	d := decoder{b: body, pt: h.Type}
	v5 := v >= V5
	switch h.Type {
	case CONNECT:
		return decodeConnect(&d)
	case CONNACK:
		return decodeConnack(&d, v5)
	case PUBLISH:
		return decodePublish(&d, h.Flags, v5)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return decodeAck(&d, v5)
	case SUBSCRIBE:
		return decodeSubscribe(&d, v5)
	case SUBACK:
		return decodeSuback(&d, v5)
	case UNSUBSCRIBE:
		return decodeUnsubscribe(&d, v5)
	case UNSUBACK:
		return decodeUnsuback(&d, v5)
	case PINGREQ:
		return ret(&Pingreq{}, d.noBody())
	case PINGRESP:
		return ret(&Pingresp{}, d.noBody())
	case DISCONNECT:
		return decodeDisconnect(&d, v5)
	case AUTH:
		return decodeAuth(&d, v5)
	}
	return nil, errType0
}

// ret returns p, or nil when err is set (never a typed nil interface).
func ret(p Packet, err error) (Packet, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// decoder reads the MQTT data types of §1.5 from a packet body. Every
// method reports a short read or a bad value as an *Error naming field.
type decoder struct {
	b   []byte
	off int
	pt  Type
}

func (d *decoder) fail(code ReasonCode, field, msg string) error {
	return &Error{Code: code, Packet: d.pt, Field: field, Msg: msg}
}

func (d *decoder) short(field string) error {
	return d.fail(MalformedPacket, field, "extends beyond the remaining length")
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) byte1(field string) (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.short(field)
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *decoder) uint16(field string) (uint16, error) {
	if d.left() < 2 {
		return 0, d.short(field)
	}
	v := uint16(d.b[d.off])<<8 | uint16(d.b[d.off+1])
	d.off += 2
	return v, nil
}

func (d *decoder) uint32(field string) (uint32, error) {
	if d.left() < 4 {
		return 0, d.short(field)
	}
	b := d.b[d.off:]
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	d.off += 4
	return v, nil
}

func (d *decoder) varint(field string) (int, error) {
	v, n, ok, tooLong := parseVarint(d.b[d.off:])
	if tooLong {
		return 0, d.fail(MalformedPacket, field, "variable byte integer longer than 4 bytes")
	}
	if !ok {
		return 0, d.short(field)
	}
	d.off += n
	return v, nil
}

// packetID reads a Packet Identifier, which must be non-zero
// [MQTT-2.2.1-3] (and so must the ones echoed in acks).
func (d *decoder) packetID() (uint16, error) {
	id, err := d.uint16("packet identifier")
	if err == nil && id == 0 {
		return 0, d.fail(ProtocolError, "packet identifier", "must not be 0") // [MQTT-2.2.1-3]
	}
	return id, err
}

// binary reads Binary Data [MQTT-1.5.6]. The result aliases the body and is
// nil when empty.
func (d *decoder) binary(field string) ([]byte, error) {
	n, err := d.uint16(field)
	if err != nil {
		return nil, err
	}
	if int(n) > d.left() {
		return nil, d.short(field)
	}
	if n == 0 {
		return nil, nil
	}
	b := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// str reads a UTF-8 Encoded String [MQTT-1.5.4] and copies it.
func (d *decoder) str(field string) (string, error) {
	n, err := d.uint16(field)
	if err != nil {
		return "", err
	}
	if int(n) > d.left() {
		return "", d.short(field)
	}
	b := d.b[d.off : d.off+int(n)]
	if msg := checkUTF8(b); msg != "" {
		return "", d.fail(MalformedPacket, field, msg)
	}
	d.off += int(n)
	return string(b), nil
}

// rest returns the unread bytes (aliasing the body, capacity capped so
// that an append cannot write past the body), nil when none.
func (d *decoder) rest() []byte {
	if d.off == len(d.b) {
		return nil
	}
	b := d.b[d.off:len(d.b):len(d.b)]
	d.off = len(d.b)
	return b
}

// end fails if bytes are left after a complete packet.
func (d *decoder) end() error {
	if d.off != len(d.b) {
		return d.fail(MalformedPacket, "remaining length", "unexpected bytes after the end of the packet")
	}
	return nil
}

// noBody checks that a packet without variable header is empty (PINGREQ,
// PINGRESP, 3.x DISCONNECT).
func (d *decoder) noBody() error {
	if len(d.b) != 0 {
		return d.fail(MalformedPacket, "remaining length", "must be 0")
	}
	return nil
}

// checkUTF8 returns "" when b is well-formed UTF-8 without U+0000, else the
// reason. utf8.Valid also rejects surrogates and overlong forms.
func checkUTF8(b []byte) string {
	if bytes.IndexByte(b, 0) >= 0 {
		return "contains U+0000" // [MQTT-1.5.4-2]
	}
	if !utf8.Valid(b) {
		return "invalid UTF-8" // [MQTT-1.5.4-1]
	}
	return ""
}

// codeSet is a set of reason codes, one bit per byte value.
type codeSet [4]uint64

func makeCodeSet(codes ...ReasonCode) codeSet {
	var s codeSet
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *codeSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// Reason codes each v5 packet may carry [MQTT-2.4] (tables of §3.x).
var (
	connackCodes = makeCodeSet(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
		0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	pubackCodes  = makeCodeSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99) // PUBACK, PUBREC
	pubrelCodes  = makeCodeSet(0x00, 0x92)                                           // PUBREL, PUBCOMP
	subackCodes  = makeCodeSet(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
	unsubackCode = makeCodeSet(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
	disconnCodes = makeCodeSet(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
		0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
		0xA0, 0xA1, 0xA2)
	authCodes   = makeCodeSet(0x00, 0x18, 0x19)
	v3SubackSet = makeCodeSet(0x00, 0x01, 0x02, 0x80) // 3.1.1 [MQTT-3.9.3-2]
)

// reasonCode reads a reason code and checks it against the codes allowed
// on this packet; a code the specification does not define for the packet
// is a Protocol Error (the sender "MUST use one of" them, e.g. [MQTT-3.4.2-1]).
func (d *decoder) reasonCode(allowed *codeSet) (ReasonCode, error) {
	c, err := d.byte1("reason code")
	if err != nil {
		return 0, err
	}
	if !allowed.has(ReasonCode(c)) {
		return 0, d.fail(ProtocolError, "reason code", ReasonCode(c).String()+" is not allowed on "+d.pt.String())
	}
	return ReasonCode(c), nil
}

// reasonCodes reads the rest of the body as a list of at least one reason
// code (SUBACK, UNSUBACK payload).
func (d *decoder) reasonCodes(allowed *codeSet) ([]ReasonCode, error) {
	if d.left() == 0 {
		return nil, d.fail(ProtocolError, "reason codes", "payload must contain at least one reason code")
	}
	codes := make([]ReasonCode, d.left())
	for i := range codes {
		c, err := d.reasonCode(allowed)
		if err != nil {
			return nil, err
		}
		codes[i] = c
	}
	return codes, nil
}
