package broker

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Tests of the MQTT 5.0 flow-control and metadata features: topic aliases,
// Receive Maximum, Maximum Packet Size, request/response properties,
// Server Keep Alive and AUTH. Each names the clause it proves.

// connProps adjusts the v5 CONNECT properties.
func connProps(f func(*packet.Properties)) func(*packet.Connect) {
	return func(p *packet.Connect) { f(&p.Props) }
}

// pingSync sends PINGREQ and waits for PINGRESP: every packet sent before
// it has been handled by the broker. Only for clients that receive nothing
// else meanwhile.
func (c *tclient) pingSync() {
	c.t.Helper()
	c.send(&packet.Pingreq{})
	p := c.read()
	if _, ok := p.(*packet.Pingresp); !ok {
		c.t.Fatalf("expected PINGRESP, got %s %+v", p.Type(), p)
	}
}

// expectKicked checks that the broker closes the connection: a v5 client
// first gets DISCONNECT with code [MQTT-4.13.1-1], a 3.x client is just
// closed (it has no way to be told).
func (c *tclient) expectKicked(code packet.ReasonCode) {
	c.t.Helper()
	d := c.expectClosed()
	if c.v != packet.V5 {
		if d != nil {
			c.t.Fatalf("3.x client got a DISCONNECT %+v", d)
		}
		return
	}
	if d == nil || d.ReasonCode != code {
		c.t.Fatalf("want DISCONNECT %v, got %+v", code, d)
	}
}

// publishQoS publishes and completes the publisher side of the QoS
// handshake. The publisher must not be subscribed to anything.
func (c *tclient) publishQoS(p *packet.Publish) {
	c.t.Helper()
	c.send(p)
	switch p.QoS {
	case 0:
	case 1:
		if a := c.readAck(packet.PUBACK); a.PacketID != p.PacketID || a.ReasonCode.IsError() {
			c.t.Fatalf("PUBACK %+v for %d", a, p.PacketID)
		}
	case 2:
		if a := c.readAck(packet.PUBREC); a.PacketID != p.PacketID || a.ReasonCode.IsError() {
			c.t.Fatalf("PUBREC %+v for %d", a, p.PacketID)
		}
		c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: p.PacketID})
		c.readAck(packet.PUBCOMP)
	}
}

// ackPublish completes the subscriber side of the handshake for p.
func (c *tclient) ackPublish(p *packet.Publish) {
	c.t.Helper()
	switch p.QoS {
	case 1:
		c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	case 2:
		c.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
		rel := c.readAck(packet.PUBREL)
		c.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: rel.PacketID})
	}
}

func aliasPub(topic string, alias uint16, payload string) *packet.Publish {
	p := &packet.Publish{Topic: topic, Payload: []byte(payload)}
	p.Props.SetUint16(packet.PropTopicAlias, alias)
	return p
}

