package broker_test

// Interoperability tests: Eclipse Paho Go v5 (github.com/eclipse/paho.golang/paho),
// MQTT 5.0. Shared helpers are in interop_helpers_test.go.

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/broker"
)

// TestInteropV5SessionExpiry: the Session Expiry Interval is capped and
// returned in CONNACK; a session with expiry survives a disconnection and
// gets the QoS 1 messages published meanwhile; one without does not.
func TestInteropV5SessionExpiry(t *testing.T) {
	s, addr := ioStart(t, func(c *broker.Config) { c.Limits.MaxSessionExpiry = 120 })

	c := v5Connect(t, addr, v5Options{id: "v5-sess", clean: true, expiry: u32(3600)})
	if c.ack.SessionPresent {
		t.Errorf("first connection: session present")
	}
	if p := c.ack.Properties; p == nil || p.SessionExpiryInterval == nil || *p.SessionExpiryInterval != 120 {
		t.Errorf("CONNACK Session Expiry Interval: got %v, want 120 (capped by max_session_expiry)", c.ack.Properties)
	}
	if p := c.ack.Properties; p == nil || p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != broker.DefaultTopicAliasMaximum ||
		p.ReceiveMaximum == nil || *p.ReceiveMaximum != broker.DefaultReceiveMaximum {
		t.Errorf("CONNACK limits: %v", c.ack.Properties)
	}
	c.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/sess/#", QoS: 1})
	c.disconnect(t, 0)

	// No Session Expiry Interval on CONNECT means 0: the session ends with
	// the connection [MQTT-3.1.2-11].
	d := v5Connect(t, addr, v5Options{id: "v5-noexp", clean: true})
	d.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/sess/#", QoS: 1})
	d.disconnect(t, 0)
	ioWait(t, "both clients offline", 5*time.Second, func() bool { return s.Stats().Connections == 0 })

	pub := v5Connect(t, addr, v5Options{id: "v5-sess-pub", clean: true})
	for i := range 20 {
		pub.publish(t, &paho.Publish{Topic: "v5/sess/t", QoS: 1, Payload: fmt.Appendf(nil, "s%04d", i)})
	}

	var inbox ioInbox
	c2 := v5Connect(t, addr, v5Options{id: "v5-sess", clean: false, expiry: u32(120), inbox: &inbox})
	if !c2.ack.SessionPresent {
		t.Errorf("reconnection within the expiry: session present = false")
	}
	checkSequence(t, inbox.waitN(t, 20, 5*time.Second), "s", 20, 1)

	var inbox2 ioInbox
	d2 := v5Connect(t, addr, v5Options{id: "v5-noexp", clean: false, inbox: &inbox2})
	if d2.ack.SessionPresent {
		t.Errorf("session with expiry 0 was kept after DISCONNECT")
	}
	// Its old subscription is gone too: a marker to c2 arrives, not to d2.
	pub.publish(t, &paho.Publish{Topic: "v5/sess/end", QoS: 1, Payload: []byte("end")})
	inbox.waitFor(t, "v5/sess/end", 5*time.Second)
	if n := inbox2.len(); n != 0 {
		t.Errorf("client of an expired session received %d messages: %+v", n, inbox2.all())
	}
}

