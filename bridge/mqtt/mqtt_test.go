package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// fastMosquitto lets a client have many QoS 1/2 messages in flight (the
// default Receive Maximum is 20).
var fastMosquitto = upstreamtest.MosquittoOptions{Config: "max_inflight_messages 1000"}

func TestPublishQoS1Many(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	sub := dialClient(t, m.Addr(), "sub", paho.SubscribeOptions{Topic: "tele/#", QoS: 1})
	u := connect(t, Config{URL: m.URL()}, nil)
	if got := u.ReceiveMaximum(); got != 1000 {
		t.Fatalf("ReceiveMaximum = %d, want 1000 (mosquitto's max_inflight_messages)", got)
	}
	const n = 10000
	msgs := telemetry("tele/dev1", n, 1)
	start := time.Now()
	r := forward(t, u, msgs, 256)
	t.Logf("%d QoS 1 publishes confirmed in %v (%.0f msgs/s)", n, time.Since(start), n/time.Since(start).Seconds())
	r.check(t, isNil)

	for i := range n {
		p := sub.next(t)
		id, _ := userProp(p, IDProperty)
		seq, _ := userProp(p, SeqProperty)
		if id != msgs[i].ID || seq != strconv.Itoa(i+1) || !bytes.Equal(p.Payload, msgs[i].Payload) || p.Topic != "tele/dev1" {
			t.Fatalf("message %d: topic %q id %q seq %q payload %q", i, p.Topic, id, seq, p.Payload)
		}
	}
}

func TestPublishQoS2(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	sub := dialClient(t, m.Addr(), "sub", paho.SubscribeOptions{Topic: "tele/#", QoS: 2})
	u := connect(t, Config{URL: m.URL()}, nil)
	const n = 2000
	msgs := telemetry("tele/q2", n, 2)
	forward(t, u, msgs, 256).check(t, isNil)
	seen := make(map[string]bool)
	for range n {
		p := sub.next(t)
		id, _ := userProp(p, IDProperty)
		if seen[id] || p.QoS != 2 {
			t.Fatalf("message %q: QoS %d, seen before %v", id, p.QoS, seen[id])
		}
		seen[id] = true
	}
	select {
	case p := <-sub.msgs:
		t.Fatalf("extra message %v", p)
	default:
	}
}

func TestPublishQoS0(t *testing.T) {
	m := upstreamtest.StartMosquitto(t)
	sub := dialClient(t, m.Addr(), "sub", paho.SubscribeOptions{Topic: "tele/#", QoS: 0})
	u := connect(t, Config{URL: m.URL()}, nil)
	msgs := telemetry("tele/q0", 100, 0)
	// Mixed with QoS 1: confirmations stay in Publish order.
	msgs[50].QoS = 1
	forward(t, u, msgs, 16).check(t, isNil)
	for i := range 100 {
		if p := sub.next(t); !bytes.Equal(p.Payload, msgs[i].Payload) {
			t.Fatalf("message %d: %q", i, p.Payload)
		}
	}
}

func TestRejectedByACL(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, upstreamtest.MosquittoOptions{ACL: "topic readwrite ok/#"})
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			u := connect(t, Config{URL: m.URL()}, nil)
			r := forward(t, u, []*bridge.Message{
				{Topic: "ok/a", QoS: qos, Payload: []byte("fine")},
				{Topic: "denied/a", QoS: qos, Payload: []byte("refused")},
			}, 1)
			r.check(t, func(i int, err error) bool {
				if i == 0 {
					return err == nil
				}
				return errors.Is(err, bridge.ErrRejected) && strings.Contains(err.Error(), "0x87 not authorized") &&
					strings.Contains(err.Error(), "denied/a")
			})
		})
	}
}

