package main_test

// End-to-end tests of the bridge, issue 5 items 5-7: the backlog bound and
// its policies, downlink commands sent while the bridge was down, and a
// request/reply round trip (see bridge_e2e_test.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// TestBridgeE2EBacklogBound (issue item 5): backlog.max_bytes has room for
// 1,000 messages; with the upstream down one publisher sends 3,000. Then
// drop-oldest keeps the newest 1,000, drop-new the first 1,000 (every
// publish acknowledged), refuse accepts the first 1,000 and answers the
// others PUBACK 0x97 (MQTT 5; a 3.1.1 publisher is disconnected). Once the
// upstream is back exactly those arrive, and $SYS counts every drop or
// refusal. Every policy runs against both upstreams.
func TestBridgeE2EBacklogBound(t *testing.T) {
	t.Parallel() // light: runs with the other light ones, after the 100,000-message tests
	const keep, total = 1000, 3000
	// backlog.max_bytes counts the upstream topic and the payload.
	size := len("site1/p000") + len(e2ePayload(0, 0))
	for _, kind := range e2eKinds {
		for _, policy := range []string{"drop-oldest", "drop-new", "refuse"} {
			t.Run(kind+"/"+policy, func(t *testing.T) {
				t.Parallel()
				u := newE2EUpstream(t, kind, false)
				sink := u.consume(t, "site1/#")
				b := startE2EBroker(t, u.writeConfig(t, t.TempDir(), e2eOpts{maxBytes: int64(keep * size), whenFull: policy}))
				sys := watchSys(t, b.addr, "e2e-sys")
				b.waitLine(t, e2eConnectedRe, 0, 30*time.Second)
				u.down()
				b.waitLine(t, e2eLinkLostRe, 0, 30*time.Second)

				var expected []string
				dropped, refused := int64(total-keep), int64(0)
				switch policy {
				case "refuse":
					publishRefused(t, b.addr, keep, total)
					refusedV311(t, b.addr)
					dropped, refused = 0, total-keep+1
					expected = e2eExpected(1, 0, keep)
				case "drop-new":
					publishLoad(t, b.addr, 1, 0, total, e2eWindow)
					expected = e2eExpected(1, 0, keep)
				case "drop-oldest":
					publishLoad(t, b.addr, 1, 0, total, e2eWindow)
					expected = e2eExpected(1, total-keep, total)
				}
				// The bound is enforced before the upstream comes back
				// (drop-oldest trims the backlog in the background).
				eq := func(want int64) func(int64) bool { return func(n int64) bool { return n == want } }
				sys.waitInt(t, "backlog/messages", eq(keep), 40*time.Second)
				checkCounters(t, sys, dropped, refused)

				u.up()
				sink.wait(t, "drain", keep, b, e2eStall)
				// Once the backlog is empty, one more message: it arrives
				// after anything still on its way (order is kept), so
				// what came before it is all there will be.
				sys.waitInt(t, "backlog/messages", eq(0), 40*time.Second)
				publishLoad(t, b.addr, 1, total, total+1, 1)
				sink.waitFor(t, e2ePayload(0, total), b, 60*time.Second)
				res := sink.verify(t, append(expected, e2ePayload(0, total)))
				checkCounters(t, sys, dropped, refused)
				t.Logf("%s/%s: %d of %d kept, %d deliveries, %d duplicates; $SYS dropped/full %d, refused/full %d",
					kind, policy, keep, total, res.received, res.dups, dropped, refused)
			})
		}
	}
}

// checkCounters checks the drop and refusal counters of $SYS (they only
// grow: wait until they reach the expected values, then compare).
func checkCounters(t *testing.T, sys *sysWatch, dropped, refused int64) {
	t.Helper()
	atLeast := func(want int64) func(int64) bool { return func(n int64) bool { return n >= want } }
	if n := sys.waitInt(t, "dropped/full", atLeast(dropped), 40*time.Second); n != dropped {
		t.Errorf("$SYS dropped/full = %d, want %d", n, dropped)
	}
	if n := sys.waitInt(t, "refused/full", atLeast(refused), 40*time.Second); n != refused {
		t.Errorf("$SYS refused/full = %d, want %d", n, refused)
	}
	for _, k := range []string{"dropped/age", "dropped/expired", "dead_letter"} {
		if n, _ := sys.int(k); n != 0 {
			t.Errorf("$SYS %s = %d, want 0", k, n)
		}
	}
}

