package broker_test

// Interoperability tests: Eclipse Paho Go (github.com/eclipse/paho.mqtt.golang),
// MQTT 3.1.1. Shared helpers are in interop_helpers_test.go.

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestInteropV311QoSMatrix: every publish QoS to every subscription QoS
// arrives once, with the right payload and QoS min(pub, sub).
func TestInteropV311QoSMatrix(t *testing.T) {
	_, addr := ioStart(t, nil)
	var inbox ioInbox
	sub, _ := v3Connect(t, addr, "v311-matrix-sub", &inbox, nil)
	v3Subscribe(t, sub, map[string]byte{"matrix/s0": 0, "matrix/s1": 1, "matrix/s2": 2, "matrix/big": 1})
	pub, _ := v3Connect(t, addr, "v311-matrix-pub", nil, nil)

	for s := byte(0); s <= 2; s++ {
		for p := byte(0); p <= 2; p++ {
			v3Wait(t, "publish", pub.Publish(fmt.Sprintf("matrix/s%d", s), p, false, fmt.Sprintf("sub%d-pub%d", s, p)))
		}
	}
	// A large binary payload, every byte value.
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	v3Wait(t, "publish big", pub.Publish("matrix/big", 1, false, big))

	msgs := inbox.waitN(t, 10, 10*time.Second)
	byTopic := map[string][]ioMsg{}
	for _, m := range msgs {
		byTopic[m.Topic] = append(byTopic[m.Topic], m)
	}
	for s := byte(0); s <= 2; s++ {
		got := byTopic[fmt.Sprintf("matrix/s%d", s)]
		if len(got) != 3 {
			t.Errorf("sub QoS %d: %d messages, want 3: %+v", s, len(got), got)
			continue
		}
		// One publisher, one topic: order is kept [MQTT-4.6.0-5].
		for p, m := range got {
			if want := fmt.Sprintf("sub%d-pub%d", s, p); m.Payload != want {
				t.Errorf("sub QoS %d, message %d: payload %q, want %q", s, p, m.Payload, want)
			}
			if want := min(s, byte(p)); m.QoS != want {
				t.Errorf("sub QoS %d, pub QoS %d: delivered with QoS %d, want %d", s, p, m.QoS, want)
			}
			if m.Retain {
				t.Errorf("sub QoS %d, pub QoS %d: retain flag set on a live message", s, p)
			}
		}
	}
	if got := byTopic["matrix/big"]; len(got) != 1 || got[0].Payload != string(big) {
		t.Errorf("big payload: %d messages, payload equal: %v", len(got), len(got) == 1 && got[0].Payload == string(big))
	}
	// Nothing more (e.g. a duplicate) arrives before a later marker.
	v3Wait(t, "publish marker", pub.Publish("matrix/s1", 1, false, "marker"))
	msgs = inbox.waitN(t, 11, 5*time.Second)
	if len(msgs) != 11 || msgs[10].Payload != "marker" {
		t.Errorf("after the marker: %d messages, last %+v; want 11 ending with the marker", len(msgs), msgs[len(msgs)-1])
	}
}

// TestInteropV311Retained: retained messages reach later subscribers with
// the retain flag; an empty retained payload clears; a live message to an
// existing subscription has retain 0 [MQTT-3.3.1-9].
func TestInteropV311Retained(t *testing.T) {
	s, addr := ioStart(t, nil)
	pub, _ := v3Connect(t, addr, "v311-ret-pub", nil, nil)
	v3Wait(t, "publish a", pub.Publish("ret/a", 1, true, "alpha"))
	v3Wait(t, "publish b", pub.Publish("ret/b", 2, true, "beta"))
	v3Wait(t, "publish c", pub.Publish("ret/c", 1, true, "gamma"))
	v3Wait(t, "clear c", pub.Publish("ret/c", 1, true, []byte{}))
	v3Wait(t, "publish d", pub.Publish("ret/d", 0, true, "delta"))
	ioWait(t, "3 retained messages", 5*time.Second, func() bool { return s.Stats().Retained == 3 })

	var inbox ioInbox
	sub, _ := v3Connect(t, addr, "v311-ret-sub", &inbox, nil)
	v3Subscribe(t, sub, map[string]byte{"ret/#": 2})
	msgs := inbox.waitN(t, 3, 5*time.Second)
	slices.SortFunc(msgs, func(a, b ioMsg) int { return strings.Compare(a.Topic, b.Topic) })
	want := []ioMsg{
		{Topic: "ret/a", Payload: "alpha", QoS: 1, Retain: true},
		{Topic: "ret/b", Payload: "beta", QoS: 2, Retain: true},
		{Topic: "ret/d", Payload: "delta", QoS: 0, Retain: true},
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("retained on subscribe:\n got %+v\nwant %+v", msgs, want)
	}

	// Live publication with RETAIN=1 to an existing subscription.
	v3Wait(t, "publish a again", pub.Publish("ret/a", 1, true, "alpha2"))
	msgs = inbox.waitN(t, 4, 5*time.Second)
	if m := msgs[3]; m.Topic != "ret/a" || m.Payload != "alpha2" || m.Retain {
		t.Errorf("live retained publication: got %+v, want ret/a alpha2 with retain 0", m)
	}
	// The replacement is what a new subscriber gets.
	var inbox2 ioInbox
	sub2, _ := v3Connect(t, addr, "v311-ret-sub2", &inbox2, nil)
	v3Subscribe(t, sub2, map[string]byte{"ret/a": 1})
	if m := inbox2.waitN(t, 1, 5*time.Second)[0]; m.Payload != "alpha2" || !m.Retain {
		t.Errorf("replaced retained message: got %+v", m)
	}
}