// TestInteropV5SubscriptionIdentifier: the Subscription Identifier given on
// SUBSCRIBE comes back in each matching PUBLISH [MQTT-3.3.4-3]; none when
// the subscription had none.
func TestInteropV5SubscriptionIdentifier(t *testing.T) {
	_, addr := ioStart(t, nil)
	var inbox ioInbox
	sub := v5Connect(t, addr, v5Options{id: "v5-subid", clean: true, inbox: &inbox})
	id7, idBig := 7, 268435455 // the largest, a 4-byte variable byte integer
	sub.subscribe(t, &id7, paho.SubscribeOptions{Topic: "v5/subid/a/#", QoS: 1})
	sub.subscribe(t, &idBig, paho.SubscribeOptions{Topic: "v5/subid/b", QoS: 2})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/subid/c", QoS: 0})

	pub := v5Connect(t, addr, v5Options{id: "v5-subid-pub", clean: true})
	pub.publish(t, &paho.Publish{Topic: "v5/subid/a/x", QoS: 1, Payload: []byte("a")})
	pub.publish(t, &paho.Publish{Topic: "v5/subid/b", QoS: 2, Payload: []byte("b")})
	pub.publish(t, &paho.Publish{Topic: "v5/subid/c", QoS: 0, Payload: []byte("c")})
	inbox.waitN(t, 3, 5*time.Second)

	want := map[string]*int{"v5/subid/a/x": &id7, "v5/subid/b": &idBig, "v5/subid/c": nil}
	for _, m := range inbox.all() {
		w, ok := want[m.Topic]
		if !ok {
			t.Errorf("unexpected message %+v", m)
			continue
		}
		var got *int
		if m.Props != nil {
			got = m.Props.SubscriptionIdentifier
		}
		switch {
		case w == nil && got != nil:
			t.Errorf("%s: Subscription Identifier %d, want none", m.Topic, *got)
		case w != nil && got == nil:
			t.Errorf("%s: no Subscription Identifier, want %d", m.Topic, *w)
		case w != nil && *got != *w:
			t.Errorf("%s: Subscription Identifier %d, want %d", m.Topic, *got, *w)
		}
	}
}

// TestInteropV5PropertiesPassThrough: user properties (in order, duplicate
// keys kept), Response Topic, Correlation Data, Content Type and Payload
// Format reach the subscriber unchanged [MQTT-3.3.2-15..20], and a
// request/response exchange built on them works.
func TestInteropV5PropertiesPassThrough(t *testing.T) {
	_, addr := ioStart(t, nil)
	var inbox ioInbox
	sub := v5Connect(t, addr, v5Options{id: "v5-props-sub", clean: true, inbox: &inbox})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/props/#", QoS: 1})

	pf := byte(1)
	sent := &paho.PublishProperties{
		User: paho.UserProperties{
			{Key: "k", Value: "v"},
			{Key: "k", Value: "v2"},
			{Key: "empty", Value: ""},
			{Key: "ünï", Value: "cødé ✓"},
			{Key: "a", Value: "z"},
		},
		ResponseTopic:   "v5/reply/abc",
		CorrelationData: []byte{0, 1, 2, 0xfe, 0xff},
		ContentType:     "application/json; charset=utf-8",
		PayloadFormat:   &pf,
		MessageExpiry:   u32(3600),
	}
	pub := v5Connect(t, addr, v5Options{id: "v5-props-pub", clean: true})
	pub.publish(t, &paho.Publish{Topic: "v5/props/1", QoS: 1, Payload: []byte(`{"t":21.5}`), Properties: sent})

	m := inbox.waitN(t, 1, 5*time.Second)[0]
	if m.Props == nil {
		t.Fatalf("no properties on %+v", m)
	}
	got := m.Props
	if !reflect.DeepEqual(got.User, sent.User) {
		t.Errorf("user properties:\n got %q\nwant %q", got.User, sent.User)
	}
	if got.ResponseTopic != sent.ResponseTopic {
		t.Errorf("response topic %q, want %q", got.ResponseTopic, sent.ResponseTopic)
	}
	if !bytes.Equal(got.CorrelationData, sent.CorrelationData) {
		t.Errorf("correlation data %x, want %x", got.CorrelationData, sent.CorrelationData)
	}
	if got.ContentType != sent.ContentType {
		t.Errorf("content type %q, want %q", got.ContentType, sent.ContentType)
	}
	if got.PayloadFormat == nil || *got.PayloadFormat != 1 {
		t.Errorf("payload format %v, want 1", got.PayloadFormat)
	}
	// The expiry is forwarded, less the time the message waited [MQTT-3.3.2-6].
	if got.MessageExpiry == nil || *got.MessageExpiry > 3600 || *got.MessageExpiry < 3590 {
		t.Errorf("message expiry %v, want about 3600", got.MessageExpiry)
	}
	if m.Payload != `{"t":21.5}` {
		t.Errorf("payload %q", m.Payload)
	}

	// Request/response: a responder answers on the Response Topic with the
	// request's Correlation Data.
	responder := v5Connect(t, addr, v5Options{id: "v5-responder", clean: true})
	responder.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		req := pr.Packet
		if req.Properties == nil || req.Properties.ResponseTopic == "" {
			return true, nil
		}
		// Publishing from the receive callback is fine: the PUBACK is read
		// by paho's other goroutine.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pr.Client.Publish(ctx, &paho.Publish{
			Topic:   req.Properties.ResponseTopic,
			QoS:     1,
			Payload: append([]byte("re:"), req.Payload...),
			Properties: &paho.PublishProperties{
				CorrelationData: req.Properties.CorrelationData,
			},
		})
		return true, err
	})
	responder.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/request", QoS: 1})
	var replies ioInbox
	requester := v5Connect(t, addr, v5Options{id: "v5-requester", clean: true, inbox: &replies})
	requester.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/reply/requester", QoS: 1})
	for i := range 3 {
		requester.publish(t, &paho.Publish{Topic: "v5/request", QoS: 1, Payload: fmt.Appendf(nil, "q%d", i),
			Properties: &paho.PublishProperties{ResponseTopic: "v5/reply/requester", CorrelationData: []byte{byte(i), 0xaa}}})
	}
	rs := replies.waitN(t, 3, 5*time.Second)
	slices.SortFunc(rs, func(a, b ioMsg) int { return strings.Compare(a.Payload, b.Payload) })
	for i, r := range rs {
		if r.Payload != fmt.Sprintf("re:q%d", i) || r.Props == nil || !bytes.Equal(r.Props.CorrelationData, []byte{byte(i), 0xaa}) {
			t.Errorf("reply %d: %+v (props %+v)", i, r, r.Props)
		}
	}
}