// publishRefused publishes messages [0, total) of publisher 0 one at a
// time with an MQTT 5 client (paho.golang): the first keep must be
// accepted, every later one refused with PUBACK 0x97 (quota exceeded).
func publishRefused(t *testing.T, addr string, keep, total int) {
	t.Helper()
	c := v5Dial(t, addr, "e2e-v5-pub", nil)
	bad := 0
	for i := range total {
		ctx, cancel := e2eCtx(30 * time.Second)
		resp, err := c.Publish(ctx, &paho.Publish{Topic: e2eTopic(0), QoS: 1, Payload: []byte(e2ePayload(0, i))})
		cancel()
		var code byte
		switch {
		case resp != nil:
			code = resp.ReasonCode
		case err != nil:
			t.Fatalf("publish %d: %v", i, err)
		}
		want := "a success code"
		ok := code < 0x80
		if i >= keep {
			want, ok = "0x97", code == 0x97
		}
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("publish %d: PUBACK reason %#x (%v), want %s", i, code, err, want)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d publishes answered wrongly", bad, total)
	}
}

// refusedV311: an MQTT 3.1.1 publisher cannot be told 0x97; it must be
// disconnected without a PUBACK (it keeps the message and resends later).
func refusedV311(t *testing.T, addr string) {
	t.Helper()
	m, _, err := benchDial(addr, "e2e-v3-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.c.Close()
	bp := newBenchPublisher(m, 1)
	if err := bp.publish(e2eTopic(1), []byte(e2ePayload(1, 0)), true); err != nil {
		t.Fatal(err)
	}
	err = bp.drain(30 * time.Second)
	if err == nil || strings.Contains(err.Error(), "not acknowledged within") || bp.acked.Load() != 0 {
		t.Fatalf("3.1.1 publish into a full backlog (refuse): %v, %d acknowledged; want a disconnection without PUBACK", err, bp.acked.Load())
	}
}

// ---------------------------------------------------------------------------
// Downlink.

// e2eDevice is a local MQTT 3.1.1 subscriber of cmd/# with a persistent
// session, reconnected by the test after ferrymq restarts.
type e2eDevice struct {
	mu  sync.Mutex
	got []string // payloads in arrival order, without the DUP flag
	// redelivered counts receptions with the DUP flag: ferrymq sending
	// a message again to the device's session after its restart, the
	// device's PUBACK not having reached it before it stopped (QoS 1
	// between ferrymq and the device, not the bridge's doing).
	redelivered map[string]int
	qos         map[string]byte
	bad         []string
	conn        mqtt.Client
}

func (d *e2eDevice) connect(t *testing.T, addr string) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("e2e-device").
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if m.Topic() != "cmd/valve" {
			d.bad = append(d.bad, fmt.Sprintf("%s on topic %q, want cmd/valve", m.Payload(), m.Topic()))
		}
		p := string(m.Payload())
		if m.Duplicate() {
			d.redelivered[p]++
			return
		}
		d.got = append(d.got, p)
		d.qos[p] = m.Qos()
	})
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device: connect: %v", tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	d.conn = c
}

func (d *e2eDevice) count(prefix string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.got {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}

// wait polls until n messages with prefix arrived; it fails after d.
func (d *e2eDevice) wait(t *testing.T, prefix string, n int, b *e2eBroker, dur time.Duration) {
	t.Helper()
	deadline := time.Now().Add(dur)
	for d.count(prefix) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d commands %s* arrived locally within %v", d.count(prefix), n, prefix, dur)
		}
		if b.p.exitedEarly() {
			t.Fatalf("ferrymq exited: %v", b.p.err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sendCommands publishes payloads upstream to cmd/edge-01/valve, the
// topic of the receive rule, directly, not through the bridge's link.
func (u *e2eUpstream) sendCommands(t *testing.T, payloads []string) {
	t.Helper()
	u.publishUpstream(t, "cmd/edge-01/valve", payloads)
}

// publishUpstream publishes payloads on topic at the upstream (AMQP:
// routing key topic with "/" as "." on the exchange, persistent, with
// publisher confirms; MQTT: QoS 1 on Mosquitto).
func (u *e2eUpstream) publishUpstream(t *testing.T, topic string, payloads []string) {
	t.Helper()
	if u.kind == kindAMQP {
		var ps []amqp091.Publishing
		for _, p := range payloads {
			ps = append(ps, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(p)})
		}
		u.amqpPublish(t, mqttToBinding(topic), ps)
		return
	}
	c := v5Dial(t, u.mosq.Addr(), "e2e-cloud", nil)
	for _, p := range payloads {
		ctx, cancel := e2eCtx(10 * time.Second)
		_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(p)})
		cancel()
		if err != nil {
			t.Fatalf("publish %s upstream: %v", p, err)
		}
	}
	_ = c.Disconnect(&paho.Disconnect{})
}

