package broker

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Tests of subscriptions: options (No Local, Retain As Published, Retain
// Handling), overlapping subscriptions, shared subscriptions, SUBACK and
// UNSUBACK reason codes.

// subscribeID subscribes with a v5 Subscription Identifier.
func (c *tclient) subscribeID(pid uint16, subID uint32, opts ...packet.SubOption) *packet.Suback {
	c.t.Helper()
	p := &packet.Subscribe{PacketID: pid, Subs: opts}
	if subID != 0 {
		p.Props.SubscriptionIDs = []uint32{subID}
	}
	c.send(p)
	sa, ok := c.read().(*packet.Suback)
	if !ok || sa.PacketID != pid {
		c.t.Fatalf("expected SUBACK %d, got %+v", pid, sa)
	}
	return sa
}

// drain reads PUBLISHes (acknowledging them) until none arrives for
// quiet, and returns their payloads.
func (c *tclient) drain(quiet time.Duration) []string {
	c.t.Helper()
	var got []string
	for {
		p, err := c.readErr(quiet)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				c.t.Fatalf("drain: %v", err)
			}
			c.r = packet.NewReader(c.conn, 0)
			c.r.SetVersion(c.v)
			return got
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			c.t.Fatalf("drain: unexpected %s %+v", p.Type(), p)
		}
		got = append(got, string(pub.Payload))
		c.ackPublish(pub)
	}
}

func TestNoLocal(t *testing.T) {
	s := startServer(t, nil)
	self, _ := connect(t, s, packet.V5, "self", nil)
	// [MQTT-3.8.3-3]: with No Local, the client's own messages are not
	// forwarded to it; others' are. An overlapping subscription without No
	// Local still matches, and only its identifier is sent.
	self.subscribeID(1, 7, packet.SubOption{Filter: "nl/#", QoS: 1, NoLocal: true})
	self.subscribeID(2, 8, packet.SubOption{Filter: "nl/keep", QoS: 1})
	other, _ := connect(t, s, packet.V5, "other", nil)
	other.subscribe(1, packet.SubOption{Filter: "nl/#", QoS: 1})

	self.send(&packet.Publish{Topic: "nl/own", Payload: []byte("own")})
	if got := other.readPublish(); string(got.Payload) != "own" {
		t.Fatalf("other: %+v", got)
	}
	self.send(&packet.Publish{Topic: "nl/keep", Payload: []byte("keep")})
	if got := other.readPublish(); string(got.Payload) != "keep" {
		t.Fatalf("other: %+v", got)
	}
	got := self.readPublish()
	if string(got.Payload) != "keep" || !slices.Equal(got.Props.SubscriptionIDs, []uint32{8}) {
		t.Fatalf("self: %+v", got)
	}
	other.send(&packet.Publish{Topic: "nl/theirs", Payload: []byte("theirs")})
	if got := self.readPublish(); string(got.Payload) != "theirs" || !slices.Equal(got.Props.SubscriptionIDs, []uint32{7}) {
		t.Fatalf("self: %+v", got)
	}
	other.readPublish() // its own, without No Local
	self.expectNothing(50 * time.Millisecond)

	// [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
	self.send(&packet.Subscribe{PacketID: 3, Subs: []packet.SubOption{{Filter: "$share/g/nl/#", NoLocal: true}}})
	self.expectKicked(packet.ProtocolError)
}

func TestRetainAsPublished(t *testing.T) {
	s := startServer(t, nil)
	rap, _ := connect(t, s, packet.V5, "rap", nil)
	rap.subscribe(1, packet.SubOption{Filter: "rp/#", RetainAsPublished: true})
	norap, _ := connect(t, s, packet.V5, "norap", nil)
	norap.subscribe(1, packet.SubOption{Filter: "rp/#"})
	v3, _ := connect(t, s, packet.V311, "v3", nil)
	v3.subscribe(1, packet.SubOption{Filter: "rp/#"})
	shared, _ := connect(t, s, packet.V5, "shared", nil)
	shared.subscribe(1, packet.SubOption{Filter: "$share/g/rp/#", RetainAsPublished: true})
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	for _, retain := range []bool{true, false} {
		pub.send(&packet.Publish{Topic: "rp/x", Retain: retain, Payload: []byte("m")})
		// [MQTT-3.3.1-13]: RAP 1 keeps the flag as published (shared
		// subscriptions too); [MQTT-3.3.1-12]: RAP 0 clears it; 3.1.1
		// clears it for live messages (3.1.1 [MQTT-3.3.1-9]).
		for _, c := range []struct {
			c    *tclient
			want bool
		}{{rap, retain}, {shared, retain}, {norap, false}, {v3, false}} {
			if got := c.c.readPublish(); got.Retain != c.want {
				t.Fatalf("%s retain=%v: got RETAIN %v", c.c.conn.LocalAddr(), retain, got.Retain)
			}
		}
	}
}

