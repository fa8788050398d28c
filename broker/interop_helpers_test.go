package broker_test

// Interoperability tests: real third-party MQTT clients against the broker,
// through its exported API only.
//
//   - Eclipse Paho Go (github.com/eclipse/paho.mqtt.golang), MQTT 3.1.1.
//   - Eclipse Paho Go v5 (github.com/eclipse/paho.golang/paho), MQTT 5.0.
//   - Mosquitto's mosquitto_pub / mosquitto_sub (Debian package
//     mosquitto-clients), 3.1.1 and 5.0. Skipped when the programs are not
//     installed, unless FERRYMQ_REQUIRE_SERVICES=1 (CI), where it fails.
//
// Every broker listens on 127.0.0.1:0; tests wait by polling the broker's
// Stats or the clients' inboxes, never by fixed sleeps.
//
// This file holds the shared helpers; the tests are in interop_paho311_test.go,
// interop_paho5_test.go, interop_mosquitto_test.go and interop_reconnect_test.go.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferrymq/broker"
	"github.com/ferrymq/ferrymq/broker/packet"
)

// ---------------------------------------------------------------------------
// Shared helpers.

// ioStart runs a broker on 127.0.0.1:0 for the test and shuts it down at
// cleanup (after the clients, whose cleanups are registered later).
func ioStart(t *testing.T, mutate func(*broker.Config)) (*broker.Server, string) {
	t.Helper()
	cfg := broker.Config{
		Listeners: []broker.Listener{{Address: "127.0.0.1:0"}},
		Storage:   broker.Storage{Dir: t.TempDir()},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("FERRYMQ_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := broker.New(cfg, broker.Options{Logger: log})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	addrs := s.Addrs()
	if len(addrs) != 1 {
		t.Fatalf("Addrs() = %v, want one address", addrs)
	}
	return s, addrs[0].String()
}

// ioWait polls cond every 2 ms until it holds, failing the test after d.
func ioWait(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ioMsg is one received PUBLISH, whichever client library got it.
type ioMsg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Props   *paho.PublishProperties // v5 only
}

// ioInbox collects messages from a client callback.
type ioInbox struct {
	mu   sync.Mutex
	msgs []ioMsg
}

func (b *ioInbox) add(m ioMsg) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *ioInbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func (b *ioInbox) all() []ioMsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

// waitN waits until at least n messages have arrived and returns them all.
func (b *ioInbox) waitN(t *testing.T, n int, d time.Duration) []ioMsg {
	t.Helper()
	deadline := time.Now().Add(d)
	for b.len() < n {
		if time.Now().After(deadline) {
			got := b.all()
			if len(got) > 5 {
				got = got[len(got)-5:]
			}
			t.Fatalf("timed out after %v: %d of %d messages arrived; last ones: %+v", d, b.len(), n, got)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return b.all()
}

// waitFor waits for a message on topic and returns it.
func (b *ioInbox) waitFor(t *testing.T, topic string, d time.Duration) ioMsg {
	t.Helper()
	var found ioMsg
	ioWait(t, "a message on "+topic, d, func() bool {
		for _, m := range b.all() {
			if m.Topic == topic {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// checkSequence checks that msgs are exactly prefix+"0000" .. prefix+N-1 in
// order: none lost, none duplicated, none reordered.
func checkSequence(t *testing.T, msgs []ioMsg, prefix string, n int, qos byte) {
	t.Helper()
	if len(msgs) != n {
		t.Errorf("got %d messages, want %d", len(msgs), n)
	}
	seen := make(map[string]int, len(msgs))
	bad := 0
	for i, m := range msgs {
		if j, dup := seen[m.Payload]; dup {
			t.Errorf("message %d %q is a duplicate of message %d", i, m.Payload, j)
			bad++
		}
		seen[m.Payload] = i
		if want := fmt.Sprintf("%s%04d", prefix, i); m.Payload != want && bad < 10 {
			t.Errorf("message %d: payload %q, want %q (out of order or lost)", i, m.Payload, want)
			bad++
		}
		if m.QoS != qos && bad < 10 {
			t.Errorf("message %d: QoS %d, want %d", i, m.QoS, qos)
			bad++
		}
		if bad >= 10 {
			t.Fatalf("too many errors")
		}
	}
}

// ---------------------------------------------------------------------------
// MQTT 3.1.1 clients: Eclipse Paho Go (paho.mqtt.golang).

// v3Connect connects a paho.mqtt.golang client (MQTT 3.1.1, no automatic
// reconnection). Messages on any subscription go to inbox (if not nil).
func v3Connect(t *testing.T, addr, id string, inbox *ioInbox, mutate func(*mqtt.ClientOptions)) (mqtt.Client, bool) {
	t.Helper()
	o := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second)
	if inbox != nil {
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			inbox.add(ioMsg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()})
		})
	}
	if mutate != nil {
		mutate(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatalf("%s: CONNECT timed out", id)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(100)
		}
	})
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// v3Wait waits for a token and fails the test on error or timeout.
func v3Wait(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// v3Subscribe subscribes and checks the granted QoS of every filter.
func v3Subscribe(t *testing.T, c mqtt.Client, filters map[string]byte) {
	t.Helper()
	tok := c.SubscribeMultiple(filters, nil)
	v3Wait(t, "subscribe", tok)
	got := tok.(*mqtt.SubscribeToken).Result()
	for f, q := range filters {
		if got[f] != q {
			t.Fatalf("SUBACK for %q: granted %d, want %d (all: %v)", f, got[f], q, got)
		}
	}
}

// ---------------------------------------------------------------------------
// MQTT 5.0 clients: Eclipse Paho Go v5 (paho.golang).

type v5Options struct {
	id       string
	clean    bool
	expiry   *uint32 // Session Expiry Interval; nil = absent (0)
	props    func(*paho.ConnectProperties)
	will     *paho.WillMessage
	willProp *paho.WillProperties
	inbox    *ioInbox
	// resolveAliases: resolve topic aliases the broker assigns (paho.golang
	// hands them to the application unresolved).
	resolveAliases bool
	// manualAck: the test acknowledges QoS 1/2 messages itself (Client.Ack
	// on the packets kept in received).
	manualAck bool
	received  *[]*paho.Publish
	rmu       *sync.Mutex
	// onServerDisconnect receives a DISCONNECT from the broker.
	onServerDisconnect func(*paho.Disconnect)
}

type v5Client struct {
	*paho.Client
	conn net.Conn
	ack  *paho.Connack
}

func u32(v uint32) *uint32 { return &v }

// v5Connect dials the broker and completes CONNECT/CONNACK with paho.golang.
func v5Connect(t *testing.T, addr string, o v5Options) *v5Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var (
		amu     sync.Mutex
		aliases = map[uint16]string{}
	)
	cfg := paho.ClientConfig{
		ClientID: o.id,
		Conn:     conn,
		// Errors after the test has ended must not reach t; ignore them.
		OnClientError:              func(error) {},
		OnServerDisconnect:         func(*paho.Disconnect) {},
		EnableManualAcknowledgment: o.manualAck,
	}
	if o.onServerDisconnect != nil {
		cfg.OnServerDisconnect = o.onServerDisconnect
	}
	if o.inbox != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				p := pr.Packet
				topic := p.Topic
				if o.resolveAliases && p.Properties != nil && p.Properties.TopicAlias != nil {
					amu.Lock()
					if topic != "" {
						aliases[*p.Properties.TopicAlias] = topic
					} else {
						topic = aliases[*p.Properties.TopicAlias]
					}
					amu.Unlock()
				}
				if o.received != nil {
					o.rmu.Lock()
					*o.received = append(*o.received, p)
					o.rmu.Unlock()
				}
				o.inbox.add(ioMsg{Topic: topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain, Props: p.Properties})
				return true, nil
			},
		}
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{
		ClientID:       o.id,
		CleanStart:     o.clean,
		KeepAlive:      30,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: o.expiry},
		WillMessage:    o.will,
		WillProperties: o.willProp,
	}
	if o.props != nil {
		o.props(cp.Properties)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		t.Fatalf("%s: connect: %v (CONNACK %v)", o.id, err, ack)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
		}
	})
	return &v5Client{Client: c, conn: conn, ack: ack}
}

