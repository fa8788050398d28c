package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/persist"
	"github.com/ferrymq/ferrymq/session"
)

// startServer runs a broker on 127.0.0.1:0 for the test and shuts it down
// (checking that shutdown completes) at cleanup.
func startServer(t testing.TB, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}, Storage: Storage{Dir: t.TempDir()}}
	if mutate != nil {
		mutate(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("FERRYMQ_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := New(cfg, Options{Logger: log, Store: testStore(t)})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// testStore is the store the suite runs on: in memory by default,
// FERRYMQ_TEST_STORE=fake for the durable code paths on fakeStore,
// FERRYMQ_TEST_STORE=badger on the real store (persist, sync durability).
func testStore(t testing.TB) session.Store {
	switch os.Getenv("FERRYMQ_TEST_STORE") {
	case "fake":
		return newFakeStore()
	case "badger":
		st, err := persist.Open(persist.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		return st
	case "", "memory":
		return session.Memory{}
	}
	t.Fatalf("FERRYMQ_TEST_STORE=%q: want memory or fake", os.Getenv("FERRYMQ_TEST_STORE"))
	return nil
}

func addr(s *Server) string { return s.Addrs()[0].String() }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tclient is a raw MQTT test client: it writes packets or bytes and reads
// decoded packets with a timeout.
type tclient struct {
	t    testing.TB
	conn net.Conn
	r    *packet.Reader
	v    packet.Version
}

func dialRaw(t testing.TB, s *Server, v packet.Version) *tclient {
	t.Helper()
	conn, err := net.Dial("tcp", addr(s))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	r := packet.NewReader(conn, 0)
	r.SetVersion(v)
	return &tclient{t: t, conn: conn, r: r, v: v}
}

// connect dials and completes CONNECT/CONNACK; mutate adjusts the CONNECT.
func connect(t testing.TB, s *Server, v packet.Version, id string, mutate func(*packet.Connect)) (*tclient, *packet.Connack) {
	t.Helper()
	c := dialRaw(t, s, v)
	p := &packet.Connect{ProtocolName: "MQTT", Version: v, CleanStart: true, KeepAlive: 60, ClientID: id}
	if v == packet.V31 {
		p.ProtocolName = "MQIsdp"
	}
	if mutate != nil {
		mutate(p)
	}
	c.send(p)
	ack, ok := c.read().(*packet.Connack)
	if !ok {
		t.Fatalf("expected CONNACK")
	}
	return c, ack
}

func (c *tclient) send(p packet.Packet) {
	c.t.Helper()
	b, err := packet.Encode(nil, p, c.v)
	if err != nil {
		c.t.Fatalf("encode %s: %v", p.Type(), err)
	}
	c.write(b)
}

func (c *tclient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet or fails the test after 5 s.
func (c *tclient) read() packet.Packet {
	c.t.Helper()
	p, err := c.readErr(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *tclient) readErr(d time.Duration) (packet.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	return c.r.ReadPacket()
}

// expectNothing checks that no packet arrives within d.
func (c *tclient) expectNothing(d time.Duration) {
	c.t.Helper()
	p, err := c.readErr(d)
	if err == nil {
		c.t.Fatalf("unexpected %s: %+v", p.Type(), p)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("connection failed while expecting silence: %v", err)
	}
	// The Reader keeps I/O errors; nothing was read, so start a fresh one.
	c.r = packet.NewReader(c.conn, 0)
	c.r.SetVersion(c.v)
}

// expectClosed reads until the server closes the connection and returns
// the DISCONNECT it sent, if any.
func (c *tclient) expectClosed() *packet.Disconnect {
	c.t.Helper()
	var d *packet.Disconnect
	for {
		p, err := c.readErr(5 * time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("connection not closed")
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return d
			}
			return d
		}
		if dp, ok := p.(*packet.Disconnect); ok {
			d = dp
		}
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

func (c *tclient) subscribe(id uint16, opts ...packet.SubOption) *packet.Suback {
	c.t.Helper()
	c.send(&packet.Subscribe{PacketID: id, Subs: opts})
	sa, ok := c.read().(*packet.Suback)
	if !ok || sa.PacketID != id {
		c.t.Fatalf("expected SUBACK %d, got %+v", id, sa)
	}
	return sa
}

func (c *tclient) readPublish() *packet.Publish {
	c.t.Helper()
	p := c.read()
	pub, ok := p.(*packet.Publish)
	if !ok {
		c.t.Fatalf("expected PUBLISH, got %s %+v", p.Type(), p)
	}
	return pub
}

func (c *tclient) readAck(kind packet.Type) *packet.Ack {
	c.t.Helper()
	p := c.read()
	a, ok := p.(*packet.Ack)
	if !ok || a.Kind != kind {
		c.t.Fatalf("expected %s, got %s %+v", kind, p.Type(), p)
	}
	return a
}
