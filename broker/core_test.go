package broker

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

var versions = []packet.Version{packet.V311, packet.V5}

func TestConnectAccepted(t *testing.T) {
	s := startServer(t, nil)
	for _, v := range []packet.Version{packet.V31, packet.V311, packet.V5} {
		_, ack := connect(t, s, v, "c1", nil)
		if ack.ReasonCode != packet.Success || ack.SessionPresent {
			t.Fatalf("v%d: %+v", v, ack)
		}
	}
}

func TestFirstPacketNotConnect(t *testing.T) {
	// [MQTT-3.1.0-1]: anything before CONNECT closes the connection.
	s := startServer(t, nil)
	c := dialRaw(t, s, packet.V311)
	c.send(&packet.Pingreq{})
	c.expectClosed()
}

func TestSecondConnectIsProtocolError(t *testing.T) {
	// [MQTT-3.1.0-2]
	s := startServer(t, nil)
	c, _ := connect(t, s, packet.V5, "c", nil)
	c.send(&packet.Connect{ProtocolName: "MQTT", Version: packet.V5, ClientID: "c", CleanStart: true})
	d := c.expectClosed()
	if d == nil || d.ReasonCode != packet.ProtocolError {
		t.Fatalf("want DISCONNECT 0x82, got %+v", d)
	}
}

func TestPubSubAllQoS(t *testing.T) {
	for _, v := range versions {
		for qos := byte(0); qos <= 2; qos++ {
			s := startServer(t, nil)
			sub, _ := connect(t, s, v, "sub", nil)
			sa := sub.subscribe(1, packet.SubOption{Filter: "a/+", QoS: 2})
			if sa.ReasonCodes[0] != packet.GrantedQoS2 {
				t.Fatalf("granted %v", sa.ReasonCodes)
			}
			pub, _ := connect(t, s, v, "pub", nil)
			pub.send(&packet.Publish{Topic: "a/b", QoS: qos, PacketID: 7, Payload: []byte("hello")})
			switch qos {
			case 1:
				pub.readAck(packet.PUBACK)
			case 2:
				pub.readAck(packet.PUBREC)
				pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
				pub.readAck(packet.PUBCOMP)
			}
			got := sub.readPublish()
			if got.Topic != "a/b" || !bytes.Equal(got.Payload, []byte("hello")) || got.QoS != qos {
				t.Fatalf("v%d qos%d: got %+v", v, qos, got)
			}
			switch qos {
			case 1:
				sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
			case 2:
				sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
				rel := sub.readAck(packet.PUBREL)
				sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: rel.PacketID})
			}
			pub.send(&packet.Pingreq{})
			if _, ok := pub.read().(*packet.Pingresp); !ok {
				t.Fatal("no PINGRESP")
			}
		}
	}
}

func TestQoS2ExactlyOnceOnResend(t *testing.T) {
	// [MQTT-4.3.3-10]: a PUBLISH resent with DUP before PUBREL is not delivered twice.
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V311, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "q2", QoS: 2})
	pub, _ := connect(t, s, packet.V311, "pub", nil)
	pub.send(&packet.Publish{Topic: "q2", QoS: 2, PacketID: 9, Payload: []byte("once")})
	pub.readAck(packet.PUBREC)
	pub.send(&packet.Publish{Topic: "q2", QoS: 2, PacketID: 9, Dup: true, Payload: []byte("once")})
	pub.readAck(packet.PUBREC)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 9})
	pub.readAck(packet.PUBCOMP)
	got := sub.readPublish()
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
	sub.readAck(packet.PUBREL)
	sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
	sub.expectNothing(100 * time.Millisecond)
}

func TestRetained(t *testing.T) {
	s := startServer(t, nil)
	pub, _ := connect(t, s, packet.V5, "pub", nil)
	pub.send(&packet.Publish{Topic: "r/1", Retain: true, Payload: []byte("one")})
	pub.send(&packet.Publish{Topic: "r/1", Retain: true, Payload: []byte("uno")}) // replace
	pub.send(&packet.Publish{Topic: "r/2", Retain: true, Payload: []byte("two")})
	pub.send(&packet.Publish{Topic: "r/2", Retain: true}) // empty payload clears [MQTT-3.3.1-10]
	waitFor(t, "retained", func() bool { return s.Stats().Retained == 1 })
	sub, _ := connect(t, s, packet.V5, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "r/#", QoS: 1})
	got := sub.readPublish()
	if got.Topic != "r/1" || string(got.Payload) != "uno" || !got.Retain {
		t.Fatalf("retained: %+v", got)
	}
	// Retain Handling 1: only for a new subscription; 2: never.
	sub.subscribe(2, packet.SubOption{Filter: "r/#", QoS: 1, RetainHandling: 1})
	sub.subscribe(3, packet.SubOption{Filter: "r/+", QoS: 1, RetainHandling: 2})
	sub.expectNothing(100 * time.Millisecond)
	// A live message on a retained topic: RETAIN cleared unless Retain As Published.
	pub.send(&packet.Publish{Topic: "r/1", Retain: true, Payload: []byte("live")})
	got = sub.readPublish()
	if got.Retain {
		t.Fatalf("live message kept RETAIN without RAP [MQTT-3.3.1-12]")
	}
}