// TestInteropV5TopicAliases: topic aliases set and used by the publishing
// client [MQTT-3.3.2-12], reassigned, and the aliases the broker assigns
// towards a client that allows them.
func TestInteropV5TopicAliases(t *testing.T) {
	_, addr := ioStart(t, nil)
	var plain, aliased ioInbox
	sub := v5Connect(t, addr, v5Options{id: "v5-alias-sub", clean: true, inbox: &plain})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/alias/#", QoS: 1})
	// This subscriber accepts up to 2 aliases from the broker (fewer than
	// topics used, so the broker has to reuse or skip them).
	asub := v5Connect(t, addr, v5Options{id: "v5-alias-sub2", clean: true, inbox: &aliased, resolveAliases: true,
		props: func(p *paho.ConnectProperties) { p.TopicAliasMaximum = paho.Uint16(2) }})
	asub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/alias/#", QoS: 1})

	pub := v5Connect(t, addr, v5Options{id: "v5-alias-pub", clean: true})
	if p := pub.ack.Properties; p == nil || p.TopicAliasMaximum == nil || *p.TopicAliasMaximum < 2 {
		t.Fatalf("broker offers no topic aliases: %v", pub.ack.Properties)
	}
	type step struct {
		topic string // sent topic ("" = alias only)
		alias uint16
		want  string // topic the subscriber must see
	}
	steps := []step{
		{"v5/alias/one", 1, "v5/alias/one"}, // set alias 1
		{"", 1, "v5/alias/one"},
		{"v5/alias/two", 2, "v5/alias/two"}, // set alias 2
		{"", 1, "v5/alias/one"},
		{"", 2, "v5/alias/two"},
		{"v5/alias/three", 1, "v5/alias/three"}, // reassign alias 1
		{"", 1, "v5/alias/three"},
		{"", 2, "v5/alias/two"},
		{"v5/alias/four", 0, "v5/alias/four"}, // no alias
		{"", 1, "v5/alias/three"},
	}
	for i, st := range steps {
		p := &paho.Publish{Topic: st.topic, QoS: 1, Payload: fmt.Appendf(nil, "a%04d", i)}
		if st.alias != 0 {
			p.Properties = &paho.PublishProperties{TopicAlias: paho.Uint16(st.alias)}
		}
		pub.publish(t, p)
	}
	for name, inbox := range map[string]*ioInbox{"plain subscriber": &plain, "subscriber with broker aliases": &aliased} {
		msgs := inbox.waitN(t, len(steps), 5*time.Second)
		checkSequence(t, msgs, "a", len(steps), 1)
		for i, m := range msgs {
			if i < len(steps) && m.Topic != steps[i].want {
				t.Errorf("%s: message %d on %q, want %q", name, i, m.Topic, steps[i].want)
			}
		}
	}
	for _, m := range plain.all() {
		if m.Props != nil && m.Props.TopicAlias != nil {
			t.Errorf("broker sent topic alias %d to a client that allows none (Topic Alias Maximum absent = 0)", *m.Props.TopicAlias)
		}
	}
	used := 0
	for _, m := range aliased.all() {
		if m.Props != nil && m.Props.TopicAlias != nil {
			used++
			if *m.Props.TopicAlias == 0 || *m.Props.TopicAlias > 2 {
				t.Errorf("broker sent topic alias %d, client allows 1..2", *m.Props.TopicAlias)
			}
		}
	}
	t.Logf("the broker used topic aliases on %d of %d messages to the client allowing them", used, len(steps))
}