// amqpPublish publishes to the exchange with key, mandatory, and waits for
// every publisher confirm.
func (u *e2eUpstream) amqpPublish(t *testing.T, key string, ps []amqp091.Publishing) {
	t.Helper()
	conn, ch := u.amqpChannel(t)
	defer conn.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp091.Return, len(ps)))
	ctx, cancel := e2eCtx(30 * time.Second)
	defer cancel()
	var confs []*amqp091.DeferredConfirmation
	for _, p := range ps {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, u.exchange, key, true, false, p)
		if err != nil {
			t.Fatalf("amqp publish %s: %v", key, err)
		}
		confs = append(confs, dc)
	}
	for _, dc := range confs {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("amqp publish %s: not confirmed (%v)", key, err)
		}
	}
	select {
	case r := <-returns:
		t.Fatalf("amqp publish %s: returned unroutable (%s)", key, r.ReplyText)
	default:
	}
}

func e2eCommands(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// TestBridgeE2EDownlinkOffline (issue item 6): commands sent upstream
// while the bridge cannot receive them arrive at a local subscriber once
// it reconnects, each once, at QoS 1: first with only the bridge's link
// down (a proxy between ferrymq and the upstream), then with ferrymq itself
// stopped and started again (its downlink waits in the durable AMQP queue,
// or in the MQTT session of its fixed client id).
func TestBridgeE2EDownlinkOffline(t *testing.T) {
	t.Parallel() // light: runs with the other light ones, after the 100,000-message tests
	const n = 50
	for _, kind := range e2eKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			u := newE2EUpstream(t, kind, true)
			b := startE2EBroker(t, u.writeConfig(t, t.TempDir(), e2eOpts{}))
			// Connected once: the downlink queue or session exists.
			b.waitLine(t, e2eConnectedRe, 0, 30*time.Second)
			dev := &e2eDevice{qos: map[string]byte{}, redelivered: map[string]int{}}
			dev.connect(t, b.addr)
			if tok := dev.conn.Subscribe("cmd/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("device: subscribe: %v", tok.Error())
			}

			// 1. The link is down, ferrymq runs.
			u.linkDown()
			b.waitLine(t, e2eLinkLostRe, 0, 30*time.Second)
			u.sendCommands(t, e2eCommands("link", n))
			if got := dev.count("link"); got != 0 {
				t.Fatalf("%d commands arrived while the link was down", got)
			}
			u.linkUp()
			dev.wait(t, "link", n, b, 60*time.Second)

			// 2. ferrymq is stopped, and started again.
			b.stop(t)
			u.sendCommands(t, e2eCommands("off", n))
			b = b.restart(t)
			dev.connect(t, b.addr) // the persistent session gets what came meanwhile
			dev.wait(t, "off", n, b, 60*time.Second)

			// A last command: once it is here, anything sent before it is.
			u.sendCommands(t, []string{"end"})
			dev.wait(t, "end", 1, b, 60*time.Second)

			dev.mu.Lock()
			defer dev.mu.Unlock()
			for _, e := range dev.bad {
				t.Error(e)
			}
			want := append(append(e2eCommands("link", n), e2eCommands("off", n)...), "end")
			seen := map[string]int{}
			for _, p := range dev.got {
				seen[p]++
			}
			for _, p := range want {
				switch {
				case seen[p] != 1:
					t.Errorf("command %s arrived %d times, want once", p, seen[p])
				case dev.qos[p] != 1:
					t.Errorf("command %s arrived at QoS %d, want 1", p, dev.qos[p])
				}
				delete(seen, p)
			}
			for p, k := range seen {
				t.Errorf("unexpected local message %q (%d times)", p, k)
			}
			redelivered := 0
			for p, k := range dev.redelivered {
				if !slices.Contains(want, p) {
					t.Errorf("unexpected local message %q (%d times, DUP set)", p, k)
				}
				redelivered += k
			}
			// Each phase in the order it was sent (one queue, one session).
			for _, phase := range []string{"link", "off"} {
				var got []string
				for _, p := range dev.got {
					if strings.HasPrefix(p, phase) {
						got = append(got, p)
					}
				}
				if !slices.IsSorted(got) {
					t.Errorf("commands %s* out of order: %v", phase, got)
				}
			}
			t.Logf("%s: %d commands sent with the link down, %d with ferrymq stopped: each arrived once, at QoS 1 "+
				"(and %d sent again by ferrymq with DUP after its restart)", kind, n, n, redelivered)
		})
	}
}

