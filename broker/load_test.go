package broker

import (
	"context"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Resource tests: a slow subscriber never blocks a publisher, goroutines
// do not leak, idle connections hold no buffers.

func TestSlowSubscriberDoesNotBlockPublisher(t *testing.T) {
	const (
		msgs    = 20000
		msgSize = 1024
	)
	s := startServer(t, func(c *Config) { c.Limits.MaxQueuedBytes = 64 << 10 })

	// The slow one subscribes and then never reads its socket.
	slow, _ := connect(t, s, packet.V5, "slow", nil)
	slow.subscribe(1, packet.SubOption{Filter: "load/#"})
	if tc, ok := slow.conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096) // keep the kernel from absorbing the backlog
	}

	// The normal one reads continuously on its own goroutine.
	normal, _ := connect(t, s, packet.V5, "normal", nil)
	normal.subscribe(1, packet.SubOption{Filter: "load/#"})
	var received atomic.Int64
	var readErr atomic.Value
	readDone := make(chan struct{})
	go func() {
		// It reads in large chunks and only parses fixed headers, so that
		// it keeps up with the broker even on a loaded machine.
		defer close(readDone)
		buf := make([]byte, 0, 1<<20)
		for received.Load() < msgs {
			normal.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := normal.conn.Read(buf[len(buf):cap(buf)])
			if err != nil {
				readErr.Store(err)
				return
			}
			buf = buf[:len(buf)+n]
			off := 0
			for {
				h, err := packet.ParseFixedHeader(buf[off:], 0)
				if err != nil || len(buf)-off < h.Size() {
					break
				}
				if h.Type == packet.PUBLISH {
					received.Add(1)
				}
				off += h.Size()
			}
			buf = buf[:copy(buf, buf[off:])]
		}
	}()

	// The publisher writes 20,000 QoS 0 messages of 1 KB as fast as the
	// socket takes them, in batches.
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	payload := make([]byte, msgSize)
	var batch []byte
	for i := range msgs {
		var err error
		batch, err = packet.Encode(batch, &packet.Publish{Topic: "load/" + strconv.Itoa(i%16), Payload: payload}, packet.V5)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) >= 64<<10 || i == msgs-1 {
			pub.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			pub.write(batch)
			batch = batch[:0]
		}
	}
	// Design §3: no publisher ever blocks on a subscriber. Its PINGREQ,
	// after all of it, is answered within the read deadline.
	pub.pingSync()

	deadline := time.Now().Add(5 * time.Second)
	for received.Load() < msgs {
		if err, _ := readErr.Load().(error); err != nil {
			t.Fatalf("normal subscriber: %v after %d messages", err, received.Load())
		}
		if time.Now().After(deadline) {
			t.Fatalf("normal subscriber got %d of %d; stats %+v", received.Load(), msgs, s.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
	<-readDone
	st := s.Stats()
	if st.DroppedQoS0 == 0 {
		t.Fatalf("no QoS 0 drops counted for the slow subscriber: %+v", st)
	}
	if st.DroppedQoS0 >= msgs {
		t.Fatalf("dropped %d: more than the slow subscriber's share", st.DroppedQoS0)
	}
	t.Logf("slow subscriber: %d of %d messages dropped", st.DroppedQoS0, msgs)
}

func TestNoGoroutineLeak(t *testing.T) {
	start := runtime.NumGoroutine()
	cfg := Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}, Storage: Storage{Dir: t.TempDir()}}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	sub, _ := connect(t, s, packet.V5, "watch", nil)
	sub.subscribe(1, packet.SubOption{Filter: "#", QoS: 1})
	var keep []*tclient
	for i := range 50 {
		v := versions[i%2]
		id := "g" + strconv.Itoa(i)
		c, _ := connect(t, s, v, id, func(p *packet.Connect) {
			p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS = true, "will/"+id, []byte("w"), 1
			if i%5 == 0 { // some persistent sessions, some with a delayed will: timers
				p.CleanStart = false
				p.Props.SetUint32(packet.PropSessionExpiry, 60)
				p.WillProps.SetUint32(packet.PropWillDelay, 30)
			}
		})
		c.subscribe(1, packet.SubOption{Filter: "t/" + id, QoS: 1})
		c.send(&packet.Publish{Topic: "t/" + id, QoS: 1, PacketID: 1, Payload: []byte("x")})
		switch i % 4 {
		case 0:
			c.conn.Close() // abrupt
		case 1:
			c.send(&packet.Disconnect{})
			c.expectClosed()
		case 2:
			c.write([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}) // kicked out
			c.expectClosed()
		default:
			keep = append(keep, c) // still connected at shutdown
		}
	}
	// A connection that never sends CONNECT, one stuck mid-packet, and
	// one whose socket is full (a writer goroutine blocked in write).
	raw := dialRaw(t, s, packet.V311)
	raw.write([]byte{0x10, 0x20})
	stuck, _ := connect(t, s, packet.V5, "stuck", nil)
	stuck.write([]byte{0x30, 0x40, 0x00})
	full, _ := connect(t, s, packet.V5, "full", nil)
	full.subscribe(1, packet.SubOption{Filter: "fill/#"})
	if tc, ok := full.conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	big := make([]byte, 60<<10)
	for i := range 100 {
		sub.send(&packet.Publish{Topic: "fill/" + strconv.Itoa(i%3), Payload: big})
	}
	sub.pingSyncSkippingPublishes()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, c := range append(keep, sub, raw, stuck, full) {
		c.conn.Close()
	}
	waitFor(t, "goroutines back to the start", func() bool { return runtime.NumGoroutine() <= start })
}