func TestRetainHandling(t *testing.T) {
	s := startServer(t, nil)
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	pub.send(&packet.Publish{Topic: "rh/a", Retain: true, Payload: []byte("A")})
	pub.send(&packet.Publish{Topic: "rh/b", Retain: true, QoS: 1, PacketID: 1, Payload: []byte("B")})
	pub.readAck(packet.PUBACK)
	waitFor(t, "two retained", func() bool { return s.Stats().Retained == 2 })

	c, _ := connect(t, s, packet.V5, "c", nil)
	expectRetained := func(n int) {
		t.Helper()
		got := c.drain(100 * time.Millisecond)
		slices.Sort(got)
		if n == 0 && len(got) != 0 || n == 2 && !slices.Equal(got, []string{"A", "B"}) {
			t.Fatalf("retained: got %q, want %d", got, n)
		}
	}
	// [MQTT-3.3.1-9]: Retain Handling 0 sends them on every SUBSCRIBE,
	// new or replacing.
	c.subscribe(1, packet.SubOption{Filter: "rh/+", QoS: 1, RetainHandling: 0})
	expectRetained(2)
	c.subscribe(2, packet.SubOption{Filter: "rh/+", QoS: 1, RetainHandling: 0})
	expectRetained(2)
	// [MQTT-3.3.1-10]: 1 sends them only for a new subscription.
	c.subscribe(3, packet.SubOption{Filter: "rh/#", QoS: 1, RetainHandling: 1})
	expectRetained(2)
	c.subscribe(4, packet.SubOption{Filter: "rh/#", QoS: 1, RetainHandling: 1})
	expectRetained(0)
	// [MQTT-3.3.1-11]: 2 never sends them.
	c.subscribe(5, packet.SubOption{Filter: "rh/a", QoS: 1, RetainHandling: 2})
	expectRetained(0)
	// §4.8.2: a shared subscription gets no retained messages, whatever
	// its Retain Handling; live messages still arrive.
	for i, rh := range []byte{0, 1} {
		sh, _ := connect(t, s, packet.V5, "sh"+strconv.Itoa(i), nil)
		sh.subscribe(1, packet.SubOption{Filter: "$share/g" + strconv.Itoa(i) + "/rh/#", QoS: 1, RetainHandling: rh})
		sh.expectNothing(100 * time.Millisecond)
	}
	// 3.1.1 has no Retain Handling: retained messages are sent on every
	// SUBSCRIBE, new or replacing (3.1.1 [MQTT-3.8.4-3]).
	v3, _ := connect(t, s, packet.V311, "v3", nil)
	for i := range 2 {
		v3.subscribe(uint16(i+1), packet.SubOption{Filter: "rh/+", QoS: 1})
		got := v3.drain(100 * time.Millisecond)
		slices.Sort(got)
		if !slices.Equal(got, []string{"A", "B"}) {
			t.Fatalf("3.1.1 subscribe %d: retained %q", i, got)
		}
	}
	v3.send(&packet.Unsubscribe{PacketID: 3, Filters: []string{"rh/+"}})
	v3.read()
	v3.subscribe(1, packet.SubOption{Filter: "$share/g9/rh/#", QoS: 1})
	v3.expectNothing(50 * time.Millisecond)
	pub.send(&packet.Publish{Topic: "rh/live", Payload: []byte("live")})
	if got := v3.readPublish(); string(got.Payload) != "live" {
		t.Fatalf("shared: %+v", got)
	}
}

func TestOverlappingSubscriptionsOneCopy(t *testing.T) {
	for _, v := range versions {
		s := startServer(t, nil)
		c, _ := connect(t, s, v, "c", nil)
		if v == packet.V5 {
			c.subscribeID(1, 1, packet.SubOption{Filter: "a/+", QoS: 0})
			c.subscribeID(2, 2, packet.SubOption{Filter: "a/#", QoS: 2})
		} else {
			c.subscribe(1, packet.SubOption{Filter: "a/+", QoS: 0})
			c.subscribe(2, packet.SubOption{Filter: "a/#", QoS: 2})
		}
		pub, _ := connect(t, s, v, "pub", nil)
		for qos := byte(0); qos <= 2; qos++ {
			pub.publishQoS(&packet.Publish{Topic: "a/b", QoS: qos, PacketID: 5, Payload: []byte{'0' + qos}})
			// [MQTT-3.3.4-2]: one copy, at the highest QoS of the matching
			// subscriptions (never above the message's own).
			got := c.readPublish()
			if got.QoS != qos || got.Payload[0] != '0'+qos {
				t.Fatalf("v%d qos %d: got %+v", v, qos, got)
			}
			// [MQTT-3.3.4-3]: with every matching Subscription Identifier.
			if v == packet.V5 {
				ids := slices.Sorted(slices.Values(got.Props.SubscriptionIDs))
				if !slices.Equal(ids, []uint32{1, 2}) {
					t.Fatalf("qos %d: subscription ids %v", qos, got.Props.SubscriptionIDs)
				}
			}
			c.ackPublish(got)
			c.expectNothing(50 * time.Millisecond)
		}
	}
}