func TestTopicAliasClientToBroker(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.TopicAliasMaximum = 4 })
	sub, _ := connect(t, s, packet.V311, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "al/#"})

	pub, ack := connect(t, s, packet.V5, "pub", nil)
	if !ack.Props.Has(packet.PropTopicAliasMaximum) || ack.Props.TopicAliasMaximum != 4 {
		t.Fatalf("CONNACK Topic Alias Maximum: %+v", ack.Props)
	}
	// [MQTT-3.3.2-12]: every alias 1..Topic Alias Maximum is accepted; a
	// topic with an alias sets it, an empty topic uses it, a new topic
	// remaps it.
	pub.send(aliasPub("al/1", 1, "set1"))
	pub.send(aliasPub("", 1, "use1"))
	pub.send(aliasPub("al/2", 4, "set4"))
	pub.send(aliasPub("", 4, "use4"))
	pub.send(aliasPub("al/3", 1, "remap1"))
	pub.send(aliasPub("", 1, "use-remapped"))
	pub.send(aliasPub("", 4, "use4-again"))
	want := [][2]string{{"al/1", "set1"}, {"al/1", "use1"}, {"al/2", "set4"}, {"al/2", "use4"},
		{"al/3", "remap1"}, {"al/3", "use-remapped"}, {"al/2", "use4-again"}}
	for _, w := range want {
		got := sub.readPublish()
		if got.Topic != w[0] || string(got.Payload) != w[1] {
			t.Fatalf("got %q %q, want %q %q", got.Topic, got.Payload, w[0], w[1])
		}
	}

	cases := []struct {
		name string
		p    *packet.Publish
		code packet.ReasonCode
	}{
		// [MQTT-3.3.2-8]: alias 0 is not permitted.
		{"alias 0", aliasPub("al/x", 0, "x"), packet.TopicAliasInvalid},
		// [MQTT-3.3.2-9]: above the Topic Alias Maximum of CONNACK.
		{"alias above maximum", aliasPub("al/x", 5, "x"), packet.TopicAliasInvalid},
		// §3.3.2.3.4: an empty topic with an alias that has no mapping is a
		// Protocol Error.
		{"unknown alias", aliasPub("", 2, "x"), packet.ProtocolError},
		// §3.3.2.3.4: an empty topic without an alias is a Protocol Error.
		{"no topic no alias", &packet.Publish{Payload: []byte("x")}, packet.ProtocolError},
	}
	for _, tc := range cases {
		c, _ := connect(t, s, packet.V5, "bad", nil)
		c.send(tc.p)
		c.expectKicked(tc.code)
	}

	// [MQTT-3.3.2-7]: alias mappings do not carry over to a new connection,
	// even of the same session.
	persist := connProps(func(p *packet.Properties) { p.SetUint32(packet.PropSessionExpiry, 60) })
	c1, _ := connect(t, s, packet.V5, "again", persist)
	c1.send(aliasPub("al/9", 3, "first"))
	c1.send(&packet.Disconnect{})
	c1.expectClosed()
	if got := sub.readPublish(); got.Topic != "al/9" {
		t.Fatalf("got %+v", got)
	}
	c2, _ := connect(t, s, packet.V5, "again", func(p *packet.Connect) { persist(p); p.CleanStart = false })
	c2.send(aliasPub("", 3, "stale"))
	c2.expectKicked(packet.ProtocolError)
	sub.expectNothing(50 * time.Millisecond)
}

func TestTopicAliasBrokerToClient(t *testing.T) {
	s := startServer(t, nil)
	// A client with Topic Alias Maximum 2, one without (v5) and a 3.1.1 one.
	aliased, _ := connect(t, s, packet.V5, "aliased",
		connProps(func(p *packet.Properties) { p.SetUint16(packet.PropTopicAliasMaximum, 2) }))
	plain, _ := connect(t, s, packet.V5, "plain", nil)
	v3, _ := connect(t, s, packet.V311, "v3", nil)
	aliased.subscribe(1, packet.SubOption{Filter: "ta/#", QoS: 1})
	plain.subscribe(1, packet.SubOption{Filter: "ta/#", QoS: 1})
	v3.subscribe(1, packet.SubOption{Filter: "ta/#", QoS: 0})

	pub, _ := connect(t, s, packet.V5, "pub", nil)
	topics := []string{"ta/1", "ta/1", "ta/2", "ta/2", "ta/3", "ta/3", "ta/1", "ta/2", "ta/3"}
	for i, tp := range topics {
		pub.publishQoS(&packet.Publish{Topic: tp, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(strconv.Itoa(i))})
	}
	// The first PUBLISH on a topic carries topic and a new alias, later
	// ones an empty topic and the same alias; a third topic gets no alias
	// as only 2 are allowed [MQTT-3.1.2-26] [MQTT-3.3.2-11].
	type want struct {
		topic string
		alias uint16 // 0: no Topic Alias property
	}
	wantAliased := []want{{"ta/1", 1}, {"", 1}, {"ta/2", 2}, {"", 2}, {"ta/3", 0}, {"ta/3", 0}, {"", 1}, {"", 2}, {"ta/3", 0}}
	for i, w := range wantAliased {
		got := aliased.readPublish()
		alias := uint16(0)
		if got.Props.Has(packet.PropTopicAlias) {
			alias = got.Props.TopicAlias
		}
		if got.Topic != w.topic || alias != w.alias || string(got.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d: topic %q alias %d payload %q, want %q alias %d", i, got.Topic, alias, got.Payload, w.topic, w.alias)
		}
		if alias > 2 {
			t.Fatalf("alias %d above the client's maximum 2 [MQTT-3.3.2-11]", alias)
		}
		aliased.ackPublish(got)
	}
	// No Topic Alias Maximum (v5) or 3.1.1: never an alias [MQTT-3.1.2-27].
	for _, c := range []*tclient{plain, v3} {
		for i, tp := range topics {
			got := c.readPublish()
			if got.Topic != tp || got.Props.Has(packet.PropTopicAlias) || string(got.Payload) != strconv.Itoa(i) {
				t.Fatalf("v%d message %d: %+v", c.v, i, got)
			}
			c.ackPublish(got)
		}
	}
	for _, c := range []*tclient{aliased, plain, v3} {
		c.expectNothing(20 * time.Millisecond)
	}
}

