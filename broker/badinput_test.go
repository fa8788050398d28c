package broker

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Bad input: every case runs on its own connection while a well-behaved
// client keeps publishing to itself and receiving on the same broker; it
// must keep working after each case, and no connection may leak.

// goodClient publishes QoS 1 messages to its own subscription in a loop on
// a goroutine and counts completed round trips.
type goodClient struct {
	rounds atomic.Int64
	err    atomic.Value // error
	stop   chan struct{}
	done   chan struct{}
}

func startGood(t *testing.T, s *Server) *goodClient {
	t.Helper()
	c, _ := connect(t, s, packet.V5, "good", nil)
	c.subscribe(1, packet.SubOption{Filter: "good/#", QoS: 1})
	g := &goodClient{stop: make(chan struct{}), done: make(chan struct{})}
	go g.loop(c.conn, c.r)
	t.Cleanup(func() { close(g.stop); <-g.done })
	return g
}

func (g *goodClient) loop(conn net.Conn, r *packet.Reader) {
	defer close(g.done)
	for i := 0; ; i++ {
		select {
		case <-g.stop:
			return
		default:
		}
		id := uint16(i%65535 + 1)
		payload := strconv.Itoa(i)
		b, _ := packet.Encode(nil, &packet.Publish{Topic: "good/x", QoS: 1, PacketID: id, Payload: []byte(payload)}, packet.V5)
		if _, err := conn.Write(b); err != nil {
			g.err.Store(err)
			return
		}
		acked, received := false, false
		for !acked || !received {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			p, err := r.ReadPacket()
			if err != nil {
				g.err.Store(fmt.Errorf("round %d: %w", i, err))
				return
			}
			switch p := p.(type) {
			case *packet.Ack:
				acked = acked || p.Kind == packet.PUBACK && p.PacketID == id
			case *packet.Publish:
				received = received || string(p.Payload) == payload
				b, _ := packet.Encode(nil, &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID}, packet.V5)
				conn.Write(b)
			}
		}
		g.rounds.Add(1)
		time.Sleep(time.Millisecond) // pacing only: leave CPU to the bad clients
	}
}

// check waits until the good client has completed two more round trips.
func (g *goodClient) check(t *testing.T, after string) {
	t.Helper()
	n := g.rounds.Load()
	waitFor(t, "the good client after "+after, func() bool {
		if err, _ := g.err.Load().(error); err != nil {
			t.Fatalf("good client failed after %s: %v", after, err)
		}
		return g.rounds.Load() >= n+2
	})
}

// expectClosedSilently reads until the connection closes and fails on any
// packet from the broker.
func (c *tclient) expectClosedSilently() {
	c.t.Helper()
	for {
		p, err := c.readErr(5 * time.Second)
		if err == nil {
			c.t.Fatalf("unexpected %s %+v", p.Type(), p)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatal("connection not closed")
		}
		var pe *packet.Error
		if !errors.As(err, &pe) {
			return
		}
	}
}

// subBytes is a SUBSCRIBE to "x" with the given options byte.
func subBytes(v packet.Version, opts byte) []byte {
	body := []byte{0, 1} // packet id
	if v == packet.V5 {
		body = append(body, 0) // no properties
	}
	body = append(body, 0, 1, 'x', opts)
	return append([]byte{0x82, byte(len(body))}, body...)
}