// pingSyncSkippingPublishes is pingSync for a client that may also be
// receiving PUBLISHes (acknowledged and skipped).
func (c *tclient) pingSyncSkippingPublishes() {
	c.t.Helper()
	c.send(&packet.Pingreq{})
	for {
		switch p := c.read().(type) {
		case *packet.Pingresp:
			return
		case *packet.Publish:
			if p.QoS == 1 {
				c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			}
		}
	}
}

func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	const n = 500
	s := startServer(t, nil)
	before := runtime.NumGoroutine()
	clients := make([]*tclient, n)
	for i := range n {
		v := versions[i%2]
		clients[i], _ = connect(t, s, v, "idle"+strconv.Itoa(i), nil)
		if i%3 == 0 {
			// Some did a little work before going idle.
			clients[i].subscribe(1, packet.SubOption{Filter: "idle/" + strconv.Itoa(i), QoS: 1})
			clients[i].pingSync()
		}
	}
	waitFor(t, "all connected", func() bool { return s.Stats().Connections == n })

	// Design §3: an idle client holds no read buffer, no outbound buffer
	// and no writer goroutine. rbuf belongs to the serve goroutine, which
	// only reads it while idle; c.out is guarded by wmu.
	waitFor(t, "every idle connection to drop its buffers", func() bool {
		s.smu.RLock()
		defer s.smu.RUnlock()
		if len(s.sessions) != n {
			t.Fatalf("%d sessions, want %d", len(s.sessions), n)
		}
		for id, ss := range s.sessions {
			ss.mu.Lock()
			c := ss.c
			ss.mu.Unlock()
			if c == nil {
				t.Fatalf("%s: session offline", id)
			}
			c.wmu.Lock()
			busy := c.out != nil || c.flushing || c.rbuf != nil
			c.wmu.Unlock()
			if busy {
				return false
			}
		}
		return true
	})
	// One goroutine per connection (its reader), nothing else.
	if g := runtime.NumGoroutine(); g > before+n+5 {
		t.Fatalf("%d goroutines for %d idle connections (%d before)", g, n, before)
	}
}

func TestDisconnectAfterBacklog(t *testing.T) {
	// A takeover while a writer is still sending a backlog: the old
	// connection gets the backlog and then DISCONNECT 0x8E
	// [MQTT-3.1.4-3], not a bare close, and nothing after it
	// [MQTT-3.14.4-1].
	s := startServer(t, nil)
	old, _ := connect(t, s, packet.V5, "busy", nil)
	old.subscribe(1, packet.SubOption{Filter: "backlog/#"})
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	const n = 8000 // more than the kernel buffers hold
	payload := make([]byte, 1024)
	var batch []byte
	for i := range n {
		batch, _ = packet.Encode(batch, &packet.Publish{Topic: "backlog/x", Payload: payload}, packet.V5)
		if len(batch) > 64<<10 || i == n-1 {
			pub.write(batch)
			batch = batch[:0]
		}
	}
	pub.pingSync()
	waitFor(t, "a writer busy with the backlog", func() bool {
		ss := s.lookup("busy")
		ss.mu.Lock()
		c := ss.c
		ss.mu.Unlock()
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.flushing
	})
	type result struct {
		pubs int
		last packet.Packet
		err  error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		for {
			old.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			p, err := old.r.ReadPacket()
			if err != nil {
				r.err = err
				res <- r
				return
			}
			if _, ok := p.(*packet.Publish); ok {
				r.pubs++
			}
			r.last = p
		}
	}()
	connect(t, s, packet.V5, "busy", nil) // takes over while the backlog drains
	r := <-res
	d, ok := r.last.(*packet.Disconnect)
	if !ok || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("old connection: %d PUBLISHes, last packet %s, then %v", r.pubs, r.last.Type(), r.err)
	}
	t.Logf("old connection: %d PUBLISHes, then DISCONNECT 0x8E", r.pubs)
}
