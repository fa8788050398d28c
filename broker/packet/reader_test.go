package packet

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

// stream5 is a 5.0 session: CONNECT, then one of every client and server
// packet, and the packets they must decode to.
func stream5(t testing.TB) ([]byte, []Packet) {
	pkts := []Packet{
		&Connect{ProtocolName: "MQTT", Version: V5, KeepAlive: 30, ClientID: "c", Props: fullProps(maskConnect)},
	}
	for _, rt := range roundTrips() {
		pkts = append(pkts, rt.v5)
	}
	var buf []byte
	for _, p := range pkts {
		var err error
		if buf, err = Encode(buf, p, V5); err != nil {
			t.Fatal(err)
		}
	}
	return buf, pkts
}

func readAll(t testing.TB, r *Reader) ([]Packet, error) {
	var got []Packet
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return got, err
		}
		got = append(got, p)
	}
}

func checkPackets(t *testing.T, got, want []Packet) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range got {
		if !packetsEqual(got[i], want[i]) {
			t.Errorf("packet %d:\n got %#v\nwant %#v", i, got[i], want[i])
		}
	}
}

// The Reader starts in 3.1.1, switches to 5.0 on CONNECT and decodes the
// rest of the stream however the bytes are split.
func TestReaderSplits(t *testing.T) {
	raw, want := stream5(t)
	for _, tc := range []struct {
		name string
		r    func(io.Reader) io.Reader
	}{
		{"all at once", func(r io.Reader) io.Reader { return r }},
		{"one byte per read", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
		{"EOF with the last data", iotest.DataErrReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.r(bytes.NewReader(raw)), 0)
			if r.Version() != V311 {
				t.Fatalf("initial version %d", r.Version())
			}
			got, err := readAll(t, r)
			if err != io.EOF {
				t.Fatalf("end: %v, want io.EOF", err)
			}
			checkPackets(t, got, want)
			if r.Version() != V5 {
				t.Errorf("version after CONNECT = %d", r.Version())
			}
		})
	}
}

// Several packets delivered by one Read are all returned, and each packet
// owns its bytes: reading later packets does not overwrite earlier ones.
func TestReaderManyPacketsOneReadOwnership(t *testing.T) {
	var raw []byte
	var want []Packet
	for i := range 50 {
		p := &Publish{QoS: 1, PacketID: uint16(i + 1), Topic: "t", Payload: bytes.Repeat([]byte{byte(i)}, 100)}
		raw, _ = Encode(raw, p, V311)
		want = append(want, p)
	}
	r := NewReader(bytes.NewReader(raw), 0) // bytes.Reader returns up to the buffer size per Read
	got, err := readAll(t, r)
	if err != io.EOF {
		t.Fatal(err)
	}
	checkPackets(t, got, want)
}

// A large packet (bigger than the read-ahead buffer) in small pieces.
func TestReaderLargePacket(t *testing.T) {
	p := &Publish{Topic: "big", Payload: bytes.Repeat([]byte("0123456789"), 20000)}
	raw, _ := Encode(nil, p, V311)
	raw, _ = Encode(raw, &Pingreq{}, V311)
	for _, split := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.HalfReader, iotest.DataErrReader} {
		got, err := readAll(t, NewReader(split(bytes.NewReader(raw)), 1<<20))
		if err != io.EOF {
			t.Fatal(err)
		}
		checkPackets(t, got, []Packet{p, &Pingreq{}})
	}
}

// headerOnly returns the header bytes, then fails the test if the body is read.
type headerOnly struct {
	t    *testing.T
	hdr  []byte
	done bool
}

func (h *headerOnly) Read(b []byte) (int, error) {
	if h.done {
		h.t.Fatal("Reader read past the fixed header of an oversize packet")
	}
	h.done = true
	return copy(b, h.hdr), nil
}

// A remaining length of 200 MB with a 1 MB limit fails from the fixed
// header alone, with nothing read or allocated for the body.
func TestReaderOversizeRejectedBeforeAllocation(t *testing.T) {
	hdr := appendVarint([]byte{0x30}, 200<<20)
	src := &headerOnly{t: t, hdr: hdr}
	r := NewReader(src, 1<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	p, err := r.ReadPacket()
	runtime.ReadMemStats(&after)
	if p != nil {
		t.Fatalf("got packet %#v", p)
	}
	checkErr(t, err, PacketTooLarge, "remaining length")
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("allocated %d bytes", n)
	}
	// Sticky: the stream is out of step.
	if _, err2 := r.ReadPacket(); err2 != err {
		t.Errorf("second call: %v", err2)
	}
}