func enc(t *testing.T, p packet.Packet, v packet.Version) []byte {
	t.Helper()
	b, err := packet.Encode(nil, p, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadInput(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxPacketSize = 4096 })
	good := startGood(t, s)
	good.check(t, "start")

	type badCase struct {
		name  string
		v5    bool // v5 only
		v3    bool // 3.1.1 only
		bytes func(v packet.Version) []byte
		code  packet.ReasonCode // v5 DISCONNECT; 3.1.1 is just closed
	}
	pubBytes := func(topic []byte, props ...byte) []byte {
		// PUBLISH QoS 0 written by hand: topic, v5 properties, payload "p".
		body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
		body = append(body, props...)
		body = append(body, 'p')
		return append([]byte{0x30, byte(len(body))}, body...)
	}
	cases := []badCase{
		// §1.5.5: a Variable Byte Integer has at most 4 bytes; a 5th is
		// malformed [MQTT-4.13.1-1].
		{name: "remaining length of 5 bytes", bytes: func(packet.Version) []byte {
			return []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}
		}, code: packet.MalformedPacket},
		// [MQTT-3.8.1-1]: SUBSCRIBE flags must be 0010.
		{name: "SUBSCRIBE flags 0000", bytes: func(v packet.Version) []byte {
			b := enc(t, &packet.Subscribe{PacketID: 1, Subs: []packet.SubOption{{Filter: "x"}}}, v)
			b[0] = 0x80
			return b
		}, code: packet.MalformedPacket},
		// [MQTT-3.6.1-1]: PUBREL flags must be 0010; anything else is
		// malformed (not a protocol error).
		{name: "PUBREL flags 0000", bytes: func(v packet.Version) []byte {
			b := enc(t, &packet.Ack{Kind: packet.PUBREL, PacketID: 1}, v)
			b[0] = 0x60
			return b
		}, code: packet.MalformedPacket},
		// §2.2.2.1: a Property Length beyond the packet is malformed.
		{name: "property length past the end", v5: true, bytes: func(packet.Version) []byte {
			return []byte{0x30, 0x06, 0x00, 0x01, 't', 0x05, 0x01, 0x01}
		}, code: packet.MalformedPacket},
		{name: "truncated property value", v5: true, bytes: func(packet.Version) []byte {
			return []byte{0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x02, 0x00, 0x00}
		}, code: packet.MalformedPacket},
		{name: "topic length past the end", bytes: func(packet.Version) []byte {
			return []byte{0x30, 0x03, 0x00, 0x09, 't'}
		}, code: packet.MalformedPacket},
		// [MQTT-1.5.4-1]: ill-formed UTF-8 in a topic is malformed.
		{name: "invalid UTF-8 topic", bytes: func(v packet.Version) []byte {
			if v == packet.V5 {
				return pubBytes([]byte{'a', 0xff, 0xfe}, 0x00)
			}
			return pubBytes([]byte{'a', 0xff, 0xfe})
		}, code: packet.MalformedPacket},
		// [MQTT-1.5.4-2]: U+0000 in a topic is malformed too.
		{name: "NUL in topic", bytes: func(v packet.Version) []byte {
			if v == packet.V5 {
				return pubBytes([]byte{'a', 0, 'b'}, 0x00)
			}
			return pubBytes([]byte{'a', 0, 'b'})
		}, code: packet.MalformedPacket},
		// [MQTT-3.3.2-2]: no wildcards in a PUBLISH topic: 0x90.
		{name: "wildcard in PUBLISH topic", bytes: func(v packet.Version) []byte {
			return enc(t, &packet.Publish{Topic: "a/+/b", Payload: []byte("x")}, v)
		}, code: packet.TopicNameInvalid},
		{name: "# in PUBLISH topic", bytes: func(v packet.Version) []byte {
			return enc(t, &packet.Publish{Topic: "a/#", Payload: []byte("x")}, v)
		}, code: packet.TopicNameInvalid},
		// [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
		{name: "second CONNECT", bytes: func(v packet.Version) []byte {
			return enc(t, &packet.Connect{Version: v, ClientID: "again", CleanStart: true}, v)
		}, code: packet.ProtocolError},
		// [MQTT-3.3.4-6]: a client's PUBLISH must not carry a Subscription
		// Identifier.
		{name: "subscription id from client", v5: true, bytes: func(v packet.Version) []byte {
			p := &packet.Publish{Topic: "a", Payload: []byte("x")}
			p.Props.SubscriptionIDs = []uint32{3}
			return enc(t, p, v)
		}, code: packet.ProtocolError},
		// §3.2.2.3.6 / §4.13: larger than the server's Maximum Packet Size,
		// refused from the fixed header alone: 0x95.
		{name: "oversize", bytes: func(packet.Version) []byte {
			return []byte{0x30, 0x90, 0x4e} // remaining length 10000, body never sent
		}, code: packet.PacketTooLarge},
		// §2.1.2: packet type 0 is reserved (malformed).
		{name: "reserved type 0", bytes: func(packet.Version) []byte {
			return []byte{0x00, 0x00}
		}, code: packet.MalformedPacket},
		// §3.8.3.1: QoS 3 in the Subscription Options is a Protocol Error
		// in 5.0 (malformed in 3.1.1 [MQTT-3-8.3-4]); set reserved bits are
		// malformed [MQTT-3.8.3-5].
		{name: "subscription QoS 3", bytes: func(v packet.Version) []byte {
			return subBytes(v, 0x03)
		}, code: packet.ProtocolError},
		{name: "subscription reserved bits", bytes: func(v packet.Version) []byte {
			return subBytes(v, 0xC1)
		}, code: packet.MalformedPacket},
		// §3.8.3.1: Retain Handling 3 is a Protocol Error.
		{name: "retain handling 3", v5: true, bytes: func(v packet.Version) []byte {
			return subBytes(v, 0x31)
		}, code: packet.ProtocolError},
		// §2.1.2: type 15 is reserved in 3.1.1 (AUTH exists only in 5.0).
		{name: "AUTH in 3.1.1", v3: true, bytes: func(packet.Version) []byte {
			return []byte{0xf0, 0x00}
		}, code: packet.MalformedPacket},
		// A server-only packet from a client is a Protocol Error.
		{name: "CONNACK from client", v5: true, bytes: func(v packet.Version) []byte {
			return enc(t, &packet.Connack{}, v)
		}, code: packet.ProtocolError},
	}
	n := 0
	for _, tc := range cases {
		for _, v := range versions {
			if tc.v5 && v != packet.V5 || tc.v3 && v == packet.V5 {
				continue
			}
			n++
			c, _ := connect(t, s, v, "bad"+strconv.Itoa(n), nil)
			c.write(tc.bytes(v))
			c.expectKicked(tc.code)
			good.check(t, fmt.Sprintf("%s (v%d)", tc.name, v))
		}
	}
	waitFor(t, "only the good client connected", func() bool {
		st := s.Stats()
		return st.Connections == 1 && st.Sessions == 1
	})
}