// ---------------------------------------------------------------------------
// Request/reply.

// TestBridgeE2ERequestReply (issue item 7): a cloud service sends requests
// down the bridge with a reply address and a correlation id (AMQP reply-to
// and correlation-id; MQTT 5 Response Topic and Correlation Data); a local
// MQTT 5 device answers on the Response Topic it got with the Correlation
// Data it got; the forward rule replies/# carries the answer up, and the
// service gets each answer with its correlation id.
func TestBridgeE2ERequestReply(t *testing.T) {
	t.Parallel() // light: runs with the other light ones, after the 100,000-message tests
	const n = 20
	for _, kind := range e2eKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			u := newE2EUpstream(t, kind, false)
			b := startE2EBroker(t, u.writeConfig(t, t.TempDir(), e2eOpts{}))
			b.waitLine(t, e2eConnectedRe, 0, 30*time.Second)

			// The device: answers every request on cmd/#.
			var (
				mu      sync.Mutex
				devErrs []string
			)
			reqs := make(chan *paho.Publish, n)
			dev := v5Dial(t, b.addr, "e2e-device", func(p *paho.Publish) { reqs <- p })
			v5Subscribe(t, dev, "cmd/#")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var p *paho.Publish
					select {
					case p = <-reqs:
					case <-stop:
						return
					}
					fail := func(format string, args ...any) {
						mu.Lock()
						devErrs = append(devErrs, fmt.Sprintf(format, args...))
						mu.Unlock()
					}
					if p.Topic != "cmd/ask" {
						fail("request %s on %q, want cmd/ask", p.Payload, p.Topic)
					}
					if p.Properties == nil || p.Properties.ResponseTopic != "replies/svc" || len(p.Properties.CorrelationData) == 0 {
						fail("request %s without Response Topic replies/svc and Correlation Data: %+v", p.Payload, p.Properties)
						continue
					}
					ctx, cancel := e2eCtx(10 * time.Second)
					_, err := dev.Publish(ctx, &paho.Publish{
						Topic: p.Properties.ResponseTopic, QoS: 1, Payload: []byte("answer to " + string(p.Payload)),
						Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData},
					})
					cancel()
					if err != nil {
						fail("reply to %s: %v", p.Payload, err)
					}
				}
			}()
			t.Cleanup(func() { close(stop); wg.Wait() })

			type reply struct{ topic, corr, body, id string }
			replies := make(chan reply, 2*n)
			if kind == kindAMQP {
				// The service: a queue for its replies, then the
				// requests to cmd.edge-01.ask.
				conn, ch := u.amqpChannel(t)
				defer conn.Close()
				q, err := ch.QueueDeclare("", false, true, true, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := ch.QueueBind(q.Name, "replies.svc", u.exchange, false, nil); err != nil {
					t.Fatal(err)
				}
				ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					for d := range ds {
						replies <- reply{topic: amqpKeyToTopic(d.RoutingKey), corr: d.CorrelationId, body: string(d.Body), id: d.MessageId}
					}
				}()
				var ps []amqp091.Publishing
				for i := range n {
					ps = append(ps, amqp091.Publishing{ReplyTo: "replies.svc", CorrelationId: fmt.Sprintf("corr-%d", i), Body: fmt.Appendf(nil, "q%d", i)})
				}
				u.amqpPublish(t, "cmd.edge-01.ask", ps)
			} else {
				svc := v5Dial(t, u.mosq.Addr(), "e2e-service", func(p *paho.Publish) {
					r := reply{topic: p.Topic, body: string(p.Payload)}
					if p.Properties != nil {
						r.corr = string(p.Properties.CorrelationData)
						for _, up := range p.Properties.User {
							if up.Key == "ferrymq-id" {
								r.id = up.Value
							}
						}
					}
					replies <- r
				})
				v5Subscribe(t, svc, "replies/#")
				for i := range n {
					ctx, cancel := e2eCtx(10 * time.Second)
					_, err := svc.Publish(ctx, &paho.Publish{Topic: "cmd/edge-01/ask", QoS: 1, Payload: fmt.Appendf(nil, "q%d", i),
						Properties: &paho.PublishProperties{ResponseTopic: "replies/svc", CorrelationData: fmt.Appendf(nil, "corr-%d", i)}})
					cancel()
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
				}
			}

			got := map[string]reply{}
			timeout := time.After(60 * time.Second)
			for len(got) < n {
				select {
				case r := <-replies:
					if _, dup := got[r.corr]; dup {
						t.Logf("reply %q again (at-least-once)", r.corr)
					}
					got[r.corr] = r
				case <-timeout:
					t.Fatalf("%d of %d replies within 60 s: %v", len(got), n, got)
				}
			}
			for i := range n {
				corr := fmt.Sprintf("corr-%d", i)
				r, ok := got[corr]
				switch {
				case !ok:
					t.Errorf("no reply with correlation id %s (got %v)", corr, got)
				case r.body != fmt.Sprintf("answer to q%d", i) || r.topic != "replies/svc" || r.id == "":
					t.Errorf("reply %s: %+v, want body \"answer to q%d\" on replies/svc with the bridge's id", corr, r, i)
				}
			}
			mu.Lock()
			for _, e := range devErrs {
				t.Errorf("device: %s", e)
			}
			mu.Unlock()
			t.Logf("%s: %d request/reply round trips through the bridge", kind, n)
		})
	}
}

