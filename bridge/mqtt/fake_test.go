package mqtt

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// fakeServer is a scripted MQTT 5 server for what Mosquitto will not do on
// demand: the test reads what the client sent and writes raw packets.
type fakeServer struct {
	t       *testing.T
	ln      net.Listener
	connack *packets.Connack
	// silent: no PINGRESP (a keepalive failure).
	silent bool

	mu   sync.Mutex
	conn net.Conn
	in   chan *packets.ControlPacket // packets from the client, after CONNECT
}

// startFake listens on loopback; the first connection gets connack.
func startFake(t *testing.T, connack *packets.Connack, silent bool) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if connack.Properties == nil {
		connack.Properties = &packets.Properties{}
	}
	f := &fakeServer{t: t, ln: ln, connack: connack, silent: silent, in: make(chan *packets.ControlPacket, 100000)}
	done := make(chan struct{})
	go f.serve(done)
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
		<-done
	})
	return f
}

func (f *fakeServer) url() string { return "mqtt://" + f.ln.Addr().String() }

func (f *fakeServer) serve(done chan struct{}) {
	defer close(done)
	c, err := f.ln.Accept()
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conn = c
	f.mu.Unlock()
	defer close(f.in)
	p, err := packets.ReadPacket(c)
	if err != nil || p.Type != packets.CONNECT {
		f.t.Errorf("fake server: want CONNECT, got %v, %v", p, err)
		return
	}
	if _, err := f.connack.WriteTo(c); err != nil {
		return
	}
	for {
		p, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		if p.Type == packets.PINGREQ {
			if !f.silent {
				_, _ = packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
			}
			continue
		}
		f.in <- p
	}
}

type packetWriter interface {
	WriteTo(io.Writer) (int64, error)
}

// send writes p to the client.
func (f *fakeServer) send(p packetWriter) {
	f.t.Helper()
	f.mu.Lock()
	c := f.conn
	f.mu.Unlock()
	if _, err := p.WriteTo(c); err != nil {
		f.t.Fatalf("fake server write: %v", err)
	}
}

// next returns the next packet the client sent (other than PINGREQ).
func (f *fakeServer) next() *packets.ControlPacket {
	f.t.Helper()
	select {
	case p, ok := <-f.in:
		if !ok {
			f.t.Fatal("fake server: the client closed the connection")
		}
		return p
	case <-time.After(waitTimeout):
		f.t.Fatalf("fake server: nothing from the client within %v", waitTimeout)
		return nil
	}
}

func u16(v uint16) *uint16 { return &v }
func b8(v byte) *byte      { return &v }

// ack answers the PUBLISH p with a PUBACK or PUBREC carrying code.
func (f *fakeServer) ack(p *packets.Publish, code byte, reason string) {
	f.t.Helper()
	props := &packets.Properties{ReasonString: reason}
	if p.QoS == 1 {
		f.send(&packets.Puback{PacketID: p.PacketID, ReasonCode: code, Properties: props})
	} else {
		f.send(&packets.Pubrec{PacketID: p.PacketID, ReasonCode: code, Properties: props})
	}
}

func (f *fakeServer) nextPublish() *packets.Publish {
	f.t.Helper()
	p := f.next()
	pb, ok := p.Content.(*packets.Publish)
	if !ok {
		f.t.Fatalf("fake server: want PUBLISH, got %v", p)
	}
	return pb
}

