package broker

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Tests of session state over time: message expiry, session expiry and
// delayed wills.

// skewClock is the real clock plus an offset the test can advance, for
// message expiry (timers still run on the real clock).
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *skewClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// startServerClock is startServer with a skewable clock.
func startServerClock(t *testing.T, mutate func(*Config)) (*Server, *skewClock) {
	t.Helper()
	cfg := Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}, Storage: Storage{Dir: t.TempDir()}}
	if mutate != nil {
		mutate(&cfg)
	}
	clk := &skewClock{}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg, Options{Logger: log, Now: clk.now, Store: testStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, clk
}

func persistent(expiry uint32) func(*packet.Connect) {
	return func(p *packet.Connect) {
		p.CleanStart = false
		p.Props.SetUint32(packet.PropSessionExpiry, expiry)
	}
}

func expiringPub(topic string, qos byte, id uint16, expiry uint32, retain bool) *packet.Publish {
	p := &packet.Publish{Topic: topic, QoS: qos, PacketID: id, Retain: retain, Payload: []byte(topic)}
	p.Props.SetUint32(packet.PropMessageExpiry, expiry)
	return p
}

func expiryOf(t *testing.T, p *packet.Publish) uint32 {
	t.Helper()
	if !p.Props.Has(packet.PropMessageExpiry) {
		t.Fatalf("no Message Expiry Interval on %+v", p)
	}
	return p.Props.MessageExpiry
}