// TestInteropV5Thousand: 1,000 QoS 1 and 1,000 QoS 2 messages, pipelined by
// the publisher, arrive in order, none lost, none duplicated.
func TestInteropV5Thousand(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		qos     byte
		recvMax uint16 // the subscriber's Receive Maximum; 0 = absent
	}{{1, 0}, {2, 0}, {1, 3}, {2, 3}} {
		qos := tc.qos
		name := fmt.Sprintf("qos%d", qos)
		if tc.recvMax != 0 {
			name += fmt.Sprintf("-receive-maximum-%d", tc.recvMax)
		}
		t.Run(name, func(t *testing.T) {
			_, addr := ioStart(t, nil)
			var inbox ioInbox
			o := v5Options{id: "v5-bulk-sub", clean: true, inbox: &inbox}
			if tc.recvMax != 0 {
				o.props = func(p *paho.ConnectProperties) { p.ReceiveMaximum = paho.Uint16(tc.recvMax) }
			}
			sub := v5Connect(t, addr, o)
			sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/bulk", QoS: qos})
			pub := v5Connect(t, addr, v5Options{id: "v5-bulk-pub", clean: true})

			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			for i := range n {
				// AsyncSend: up to the broker's Receive Maximum in flight.
				_, err := pub.PublishWithOptions(ctx, &paho.Publish{Topic: "v5/bulk", QoS: qos, Payload: fmt.Appendf(nil, "b%04d", i)},
					paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			// A last, blocking publish: once it is acknowledged, so are all.
			pub.publish(t, &paho.Publish{Topic: "v5/bulk", QoS: qos, Payload: []byte("end")})
			msgs := inbox.waitN(t, n+1, 15*time.Second)
			if last := msgs[len(msgs)-1]; last.Payload != "end" {
				t.Errorf("last message %q, want the end marker", last.Payload)
			}
			checkSequence(t, msgs[:len(msgs)-1], "b", n, qos)
		})
	}
}

// TestInteropV5ReceiveMaximum: the broker never has more unacknowledged
// QoS 1/2 messages towards a client than the client's Receive Maximum
// [MQTT-3.3.4-9]; acknowledging one lets the next one through.
func TestInteropV5ReceiveMaximum(t *testing.T) {
	const n, window = 12, 3
	_, addr := ioStart(t, nil)
	var (
		inbox    ioInbox
		rmu      sync.Mutex
		received []*paho.Publish
	)
	sub := v5Connect(t, addr, v5Options{id: "v5-rm-sub", clean: true, inbox: &inbox,
		manualAck: true, received: &received, rmu: &rmu,
		props: func(p *paho.ConnectProperties) { p.ReceiveMaximum = paho.Uint16(window) }})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/rm/#", QoS: 2})
	pub := v5Connect(t, addr, v5Options{id: "v5-rm-pub", clean: true})
	for i := range n {
		pub.publish(t, &paho.Publish{Topic: "v5/rm/t", QoS: byte(1 + i%2), Payload: fmt.Appendf(nil, "r%04d", i)})
	}
	acked := 0
	for acked < n {
		want := min(acked+window, n)
		inbox.waitN(t, want, 5*time.Second)
		// No more than the window may arrive until an acknowledgement.
		deadline := time.Now().Add(40 * time.Millisecond)
		for time.Now().Before(deadline) {
			if got := inbox.len(); got > want {
				t.Fatalf("%d messages unacknowledged by the client, its Receive Maximum is %d", got-acked, window)
			}
			time.Sleep(5 * time.Millisecond)
		}
		rmu.Lock()
		p := received[acked]
		rmu.Unlock()
		if err := sub.Ack(p); err != nil {
			t.Fatalf("ack %d: %v", acked, err)
		}
		acked++
	}
	msgs := inbox.all()
	for i := range msgs {
		msgs[i].QoS = 1 // QoS alternates; checked below
	}
	checkSequence(t, msgs, "r", n, 1)
	for i, m := range inbox.all() {
		if want := byte(1 + i%2); m.QoS != want {
			t.Errorf("message %d: QoS %d, want %d", i, m.QoS, want)
		}
	}
}

// TestInteropV5SubscriptionOptions: No Local, Retain As Published and the
// three Retain Handling values, as paho.golang sends them.
func TestInteropV5SubscriptionOptions(t *testing.T) {
	s, addr := ioStart(t, nil)
	pub := v5Connect(t, addr, v5Options{id: "v5-opts-pub", clean: true})
	pub.publish(t, &paho.Publish{Topic: "v5/opts/ret", QoS: 1, Retain: true, Payload: []byte("kept")})
	ioWait(t, "the retained message", 5*time.Second, func() bool { return s.Stats().Retained == 1 })

	var inbox ioInbox
	c := v5Connect(t, addr, v5Options{id: "v5-opts", clean: true, inbox: &inbox})
	// Retain Handling 2: no retained messages on subscribe.
	c.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/opts/ret", QoS: 1, RetainHandling: 2})
	// Retain Handling 1: retained messages only for a new subscription.
	c.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/opts/+", QoS: 1, RetainHandling: 1, RetainAsPublished: true})
	if m := inbox.waitN(t, 1, 5*time.Second)[0]; m.Topic != "v5/opts/ret" || m.Payload != "kept" || !m.Retain {
		t.Errorf("retained message for the new subscription: %+v", m)
	}
	c.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/opts/+", QoS: 1, RetainHandling: 1, RetainAsPublished: true})
	// Retain Handling 0: always.
	c.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/opts/#", QoS: 1, RetainHandling: 0, NoLocal: true})
	if m := inbox.waitN(t, 2, 5*time.Second)[1]; m.Topic != "v5/opts/ret" || !m.Retain {
		t.Errorf("retained message for Retain Handling 0: %+v", m)
	}
	// No Local on v5/opts/#: the client's own message comes back only
	// through v5/opts/+ (Retain As Published: its RETAIN flag is kept);
	// v5/opts/ret (Retain As Published off) gets it with RETAIN 0.
	c.publish(t, &paho.Publish{Topic: "v5/opts/own", QoS: 1, Retain: true, Payload: []byte("own")})
	pub.publish(t, &paho.Publish{Topic: "v5/opts/ret", QoS: 1, Retain: true, Payload: []byte("live")})
	// Same publisher, same topic: "end" comes after every copy of "live".
	pub.publish(t, &paho.Publish{Topic: "v5/opts/ret", QoS: 1, Payload: []byte("end")})
	ioWait(t, "own and end", 5*time.Second, func() bool {
		var own, end bool
		for _, m := range inbox.all() {
			own = own || m.Payload == "own"
			end = end || m.Payload == "end"
		}
		return own && end
	})
	var own, live []ioMsg
	for _, m := range inbox.all()[2:] {
		switch m.Payload {
		case "own":
			own = append(own, m)
		case "live":
			live = append(live, m)
		case "end":
		default:
			t.Errorf("unexpected %+v", m)
		}
	}
	if len(own) != 1 || !own[0].Retain {
		t.Errorf("own message: got %+v, want it once (No Local on v5/opts/#) with RETAIN 1 (Retain As Published on v5/opts/+)", own)
	}
	// "live" matches v5/opts/ret (RAP off), v5/opts/+ (RAP on) and
	// v5/opts/# (RAP off): either one copy per subscription, RETAIN 1
	// only through v5/opts/+, or a single merged copy [MQTT-3.3.4-2],
	// which has RETAIN 1 since one of the subscriptions keeps it.
	retained := 0
	for _, m := range live {
		if m.Retain {
			retained++
		}
	}
	if (len(live) != 1 && len(live) != 3) || retained != 1 {
		t.Errorf("live message: %d deliveries, %d with RETAIN 1; want 1 merged copy with RETAIN 1 or 3 copies of which 1 with RETAIN 1: %+v", len(live), retained, live)
	}
}

// TestInteropV5ServerShutdown: Shutdown sends DISCONNECT 0x8B (Server
// shutting down) to every v5 client [README: "disconnects every client (v5:
// DISCONNECT 0x8B)"]. Several rounds of three clients each, to catch a
// race (fixed in 4e55b96): the DISCONNECT was lost when Shutdown came while
// the connection was still flushing its CONNACK.
func TestInteropV5ServerShutdown(t *testing.T) {
	const rounds, clients = 40, 3
	for r := range rounds {
		s, addr := ioStart(t, nil)
		got := make(chan byte, clients)
		var cs []*v5Client
		for i := range clients {
			cs = append(cs, v5Connect(t, addr, v5Options{id: fmt.Sprintf("v5-shutdown-%d", i), clean: true,
				onServerDisconnect: func(d *paho.Disconnect) { got <- d.ReasonCode }}))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: Shutdown: %v", r, err)
		}
		for i, c := range cs {
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: client %d still running after the broker closed the connection", r, i)
			}
		}
		// Every client has stopped, so each DISCONNECT received has been
		// handed to OnServerDisconnect (on a goroutine: allow it a moment).
		for i := range clients {
			select {
			case rc := <-got:
				if rc != 0x8B {
					t.Errorf("round %d: DISCONNECT reason %#x, want 0x8B", r, rc)
				}
			case <-time.After(time.Second):
				t.Fatalf("round %d: %d of %d clients got no DISCONNECT from the broker", r, clients-i, clients)
			}
		}
	}
}

