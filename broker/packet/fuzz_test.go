package packet

import (
	"bytes"
	"errors"
	"testing"
	"testing/iotest"
)

// fuzzFixtures are inputs FuzzDecode found interesting (crashers, round
// trip failures); they run as fixtures and seed the fuzzer.
var fuzzFixtures = []fixture{}

// FuzzDecode feeds arbitrary bytes to ParseFixedHeader and Decode in both
// versions. It must never panic, every error must be an *Error, and every
// packet that decodes must encode, decode again to the same value, and
// encode again to the same bytes. The Reader, fed the same bytes in
// pieces, must return the same first packet.
func FuzzDecode(f *testing.F) {
	for _, fx := range allFixtures() {
		f.Add(mustUnhex(fx.hex))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []Version{V311, V5} {
			fuzzOne(t, data, v)
		}
	})
}

func fuzzOne(t *testing.T, data []byte, v Version) {
	h, err := ParseFixedHeader(data, 0)
	if err != nil {
		var pe *Error
		if err != ErrIncomplete && !errors.As(err, &pe) {
			t.Fatalf("ParseFixedHeader error %T %v", err, err)
		}
		return
	}
	if h.Size() > len(data) {
		return
	}
	p, err := Decode(h, data[h.HeaderLen:h.Size()], v)
	r := NewReader(iotest.HalfReader(bytes.NewReader(data)), 0)
	r.SetVersion(v)
	if rp, rerr := r.ReadPacket(); (rerr == nil) != (err == nil) || (err == nil && !packetsEqual(p, rp)) {
		t.Fatalf("v%d: Reader gave %#v, %v; Decode gave %#v, %v", v, rp, rerr, p, err)
	}
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("Decode error %T %v", err, err)
		}
		return
	}
	ev := v
	if c, ok := p.(*Connect); ok {
		ev = c.Version
	}
	enc, err := Encode(nil, p, ev)
	if err != nil {
		t.Fatalf("v%d: decoded %#v but Encode failed: %v", v, p, err)
	}
	if n := EncodedLen(p, ev); n != len(enc) {
		t.Fatalf("EncodedLen %d != %d", n, len(enc))
	}
	p2, err := decodeBytes(enc, v)
	if err != nil {
		t.Fatalf("v%d: re-decode of % x: %v", v, enc, err)
	}
	if !packetsEqual(p, p2) {
		t.Fatalf("v%d: round trip differs\n first %#v\nsecond %#v", v, p, p2)
	}
	enc2, err := Encode(nil, p2, ev)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("v%d: re-encode differs: %v\n% x\n% x", v, err, enc, enc2)
	}
}
