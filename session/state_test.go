package session

import (
	"testing"
	"time"
)

func msg(topic string) *Message { return &Message{Topic: topic, Payload: []byte("x"), QoS: 1} }

func TestPacketIDsNonZeroAndUnique(t *testing.T) {
	// [MQTT-2.2.1-2] [MQTT-2.2.1-3]: a new id is non-zero and not in use.
	s := New("c")
	seen := map[uint16]bool{}
	for i := 0; i < 65535; i++ {
		id, err := s.Send(Delivery{Msg: msg("t"), QoS: 1})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if id == 0 || seen[id] {
			t.Fatalf("id %d reused or zero", id)
		}
		seen[id] = true
	}
	if _, err := s.Send(Delivery{Msg: msg("t"), QoS: 1}); err != ErrNoPacketID {
		t.Fatalf("65536th send: got %v, want ErrNoPacketID", err)
	}
	if err := s.Puback(77); err != nil {
		t.Fatal(err)
	}
	id, err := s.Send(Delivery{Msg: msg("t"), QoS: 1})
	if err != nil || id != 77 {
		t.Fatalf("freed id not reused: %v %v", id, err)
	}
}

func TestQoS2OutboundPhases(t *testing.T) {
	s := New("c")
	fid, _ := s.Send(Delivery{Msg: msg("t"), QoS: 2})
	f := Inflight{ID: fid}
	if err := s.Puback(f.ID); err != ErrUnknownID {
		t.Fatalf("PUBACK for QoS 2 accepted: %v", err)
	}
	if err := s.Pubcomp(f.ID); err != ErrUnknownID {
		t.Fatalf("PUBCOMP before PUBREC accepted: %v", err)
	}
	if err := s.Pubrec(f.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Pubrec(f.ID, false); err != nil {
		t.Fatalf("repeated PUBREC: %v", err)
	}
	var phases []Phase
	s.Inflights(func(f Inflight) { phases = append(phases, f.Phase) })
	if len(phases) != 1 || phases[0] != AwaitPubcomp {
		t.Fatalf("phases %v", phases)
	}
	if err := s.Pubcomp(f.ID); err != nil {
		t.Fatal(err)
	}
	if s.InflightLen() != 0 {
		t.Fatal("inflight not empty")
	}
}

func TestResendOrder(t *testing.T) {
	s := New("c")
	var ids []uint16
	for i := 0; i < 5; i++ {
		id, _ := s.Send(Delivery{Msg: msg("t"), QoS: 1})
		ids = append(ids, id)
	}
	s.Puback(ids[2])
	var got []uint16
	s.Inflights(func(f Inflight) { got = append(got, f.ID) })
	want := []uint16{ids[0], ids[1], ids[3], ids[4]}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
}

func TestQueueBoundAndOrder(t *testing.T) {
	s := New("c")
	m := msg("t")
	limit := int64(m.Size() * 3)
	for i := 0; i < 3; i++ {
		if !s.Enqueue(Delivery{Msg: &Message{Topic: "t", Payload: []byte{byte(i)}, QoS: 1}}, limit) {
			t.Fatalf("enqueue %d refused", i)
		}
	}
	if s.Enqueue(Delivery{Msg: m}, limit) {
		t.Fatal("enqueue beyond bound accepted")
	}
	for i := 0; i < 3; i++ {
		d, ok := s.Dequeue()
		if !ok || d.Msg.Payload[0] != byte(i) {
			t.Fatalf("dequeue %d: %v %v", i, d, ok)
		}
	}
	if s.QueueBytes() != 0 || s.QueueLen() != 0 {
		t.Fatalf("queue not empty: %d bytes %d len", s.QueueBytes(), s.QueueLen())
	}
}

func TestIncomingQoS2Dedupe(t *testing.T) {
	// [MQTT-4.3.3-10]: a resent QoS 2 PUBLISH is not delivered again.
	s := New("c")
	if !s.ReceiveQoS2(9) || s.ReceiveQoS2(9) {
		t.Fatal("duplicate not detected")
	}
	if !s.ReleaseQoS2(9) || s.ReleaseQoS2(9) {
		t.Fatal("release")
	}
	if !s.ReceiveQoS2(9) {
		t.Fatal("id reusable after PUBREL")
	}
}

func TestExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	m := &Message{Expiry: now.Add(2500 * time.Millisecond)}
	if secs, ok := m.RemainingExpiry(now); !ok || secs != 3 {
		t.Fatalf("remaining %d %v", secs, ok)
	}
	if m.Expired(now) || !m.Expired(now.Add(3*time.Second)) {
		t.Fatal("expired")
	}
	s := New("c")
	s.Send(Delivery{Msg: m, QoS: 1})
	s.Send(Delivery{Msg: msg("t"), QoS: 1})
	if n := s.DropExpired(now.Add(time.Hour), nil); n != 1 || s.InflightLen() != 1 {
		t.Fatalf("dropped %d, left %d", n, s.InflightLen())
	}
}