// collect publishes n QoS 1 messages on topic and returns, per client, the
// payloads it received.
func collectShared(t *testing.T, pub *tclient, topic string, from, n int, clients ...*tclient) [][]string {
	t.Helper()
	for i := from; i < from+n; i++ {
		pub.publishQoS(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(strconv.Itoa(i))})
	}
	// The broker writes to the receivers before it writes the publisher's
	// PUBACK (same flush batch, receivers first), so once the last PUBACK
	// is in, a short quiet period ends each receiver's stream.
	out := make([][]string, len(clients))
	for i, c := range clients {
		out[i] = c.drain(50 * time.Millisecond)
	}
	return out
}

// checkOnce checks that the members together got each of from..from+n-1
// exactly once, and that the members in mustGet got at least one each.
func checkOnce(t *testing.T, got [][]string, from, n int, mustGet ...int) {
	t.Helper()
	seen := map[string]int{}
	for _, g := range got {
		for _, p := range g {
			seen[p]++
		}
	}
	for i := from; i < from+n; i++ {
		if seen[strconv.Itoa(i)] != 1 {
			t.Fatalf("message %d delivered %d times to the group (got %q)", i, seen[strconv.Itoa(i)], got)
		}
	}
	if len(seen) != n {
		t.Fatalf("group got %d distinct messages, want %d: %q", len(seen), n, got)
	}
	for _, m := range mustGet {
		if len(got[m]) == 0 {
			t.Fatalf("member %d got nothing: %q", m, got)
		}
	}
}

func TestSharedSubscriptions(t *testing.T) {
	for _, v := range versions {
		s := startServer(t, nil)
		var members []*tclient
		for i := range 3 {
			m, _ := connect(t, s, v, "m"+strconv.Itoa(i), func(p *packet.Connect) {
				if i == 2 { // a persistent member, to leave by going offline
					p.CleanStart = false
					p.Props.SetUint32(packet.PropSessionExpiry, 300)
				}
			})
			m.subscribe(1, packet.SubOption{Filter: "$share/g/sh/#", QoS: 1})
			members = append(members, m)
		}
		all, _ := connect(t, s, v, "all", nil)
		all.subscribe(1, packet.SubOption{Filter: "sh/#", QoS: 1})
		pub, _ := connect(t, s, v, "pub", nil)

		// §4.8.2: each message goes to exactly one member of the group;
		// a normal subscriber on the same topics gets every one.
		got := collectShared(t, pub, "sh/t", 0, 30, append(members, all)...)
		checkOnce(t, got[:3], 0, 30, 0, 1, 2)
		checkOnce(t, got[3:], 0, 30, 0)

		// A member that unsubscribes leaves the group: the rest get all.
		members[0].send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"$share/g/sh/#"}})
		members[0].read()
		got = collectShared(t, pub, "sh/t", 30, 30, append(members, all)...)
		if len(got[0]) != 0 {
			t.Fatalf("v%d: unsubscribed member got %q", v, got[0])
		}
		checkOnce(t, got[1:3], 30, 30, 0, 1)
		checkOnce(t, got[3:], 30, 30, 0)

		// A member whose session stays but who goes offline: online
		// members are preferred, so the one left gets everything.
		members[2].conn.Close()
		waitFor(t, "member offline", func() bool { return s.Stats().Connections == 4 })
		got = collectShared(t, pub, "sh/t", 60, 30, members[1], all)
		checkOnce(t, got[:1], 60, 30, 0)
		checkOnce(t, got[1:], 60, 30, 0)

		// A member that disconnects with a clean session leaves too: with
		// no member online, nothing is delivered to the group except to
		// the offline persistent member (queued, QoS 1).
		members[1].send(&packet.Disconnect{})
		members[1].expectClosed()
		waitFor(t, "member gone", func() bool { return s.Stats().Connections == 3 })
		got = collectShared(t, pub, "sh/t", 90, 5, all)
		checkOnce(t, got, 90, 5, 0)
		back, ack := connect(t, s, v, "m2", func(p *packet.Connect) {
			p.CleanStart = false
			p.Props.SetUint32(packet.PropSessionExpiry, 300)
		})
		if !ack.SessionPresent {
			t.Fatalf("v%d: session of m2 lost", v)
		}
		checkOnce(t, [][]string{back.drain(150 * time.Millisecond)}, 90, 5, 0)
	}
}