// goOffline closes c abruptly and waits until the broker has detached it.
func goOffline(t *testing.T, s *Server, c *tclient, id string) {
	t.Helper()
	c.conn.Close()
	waitFor(t, id+" offline", func() bool {
		ss := s.lookup(id)
		if ss == nil {
			return true
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.c == nil
	})
}

func TestMessageExpiryRemaining(t *testing.T) {
	s, clk := startServerClock(t, nil)
	dev, _ := connect(t, s, packet.V5, "dev", persistent(300))
	dev.subscribe(1, packet.SubOption{Filter: "exp/#", QoS: 1})
	pub, _ := connect(t, s, packet.V5, "pub", nil)

	// Online: forwarded with the full interval (waited less than a second).
	pub.publishQoS(expiringPub("exp/online", 0, 0, 10, false))
	if got := dev.readPublish(); expiryOf(t, got) != 10 {
		t.Fatalf("online: expiry %d, want 10", got.Props.MessageExpiry)
	}
	goOffline(t, s, dev, "dev")
	pub.publishQoS(expiringPub("exp/queued", 1, 1, 10, false))
	pub.publishQoS(expiringPub("exp/short", 1, 2, 5, false))
	pub.publishQoS(expiringPub("exp/retained", 1, 3, 5, true))
	pub.publishQoS(&packet.Publish{Topic: "exp/forever", QoS: 1, PacketID: 4, Payload: []byte("exp/forever")})

	// [MQTT-3.3.2-6]: forwarded with the received value minus the time the
	// message waited in the server (4 s here, rounded up).
	clk.advance(4 * time.Second)
	dev, ack := connect(t, s, packet.V5, "dev", persistent(300))
	if !ack.SessionPresent {
		t.Fatal("session lost")
	}
	for _, w := range []struct {
		topic  string
		expiry uint32
	}{{"exp/queued", 6}, {"exp/short", 1}, {"exp/retained", 1}} {
		got := dev.readPublish()
		if got.Topic != w.topic || expiryOf(t, got) != w.expiry {
			t.Fatalf("%s: expiry %d, want %d (%+v)", w.topic, got.Props.MessageExpiry, w.expiry, got)
		}
		dev.ackPublish(got)
	}
	got := dev.readPublish()
	if got.Topic != "exp/forever" || got.Props.Has(packet.PropMessageExpiry) {
		t.Fatalf("message without expiry: %+v", got)
	}
	dev.ackPublish(got)
	dev.pingSync()

	// [MQTT-3.3.2-5]: a queued message whose interval has passed is
	// deleted, not delivered; a retained one is no longer sent.
	goOffline(t, s, dev, "dev")
	pub.publishQoS(expiringPub("exp/late", 1, 5, 3, false))
	pub.publishQoS(&packet.Publish{Topic: "exp/keep", QoS: 1, PacketID: 6, Payload: []byte("exp/keep")})
	before := s.Stats().DroppedExpired
	clk.advance(4 * time.Second)
	dev, _ = connect(t, s, packet.V5, "dev", persistent(300))
	if got := dev.readPublish(); got.Topic != "exp/keep" {
		t.Fatalf("expired message delivered: %+v", got)
	}
	dev.expectNothing(50 * time.Millisecond)
	if s.Stats().DroppedExpired != before+1 {
		t.Fatalf("DroppedExpired %d, want %d", s.Stats().DroppedExpired, before+1)
	}
	late, _ := connect(t, s, packet.V5, "late", nil)
	late.subscribe(1, packet.SubOption{Filter: "exp/#", QoS: 1})
	late.expectNothing(50 * time.Millisecond)
}

func TestMessageExpiryRealTime(t *testing.T) {
	// The same rules on the real clock, with the one real wait of these
	// tests: a queued message and a retained message of expiry 1 are gone
	// 1.5 s later [MQTT-3.3.2-5].
	s := startServer(t, nil)
	dev, _ := connect(t, s, packet.V5, "dev", persistent(60))
	dev.subscribe(1, packet.SubOption{Filter: "rt/#", QoS: 1})
	goOffline(t, s, dev, "dev")
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	start := time.Now()
	pub.publishQoS(expiringPub("rt/queued", 1, 1, 1, false))
	pub.publishQoS(expiringPub("rt/retained", 1, 2, 1, true))
	pub.publishQoS(expiringPub("rt/long", 1, 3, 60, false))
	waitFor(t, "1.5 s", func() bool { return time.Since(start) >= 1500*time.Millisecond })

	dev, _ = connect(t, s, packet.V5, "dev", persistent(60))
	got := dev.readPublish()
	if got.Topic != "rt/long" || expiryOf(t, got) > 59 || got.Props.MessageExpiry < 57 {
		t.Fatalf("got %+v", got)
	}
	dev.ackPublish(got)
	dev.expectNothing(50 * time.Millisecond)
	late, _ := connect(t, s, packet.V311, "late", nil)
	late.subscribe(1, packet.SubOption{Filter: "rt/#", QoS: 1})
	late.expectNothing(50 * time.Millisecond)
}

func TestSessionExpiryZero(t *testing.T) {
	// §3.1.2.11.2: absent or 0, the session ends when the connection
	// closes; a later Clean Start 0 finds none [MQTT-3.2.2-2].
	s := startServer(t, nil)
	for i, closeIt := range []func(*tclient){
		func(c *tclient) { c.send(&packet.Disconnect{}); c.expectClosed() },
		func(c *tclient) { c.conn.Close() },
	} {
		c, _ := connect(t, s, packet.V5, "zero", func(p *packet.Connect) {
			if i == 1 {
				p.Props.SetUint32(packet.PropSessionExpiry, 0)
			}
		})
		c.subscribe(1, packet.SubOption{Filter: "z", QoS: 1})
		closeIt(c)
		waitFor(t, "session removed", func() bool { return s.lookup("zero") == nil })
		c, ack := connect(t, s, packet.V5, "zero", func(p *packet.Connect) { p.CleanStart = false })
		if ack.SessionPresent {
			t.Fatalf("case %d: session present after expiry 0", i)
		}
		// Its subscription went with it.
		pub, _ := connect(t, s, packet.V5, "pub", nil)
		pub.publishQoS(&packet.Publish{Topic: "z", QoS: 1, PacketID: 1, Payload: []byte("x")})
		c.expectNothing(50 * time.Millisecond)
		c.send(&packet.Disconnect{})
		c.expectClosed()
	}
}

func TestSessionExpiryInterval(t *testing.T) {
	// [MQTT-3.1.2-23]: kept for the interval after the connection closes,
	// then discarded.
	s := startServer(t, nil)
	c, _ := connect(t, s, packet.V5, "two", persistent(2))
	c.subscribe(1, packet.SubOption{Filter: "two", QoS: 1})
	goOffline(t, s, c, "two")
	c, ack := connect(t, s, packet.V5, "two", persistent(2))
	if !ack.SessionPresent {
		t.Fatal("session not present within its expiry")
	}
	start := time.Now()
	goOffline(t, s, c, "two")
	waitFor(t, "session expired", func() bool { return s.lookup("two") == nil })
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("session removed after %v, before its 2 s expiry", el)
	}
	if _, ack := connect(t, s, packet.V5, "two", persistent(2)); ack.SessionPresent {
		t.Fatal("session present after its expiry")
	}
	if s.Stats().Subscriptions != 0 {
		t.Fatalf("subscriptions left: %d", s.Stats().Subscriptions)
	}
}