// disconnect sends DISCONNECT with reason and waits for the client to stop.
func (c *v5Client) disconnect(t *testing.T, reason byte) {
	t.Helper()
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: reason}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	<-c.Done()
}

func (c *v5Client) subscribe(t *testing.T, subID *int, opts ...paho.SubscribeOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub := &paho.Subscribe{Subscriptions: opts}
	if subID != nil {
		sub.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: subID}
	}
	sa, err := c.Subscribe(ctx, sub)
	if err != nil {
		t.Fatalf("subscribe %+v: %v", opts, err)
	}
	for i, r := range sa.Reasons {
		if r != opts[i].QoS {
			t.Fatalf("SUBACK for %q: reason %#x, want granted QoS %d", opts[i].Topic, r, opts[i].QoS)
		}
	}
}

func (c *v5Client) publish(t *testing.T, p *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish to %q: %v", p.Topic, err)
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		t.Fatalf("publish to %q: reason %#x", p.Topic, resp.ReasonCode)
	}
}

// ---------------------------------------------------------------------------
// A TCP proxy that records client-to-broker traffic and can cut connections.

// ioProxy forwards TCP connections to the broker; cut drops every current
// connection at once, as a network failure would (both ends see EOF).
type ioProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	up    []*lockedBuffer // per connection, in accept order: client-to-broker bytes
	wg    sync.WaitGroup
}

// lockedBuffer is a bytes.Buffer safe for one writer and later readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}

func startProxy(t *testing.T, target string) *ioProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ioProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			up := &lockedBuffer{}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.up = append(p.up, up)
			p.mu.Unlock()
			for i, pair := range [][2]net.Conn{{b, c}, {c, b}} {
				var dst io.Writer = pair[0]
				if i == 0 {
					dst = io.MultiWriter(pair[0], up) // client to broker: recorded
				}
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(dst, pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *ioProxy) addr() string { return p.ln.Addr().String() }

// upstream decodes what the clients sent through the proxy, one slice of
// packets per connection in accept order.
func (p *ioProxy) upstream(v packet.Version) [][]packet.Packet {
	p.mu.Lock()
	ups := slices.Clone(p.up)
	p.mu.Unlock()
	var out [][]packet.Packet
	for _, u := range ups {
		r := packet.NewReader(bytes.NewReader(u.bytes()), 0)
		r.SetVersion(v)
		var pkts []packet.Packet
		for {
			pk, err := r.ReadPacket()
			if err != nil {
				break // EOF, or a packet cut short by the proxy
			}
			pkts = append(pkts, pk)
		}
		out = append(out, pkts)
	}
	return out
}

func (p *ioProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