func TestSubackReasonCodes(t *testing.T) {
	filters := []packet.SubOption{
		{Filter: "ok/1", QoS: 1},
		{Filter: "a/#/b", QoS: 1},       // [MQTT-4.7.1-1] '#' not last
		{Filter: "a+", QoS: 1},          // [MQTT-4.7.1-2] '+' not a whole level
		{Filter: "$share/g", QoS: 1},    // [MQTT-4.8.2-2] no filter after the share name
		{Filter: "$share//x", QoS: 1},   // [MQTT-4.8.2-1] empty share name
		{Filter: "$share/g+/x", QoS: 1}, // [MQTT-4.8.2-2] wildcard in the share name
		{Filter: "ok/#", QoS: 2},
		{Filter: "+/+", QoS: 0},
		{Filter: "$share/g/ok/2", QoS: 1},
	}
	for _, v := range versions {
		s := startServer(t, nil)
		c, _ := connect(t, s, v, "c", nil)
		sa := c.subscribe(1, filters...)
		bad := packet.TopicFilterInvalid // 0x8F in v5
		if v != packet.V5 {
			bad = packet.UnspecifiedError // 0x80 is 3.1.1's only failure code [MQTT-3.9.3-2 in 3.1.1]
		}
		want := []packet.ReasonCode{1, bad, bad, bad, bad, bad, 2, 0, 1}
		// [MQTT-3.9.3-1]: one code per filter, in order; valid filters are
		// granted in the same SUBACK.
		if !slices.Equal(sa.ReasonCodes, want) {
			t.Fatalf("v%d SUBACK %v, want %v", v, sa.ReasonCodes, want)
		}
		pub, _ := connect(t, s, v, "pub", nil)
		pub.publishQoS(&packet.Publish{Topic: "ok/1", QoS: 1, PacketID: 1, Payload: []byte("x")})
		got := c.readPublish()
		if got.Topic != "ok/1" || got.QoS != 1 {
			t.Fatalf("v%d: %+v", v, got)
		}
		c.ackPublish(got)
		if v != packet.V5 {
			continue
		}
		// [MQTT-3.11.3-1] [MQTT-3.11.3-2]: UNSUBACK has a code per filter:
		// 0x00 removed, 0x11 no such subscription (also for a second
		// mention in the same packet), 0x8F invalid.
		c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"ok/1", "never", "ok/1", "$share/g/ok/2", "a/#/b"}})
		ua, ok := c.read().(*packet.Unsuback)
		wantU := []packet.ReasonCode{0, packet.NoSubscriptionExisted, packet.NoSubscriptionExisted, 0, packet.TopicFilterInvalid}
		if !ok || ua.PacketID != 2 || !slices.Equal(ua.ReasonCodes, wantU) {
			t.Fatalf("UNSUBACK %+v, want %v", ua, wantU)
		}
	}
}

func TestDollarTopicsAndWildcards(t *testing.T) {
	// [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics
	// starting with '$'; a filter naming the '$' level does.
	for _, v := range versions {
		s := startServer(t, nil)
		wild, _ := connect(t, s, v, "wild", nil)
		wild.subscribe(1, packet.SubOption{Filter: "#"}, packet.SubOption{Filter: "+/x"})
		dollar, _ := connect(t, s, v, "dollar", nil)
		dollar.subscribe(1, packet.SubOption{Filter: "$foo/#"}, packet.SubOption{Filter: "$foo/+"})
		pub, _ := connect(t, s, v, "pub", nil)
		pub.send(&packet.Publish{Topic: "$foo/x", Payload: []byte("dollar")})
		pub.send(&packet.Publish{Topic: "foo/x", Payload: []byte("plain")})
		if got := dollar.readPublish(); got.Topic != "$foo/x" {
			t.Fatalf("v%d: %+v", v, got)
		}
		if got := wild.readPublish(); got.Topic != "foo/x" {
			t.Fatalf("v%d: '#' or '+' matched %q", v, got.Topic)
		}
		wild.expectNothing(30 * time.Millisecond)
		dollar.expectNothing(30 * time.Millisecond)
	}
}