func TestSessionExpiryOnDisconnect(t *testing.T) {
	s := startServer(t, nil)
	// [MQTT-3.14.2-2] §3.14.2.2.2: setting a non-zero expiry on DISCONNECT
	// after 0 on CONNECT is a Protocol Error; the session still ends.
	c, _ := connect(t, s, packet.V5, "d0", nil)
	d := &packet.Disconnect{}
	d.Props.SetUint32(packet.PropSessionExpiry, 60)
	c.send(d)
	c.expectKicked(packet.ProtocolError)
	waitFor(t, "session removed", func() bool { return s.lookup("d0") == nil })

	// 60 on CONNECT, 0 on DISCONNECT: the session ends at the close.
	c, _ = connect(t, s, packet.V5, "d60", persistent(60))
	c.subscribe(1, packet.SubOption{Filter: "x", QoS: 1})
	d = &packet.Disconnect{}
	d.Props.SetUint32(packet.PropSessionExpiry, 0)
	c.send(d)
	c.expectClosed()
	waitFor(t, "session removed", func() bool { return s.lookup("d60") == nil })
	if _, ack := connect(t, s, packet.V5, "d60", persistent(60)); ack.SessionPresent {
		t.Fatal("session present after DISCONNECT set expiry 0")
	}
	if n := s.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
}

func TestMaxSessionExpiry(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxSessionExpiry = 5 })
	expiry := func(id string) uint32 {
		ss := s.lookup(id)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.st.Expiry
	}
	// §3.2.2.3.2: the server's own value is returned in CONNACK when it
	// differs from the client's.
	c, ack := connect(t, s, packet.V5, "cap", persistent(60))
	if !ack.Props.Has(packet.PropSessionExpiry) || ack.Props.SessionExpiry != 5 || expiry("cap") != 5 {
		t.Fatalf("CONNACK %+v, session expiry %d", ack.Props, expiry("cap"))
	}
	// A DISCONNECT asking for more is capped too.
	d := &packet.Disconnect{}
	d.Props.SetUint32(packet.PropSessionExpiry, 1000)
	c.send(d)
	c.expectClosed()
	waitFor(t, "offline", func() bool { return s.Stats().Connections == 0 })
	if e := expiry("cap"); e != 5 {
		t.Fatalf("expiry after DISCONNECT %d, want 5", e)
	}
	// Within the cap: the client's value, not repeated in CONNACK.
	_, ack = connect(t, s, packet.V5, "low", persistent(3))
	if ack.Props.Has(packet.PropSessionExpiry) || expiry("low") != 3 {
		t.Fatalf("CONNACK %+v, session expiry %d", ack.Props, expiry("low"))
	}
	// A 3.1.1 persistent session ("never") is capped as well.
	connect(t, s, packet.V311, "v3", func(p *packet.Connect) { p.CleanStart = false })
	if e := expiry("v3"); e != 5 {
		t.Fatalf("3.1.1 session expiry %d, want 5", e)
	}
}

// withWill sets a v5 will with the given delay and properties.
func withWill(payload string, delay, sessionExpiry uint32) func(*packet.Connect) {
	return func(p *packet.Connect) {
		p.CleanStart = false
		p.Props.SetUint32(packet.PropSessionExpiry, sessionExpiry)
		p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS = true, "wd/will", []byte(payload), 1
		p.WillProps.SetUint32(packet.PropWillDelay, delay)
	}
}