func TestReceiveMaximumOutbound(t *testing.T) {
	// [MQTT-3.3.4-9]: the server never has more than the client's Receive
	// Maximum QoS 1/2 PUBLISHes unacknowledged.
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V5, "sub",
		connProps(func(p *packet.Properties) { p.SetUint16(packet.PropReceiveMaximum, 2) }))
	sub.subscribe(1, packet.SubOption{Filter: "rm/#", QoS: 2})
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	for i := 1; i <= 10; i++ {
		pub.publishQoS(&packet.Publish{Topic: "rm/1", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
	}
	expect := func(n int) *packet.Publish {
		t.Helper()
		p := sub.readPublish()
		if string(p.Payload) != strconv.Itoa(n) || p.QoS != 1 {
			t.Fatalf("got %q QoS %d, want %d", p.Payload, p.QoS, n)
		}
		return p
	}
	p1, p2 := expect(1), expect(2)
	sub.expectNothing(150 * time.Millisecond)
	sub.ackPublish(p1)
	p3 := expect(3) // one acknowledgement frees one slot
	sub.expectNothing(50 * time.Millisecond)
	win := []*packet.Publish{p2, p3}
	for n := 4; n <= 10; n++ {
		sub.ackPublish(win[0])
		win = append(win[1:], expect(n))
	}
	sub.ackPublish(win[0])
	sub.ackPublish(win[1])
	sub.expectNothing(50 * time.Millisecond)

	// QoS 2: a successful PUBREC does not free the slot, PUBCOMP does; a
	// PUBREC with a failure code does too.
	for i := 1; i <= 4; i++ {
		pub.publishQoS(&packet.Publish{Topic: "rm/2", QoS: 2, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
	}
	q1, q2 := expect2(t, sub, "1"), expect2(t, sub, "2")
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: q1.PacketID})
	rel := sub.readAck(packet.PUBREL)
	sub.expectNothing(100 * time.Millisecond)
	sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: rel.PacketID})
	q3 := expect2(t, sub, "3")
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: q2.PacketID, ReasonCode: packet.UnspecifiedError})
	q4 := expect2(t, sub, "4")
	sub.ackPublish(q3)
	sub.ackPublish(q4)
	sub.expectNothing(50 * time.Millisecond)
}

func expect2(t *testing.T, c *tclient, payload string) *packet.Publish {
	t.Helper()
	p := c.readPublish()
	if string(p.Payload) != payload || p.QoS != 2 {
		t.Fatalf("got %q QoS %d, want %q QoS 2", p.Payload, p.QoS, payload)
	}
	return p
}

func TestReceiveMaximumInbound(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.ReceiveMaximum = 3 })
	c, ack := connect(t, s, packet.V5, "q2", nil)
	if !ack.Props.Has(packet.PropReceiveMaximum) || ack.Props.ReceiveMaximum != 3 {
		t.Fatalf("CONNACK Receive Maximum: %+v", ack.Props)
	}
	q2 := func(id uint16, dup bool) *packet.Publish {
		return &packet.Publish{Topic: "in", QoS: 2, PacketID: id, Dup: dup, Payload: []byte("x")}
	}
	for id := uint16(1); id <= 3; id++ {
		c.send(q2(id, false))
		c.readAck(packet.PUBREC)
	}
	// Resending a message still awaiting PUBREL is not a new one
	// [MQTT-4.3.3-10]: it does not count against the window.
	c.send(q2(3, true))
	c.readAck(packet.PUBREC)
	c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 1})
	c.readAck(packet.PUBCOMP)
	c.send(q2(4, false))
	c.readAck(packet.PUBREC)
	// A fourth QoS 2 message without PUBREL exceeds the Receive Maximum
	// the server sent [MQTT-3.3.4-7]: DISCONNECT 0x93 (§3.2.2.3.3).
	c.send(q2(5, false))
	c.expectKicked(packet.ReceiveMaximumExceeded)

	// 3.1.1 has no Receive Maximum: nothing is enforced.
	v3, _ := connect(t, s, packet.V311, "v3", nil)
	for id := uint16(1); id <= 6; id++ {
		v3.send(q2(id, false))
		v3.readAck(packet.PUBREC)
	}
}