// TestLinkLostFailsPending: confirmations pending when the upstream dies
// get ErrLinkLost, then Done is closed.
func TestLinkLostFailsPending(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	u := connect(t, Config{URL: m.URL()}, nil)
	m.Freeze()
	msgs := telemetry("tele/lost", 100, 1)
	r := newResults(len(msgs))
	for i, msg := range msgs {
		if err := u.Publish(context.Background(), msg, func(err error) { r.confirm(i, err) }); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	m.Kill()
	r.wait(t)
	waitDone(t, u)
	r.check(t, isLinkLost)
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Err = %v, want ErrLinkLost", err)
	}
	if err := u.Publish(context.Background(), msgs[0], func(error) { t.Error("confirm after link loss") }); !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Publish after link loss = %v", err)
	}
}

// TestUpstreamStops: a clean broker shutdown ends the link (Done, Err).
func TestUpstreamStops(t *testing.T) {
	m := upstreamtest.StartMosquitto(t)
	u := connect(t, Config{URL: m.URL()}, nil)
	m.Stop()
	waitDone(t, u)
	err := u.Err()
	if !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Err = %v, want ErrLinkLost", err)
	}
	t.Logf("Err: %v", err)
}

// TestDownlinkPersistentSession: a message published upstream while we
// are offline (and across an upstream restart) is delivered on the next
// connection with the same client id, again when it was not acknowledged,
// and not any more once acknowledged.
func TestDownlinkPersistentSession(t *testing.T) {
	m := upstreamtest.StartMosquitto(t)
	cfg := Config{URL: m.URL(), ClientID: "gw-1", Receive: []Subscription{{Filter: "cmd/gw-1/#", QoS: 1}}}
	closeAndWait(t, connect(t, cfg, nil)) // creates the session

	pub := dialClient(t, m.Addr(), "app")
	pub.publish(t, &paho.Publish{Topic: "cmd/gw-1/reboot", QoS: 1, Payload: []byte("now"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: IDProperty, Value: "c1"}}}})
	m.Stop() // the session and the queued message survive a restart
	m.Start()

	in := make(inbox, 16)
	u := connect(t, cfg, in.handle)
	got := in.next(t)
	if got.Topic != "cmd/gw-1/reboot" || string(got.Payload) != "now" || got.ID != "c1" || got.QoS != 1 {
		t.Fatalf("got %+v", got.Message)
	}
	closeAndWait(t, u) // not acknowledged: the upstream keeps it

	in = make(inbox, 16)
	u = connect(t, cfg, in.handle)
	if got := in.next(t); got.ID != "c1" {
		t.Fatalf("redelivered %+v", got.Message)
	} else {
		got.Ack()
	}
	// The PUBACK goes out before the DISCONNECT of Close: the marker
	// published afterwards is the next message of the session.
	closeAndWait(t, u)
	pub = dialClient(t, m.Addr(), "app2")
	pub.publish(t, &paho.Publish{Topic: "cmd/gw-1/marker", QoS: 1, Payload: []byte("m")})
	in = make(inbox, 16)
	connect(t, cfg, in.handle)
	if got := in.next(t); got.Topic != "cmd/gw-1/marker" {
		t.Fatalf("after the ack, got %q (%+v), want the marker", got.Topic, got.Message)
	}
}

// TestDownlinkNack: a Nack drops the link; the message comes back on the
// next connection.
func TestDownlinkNack(t *testing.T) {
	m := upstreamtest.StartMosquitto(t)
	cfg := Config{URL: m.URL(), ClientID: "gw-nack", Receive: []Subscription{{Filter: "cmd/#", QoS: 2}}}
	in := make(inbox, 16)
	u := connect(t, cfg, in.handle)
	pub := dialClient(t, m.Addr(), "app")
	pub.publish(t, &paho.Publish{Topic: "cmd/x", QoS: 2, Payload: []byte("1")})
	pub.publish(t, &paho.Publish{Topic: "cmd/y", QoS: 1, Payload: []byte("2")})
	first := in.next(t)
	if first.QoS != 2 || first.Topic != "cmd/x" {
		t.Fatalf("first: %+v", first.Message)
	}
	first.Nack()
	waitDone(t, u)
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) || !strings.Contains(err.Error(), "redelivers") {
		t.Fatalf("Err = %v", err)
	}

	in = make(inbox, 16)
	u = connect(t, cfg, in.handle)
	for _, want := range []string{"cmd/x", "cmd/y"} {
		got := in.next(t)
		if got.Topic != want {
			t.Fatalf("got %q, want %q", got.Topic, want)
		}
		got.Ack()
	}
	closeAndWait(t, u)
}

