package packet

import (
	"bytes"
	"io"
	"testing"
)

func benchPublish(v5 bool) *Publish {
	p := &Publish{QoS: 1, Topic: "sensors/building-1/floor-2/temp", PacketID: 42, Payload: bytes.Repeat([]byte{'x'}, 64)}
	if v5 {
		p.Props.SetUint16(PropTopicAlias, 3)
		p.Props.User = []UserProperty{{"trace", "abc123"}}
	}
	return p
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, tc := range []struct {
		name string
		v    Version
	}{{"v4", V311}, {"v5", V5}} {
		raw, err := Encode(nil, benchPublish(tc.v == V5), tc.v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				h, err := ParseFixedHeader(raw, 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Decode(h, raw[h.HeaderLen:], tc.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	for _, tc := range []struct {
		name string
		v    Version
	}{{"v4", V311}, {"v5", V5}} {
		p := benchPublish(tc.v == V5)
		buf := make([]byte, 0, 256)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(EncodedLen(p, tc.v)))
			for b.Loop() {
				var err error
				if buf, err = Encode(buf[:0], p, tc.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// repeatReader serves the same bytes forever.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

func BenchmarkReaderPublish(b *testing.B) {
	raw, _ := Encode(nil, benchPublish(false), V311)
	r := NewReader(&repeatReader{b: raw}, 1<<20)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := r.ReadPacket(); err != nil && err != io.EOF {
			b.Fatal(err)
		}
	}
}