func TestWillOnAbnormalClose(t *testing.T) {
	for _, v := range versions {
		s := startServer(t, nil)
		sub, _ := connect(t, s, v, "sub", nil)
		sub.subscribe(1, packet.SubOption{Filter: "will/#", QoS: 1})
		withWill := func(p *packet.Connect) {
			p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS = true, "will/x", []byte("gone"), 1
		}
		// Normal DISCONNECT: no will [MQTT-3.1.2-10].
		c1, _ := connect(t, s, v, "w1", withWill)
		c1.send(&packet.Disconnect{})
		c1.expectClosed()
		sub.expectNothing(100 * time.Millisecond)
		// Network close without DISCONNECT: will [MQTT-3.1.2-8].
		c2, _ := connect(t, s, v, "w2", withWill)
		c2.conn.Close()
		got := sub.readPublish()
		if got.Topic != "will/x" || string(got.Payload) != "gone" {
			t.Fatalf("will: %+v", got)
		}
		sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
		if v == packet.V5 {
			c3, _ := connect(t, s, v, "w3", withWill)
			c3.send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
			got = sub.readPublish()
			if got.Topic != "will/x" {
				t.Fatalf("will after 0x04: %+v", got)
			}
		}
	}
}

func TestKeepAliveTimeoutSendsWill(t *testing.T) {
	s := startServer(t, nil)
	sub, _ := connect(t, s, packet.V311, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "ka", QoS: 0})
	c, _ := connect(t, s, packet.V311, "idle", func(p *packet.Connect) {
		p.KeepAlive = 1
		p.WillFlag, p.WillTopic, p.WillPayload = true, "ka", []byte("timeout")
	})
	start := time.Now()
	got := sub.readPublish()
	if string(got.Payload) != "timeout" {
		t.Fatalf("%+v", got)
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("will after %v, before 1.5 x keep alive", el)
	}
	c.expectClosed()
}

func TestTakeover(t *testing.T) {
	// [MQTT-3.1.4-3]: the older connection gets DISCONNECT 0x8E and is closed.
	s := startServer(t, nil)
	old, _ := connect(t, s, packet.V5, "same", nil)
	_, ack := connect(t, s, packet.V5, "same", func(p *packet.Connect) { p.CleanStart = false })
	d := old.expectClosed()
	if d == nil || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("old connection got %+v", d)
	}
	if !ack.SessionPresent {
		t.Fatal("session not present after takeover without clean start")
	}
}

func TestPersistentSessionQueuesAndResends(t *testing.T) {
	for _, v := range versions {
		s := startServer(t, nil)
		persist := func(p *packet.Connect) {
			p.CleanStart = false
			if v == packet.V5 {
				p.Props.SetUint32(packet.PropSessionExpiry, 300)
			}
		}
		sub, _ := connect(t, s, v, "dev", persist)
		sub.subscribe(1, packet.SubOption{Filter: "cmd/#", QoS: 1})
		pub, _ := connect(t, s, v, "pub", nil)
		pub.send(&packet.Publish{Topic: "cmd/1", QoS: 1, PacketID: 1, Payload: []byte("a")})
		pub.readAck(packet.PUBACK)
		first := sub.readPublish() // not acknowledged
		sub.conn.Close()
		waitFor(t, "offline", func() bool { return s.Stats().Connections == 1 })
		pub.send(&packet.Publish{Topic: "cmd/1", QoS: 1, PacketID: 2, Payload: []byte("b")})
		pub.readAck(packet.PUBACK)
		sub2, ack := connect(t, s, v, "dev", persist)
		if !ack.SessionPresent {
			t.Fatalf("v%d: session not present [MQTT-3.2.2-2]", v)
		}
		re := sub2.readPublish()
		if !re.Dup || re.PacketID != first.PacketID || string(re.Payload) != "a" {
			t.Fatalf("v%d resend: %+v [MQTT-4.4.0-1]", v, re)
		}
		next := sub2.readPublish()
		if string(next.Payload) != "b" {
			t.Fatalf("v%d queued: %+v", v, next)
		}
	}
}

func TestEmptyClientID(t *testing.T) {
	s := startServer(t, nil)
	// 3.1.1 without clean session: identifier rejected [MQTT-3.1.3-8].
	_, ack := connect(t, s, packet.V311, "", func(p *packet.Connect) { p.CleanStart = false })
	if ack.ReasonCode.V3Connack() != 2 {
		t.Fatalf("v3 empty id: %+v", ack)
	}
	_, ack = connect(t, s, packet.V311, "", nil)
	if ack.ReasonCode != packet.Success {
		t.Fatalf("v3 empty id clean: %+v", ack)
	}
	// v5: the server assigns one and returns it [MQTT-3.1.3-6].
	_, ack = connect(t, s, packet.V5, "", nil)
	if ack.ReasonCode != packet.Success || ack.Props.AssignedClientID == "" {
		t.Fatalf("v5 empty id: %+v", ack)
	}
}

func TestUnsupportedProtocolLevel(t *testing.T) {
	// [MQTT-3.1.2-2]: CONNACK return code 0x01, then close.
	s := startServer(t, nil)
	c := dialRaw(t, s, packet.V311)
	c.write([]byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 9, 2, 0, 60, 0, 0})
	ack, ok := c.read().(*packet.Connack)
	if !ok || ack.ReasonCode.V3Connack() != 1 {
		t.Fatalf("got %+v", ack)
	}
	c.expectClosed()
}