// TestRequestReply: Response Topic, Correlation Data, Content Type,
// Message Expiry, Retain and user properties cross in both directions.
func TestRequestReply(t *testing.T) {
	m := upstreamtest.StartMosquitto(t)
	app := dialClient(t, m.Addr(), "app", paho.SubscribeOptions{Topic: "req/#", QoS: 1, RetainAsPublished: true})
	in := make(inbox, 16)
	u := connect(t, Config{URL: m.URL(), Receive: []Subscription{{Filter: "reply/#", QoS: 1}}}, in.handle)

	req := &bridge.Message{
		Topic: "req/dev1", QoS: 1, Payload: []byte("ping"), ID: "r1", Seq: 7,
		ResponseTopic: "reply/dev1", CorrelationData: []byte{0, 1, 2}, ContentType: "text/plain",
		Expiry: 1500 * time.Millisecond, Retain: true,
		User: []bridge.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}},
	}
	forward(t, u, []*bridge.Message{req}, 1).check(t, isNil)
	got := app.next(t)
	pp := got.Properties
	if pp.ResponseTopic != "reply/dev1" || !bytes.Equal(pp.CorrelationData, []byte{0, 1, 2}) ||
		pp.ContentType != "text/plain" || pp.MessageExpiry == nil || *pp.MessageExpiry > 2 || !got.Retain {
		t.Fatalf("request arrived as %+v %+v", got, pp)
	}
	if fmt.Sprint(pp.User) != "[{ferrymq-id r1} {ferrymq-seq 7} {a 1} {a 2}]" {
		t.Fatalf("user properties %v", pp.User)
	}

	exp := uint32(60)
	app.publish(t, &paho.Publish{Topic: pp.ResponseTopic, QoS: 1, Payload: []byte("pong"), Properties: &paho.PublishProperties{
		CorrelationData: pp.CorrelationData, ContentType: "text/plain", MessageExpiry: &exp, ResponseTopic: "req/again",
		User: paho.UserProperties{{Key: SeqProperty, Value: "9"}, {Key: "b", Value: "x"}, {Key: IDProperty, Value: "p1"}},
	}})
	rep := in.next(t)
	defer rep.Ack()
	want := bridge.Message{
		Topic: "reply/dev1", Payload: []byte("pong"), QoS: 1, ID: "p1", Seq: 9, ResponseTopic: "req/again",
		CorrelationData: []byte{0, 1, 2}, ContentType: "text/plain", Expiry: 60 * time.Second,
		User: []bridge.UserProperty{{Key: "b", Value: "x"}},
	}
	if fmt.Sprintf("%+v", rep.Message) != fmt.Sprintf("%+v", want) && !(rep.Expiry <= want.Expiry && rep.Expiry >= want.Expiry-2*time.Second) {
		t.Fatalf("reply\n got %+v\nwant %+v", rep.Message, want)
	}
	rep.Expiry = want.Expiry // the upstream counts down
	if fmt.Sprintf("%+v", rep.Message) != fmt.Sprintf("%+v", want) {
		t.Fatalf("reply\n got %+v\nwant %+v", rep.Message, want)
	}
}