// publishOfSize returns a PUBLISH on topic whose encoding in v is exactly
// size bytes.
func publishOfSize(t *testing.T, v packet.Version, topic string, size int) *packet.Publish {
	t.Helper()
	for n := max(size-10, 0); n <= size; n++ {
		p := &packet.Publish{Topic: topic, Payload: bytes.Repeat([]byte{'x'}, n)}
		if packet.EncodedLen(p, v) == size {
			return p
		}
	}
	t.Fatalf("no PUBLISH of %d bytes", size)
	return nil
}

func TestMaximumPacketSizeInbound(t *testing.T) {
	for _, v := range versions {
		s := startServer(t, func(c *Config) { c.Limits.MaxPacketSize = 256 })
		sub, _ := connect(t, s, v, "sub", nil)
		sub.subscribe(1, packet.SubOption{Filter: "big"})
		c, ack := connect(t, s, v, "c", nil)
		if v == packet.V5 && (!ack.Props.Has(packet.PropMaximumPacketSize) || ack.Props.MaximumPacketSize != 256) {
			t.Fatalf("CONNACK Maximum Packet Size: %+v", ack.Props)
		}
		// Exactly the maximum is accepted.
		c.send(publishOfSize(t, v, "big", 256))
		c.pingSync()
		if got := sub.readPublish(); len(got.Payload) == 0 {
			t.Fatalf("got %+v", got)
		}
		// One byte more: v5 DISCONNECT 0x95 (§3.2.2.3.6, [MQTT-4.13.1-1]), 3.1.1 closed.
		c.send(publishOfSize(t, v, "big", 257))
		c.expectKicked(packet.PacketTooLarge)
		sub.expectNothing(50 * time.Millisecond)
	}
}

func TestMaximumPacketSizeOutbound(t *testing.T) {
	// [MQTT-3.1.2-24]: never a packet larger than the client's Maximum
	// Packet Size; [MQTT-3.1.2-25]: such a message is discarded as if it
	// had been sent, so it does not hold a slot of the window.
	s := startServer(t, nil)
	small, _ := connect(t, s, packet.V5, "small", connProps(func(p *packet.Properties) {
		p.SetUint32(packet.PropMaximumPacketSize, 100)
		p.SetUint16(packet.PropReceiveMaximum, 1)
		p.SetUint16(packet.PropTopicAliasMaximum, 2)
	}))
	small.subscribe(1, packet.SubOption{Filter: "mp/#", QoS: 2})
	other, _ := connect(t, s, packet.V5, "other", nil)
	other.subscribe(1, packet.SubOption{Filter: "mp/#", QoS: 2})
	pub, _ := connect(t, s, packet.V5, "pub", nil)

	big := bytes.Repeat([]byte{'B'}, 200)
	id := uint16(0)
	for qos := byte(0); qos <= 2; qos++ {
		for _, m := range []struct {
			topic   string
			payload []byte
		}{{"mp/big", big}, {"mp/small", []byte(fmt.Sprint("small", qos))}} {
			id++
			pub.publishQoS(&packet.Publish{Topic: m.topic, QoS: qos, PacketID: id, Payload: m.payload})
		}
		got := small.readPublish()
		if n := packet.EncodedLen(got, packet.V5); n > 100 {
			t.Fatalf("QoS %d: received a %d-byte packet", qos, n)
		}
		if string(got.Payload) != fmt.Sprint("small", qos) || got.QoS != qos {
			t.Fatalf("QoS %d: got %+v", qos, got)
		}
		// The dropped message's alias was not kept: "mp/small" got alias 1.
		if got.Props.TopicAlias != 1 || (qos == 0) != (got.Topic == "mp/small") {
			t.Fatalf("QoS %d: topic %q alias %d", qos, got.Topic, got.Props.TopicAlias)
		}
		small.ackPublish(got)
		// The other subscriber gets both.
		o1, o2 := other.readPublish(), other.readPublish()
		if len(o1.Payload) != 200 || !bytes.Equal(o2.Payload, got.Payload) {
			t.Fatalf("other: got %d and %q", len(o1.Payload), o2.Payload)
		}
		other.ackPublish(o1)
		other.ackPublish(o2)
	}
	small.expectNothing(50 * time.Millisecond)
	if n := s.Stats().DroppedTooBig; n != 3 {
		t.Fatalf("DroppedTooBig = %d, want 3", n)
	}
}