// ---------------------------------------------------------------------------
// Loops.

// TestBridgeE2EBidirectional: shared/# is both forwarded and received,
// unchanged. A message published locally goes up once and must not come
// back down to the local subscribers (MQTT: the bridge subscribes with No
// Local; AMQP: its own messages come back through its downlink queue and
// must be dropped there); a message published upstream comes down once and
// must not go back up.
func TestBridgeE2EBidirectional(t *testing.T) {
	t.Parallel() // light: runs with the other light ones, after the 100,000-message tests
	const n = 10
	for _, kind := range e2eKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			u := newE2EUpstream(t, kind, false)
			sink := u.consume(t, "shared/#")
			b := startE2EBroker(t, u.writeConfig(t, t.TempDir(), e2eOpts{bidirectional: true}))
			b.waitLine(t, e2eConnectedRe, 0, 30*time.Second)
			var local inbox
			sub := pahoClient(t, b.addr, "e2e-local-sub", &local, false)
			waitToken(t, "subscribe", sub.Subscribe("shared/#", 1, nil))

			// Local messages, the last one a marker: once it is
			// upstream, anything of them the upstream sends down is
			// queued for the bridge before what is published next.
			pub := pahoClient(t, b.addr, "e2e-local-pub", nil, false)
			locals := append(e2eCommands("local", n), "local-end")
			for _, p := range locals {
				waitToken(t, "publish", pub.Publish("shared/a", 1, false, p))
			}
			sink.waitFor(t, "local-end", b, 60*time.Second)
			clouds := append(e2eCommands("cloud", n), "cloud-end")
			u.publishUpstream(t, "shared/b", clouds)
			deadline := time.Now().Add(60 * time.Second)
			for !slices.Contains(local.all(), "shared/b cloud-end") {
				if time.Now().After(deadline) {
					t.Fatalf("cloud-end did not arrive locally within 60 s; local subscriber got %v", local.all())
				}
				time.Sleep(10 * time.Millisecond)
			}
			// ... and the upstream consumer sees the cloud marker after
			// anything the bridge could have sent back up before it.
			pub2 := pahoClient(t, b.addr, "e2e-local-pub2", nil, false)
			waitToken(t, "publish", pub2.Publish("shared/a", 1, false, "local-final"))
			sink.waitFor(t, "local-final", b, 60*time.Second)

			count := map[string]int{}
			for _, m := range local.all() {
				count[m]++
			}
			for _, p := range locals {
				if k := count["shared/a "+p]; k != 1 {
					t.Errorf("local subscriber got its local message %s %d times, want once (the upstream echoed it back)", p, k)
				}
			}
			for _, p := range clouds {
				if k := count["shared/b "+p]; k != 1 {
					t.Errorf("local subscriber got upstream message %s %d times, want once", p, k)
				}
			}
			msgs, _ := sink.snapshot()
			up := map[string]int{}
			for _, m := range msgs {
				up[m.topic+" "+m.payload]++
			}
			for _, p := range locals {
				if k := up["shared/a "+p]; k != 1 {
					t.Errorf("upstream got local message %s %d times, want once", p, k)
				}
			}
			for _, p := range clouds {
				if k := up["shared/b "+p]; k != 1 {
					t.Errorf("upstream got its own message %s %d times, want once (the bridge sent it back up)", p, k)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Dead letters.

// TestBridgeE2EDeadLetter: a message the upstream refuses for good (AMQP:
// returned, no queue binds its routing key; MQTT: PUBACK 0x87, Mosquitto's
// ACL denies the topic, and Mosquitto 2.0 then closes the connection too)
// does not block the ones after it; it goes to the
// dead-letter log, "ferrymq dead-letters list" shows it, and once the
// upstream would take it "dead-letters replay" sends it on the next run.
func TestBridgeE2EDeadLetter(t *testing.T) {
	t.Parallel() // light: runs with the other light ones, after the 100,000-message tests
	const acl = "topic readwrite site1/#\ntopic readwrite cmd/#\n"
	for _, kind := range e2eKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			u := newE2EUpstreamWith(t, kind, false, upstreamtest.MosquittoOptions{ACL: acl})
			sink := u.consume(t, "site1/#")
			cfg := u.writeConfig(t, t.TempDir(), e2eOpts{})
			b := startE2EBroker(t, cfg)
			b.waitLine(t, e2eConnectedRe, 0, 30*time.Second)

			pub := pahoClient(t, b.addr, "e2e-dl-pub", nil, false)
			waitToken(t, "publish", pub.Publish(e2eTopic(0), 1, false, e2ePayload(0, 0)))
			waitToken(t, "publish", pub.Publish("replies/nobody", 1, false, "orphan"))
			for i := 1; i < 10; i++ {
				waitToken(t, "publish", pub.Publish(e2eTopic(0), 1, false, e2ePayload(0, i)))
			}
			sink.wait(t, "messages after the refused one", 10, b, e2eStall)
			sink.verify(t, e2eExpected(1, 0, 10))
			b.waitLine(t, regexp.MustCompile(`msg="upstream rejected a message for good; moved to the dead-letter log".*topic=replies/nobody`), 0, 30*time.Second)
			b.stop(t)

			code, out, errOut := run(t, "dead-letters", "-c", cfg, "list", e2eBridgeName)
			if code != 0 || !strings.Contains(out, `topic="replies/nobody"`) || !strings.Contains(out, "\n1 dead letters\n") {
				t.Fatalf("dead-letters list: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
			}

			// The upstream takes it now.
			var replies *e2eSink
			if kind == kindAMQP {
				replies = u.consume(t, "replies/#")
			} else {
				if err := os.WriteFile(filepath.Join(u.mosq.Dir(), "acl"), []byte(acl+"topic readwrite replies/#\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				u.mosq.Stop()
				u.mosq.Start()
				replies = u.consumeAs(t, "replies/#", "e2e-replies")
			}
			code, out, errOut = run(t, "dead-letters", "-c", cfg, "replay", e2eBridgeName)
			if code != 0 || out != "1 dead letters of bridge cloud moved back to its outbox\n" {
				t.Fatalf("dead-letters replay: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			b = b.restart(t)
			replies.waitFor(t, "orphan", b, 60*time.Second)
			msgs, _ := replies.snapshot()
			if m := msgs[0]; m.topic != "replies/nobody" || m.id == "" || !m.hasSeq {
				t.Errorf("replayed dead letter arrived as %+v, want topic replies/nobody with the bridge's id and seq", m)
			}
			b.stop(t)
			if code, out, _ := run(t, "dead-letters", "-c", cfg, "list", e2eBridgeName); code != 0 || out != "0 dead letters\n" {
				t.Errorf("dead-letters list after the replay: exit %d, stdout %q", code, out)
			}
			t.Logf("%s: refused message dead-lettered without blocking the next 9, listed, replayed, delivered", kind)
		})
	}
}