func TestWillDelay(t *testing.T) {
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V5, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "wd/#", QoS: 1})

	// All four start together so that one wait of about a second covers
	// them.
	// "back": delay 1, reconnects at once: the will is cancelled [MQTT-3.1.3-9].
	back, _ := connect(t, s, packet.V5, "back", withWill("back", 1, 10))
	// "takeover": delay 1, taken over by a new connection to its session
	// (Clean Start 0): that too is a new connection within the delay.
	taken, _ := connect(t, s, packet.V5, "takeover", withWill("takeover", 1, 10))
	// "gone": delay 1, never returns: the will goes after the delay, with
	// its properties [§3.1.3.2] and its Message Expiry Interval, counted
	// from publication [§3.1.3.2.4].
	gone, _ := connect(t, s, packet.V5, "gone", func(p *packet.Connect) {
		withWill("gone", 1, 10)(p)
		w := &p.WillProps
		w.SetUint32(packet.PropMessageExpiry, 30)
		w.SetByte(packet.PropPayloadFormat, 1)
		w.ContentType = "text/plain"
		w.ResponseTopic = "wd/resp"
		w.CorrelationData = []byte{9, 8}
		w.User = []packet.UserProperty{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}}
	})
	// "short": delay 10 but session expiry 1: the will goes when the
	// session ends, after 1 s [MQTT-3.1.3-9] §3.1.3.2.2.
	short, _ := connect(t, s, packet.V5, "short", withWill("short", 10, 1))

	start := time.Now()
	for _, c := range []*tclient{back, gone, short} {
		c.conn.Close()
	}
	waitFor(t, "offline", func() bool { return s.Stats().Connections == 2 })
	connect(t, s, packet.V5, "back", persistent(10))
	connect(t, s, packet.V5, "takeover", persistent(10))
	taken.expectKicked(packet.SessionTakenOver)

	got := map[string]*packet.Publish{}
	for len(got) < 2 {
		p := sub.readPublish()
		sub.ackPublish(p)
		got[string(p.Payload)] = p
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("wills after %v, before their 1 s delay", el)
	}
	g, sh := got["gone"], got["short"]
	if g == nil || sh == nil {
		t.Fatalf("got wills %v", got)
	}
	w := &g.Props
	if e := expiryOf(t, g); e > 30 || e < 29 || w.PayloadFormat != 1 || w.ContentType != "text/plain" ||
		w.ResponseTopic != "wd/resp" || !bytes.Equal(w.CorrelationData, []byte{9, 8}) ||
		!slices.Equal(w.User, []packet.UserProperty{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}}) {
		t.Fatalf("will properties: %+v", w)
	}
	if sh.Props.Has(packet.PropMessageExpiry) {
		t.Fatalf("will without expiry got one: %+v", sh.Props)
	}
	waitFor(t, "short's session ended", func() bool { return s.lookup("short") == nil })
	// The cancelled wills were due at the same time as these two.
	sub.expectNothing(200 * time.Millisecond)
}

func TestWillOnTakeover(t *testing.T) {
	// §3.1.4 (takeover): the old connection's will goes at once when its
	// Will Delay is 0, when its session ends with it (Session Expiry 0) or
	// when the new connection starts a clean session; otherwise the new
	// connection to the session cancels it [MQTT-3.1.3-9] (TestWillDelay).
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V5, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "wd/#", QoS: 1})
	cases := []struct {
		name         string
		v            packet.Version
		delay, expry uint32
		clean        bool
	}{
		{"v3 no delay", packet.V311, 0, 0, false},
		{"v5 no delay", packet.V5, 0, 10, false},
		{"v5 session ends", packet.V5, 5, 0, false},
		{"v5 clean start", packet.V5, 5, 10, true},
	}
	for _, tc := range cases {
		old, _ := connect(t, s, tc.v, "tk", func(p *packet.Connect) {
			withWill(tc.name, tc.delay, tc.expry)(p)
			if tc.v != packet.V5 {
				p.CleanStart = true
			}
		})
		connect(t, s, tc.v, "tk", func(p *packet.Connect) {
			p.CleanStart = tc.clean
			if tc.v == packet.V5 {
				p.Props.SetUint32(packet.PropSessionExpiry, 10)
			}
		})
		old.expectKicked(packet.SessionTakenOver)
		got := sub.readPublish()
		if string(got.Payload) != tc.name {
			t.Fatalf("%s: got %q", tc.name, got.Payload)
		}
		sub.ackPublish(got)
	}
	sub.expectNothing(50 * time.Millisecond)
}

func TestWillRetainedAndQoS(t *testing.T) {
	// §3.1.2.6 / §3.1.2.7: the will is published with its QoS and, with
	// Will Retain, as a retained message [MQTT-3.1.2-17 in 3.1.1].
	for _, v := range versions {
		s := startServer(t, nil)
		c, _ := connect(t, s, v, "w", func(p *packet.Connect) {
			p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS, p.WillRetain = true, "wr/w", []byte("bye"), 2, true
		})
		c.conn.Close()
		waitFor(t, "retained will", func() bool { return s.Stats().Retained == 1 })
		sub, _ := connect(t, s, v, "late", nil)
		sub.subscribe(1, packet.SubOption{Filter: "wr/#", QoS: 2})
		got := sub.readPublish()
		if string(got.Payload) != "bye" || !got.Retain || got.QoS != 2 {
			t.Fatalf("v%d: %+v", v, got)
		}
		sub.ackPublish(got)
	}
}
