package broker_test

// Interoperability tests under load and across reconnections (connections cut
// by the recording proxy). Shared helpers are in interop_helpers_test.go.

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// TestInteropManyClients: 20 publishers (3.1.1) × 100 QoS 1 messages each,
// concurrently, to 4 subscribers (two 3.1.1, two 5.0): every subscriber
// gets all 2,000, each publisher's messages in order.
func TestInteropManyClients(t *testing.T) {
	const pubs, per = 20, 100
	_, addr := ioStart(t, nil)
	inboxes := make([]*ioInbox, 4)
	for i := range inboxes {
		inboxes[i] = &ioInbox{}
		id := fmt.Sprintf("many-sub-%d", i)
		if i < 2 {
			c, _ := v3Connect(t, addr, id, inboxes[i], nil)
			v3Subscribe(t, c, map[string]byte{"many/+/t": byte(1 + i%2)})
		} else {
			c := v5Connect(t, addr, v5Options{id: id, clean: true, inbox: inboxes[i]})
			c.subscribe(t, nil, paho.SubscribeOptions{Topic: "many/#", QoS: byte(1 + i%2)})
		}
	}
	clients := make([]mqtt.Client, pubs)
	for p := range pubs {
		clients[p], _ = v3Connect(t, addr, fmt.Sprintf("many-pub-%d", p), nil, nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks := make([]mqtt.Token, per)
			for i := range per {
				toks[i] = c.Publish(fmt.Sprintf("many/%d/t", p), 1, false, fmt.Sprintf("%d:%04d", p, i))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					errs <- fmt.Errorf("publisher %d: %v (or timed out)", p, tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for si, inbox := range inboxes {
		msgs := inbox.waitN(t, pubs*per, 15*time.Second)
		if len(msgs) != pubs*per {
			t.Errorf("subscriber %d: %d messages, want %d", si, len(msgs), pubs*per)
		}
		next := make([]int, pubs)
		for _, m := range msgs {
			var p, i int
			if _, err := fmt.Sscanf(m.Payload, "%d:%d", &p, &i); err != nil || p < 0 || p >= pubs {
				t.Fatalf("subscriber %d: bad payload %q", si, m.Payload)
			}
			if i != next[p] {
				t.Fatalf("subscriber %d: publisher %d's message %d arrived when %d was expected", si, p, i, next[p])
			}
			next[p]++
			if m.Topic != fmt.Sprintf("many/%d/t", p) || m.QoS != 1 {
				t.Fatalf("subscriber %d: %+v", si, m)
			}
		}
	}
}

// TestInteropQoS2PublisherReconnects: a 3.1.1 publisher (paho, automatic
// reconnection, CleanSession=0) loses its connection three times while 600
// QoS 2 messages are in flight; on each reconnection it resends
// unacknowledged PUBLISHes (DUP) and PUBRELs. The broker must route each
// message exactly once [MQTT-4.3.3-10]: none lost, and a duplicate only
// where the client broke the protocol (see below). The client-to-broker
// traffic goes through a recording proxy, decoded with broker/packet.
// (paho.golang is not the publisher here: v0.23.0 has a data race between
// State.PacketReceived and State.ConnectionLost on this path.)
func TestInteropQoS2PublisherReconnects(t *testing.T) {
	const n = 600
	s, addr := ioStart(t, nil)
	proxy := startProxy(t, addr)
	var inbox ioInbox
	sub := v5Connect(t, addr, v5Options{id: "eo-sub", clean: true, inbox: &inbox})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "eo/t", QoS: 2})

	connected := make(chan struct{}, 10)
	pub, _ := v3Connect(t, proxy.addr(), "eo-pub", nil, func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(20 * time.Millisecond)
		o.SetOnConnectHandler(func(mqtt.Client) {
			select {
			case connected <- struct{}{}:
			default:
			}
		})
	})
	<-connected
	toks := make([]mqtt.Token, 0, n)
	for i := range n {
		switch i {
		case 100, 250, 400:
			before := s.Stats().Accepted
			proxy.cut() // abrupt: in-flight messages are at every stage
			select {
			case <-connected:
			case <-time.After(10 * time.Second):
				t.Fatalf("publisher did not reconnect: paho connection open %v, broker accepted %d connections since",
					pub.IsConnectionOpen(), s.Stats().Accepted-before)
			}
		}
		toks = append(toks, pub.Publish("eo/t", 2, false, fmt.Sprintf("e%04d", i)))
	}
	// A token whose write failed at a cut reports the error, but its
	// message stays in paho's store and is resent on reconnection: the
	// subscriber's view is what counts.
	failed := 0
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			failed++
		}
	}
	v3Wait(t, "publish end", pub.Publish("eo/t", 2, false, "end"))

	inbox.waitFor(t, "eo/t", 5*time.Second)
	ioWait(t, "the end marker", 15*time.Second, func() bool {
		for _, m := range inbox.all() {
			if m.Payload == "end" {
				return true
			}
		}
		return false
	})
	msgs := inbox.all()
	seen := map[string]int{}
	for _, m := range msgs {
		seen[m.Payload]++
		if m.QoS != 2 {
			t.Errorf("message %s: QoS %d", m.Payload, m.QoS)
		}
	}
	// A duplicate is the broker's fault unless the client itself resent
	// the PUBLISH after it had already sent PUBREL for that packet id:
	// then the broker may have completed the exchange and forgotten the id
	// [MQTT-4.3.3-11], and the resent PUBLISH is a new message to it.
	// paho.mqtt.golang v1.5.1 does that when the connection drops after it
	// sent PUBREL (it resends the PUBLISH with DUP instead of the PUBREL
	// [MQTT-4.4.0-1]).
	trace := proxy.upstream(packet.V311)
	clientFault, brokerFault := 0, 0
	for i := range n {
		p := fmt.Sprintf("e%04d", i)
		switch seen[p] {
		case 1:
		case 0:
			t.Errorf("message %s lost", p)
		default:
			why, ok := resentAfterPubrel(trace, p)
			if ok {
				clientFault++
				if clientFault <= 3 {
					t.Logf("message %s delivered %d times, the client's doing: %s", p, seen[p], why)
				}
				continue
			}
			if brokerFault++; brokerFault <= 5 {
				t.Errorf("message %s delivered %d times (QoS 2: exactly once); the publisher sent:\n%s", p, seen[p], why)
			}
		}
	}
	// paho resends from an unordered store, so order is not checked.
	if brokerFault > 0 {
		t.Errorf("%d messages routed more than once by the broker", brokerFault)
	}
	t.Logf("%d duplicates caused by the client resending PUBLISH after PUBREL", clientFault)
	t.Logf("%d messages (%d publish tokens failed at a cut); broker accepted %d connections", len(msgs), failed, s.Stats().Accepted)
}