// TestFakeReasonCodes: a reason code >= 0x80 rejects one message, the
// link goes on; QoS 2 gets no PUBREL after a failed PUBREC; PUBCOMP 0x92
// is an error but not a rejection; the Receive Maximum of the CONNACK is
// the window.
func TestFakeReasonCodes(t *testing.T) {
	f := startFake(t, &packets.Connack{Properties: &packets.Properties{ReceiveMaximum: u16(3)}}, false)
	u := connect(t, Config{URL: f.url()}, nil)
	if u.ReceiveMaximum() != 3 {
		t.Fatalf("ReceiveMaximum = %d", u.ReceiveMaximum())
	}
	msgs := telemetry("t", 6, 1)
	msgs[3].QoS, msgs[4].QoS, msgs[5].QoS = 2, 2, 2
	r := newResults(len(msgs))
	publish := func(i int) {
		if err := u.Publish(context.Background(), msgs[i], func(err error) { r.confirm(i, err) }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		publish(i)
	}
	p := []*packets.Publish{f.nextPublish(), f.nextPublish(), f.nextPublish()}
	for i, pb := range p {
		if string(pb.Payload) != string(msgs[i].Payload) || pb.QoS != 1 {
			t.Fatalf("publish %d: %v", i, pb)
		}
	}
	f.ack(p[1], 0x97, "over quota")
	f.ack(p[2], 0x10, "")
	f.ack(p[0], 0x00, "")

	publish(3)
	f.ack(f.nextPublish(), 0x80, "")
	publish(4)
	pb := f.nextPublish() // no PUBREL for message 3 in between
	f.ack(pb, 0x00, "")
	if rel, ok := f.next().Content.(*packets.Pubrel); !ok || rel.PacketID != pb.PacketID {
		t.Fatalf("want PUBREL %d", pb.PacketID)
	}
	f.send(&packets.Pubcomp{PacketID: pb.PacketID, Properties: &packets.Properties{}})
	publish(5)
	pb = f.nextPublish()
	f.ack(pb, 0x00, "")
	f.next() // PUBREL
	f.send(&packets.Pubcomp{PacketID: pb.PacketID, ReasonCode: 0x92, Properties: &packets.Properties{}})

	r.wait(t)
	r.check(t, func(i int, err error) bool {
		switch i {
		case 1:
			return errors.Is(err, bridge.ErrRejected) && strings.Contains(err.Error(), "PUBACK reason 0x97 quota exceeded: over quota")
		case 3:
			return errors.Is(err, bridge.ErrRejected) && strings.Contains(err.Error(), "PUBREC reason 0x80")
		case 5:
			return err != nil && !errors.Is(err, bridge.ErrRejected) && strings.Contains(err.Error(), "PUBCOMP reason 0x92")
		}
		return err == nil
	})
	select {
	case <-u.Done():
		t.Fatalf("link lost: %v", u.Err())
	default:
	}
}

// TestFakeSweep: with a session present, Connect releases the window's
// packet identifiers (PUBREL) and returns only once they are complete.
func TestFakeSweep(t *testing.T) {
	for _, present := range []bool{true, false} {
		f := startFake(t, &packets.Connack{SessionPresent: present, Properties: &packets.Properties{ReceiveMaximum: u16(5)}}, false)
		connected := make(chan *Upstream)
		go func() {
			u := New(Config{URL: f.url(), ClientID: "sweep"}, upstreamtest.Logger(t))
			if err := u.Connect(context.Background(), nil); err != nil {
				t.Error(err)
			}
			connected <- u
		}()
		if present {
			for id := uint16(1); id <= 5; id++ {
				if rel, ok := f.next().Content.(*packets.Pubrel); !ok || rel.PacketID != id {
					t.Fatalf("want PUBREL %d", id)
				}
			}
			select {
			case <-connected:
				t.Fatal("Connect returned before the PUBCOMPs")
			default:
			}
			for id := uint16(1); id <= 5; id++ {
				f.send(&packets.Pubcomp{PacketID: id, ReasonCode: 0x92, Properties: &packets.Properties{}})
			}
		}
		u := <-connected
		t.Cleanup(func() { closeAndWait(t, u) })
		r := newResults(1)
		if err := u.Publish(context.Background(), &bridge.Message{Topic: "t", QoS: 2}, func(err error) { r.confirm(0, err) }); err != nil {
			t.Fatal(err)
		}
		pb := f.nextPublish()
		f.ack(pb, 0, "")
		f.next()
		f.send(&packets.Pubcomp{PacketID: pb.PacketID, Properties: &packets.Properties{}})
		r.wait(t)
		r.check(t, isNil)
	}
}

// TestFakeServerDisconnect: a DISCONNECT from the upstream ends the link,
// with its reason in Err; pending publishes get ErrLinkLost.
func TestFakeServerDisconnect(t *testing.T) {
	f := startFake(t, &packets.Connack{}, false)
	u := connect(t, Config{URL: f.url()}, nil)
	r := newResults(1)
	if err := u.Publish(context.Background(), &bridge.Message{Topic: "t", QoS: 1}, func(err error) { r.confirm(0, err) }); err != nil {
		t.Fatal(err)
	}
	f.nextPublish()
	f.send(&packets.Disconnect{ReasonCode: 0x8E, Properties: &packets.Properties{ReasonString: "another gw-1"}})
	waitDone(t, u)
	r.check(t, isLinkLost)
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) || !strings.Contains(err.Error(), "DISCONNECT, reason 0x8E session taken over: another gw-1") {
		t.Fatalf("Err = %v", err)
	}
}

// TestFakeKeepalive: an upstream that stops answering PINGREQ is dropped.
func TestFakeKeepalive(t *testing.T) {
	f := startFake(t, &packets.Connack{}, true)
	u := connect(t, Config{URL: f.url(), KeepAlive: time.Second}, nil)
	waitDone(t, u)
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) || !strings.Contains(err.Error(), "keepalive") {
		t.Fatalf("Err = %v", err)
	}
}