// TestInteropV5SharedSubscription: a $share group splits messages between
// its two members (each message to one member only), a plain subscription
// on the same topics still gets everything, and a member that leaves gets
// no more.
func TestInteropV5SharedSubscription(t *testing.T) {
	const n = 200
	s, addr := ioStart(t, nil)
	var a, b, all ioInbox
	ca := v5Connect(t, addr, v5Options{id: "v5-share-a", clean: true, inbox: &a})
	cb := v5Connect(t, addr, v5Options{id: "v5-share-b", clean: true, inbox: &b})
	cp := v5Connect(t, addr, v5Options{id: "v5-share-plain", clean: true, inbox: &all})
	ca.subscribe(t, nil, paho.SubscribeOptions{Topic: "$share/grp/v5/shared/#", QoS: 1})
	cb.subscribe(t, nil, paho.SubscribeOptions{Topic: "$share/grp/v5/shared/#", QoS: 1})
	cp.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/shared/#", QoS: 1})

	pub := v5Connect(t, addr, v5Options{id: "v5-share-pub", clean: true})
	for i := range n {
		pub.publish(t, &paho.Publish{Topic: fmt.Sprintf("v5/shared/%d", i%4), QoS: 1, Payload: fmt.Appendf(nil, "%04d", i)})
	}
	checkSequence(t, all.waitN(t, n, 10*time.Second), "", n, 1)
	ioWait(t, fmt.Sprintf("%d messages across the group", n), 10*time.Second, func() bool { return a.len()+b.len() >= n })

	seen := map[string]string{}
	for name, inbox := range map[string]*ioInbox{"a": &a, "b": &b} {
		msgs := inbox.all()
		if len(msgs) == 0 {
			t.Errorf("member %s got no message: not shared", name)
		}
		prev := -1
		for _, m := range msgs {
			if other, dup := seen[m.Payload]; dup {
				t.Errorf("message %s delivered to %s and %s", m.Payload, other, name)
			}
			seen[m.Payload] = name
			// Each member sees its share in publication order.
			if i, _ := strconv.Atoi(m.Payload); i <= prev {
				t.Errorf("member %s: %s after %04d", name, m.Payload, prev)
			} else {
				prev = i
			}
			if m.QoS != 1 {
				t.Errorf("member %s: QoS %d", name, m.QoS)
			}
		}
	}
	if len(seen) != n {
		t.Errorf("group got %d distinct messages, want %d (a %d, b %d)", len(seen), n, a.len(), b.len())
	}

	// b leaves (session expiry 0): everything now goes to a.
	before := s.Stats().Subscriptions
	cb.disconnect(t, 0)
	ioWait(t, "b's subscription to go", 5*time.Second, func() bool { return s.Stats().Subscriptions < before })
	na, nb := a.len(), b.len()
	for i := n; i < n+20; i++ {
		pub.publish(t, &paho.Publish{Topic: "v5/shared/x", QoS: 1, Payload: fmt.Appendf(nil, "%04d", i)})
	}
	a.waitN(t, na+20, 5*time.Second)
	if b.len() != nb {
		t.Errorf("member b got messages after leaving")
	}
}

