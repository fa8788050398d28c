package packet

import "testing"

// The Variable Byte Integer examples of MQTT 5.0 Table 1-1 / 3.1.1 Table 2.4.
func TestParseFixedHeaderRemainingLength(t *testing.T) {
	for _, tc := range []struct {
		hex string
		n   int
	}{
		{"30 00", 0}, {"30 7f", 127}, {"30 80 01", 128}, {"30 ff 7f", 16383},
		{"30 80 80 01", 16384}, {"30 ff ff 7f", 2097151}, {"30 80 80 80 01", 2097152},
		{"30 ff ff ff 7f", 268435455},
		{"30 80 00", 0}, // not minimal [MQTT-1.5.5-1] binds the sender; accepted
	} {
		b := unhex(t, tc.hex)
		h, err := ParseFixedHeader(b, 0)
		if err != nil || h.Remaining != tc.n || h.HeaderLen != len(b) || h.Type != PUBLISH {
			t.Errorf("%s: %+v %v, want remaining %d", tc.hex, h, err, tc.n)
		}
		if tc.n <= MaxRemainingLength && tc.hex != "30 80 00" {
			if enc := appendVarint(nil, tc.n); string(enc) != string(b[1:]) {
				t.Errorf("appendVarint(%d) = % x", tc.n, enc)
			}
			if varintLen(tc.n) != len(b)-1 {
				t.Errorf("varintLen(%d) = %d", tc.n, varintLen(tc.n))
			}
		}
	}
}

func TestParseFixedHeaderIncomplete(t *testing.T) {
	for _, hx := range []string{"", "30", "30 80", "30 ff ff", "30 ff ff ff"} {
		if _, err := ParseFixedHeader(unhex(t, hx), 0); err != ErrIncomplete {
			t.Errorf("%q: %v, want ErrIncomplete", hx, err)
		}
	}
	// Bad flags are reported from the first byte alone.
	_, err := ParseFixedHeader([]byte{0x60}, 0)
	checkErr(t, err, MalformedPacket, "fixed header flags")
	// A 5-byte varint is reported as soon as the 4th byte has the continuation bit.
	_, err = ParseFixedHeader(unhex(t, "30 ff ff ff ff"), 0)
	checkErr(t, err, MalformedPacket, "remaining length")
}

// [MQTT-2.1.3-1]: reserved flag values for every type.
func TestParseFixedHeaderFlags(t *testing.T) {
	for typ := range 16 {
		for flags := range 16 {
			_, err := ParseFixedHeader([]byte{byte(typ<<4 | flags), 0}, 0)
			var ok bool
			switch Type(typ) {
			case 0:
				ok = false
			case PUBLISH:
				ok = flags&6 != 6 // QoS 3 [MQTT-3.3.1-4]
			case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
				ok = flags == 2
			default:
				ok = flags == 0
			}
			if ok != (err == nil) {
				t.Errorf("type %d flags %04b: err %v, want ok=%v", typ, flags, err, ok)
			}
		}
	}
}

func TestParseFixedHeaderMaxPacketSize(t *testing.T) {
	b := unhex(t, "30 7e") // 2 + 126 = 128 bytes
	if _, err := ParseFixedHeader(b, 128); err != nil {
		t.Errorf("size == max rejected: %v", err)
	}
	_, err := ParseFixedHeader(b, 127)
	checkErr(t, err, PacketTooLarge, "remaining length")
	// 200 MB announced, 1 MB allowed: rejected from the 5 header bytes.
	b = appendVarint([]byte{0x30}, 200<<20)
	_, err = ParseFixedHeader(b, 1<<20)
	checkErr(t, err, PacketTooLarge, "")
	if _, err := ParseFixedHeader(b, 0); err != nil {
		t.Errorf("no limit: %v", err)
	}
}

func TestParseFixedHeaderNoAllocs(t *testing.T) {
	inputs := [][]byte{{0x30, 0x80, 0x01}, {0x30}, {0x60, 0}, {0x36, 0}, {0, 0},
		{0x30, 0xff, 0xff, 0xff, 0xff}, {0x30, 0xff, 0x7f}}
	for _, b := range inputs {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseFixedHeader(b, 100) }); n != 0 {
			t.Errorf("% x: %v allocs", b, n)
		}
	}
}

func TestPropIDString(t *testing.T) {
	if PropTopicAlias.String() != "topic alias" || PropID(0x7f).String() != "property 0x7F" {
		t.Error(PropTopicAlias.String(), PropID(0x7f).String())
	}
}

func TestConnackFromV3(t *testing.T) {
	for rc := range 256 {
		c, ok := ConnackFromV3(byte(rc))
		if ok != (rc <= 5) {
			t.Fatalf("%d: ok %v", rc, ok)
		}
		if ok && c.V3Connack() != byte(rc) {
			t.Errorf("%d -> %v -> %d", rc, c, c.V3Connack())
		}
	}
}