func TestRequestResponseProperties(t *testing.T) {
	// [MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-15] Response
	// Topic, [MQTT-3.3.2-16] Correlation Data, [MQTT-3.3.2-17]
	// [MQTT-3.3.2-18] User Properties unaltered and in order (duplicates
	// kept), [MQTT-3.3.2-20] Content Type: all forwarded unchanged, on the
	// direct path (QoS 0), through the queue (QoS 1/2) and from a
	// retained message.
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V5, "responder", nil)
	sub.subscribe(1, packet.SubOption{Filter: "req/#", QoS: 2})
	pub, _ := connect(t, s, packet.V5, "requester", nil)
	user := []packet.UserProperty{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "b", Value: "3"}, {Key: "", Value: ""}}
	mk := func(qos byte, id uint16, retain bool) *packet.Publish {
		p := &packet.Publish{Topic: "req/x", QoS: qos, PacketID: id, Retain: retain, Payload: []byte(`{"q":1}`)}
		p.Props.SetByte(packet.PropPayloadFormat, 1)
		p.Props.ContentType = "application/json"
		p.Props.ResponseTopic = "resp/requester"
		p.Props.CorrelationData = []byte{0, 1, 2, 0xff}
		p.Props.User = slices.Clone(user)
		return p
	}
	check := func(got *packet.Publish) {
		t.Helper()
		pr := &got.Props
		if !pr.Has(packet.PropPayloadFormat) || pr.PayloadFormat != 1 || pr.ContentType != "application/json" ||
			pr.ResponseTopic != "resp/requester" || !bytes.Equal(pr.CorrelationData, []byte{0, 1, 2, 0xff}) ||
			!slices.Equal(pr.User, user) || string(got.Payload) != `{"q":1}` {
			t.Fatalf("properties changed: %+v", pr)
		}
	}
	for qos := byte(0); qos <= 2; qos++ {
		pub.publishQoS(mk(qos, uint16(qos+1), false))
		got := sub.readPublish()
		check(got)
		sub.ackPublish(got)
	}
	pub.publishQoS(mk(1, 9, true))
	sub.ackPublish(sub.readPublish())
	late, _ := connect(t, s, packet.V5, "late", nil)
	late.subscribe(1, packet.SubOption{Filter: "req/#", QoS: 1})
	got := late.readPublish()
	if !got.Retain {
		t.Fatalf("retained message without RETAIN: %+v", got)
	}
	check(got)
	// A Payload Format Indicator of 0 is forwarded too (present, 0).
	p := &packet.Publish{Topic: "req/y", Payload: []byte{0xff}}
	p.Props.SetByte(packet.PropPayloadFormat, 0)
	pub.send(p)
	if got := sub.readPublish(); !got.Props.Has(packet.PropPayloadFormat) || got.Props.PayloadFormat != 0 {
		t.Fatalf("payload format 0 lost: %+v", got.Props)
	}
}

