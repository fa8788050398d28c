package packet

import "errors"

// MaxRemainingLength is the largest value a Variable Byte Integer can hold,
// and so the largest remaining length of any packet (256 MB) [MQTT-1.5.5].
const MaxRemainingLength = 268435455

// ErrIncomplete is returned by ParseFixedHeader when b does not yet hold the
// whole fixed header; read more bytes and call it again.
var ErrIncomplete = errors.New("packet: incomplete")

// FixedHeader is the first 2 to 5 bytes of every control packet [MQTT-2.1.1].
type FixedHeader struct {
	Type      Type // high nibble of byte 1
	Flags     byte // low nibble of byte 1
	Remaining int  // remaining length: variable header + payload
	HeaderLen int  // 1 + number of bytes of the remaining length varint
}

// Size is the whole packet length on the wire, HeaderLen + Remaining.
func (h FixedHeader) Size() int { return h.HeaderLen + h.Remaining }

// The fixed-header errors are preallocated so that ParseFixedHeader never
// allocates, even when it rejects a packet. Callers must not modify them.
var (
	errRemLen    [16]*Error
	errFlags     [16]*Error
	errTooLarge  [16]*Error
	errQoS3      = &Error{Code: MalformedPacket, Packet: PUBLISH, Field: "fixed header flags", Msg: "QoS 3"}
	errType0     = &Error{Code: MalformedPacket, Field: "packet type", Msg: "reserved packet type 0"}
	errBodyShort = &Error{Code: MalformedPacket, Field: "remaining length", Msg: "body length does not match remaining length"}
)

func init() {
	for t := range errFlags {
		errRemLen[t] = &Error{Code: MalformedPacket, Packet: Type(t), Field: "remaining length",
			Msg: "variable byte integer longer than 4 bytes"}
		errFlags[t] = &Error{Code: MalformedPacket, Packet: Type(t), Field: "fixed header flags",
			Msg: "reserved flag bits have the wrong value"}
		errTooLarge[t] = &Error{Code: PacketTooLarge, Packet: Type(t), Field: "remaining length",
			Msg: "packet exceeds the maximum packet size"}
	}
}

// checkFlags validates the low nibble of the first byte for type t
// [MQTT-2.1.3-1]: PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0010, PUBLISH
// carries DUP/QoS/RETAIN, every other type 0000.
func checkFlags(t Type, flags byte) error {
	switch t {
	case 0:
		return errType0 // reserved type [MQTT-2.1.2]
	case PUBLISH:
		if flags&0x06 == 0x06 {
			return errQoS3 // [MQTT-3.3.1-4] QoS 3 is malformed
		}
		return nil
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if flags != 0x02 {
			return errFlags[t] // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
		}
		return nil
	default:
		if flags != 0 {
			return errFlags[t] // [MQTT-2.1.3-1]
		}
		return nil
	}
}

// ParseFixedHeader parses the fixed header at the start of b. It returns
// ErrIncomplete if b is too short to hold it, a MalformedPacket *Error for
// bad flags or a remaining length longer than 4 bytes, and a PacketTooLarge
// *Error when maxPacketSize > 0 and the whole packet would be larger than
// maxPacketSize. It needs only the header bytes, so a caller learns the
// packet size before it allocates or reads the body. It never allocates;
// the *Error values it returns are shared and must not be modified.
func ParseFixedHeader(b []byte, maxPacketSize uint32) (FixedHeader, error) {
	if len(b) == 0 {
		return FixedHeader{}, ErrIncomplete
	}
	t, flags := Type(b[0]>>4), b[0]&0x0F
	if err := checkFlags(t, flags); err != nil {
		return FixedHeader{}, err
	}
	rem := 0
	for i := 1; i <= 4; i++ {
		if i >= len(b) {
			return FixedHeader{}, ErrIncomplete
		}
		c := b[i]
		rem |= int(c&0x7F) << (7 * (i - 1))
		if c&0x80 != 0 {
			continue
		}
		h := FixedHeader{Type: t, Flags: flags, Remaining: rem, HeaderLen: i + 1}
		if maxPacketSize > 0 && uint64(h.HeaderLen)+uint64(rem) > uint64(maxPacketSize) {
			return FixedHeader{}, errTooLarge[t] // Maximum Packet Size, checked before any allocation
		}
		return h, nil
	}
	return FixedHeader{}, errRemLen[t] // [MQTT-1.5.5] at most 4 bytes
}

// varintLen is the number of bytes n takes as a Variable Byte Integer.
func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	default:
		return 4
	}
}

// appendVarint appends n (0..MaxRemainingLength) as a Variable Byte Integer
// using the minimum number of bytes [MQTT-1.5.5-1].
func appendVarint(dst []byte, n int) []byte {
	for n >= 0x80 {
		dst = append(dst, byte(n)|0x80)
		n >>= 7
	}
	return append(dst, byte(n))
}

// parseVarint decodes a Variable Byte Integer at the start of b. ok is false
// when b ends inside it; tooLong is true when it has more than 4 bytes.
func parseVarint(b []byte) (v, n int, ok, tooLong bool) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, false, false
		}
		v |= int(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, true, false
		}
	}
	return 0, 0, false, true
}