// TestInteropV5Will: a v5 will with properties is published when the
// connection drops, and on DISCONNECT with reason 0x04 (Disconnect with
// Will Message); a normal DISCONNECT discards it.
func TestInteropV5Will(t *testing.T) {
	s, addr := ioStart(t, nil)
	var inbox ioInbox
	sub := v5Connect(t, addr, v5Options{id: "v5-will-sub", clean: true, inbox: &inbox})
	sub.subscribe(t, nil, paho.SubscribeOptions{Topic: "v5/will/#", QoS: 1})

	will := func(id string) v5Options {
		return v5Options{
			id: id, clean: true,
			will: &paho.WillMessage{Topic: "v5/will/" + id, QoS: 1, Payload: []byte("bye " + id)},
			// paho.golang v0.23.0 packs will properties with the CONNECT
			// property set, so it never sends a will's Content Type,
			// Response Topic, Correlation Data, Payload Format or Message
			// Expiry; TestInteropMosquitto/mqttv5/will covers those.
			willProp: &paho.WillProperties{
				User: paho.UserProperties{{Key: "why", Value: "test"}, {Key: "why", Value: "again"}},
			},
		}
	}
	// A normal DISCONNECT first: its will must never arrive.
	normal := v5Connect(t, addr, will("normal"))
	normal.disconnect(t, 0)
	ioWait(t, "the normal client to go", 5*time.Second, func() bool { return s.Stats().Connections == 1 })

	dropped := v5Connect(t, addr, will("dropped"))
	dropped.conn.Close()
	withWill := v5Connect(t, addr, will("withwill"))
	withWill.disconnect(t, 0x04)

	for _, id := range []string{"dropped", "withwill"} {
		m := inbox.waitFor(t, "v5/will/"+id, 5*time.Second)
		if m.Payload != "bye "+id || m.QoS != 1 {
			t.Errorf("will of %s: %+v", id, m)
		}
		if p := m.Props; p == nil || !reflect.DeepEqual(p.User, paho.UserProperties{{Key: "why", Value: "test"}, {Key: "why", Value: "again"}}) {
			t.Errorf("will of %s: properties %+v", id, p)
		}
	}
	if got := inbox.all(); len(got) != 2 {
		t.Errorf("got %d wills, want 2 (not the normal client's): %+v", len(got), got)
	}
}