func TestBadFirstPacket(t *testing.T) {
	s := startServer(t, nil)
	good := startGood(t, s)
	// [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else
	// closes the connection, with no CONNACK.
	for _, p := range []packet.Packet{
		&packet.Publish{Topic: "a", Payload: []byte("x")},
		&packet.Subscribe{PacketID: 1, Subs: []packet.SubOption{{Filter: "#"}}},
		&packet.Disconnect{},
		&packet.Pingreq{},
	} {
		for _, v := range versions {
			c := dialRaw(t, s, v)
			c.send(p)
			c.expectClosedSilently()
			good.check(t, "first packet "+p.Type().String())
		}
	}
	// [MQTT-3.1.2-1]: an unknown protocol name: the connection is closed
	// (after at most a refusing CONNACK).
	for _, level := range []byte{4, 5} {
		c := dialRaw(t, s, packet.V311)
		c.write([]byte{0x10, 0x0d, 0, 5, 'M', 'Q', 'T', 'T', 'X', level, 2, 0, 60, 0, 0})
		for {
			p, err := c.readErr(5 * time.Second)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("connection not closed")
				}
				break
			}
			if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode == packet.Success {
				t.Fatalf("unknown protocol name answered with %+v", p)
			}
		}
		good.check(t, "unknown protocol name")
	}
	if st := s.Stats(); st.Connections != 1 {
		t.Fatalf("%d connections, want 1", st.Connections)
	}
}

func TestStalledClients(t *testing.T) {
	s := startServer(t, nil)
	good := startGood(t, s)
	// Half a CONNECT, then nothing: the broker waits for it (up to the
	// connect timeout) without holding anyone else up.
	half := enc(t, &packet.Connect{Version: packet.V5, ClientID: "stall", CleanStart: true}, packet.V5)
	pre := dialRaw(t, s, packet.V5)
	pre.write(half[:len(half)/2])
	good.check(t, "half a CONNECT")

	// Connected clients with keep alive 1 that send half a packet and
	// stall: closed after 1.5 x keep alive [MQTT-3.1.2-22], v5 with 0x8D;
	// the good client works meanwhile.
	var stalled []*tclient
	for _, v := range versions {
		c, _ := connect(t, s, v, "stall"+strconv.Itoa(int(v)), func(p *packet.Connect) { p.KeepAlive = 1 })
		pub := enc(t, &packet.Publish{Topic: "good/x", QoS: 1, PacketID: 1, Payload: make([]byte, 500)}, v)
		c.write(pub[:200])
		stalled = append(stalled, c)
	}
	good.check(t, "half a PUBLISH")
	for _, c := range stalled {
		c.expectKicked(packet.KeepAliveTimeout)
	}
	good.check(t, "stalled clients closed")
	pre.conn.Close()
	waitFor(t, "connections back to 1", func() bool { return s.Stats().Connections == 1 })
}

func TestRandomGarbage(t *testing.T) {
	s := startServer(t, nil)
	good := startGood(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	base := s.Stats()
	const rounds = 300
	for i := range rounds {
		b := make([]byte, 1+rng.IntN(300))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		c := dialRaw(t, s, packet.V311)
		if i%2 == 1 {
			// Half the time after a valid CONNECT, so that the garbage
			// reaches the decoder of a connected client.
			v := versions[i/2%2]
			b = append(enc(t, &packet.Connect{Version: v, ClientID: "junk" + strconv.Itoa(i), CleanStart: true, KeepAlive: 30}, v), b...)
		}
		// Written in random pieces, then the client goes away, as a
		// broken device would (the broker may have closed first).
		for len(b) > 0 {
			k := 1 + rng.IntN(len(b))
			if _, err := c.conn.Write(b[:k]); err != nil {
				break
			}
			b = b[k:]
		}
		if rng.IntN(2) == 0 {
			// Sometimes wait for the broker's verdict before leaving.
			c.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			io.Copy(io.Discard, c.conn)
		}
		c.conn.Close()
		if i%50 == 0 {
			good.check(t, "garbage round "+strconv.Itoa(i))
		}
	}
	good.check(t, "all garbage")
	t.Logf("good client: %d round trips", good.rounds.Load())
	waitFor(t, "connections and sessions back to the good client's", func() bool {
		st := s.Stats()
		return st.Connections == base.Connections && st.Sessions == base.Sessions
	})
	if st := s.Stats(); st.Accepted < base.Accepted+rounds {
		t.Fatalf("accepted %d, want >= %d", st.Accepted, base.Accepted+rounds)
	}
}