// Without a limit, a lying length does not make the Reader allocate it all:
// the body grows with the data that actually arrives.
func TestReaderUnlimitedLyingLength(t *testing.T) {
	raw := append(appendVarint([]byte{0x30}, 200<<20), 0, 1, 't')
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := NewReader(bytes.NewReader(raw), 0).ReadPacket()
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("err %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("allocated %d bytes", n)
	}
}

func TestReaderEOF(t *testing.T) {
	for _, tc := range []struct {
		name string
		hex  string
		n    int // packets before the error
		err  error
	}{
		{"empty stream", "", 0, io.EOF},
		{"after whole packets", "c0 00 d0 00", 2, io.EOF},
		{"inside the fixed header", "c0 00 30", 1, io.ErrUnexpectedEOF},
		{"inside the remaining length", "30 80", 0, io.ErrUnexpectedEOF},
		{"inside the body", "30 05 0001 74", 0, io.ErrUnexpectedEOF},
		{"inside a large body", "30 80 80 01 0001 74", 0, io.ErrUnexpectedEOF},
	} {
		for _, split := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.DataErrReader} {
			r := NewReader(split(bytes.NewReader(unhex(t, tc.hex))), 0)
			got, err := readAll(t, r)
			if len(got) != tc.n || err != tc.err {
				t.Errorf("%s: %d packets, err %v; want %d, %v", tc.name, len(got), err, tc.n, tc.err)
			}
		}
	}
}

func TestReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(bytes.NewReader(unhex(t, "c0 00 30")), iotest.ErrReader(boom)), 0)
	if _, err := r.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadPacket(); err != boom {
		t.Fatalf("got %v, want the reader's error", err)
	}
	if _, err := r.ReadPacket(); err != boom {
		t.Fatalf("not sticky: %v", err)
	}
	// A decode error consumes the packet; the next one still reads.
	r = NewReader(bytes.NewReader(unhex(t, "40 02 0000 c0 00")), 0)
	_, err := r.ReadPacket()
	checkErr(t, err, ProtocolError, "packet identifier")
	if p, err := r.ReadPacket(); err != nil || p.Type() != PINGREQ {
		t.Fatalf("after decode error: %v %v", p, err)
	}
	// A malformed fixed header is sticky.
	r = NewReader(bytes.NewReader(unhex(t, "60 02 0001 c0 00")), 0)
	_, err = r.ReadPacket()
	checkErr(t, err, MalformedPacket, "fixed header flags")
	if _, err2 := r.ReadPacket(); err2 != err {
		t.Fatalf("not sticky: %v", err2)
	}
}

// Version switching: 3.1.1 by default, CONNECT decides, SetVersion for
// clients; an unsupported CONNECT is returned with its level and leaves the
// version alone.
func TestReaderVersion(t *testing.T) {
	// "40 03 0001 10" is a 5.0 PUBACK with a reason code; malformed in 3.1.1.
	raw := unhex(t, "40 03 0001 10")
	_, err := NewReader(bytes.NewReader(raw), 0).ReadPacket()
	checkErr(t, err, MalformedPacket, "remaining length")
	r := NewReader(bytes.NewReader(raw), 0)
	r.SetVersion(V5)
	if p, err := r.ReadPacket(); err != nil || p.(*Ack).ReasonCode != NoMatchingSubscribers {
		t.Fatalf("%v %v", p, err)
	}
	r = NewReader(bytes.NewReader(unhex(t, pk("10", s("MQTT"), "07 02 003c", s("c")))), 0)
	p, err := r.ReadPacket()
	checkErr(t, err, UnsupportedProtocolVersion, "protocol level")
	if c, ok := p.(*Connect); !ok || c.Version != 7 || r.Version() != V311 {
		t.Fatalf("%#v, reader version %d", p, r.Version())
	}
	r = NewReader(bytes.NewReader(unhex(t, pk("10", s("MQIsdp"), "03 02 003c", s("c")))), 0)
	r.SetMaxPacketSize(10)
	if _, err := r.ReadPacket(); !errors.Is(err, PacketTooLarge) {
		t.Fatalf("SetMaxPacketSize: %v", err)
	}
}

// zeroReader returns (0, nil) forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderNoProgress(t *testing.T) {
	if _, err := NewReader(zeroReader{}, 0).ReadPacket(); err != io.ErrNoProgress {
		t.Fatalf("got %v", err)
	}
}