// TestFrozenUpstream: on a frozen (half-open) upstream no confirmation
// comes (the bridge's confirm timeout notices); Close frees everything.
func TestFrozenUpstream(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	noGoroutineGrowth(t, func() {
		u := New(Config{URL: m.URL(), ClientID: "frozen"}, upstreamtest.Logger(t))
		if err := u.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		m.Freeze()
		defer m.Thaw()
		var confirmed atomic.Int32
		var lost atomic.Int32
		// Big enough to fill the socket buffers: the last ones block in
		// the write.
		payload := make([]byte, 64<<10)
		publishing := make(chan struct{})
		go func() {
			defer close(publishing)
			for range 200 {
				err := u.Publish(context.Background(), &bridge.Message{Topic: "t", QoS: 1, Payload: payload}, func(err error) {
					if err == nil {
						confirmed.Add(1)
					} else if errors.Is(err, bridge.ErrLinkLost) {
						lost.Add(1)
					}
				})
				if err != nil {
					return
				}
			}
		}()
		// Nothing is confirmed while the upstream sleeps: poll briefly.
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			if confirmed.Load() != 0 {
				t.Fatal("a confirmation from a frozen upstream")
			}
			time.Sleep(10 * time.Millisecond)
		}
		u.Close()
		<-publishing
		waitDone(t, u)
		if confirmed.Load() != 0 || lost.Load() == 0 {
			t.Fatalf("confirmed %d, lost %d", confirmed.Load(), lost.Load())
		}
	})
}

// TestStuckWriteEndsWithCtx: a publish whose write blocks on a frozen
// upstream returns when its ctx ends, and the link is dropped.
func TestStuckWriteEndsWithCtx(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	u := connect(t, Config{URL: m.URL()}, nil)
	m.Freeze()
	defer m.Thaw()
	payload := make([]byte, 256<<10)
	var lost atomic.Int32
	for i := 0; i < 500; i++ {
		select {
		case <-u.lost:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := u.Publish(ctx, &bridge.Message{Topic: "big", QoS: 1, Payload: payload}, func(err error) {
				if errors.Is(err, bridge.ErrLinkLost) {
					lost.Add(1)
				}
			})
			cancel()
			if err == nil {
				continue
			}
		}
		break
	}
	waitDone(t, u)
	if err := u.Err(); !strings.Contains(err.Error(), "stuck writing") || !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Err = %v", err)
	}
	if lost.Load() == 0 {
		t.Fatal("no confirmation with ErrLinkLost")
	}
}