// TestInteropV311SubscriberReconnects: a 3.1.1 subscriber (paho, automatic
// reconnection, CleanSession=0) loses its connection twice while 600 QoS 1
// messages flow; the broker resends what was unacknowledged, so none is
// lost (duplicates are allowed at QoS 1, and only with DUP set).
func TestInteropV311SubscriberReconnects(t *testing.T) {
	const n = 600
	s, addr := ioStart(t, nil)
	proxy := startProxy(t, addr)
	var (
		mu   sync.Mutex
		dups int
	)
	var inbox ioInbox
	reconnected := make(chan struct{}, 10)
	sub, _ := v3Connect(t, proxy.addr(), "rc-sub", nil, func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(20 * time.Millisecond)
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if m.Duplicate() {
				mu.Lock()
				dups++
				mu.Unlock()
			}
			inbox.add(ioMsg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos()})
		})
		o.SetOnConnectHandler(func(mqtt.Client) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		})
	})
	<-reconnected // the first connection
	v3Subscribe(t, sub, map[string]byte{"rc/t": 1})
	pub, _ := v3Connect(t, addr, "rc-pub", nil, nil)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			pub.Publish("rc/t", 1, false, fmt.Sprintf("r%04d", i)) // pipelined; checked below
		}
	}()
	for _, at := range []int{150, 400} {
		inbox.waitN(t, at, 10*time.Second)
		before := s.Stats().Accepted
		proxy.cut()
		select {
		case <-reconnected:
		case <-time.After(10 * time.Second):
			if s.Stats().Accepted == before {
				// paho.mqtt.golang v1.5.1 sometimes never notices that its
				// connection was cut and never dials again: a client bug the
				// broker cannot see (it was offered no new connection).
				// Broker-side reconnect semantics are covered by the
				// raw-packet session tests.
				t.Skipf("paho did not redial after the cut (client-side; broker accepted no new connection): %+v", s.Stats())
			}
			t.Fatalf("subscriber did not reconnect: paho connection open %v, broker accepted %d connections since (%+v)",
				sub.IsConnectionOpen(), s.Stats().Accepted-before, s.Stats())
		}
	}
	<-done
	v3Wait(t, "publish end", pub.Publish("rc/t", 1, false, "end"))
	ioWait(t, "all messages", 15*time.Second, func() bool {
		seen := map[string]bool{}
		for _, m := range inbox.all() {
			seen[m.Payload] = true
		}
		return len(seen) == n+1
	})
	seen := map[string]int{}
	for _, m := range inbox.all() {
		seen[m.Payload]++
	}
	extra := 0
	for _, c := range seen {
		extra += c - 1
	}
	mu.Lock()
	if extra > dups {
		t.Errorf("%d duplicate deliveries but only %d had DUP set: a message was delivered again as new", extra, dups)
	}
	mu.Unlock()
	t.Logf("%d duplicates (QoS 1 resends after reconnection)", extra)
}

// resentAfterPubrel reports whether, in a publisher's upstream trace, the
// PUBLISH carrying payload was sent again after a PUBREL for its packet id.
// The explanation (or, when false, the trace of that id) is returned.
func resentAfterPubrel(trace [][]packet.Packet, payload string) (string, bool) {
	var lines []string
	id, released := uint16(0), false
	for ci, pkts := range trace {
		for _, pk := range pkts {
			switch x := pk.(type) {
			case *packet.Publish:
				if string(x.Payload) == payload {
					lines = append(lines, fmt.Sprintf("  connection %d: PUBLISH id=%d dup=%v", ci+1, x.PacketID, x.Dup))
					if released && x.PacketID == id {
						return fmt.Sprintf("PUBLISH id=%d resent (connection %d, DUP=%v) after its PUBREL", id, ci+1, x.Dup), true
					}
					id = x.PacketID
				} else if id != 0 && x.PacketID == id {
					id, released = 0, false // the id now carries another message
				}
			case *packet.Ack:
				if id != 0 && x.PacketID == id && x.Kind == packet.PUBREL {
					lines = append(lines, fmt.Sprintf("  connection %d: PUBREL id=%d", ci+1, id))
					released = true
				}
			}
		}
	}
	return strings.Join(lines, "\n"), false
}