// TestInteropV311WillOnAbruptClose: a client whose TCP connection just
// closes has its will published (and retained when asked); a client that
// sends DISCONNECT does not.
func TestInteropV311WillOnAbruptClose(t *testing.T) {
	s, addr := ioStart(t, nil)
	var inbox ioInbox
	sub, _ := v3Connect(t, addr, "v311-will-sub", &inbox, nil)
	v3Subscribe(t, sub, map[string]byte{"will/#": 1})

	// A clean DISCONNECT discards the will [MQTT-3.1.2-10].
	clean, _ := v3Connect(t, addr, "v311-will-clean", nil, func(o *mqtt.ClientOptions) {
		o.SetWill("will/clean", "should not be sent", 1, false)
	})
	clean.Disconnect(250)
	ioWait(t, "the clean client to go", 5*time.Second, func() bool { return s.Stats().Connections == 1 })

	// Abrupt close: keep the net.Conn paho opens so the test can close it.
	var (
		mu   sync.Mutex
		conn net.Conn
	)
	_, _ = v3Connect(t, addr, "v311-will-abrupt", nil, func(o *mqtt.ClientOptions) {
		o.SetWill("will/abrupt", "gone", 1, true)
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			mu.Lock()
			conn = c
			mu.Unlock()
			return c, err
		})
	})
	mu.Lock()
	conn.Close()
	mu.Unlock()

	m := inbox.waitFor(t, "will/abrupt", 5*time.Second)
	if m.Payload != "gone" || m.QoS != 1 || m.Retain {
		t.Errorf("will: got %+v, want payload gone, QoS 1, retain 0 on a live subscription", m)
	}
	if got := inbox.all(); len(got) != 1 {
		t.Errorf("subscriber got %d messages, want only the abrupt client's will: %+v", len(got), got)
	}
	// It was retained.
	var inbox2 ioInbox
	late, _ := v3Connect(t, addr, "v311-will-late", &inbox2, nil)
	v3Subscribe(t, late, map[string]byte{"will/#": 1})
	if m := inbox2.waitN(t, 1, 5*time.Second)[0]; m.Topic != "will/abrupt" || m.Payload != "gone" || !m.Retain {
		t.Errorf("retained will: got %+v", m)
	}
	if got := inbox.all(); len(got) != 1 {
		t.Errorf("subscriber got %d messages, want 1: %+v", len(got), got)
	}
}

// TestInteropV311PersistentSession: a CleanSession=0 subscriber that is
// offline while 1,000 QoS 1 (then QoS 2) messages are published gets all of
// them, in order, none twice, when it comes back; then 1,000 more arrive
// live, pipelined by the publisher.
func TestInteropV311PersistentSession(t *testing.T) {
	const n = 1000
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			s, addr := ioStart(t, nil)
			persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
			id := fmt.Sprintf("v311-persist-%d", qos)

			sub, present := v3Connect(t, addr, id, nil, persistent)
			if present {
				t.Errorf("first connection: session present")
			}
			v3Subscribe(t, sub, map[string]byte{"persist/t": qos})
			sub.Disconnect(250)
			ioWait(t, "the subscriber to go offline", 5*time.Second, func() bool { return s.Stats().Connections == 0 })

			pub, _ := v3Connect(t, addr, id+"-pub", nil, nil)
			publishAll := func(prefix string) {
				toks := make([]mqtt.Token, n)
				for i := range n {
					toks[i] = pub.Publish("persist/t", qos, false, fmt.Sprintf("%s%04d", prefix, i))
				}
				for i, tok := range toks {
					v3Wait(t, "publish "+strconv.Itoa(i), tok)
				}
			}
			publishAll("m")
			if st := s.Stats(); st.DroppedQueue != 0 || st.DroppedOffline != 0 {
				t.Fatalf("broker dropped messages for the offline session: %+v", st)
			}

			var inbox ioInbox
			_, present = v3Connect(t, addr, id, &inbox, persistent)
			if !present {
				t.Errorf("reconnection: session present = false, want true")
			}
			checkSequence(t, inbox.waitN(t, n, 15*time.Second), "m", n, qos)

			// Live now, with the publisher's messages pipelined.
			publishAll("l")
			v3Wait(t, "publish end", pub.Publish("persist/t", qos, false, "end"))
			msgs := inbox.waitN(t, 2*n+1, 15*time.Second)
			if msgs[len(msgs)-1].Payload != "end" {
				t.Errorf("last message %q, want the end marker", msgs[len(msgs)-1].Payload)
			}
			checkSequence(t, msgs[n:2*n], "l", n, qos)
		})
	}
}