func TestResponseInformation(t *testing.T) {
	s := startServer(t, nil)
	// §3.2.2.3.15: Response Information only when asked for with 1.
	_, ack := connect(t, s, packet.V5, "asks", connProps(func(p *packet.Properties) {
		p.SetByte(packet.PropRequestResponseInfo, 1)
	}))
	if ack.Props.ResponseInfo == "" {
		t.Fatalf("no Response Information: %+v", ack.Props)
	}
	// [MQTT-3.1.2-28]: 0 means the server must not return it.
	for _, mut := range []func(*packet.Connect){nil, connProps(func(p *packet.Properties) {
		p.SetByte(packet.PropRequestResponseInfo, 0)
	})} {
		_, ack := connect(t, s, packet.V5, "quiet", mut)
		if ack.Props.ResponseInfo != "" || ack.Props.Has(packet.PropResponseInfo) {
			t.Fatalf("unrequested Response Information: %+v", ack.Props)
		}
	}
}

func TestServerKeepAlive(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxKeepAlive = 10 })
	// [MQTT-3.2.2-21]: a v5 client asking for 0 or more than the maximum is
	// told the value to use.
	for _, ka := range []uint16{0, 60} {
		_, ack := connect(t, s, packet.V5, "ka", func(p *packet.Connect) { p.KeepAlive = ka })
		if ack.ReasonCode != packet.Success || !ack.Props.Has(packet.PropServerKeepAlive) || ack.Props.ServerKeepAlive != 10 {
			t.Fatalf("keep alive %d: %+v", ka, ack)
		}
	}
	// Within the maximum: no Server Keep Alive, the client's value is used
	// [MQTT-3.2.2-22].
	_, ack := connect(t, s, packet.V5, "ka", func(p *packet.Connect) { p.KeepAlive = 5 })
	if ack.Props.Has(packet.PropServerKeepAlive) {
		t.Fatalf("unexpected Server Keep Alive: %+v", ack.Props)
	}
	// 3.1.1 cannot be told: refused with return code 2, then closed.
	c, ack := connect(t, s, packet.V311, "ka3", func(p *packet.Connect) { p.KeepAlive = 60 })
	if ack.ReasonCode.V3Connack() != 2 {
		t.Fatalf("3.1.1 keep alive 60: %+v", ack)
	}
	c.expectClosed()
	if _, ack := connect(t, s, packet.V311, "ka3", func(p *packet.Connect) { p.KeepAlive = 10 }); ack.ReasonCode != packet.Success {
		t.Fatalf("3.1.1 keep alive 10: %+v", ack)
	}
}

func TestKeepAliveTimeoutBothVersions(t *testing.T) {
	// [MQTT-3.1.2-22] (v5; [MQTT-3.1.2-24] in 3.1.1): no packet within 1.5
	// x keep alive closes the connection as a network failure, so the will
	// is published [MQTT-3.1.2-8]; v5 is told 0x8D first. The v5 client
	// asks for 0 and is given 1 by Server Keep Alive, which the server then
	// enforces itself.
	for _, v := range versions {
		s := startServer(t, func(c *Config) { c.Limits.MaxKeepAlive = 1 })
		sub, _ := connect(t, s, v, "sub", func(p *packet.Connect) { p.KeepAlive = 1 })
		sub.subscribe(1, packet.SubOption{Filter: "ka/#"})
		idle, _ := connect(t, s, v, "idle", func(p *packet.Connect) {
			p.KeepAlive = 1
			if v == packet.V5 {
				p.KeepAlive = 0
			}
			p.WillFlag, p.WillTopic, p.WillPayload = true, "ka/will", []byte("timeout")
		})
		start := time.Now()
		// The subscriber stays alive by pinging while it waits.
		var got *packet.Publish
		for got == nil {
			sub.send(&packet.Pingreq{})
			switch p := sub.read().(type) {
			case *packet.Pingresp:
				time.Sleep(100 * time.Millisecond) // pacing of the keep-alive pings only
			case *packet.Publish:
				got = p
			}
		}
		if string(got.Payload) != "timeout" {
			t.Fatalf("v%d: %+v", v, got)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("v%d: will after %v, before 1.5 x keep alive", v, el)
		}
		idle.expectKicked(packet.KeepAliveTimeout)
	}
}