// TestReceiveMaximumWaits: Publish waits (honouring ctx) while the
// upstream's Receive Maximum publishes are unconfirmed.
func TestReceiveMaximumWaits(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, upstreamtest.MosquittoOptions{Config: "max_inflight_messages 10"})
	u := connect(t, Config{URL: m.URL()}, nil)
	if u.ReceiveMaximum() != 10 {
		t.Fatalf("ReceiveMaximum = %d", u.ReceiveMaximum())
	}
	m.Freeze()
	defer m.Thaw()
	var confirmed atomic.Int32
	msg := &bridge.Message{Topic: "t", QoS: 1}
	for range 10 {
		if err := u.Publish(context.Background(), msg, func(error) { confirmed.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := u.Publish(ctx, msg, func(error) { t.Error("confirm of a publish that failed") }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("11th Publish = %v, want DeadlineExceeded", err)
	}
	m.Thaw()
	eventually(t, "10 confirmations", func() bool { return confirmed.Load() == 10 })
	if err := u.Publish(context.Background(), msg, func(error) { confirmed.Add(1) }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "11 confirmations", func() bool { return confirmed.Load() == 11 })
}

// TestPacketTooLarge: a message over the upstream's Maximum Packet Size is
// rejected without being sent (the upstream would drop the link).
func TestPacketTooLarge(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, upstreamtest.MosquittoOptions{Config: "max_packet_size 1000"})
	u := connect(t, Config{URL: m.URL()}, nil)
	r := forward(t, u, []*bridge.Message{
		{Topic: "big", QoS: 1, Payload: make([]byte, 2000)},
		{Topic: "small", QoS: 1, Payload: make([]byte, 100)},
	}, 2)
	r.check(t, func(i int, err error) bool {
		if i == 0 {
			return errors.Is(err, bridge.ErrRejected) && strings.Contains(err.Error(), "Maximum Packet Size 1000")
		}
		return err == nil
	})
}

func TestConnectErrors(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, upstreamtest.MosquittoOptions{Users: map[string]string{"gw": "right-secret"}})
	ctx := context.Background()
	for _, tc := range []struct {
		name, url, clientID, want string
	}{
		{"bad password", "mqtt://gw:wrong-secret@" + m.Addr(), "c", "mqtt: connect to " + m.Addr() + ": CONNACK reason 0x8"},
		{"refused", "mqtt://gw:wrong-secret@127.0.0.1:1", "c", "mqtt: connect to 127.0.0.1:1: "},
		{"amqp URL", "amqp://gw:wrong-secret@" + m.Addr() + "/", "c", "not mqtt:// or mqtts://"},
		{"no client id", m.URL(), "", "a fixed client id is required"},
		{"bad URL", "mqtt://gw:wrong-secret@" + m.Addr() + "/path", "c", "no path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := New(Config{URL: tc.url, ClientID: tc.clientID}, upstreamtest.Logger(t))
			err := u.Connect(ctx, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-secret") {
				t.Fatalf("the error shows the password: %v", err)
			}
			waitDone(t, u)
			if u.Err() != err {
				t.Fatalf("Err = %v, want Connect's error", u.Err())
			}
			t.Logf("%v", err)
		})
	}
	t.Run("good password", func(t *testing.T) {
		connect(t, Config{URL: "mqtt://gw:right-secret@" + m.Addr()}, nil)
	})
	t.Run("cancelled", func(t *testing.T) {
		m.Freeze() // accepts the TCP connection, never answers CONNECT
		defer m.Thaw()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		u := New(Config{URL: m.URL(), ClientID: "c"}, upstreamtest.Logger(t))
		if err := u.Connect(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Connect = %v, want DeadlineExceeded", err)
		}
		waitDone(t, u)
	})
}

// TestCloseFreesEverything: after Close and Done, no goroutine is left.
func TestCloseFreesEverything(t *testing.T) {
	m := upstreamtest.StartMosquittoWith(t, fastMosquitto)
	noGoroutineGrowth(t, func() {
		in := make(inbox, 16)
		u := New(Config{URL: m.URL(), ClientID: "leak", Receive: []Subscription{{Filter: "tele/#", QoS: 1}}}, upstreamtest.Logger(t))
		if err := u.Connect(context.Background(), in.handle); err != nil {
			t.Fatal(err)
		}
		r := forward(t, u, telemetry("tele/x", 500, 1), 64)
		r.check(t, isNil)
		for range 5 { // No Local: our own messages do not come back
			select {
			case m := <-in:
				t.Fatalf("own message came back: %+v", m.Message)
			default:
			}
		}
		closeAndWait(t, u)
	})
	// Close before Connect, Close twice.
	u := New(Config{URL: m.URL(), ClientID: "x"}, nil)
	u.Close()
	u.Close()
	waitDone(t, u)
	if err := u.Connect(context.Background(), nil); err == nil {
		t.Fatal("Connect after Close succeeded")
	}
}

// BenchmarkPublishQoS1 measures QoS 1 publish throughput to Mosquitto with
// 256 messages in flight (64-byte payloads).
func BenchmarkPublishQoS1(b *testing.B) {
	m := upstreamtest.StartMosquittoWith(b, fastMosquitto)
	u := connect(b, Config{URL: m.URL(), ClientID: "bench"}, nil)
	msg := &bridge.Message{Topic: "bench/dev", QoS: 1, Payload: make([]byte, 64), ID: "0123456789abcdef", Seq: 1}
	sem := make(chan struct{}, 256)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		sem <- struct{}{}
		if err := u.Publish(context.Background(), msg, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			<-sem
		}); err != nil {
			b.Fatal(err)
		}
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if failed.Load() != 0 {
		b.Fatalf("%d publishes failed", failed.Load())
	}
}