// TestFakeLimits: the CONNACK's Maximum QoS and Retain Available are
// honoured; invalid topics are refused without being sent.
func TestFakeLimits(t *testing.T) {
	f := startFake(t, &packets.Connack{Properties: &packets.Properties{MaximumQOS: b8(1), RetainAvailable: b8(0)}}, false)
	u := connect(t, Config{URL: f.url()}, nil)
	msgs := []*bridge.Message{
		{Topic: "retained", QoS: 1, Retain: true},
		{Topic: "a/+/b", QoS: 1},
		{Topic: "t", QoS: 1, ResponseTopic: "r/#"},
		{Topic: "t", QoS: 1, User: []bridge.UserProperty{{Key: "k", Value: "\xff"}}},
		{Topic: "t", QoS: 3},
		{Topic: "q2", QoS: 2},
	}
	r := newResults(len(msgs))
	for i, m := range msgs {
		if err := u.Publish(context.Background(), m, func(err error) { r.confirm(i, err) }); err != nil {
			t.Fatal(err)
		}
	}
	pb := f.nextPublish()
	if pb.Topic != "q2" || pb.QoS != 1 {
		t.Fatalf("sent %v, want q2 with QoS 1", pb)
	}
	f.ack(pb, 0, "")
	r.wait(t)
	r.check(t, func(i int, err error) bool {
		if i == len(msgs)-1 {
			return err == nil
		}
		return errors.Is(err, bridge.ErrRejected)
	})
}

// TestFakeDownlinkAckOrder: acknowledgements go out in order of receipt,
// whatever the order of Inbound.Ack; a QoS 2 message is PUBREC'd on Ack
// and its PUBREL answered with PUBCOMP.
func TestFakeDownlinkAckOrder(t *testing.T) {
	f := startFake(t, &packets.Connack{}, false)
	in := make(inbox, 16)
	connected := make(chan *Upstream)
	go func() {
		connected <- connect(t, Config{URL: f.url(), Receive: []Subscription{{Filter: "cmd/#", QoS: 2}}}, in.handle)
	}()
	sub, ok := f.next().Content.(*packets.Subscribe)
	if !ok || len(sub.Subscriptions) != 1 || sub.Subscriptions[0].Topic != "cmd/#" || !sub.Subscriptions[0].NoLocal ||
		!sub.Subscriptions[0].RetainAsPublished || sub.Subscriptions[0].RetainHandling != 1 || sub.Subscriptions[0].QoS != 2 {
		t.Fatalf("want SUBSCRIBE cmd/#, got %+v", sub)
	}
	f.send(&packets.Suback{PacketID: sub.PacketID, Reasons: []byte{2}, Properties: &packets.Properties{}})
	<-connected
	for _, p := range []*packets.Publish{
		{PacketID: 10, QoS: 1, Topic: "cmd/a", Payload: []byte("1")},
		{PacketID: 11, QoS: 2, Topic: "cmd/b", Payload: []byte("2")},
		{PacketID: 0, QoS: 0, Topic: "cmd/c", Payload: []byte("3")},
	} {
		p.Properties = &packets.Properties{}
		f.send(p)
	}
	a, b, c := in.next(t), in.next(t), in.next(t)
	if a.Topic != "cmd/a" || b.Topic != "cmd/b" || c.Topic != "cmd/c" || b.QoS != 2 || c.QoS != 0 {
		t.Fatalf("delivered out of order: %q %q %q", a.Topic, b.Topic, c.Topic)
	}
	c.Ack()
	b.Ack()
	b.Ack() // twice: no effect
	a.Ack()
	if p, ok := f.next().Content.(*packets.Puback); !ok || p.PacketID != 10 {
		t.Fatalf("want PUBACK 10 first, got %v", p)
	}
	if p, ok := f.next().Content.(*packets.Pubrec); !ok || p.PacketID != 11 {
		t.Fatalf("want PUBREC 11, got %v", p)
	}
	f.send(&packets.Pubrel{PacketID: 11, Properties: &packets.Properties{}})
	if p, ok := f.next().Content.(*packets.Pubcomp); !ok || p.PacketID != 11 {
		t.Fatalf("want PUBCOMP 11, got %v", p)
	}
}

// TestFakeSubscribeRefused: a SUBACK failure fails Connect, naming the
// filter.
func TestFakeSubscribeRefused(t *testing.T) {
	f := startFake(t, &packets.Connack{}, false)
	errc := make(chan error, 1)
	u := New(Config{URL: f.url(), ClientID: "c", Receive: []Subscription{{Filter: "ok/#", QoS: 1}, {Filter: "secret/#", QoS: 1}}}, upstreamtest.Logger(t))
	go func() { errc <- u.Connect(context.Background(), nil) }()
	sub := f.next().Content.(*packets.Subscribe)
	f.send(&packets.Suback{PacketID: sub.PacketID, Reasons: []byte{1, 0x87}, Properties: &packets.Properties{}})
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), `subscribe to "secret/#"`) || !strings.Contains(err.Error(), "SUBACK reason 0x87 not authorized") {
		t.Fatalf("Connect = %v", err)
	}
	waitDone(t, u)
}