func TestAuth(t *testing.T) {
	s := startServer(t, nil)
	// [MQTT-4.12.0-1]: an unsupported Authentication Method gets CONNACK
	// 0x8C and the connection is closed.
	c, ack := connect(t, s, packet.V5, "auth", func(p *packet.Connect) {
		p.Props.AuthMethod = "SCRAM-SHA-1"
		p.Props.AuthData = []byte("client-first")
	})
	if ack.ReasonCode != packet.BadAuthenticationMethod {
		t.Fatalf("CONNACK %+v", ack)
	}
	c.expectClosed()
	if s.lookup("auth") != nil {
		t.Fatal("refused client got a session")
	}
	// [MQTT-4.12.0-7]: without an Authentication Method in CONNECT, AUTH
	// is a Protocol Error.
	c, _ = connect(t, s, packet.V5, "noauth", nil)
	c.send(&packet.Auth{ReasonCode: packet.ReAuthenticate, Props: packet.Properties{AuthMethod: "SCRAM-SHA-1"}})
	c.expectKicked(packet.ProtocolError)
}

func TestMaximumPacketSizeReasonString(t *testing.T) {
	// [MQTT-3.1.2-24]: not even a DISCONNECT or CONNACK may exceed the
	// client's Maximum Packet Size: their Reason String is left out
	// [MQTT-3.14.2-3] [MQTT-3.2.2-19]; with room, it is sent.
	s := startServer(t, nil)
	for _, max := range []uint32{40, 1000} {
		small := connProps(func(p *packet.Properties) { p.SetUint32(packet.PropMaximumPacketSize, max) })
		c, _ := connect(t, s, packet.V5, "mps", small)
		c.send(&packet.Publish{Topic: strings.Repeat("a", 60) + "/+", Payload: []byte("x")})
		d := c.expectClosed()
		if d == nil || d.ReasonCode != packet.TopicNameInvalid {
			t.Fatalf("max %d: DISCONNECT %+v", max, d)
		}
		if n := packet.EncodedLen(d, packet.V5); uint32(n) > max || (max == 1000) != (d.Props.ReasonString != "") {
			t.Fatalf("max %d: %d-byte DISCONNECT, reason %q", max, n, d.Props.ReasonString)
		}
		_, ack := connect(t, s, packet.V5, "mps", func(p *packet.Connect) {
			small(p)
			p.Props.AuthMethod = "SCRAM-SHA-1"
		})
		if n := packet.EncodedLen(ack, packet.V5); ack.ReasonCode != packet.BadAuthenticationMethod ||
			uint32(n) > max || (max == 1000) != (ack.Props.ReasonString != "") {
			t.Fatalf("max %d: %d-byte CONNACK %+v", max, n, ack)
		}
	}
}

func TestMaximumPacketSizeOnResend(t *testing.T) {
	// A message in flight that is too large for the client's new Maximum
	// Packet Size after a reconnect is discarded as if delivered
	// [MQTT-3.1.2-25]: it does not hold a slot of the window.
	for _, qos := range []byte{1, 2} {
		s := startServer(t, nil)
		opts := func(maxSize uint32) func(*packet.Connect) {
			return func(p *packet.Connect) {
				persistent(60)(p)
				p.Props.SetUint16(packet.PropReceiveMaximum, 1)
				if maxSize > 0 {
					p.Props.SetUint32(packet.PropMaximumPacketSize, maxSize)
				}
			}
		}
		dev, _ := connect(t, s, packet.V5, "dev", opts(0))
		dev.subscribe(1, packet.SubOption{Filter: "rs/#", QoS: 2})
		pub, _ := connect(t, s, packet.V5, "pub", nil)
		pub.publishQoS(&packet.Publish{Topic: "rs/big", QoS: qos, PacketID: 1, Payload: make([]byte, 200)})
		if got := dev.readPublish(); len(got.Payload) != 200 {
			t.Fatalf("got %+v", got)
		}
		goOffline(t, s, dev, "dev") // not acknowledged
		pub.publishQoS(&packet.Publish{Topic: "rs/small", QoS: qos, PacketID: 2, Payload: []byte("small")})
		dev, _ = connect(t, s, packet.V5, "dev", opts(100))
		got := dev.readPublish()
		if string(got.Payload) != "small" {
			t.Fatalf("QoS %d: got %d bytes (dup %v), want the small message", qos, len(got.Payload), got.Dup)
		}
		dev.ackPublish(got)
		dev.expectNothing(50 * time.Millisecond)
	}
}
