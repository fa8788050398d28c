package persist

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// updateGolden rewrites testdata/v1-golden from goldenChanges:
//
//	go test ./persist -run TestGolden -update-golden
//
// Only do so for a deliberate change; the point of the golden store is
// that stores written by older binaries keep loading.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/v1-golden")

const goldenDir = "testdata/v1-golden"

// The golden store's content.
const goldenClient = "dev/42%"

var (
	goldenInfo = session.Info{Version: 5, Expiry: 86400, DisconnectedAt: time.Unix(1790000000, 5)}
	goldenSubs = []topics.Subscription{
		{ClientID: goldenClient, Filter: "$share/grp/sensors/+/temp", QoS: 1, ID: 12},
		{ClientID: goldenClient, Filter: "cmd/dev/42/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 1},
	}
)

// goldenMessage returns message i of the golden store; odd ones carry
// every property.
func goldenMessage(topic string, i int) *session.Message {
	if i%2 == 1 {
		return fullMessage(topic)
	}
	m := &session.Message{Topic: topic, Payload: []byte{byte(i), 0, 0xFF}, QoS: 1}
	m.Props.SetByte(packet.PropPayloadFormat, 0)
	return m
}

func goldenDelivery(i int) session.Delivery {
	return session.Delivery{Msg: goldenMessage("sensors/q/temp", i), QoS: byte(1 + i%2), Retain: i == 2, SubIDs: []uint32{12}[:i%2]}
}

// goldenChanges is what the golden store was written from.
func goldenChanges() []session.Change {
	c := goldenClient
	ch := []session.Change{{Kind: session.PutSession, ClientID: c, Info: goldenInfo}}
	for _, sub := range goldenSubs {
		ch = append(ch, session.Change{Kind: session.PutSub, ClientID: c, Sub: sub})
	}
	for seq := uint64(10); seq < 13; seq++ {
		ch = append(ch, session.Change{Kind: session.PutQueued, ClientID: c, Seq: seq, D: goldenDelivery(int(seq))})
	}
	ch = append(ch,
		session.Change{Kind: session.PutInflight, ClientID: c, PacketID: 7, Phase: session.AwaitPuback, Seq: 8, D: goldenDelivery(1)},
		session.Change{Kind: session.PutInflight, ClientID: c, PacketID: 6, Phase: session.AwaitPubcomp, Seq: 9},
		session.Change{Kind: session.PutQoS2In, ClientID: c, PacketID: 513},
		session.Change{Kind: session.PutRetained, D: session.Delivery{Msg: goldenMessage("status/dev/42", 1)}},
		session.Change{Kind: session.PutRetained, D: session.Delivery{Msg: goldenMessage("status/dev/43", 2)}},
		session.Change{Kind: session.PutOutbox, Bridge: "cloud/1", Seq: 100, D: session.Delivery{Msg: goldenMessage("up/a", 3)}},
		session.Change{Kind: session.PutOutbox, Bridge: "cloud/1", Seq: 101, D: session.Delivery{Msg: goldenMessage("up/b", 4)}},
	)
	return ch
}

func writeGolden(t *testing.T) {
	if err := os.RemoveAll(goldenDir); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Options{Dir: goldenDir, Durability: Sync, GCInterval: -1, MinFree: -1})
	mustCommit(t, s, goldenChanges()...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", goldenDir)
}

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestGoldenV1(t *testing.T) {
	if *updateGolden {
		writeGolden(t)
	}
	dir := t.TempDir()
	copyDir(t, goldenDir, dir)
	s := openTest(t, Options{Dir: dir})
	if v, ok := get(t, s, "format"); !ok || v != "\x00\x00\x00\x00\x00\x00\x00\x01" {
		t.Errorf("format key %q, %v", v, ok)
	}
	checkGoldenSessions(t, s)
	checkGoldenQueue(t, s)
	checkGoldenRetained(t, s)
	checkGoldenOutbox(t, s)
}

func checkGoldenSessions(t *testing.T, s *Store) {
	byID, order := loadAll(t, s)
	if !slices.Equal(order, []string{goldenClient}) {
		t.Fatalf("sessions %q", order)
	}
	sv := byID[goldenClient]
	if in := sv.Info; in.Version != goldenInfo.Version || in.Expiry != goldenInfo.Expiry || !in.DisconnectedAt.Equal(goldenInfo.DisconnectedAt) {
		t.Errorf("info %+v", in)
	}
	if !slices.Equal(sv.Subs, goldenSubs) {
		t.Errorf("subs %+v", sv.Subs)
	}
	if sv.QueueFirst != 10 || sv.QueueNext != 13 || sv.QueueLen != 3 || sv.NextSeq != 13 {
		t.Errorf("queue %d..%d len %d next seq %d", sv.QueueFirst, sv.QueueNext, sv.QueueLen, sv.NextSeq)
	}
	if !slices.Equal(sv.QoS2In, []uint16{513}) {
		t.Errorf("qos2in %v", sv.QoS2In)
	}
	if len(sv.Inflight) != 2 {
		t.Fatalf("inflight %+v", sv.Inflight)
	}
	f := sv.Inflight[0]
	checkDelivery(t, "inflight 7", f.D, goldenDelivery(1))
	if f.ID != 7 || f.Seq != 8 || f.Inflight.Seq != 8 || f.Phase != session.AwaitPuback {
		t.Errorf("inflight[0] id %d seq %d phase %d", f.ID, f.Seq, f.Phase)
	}
	if f := sv.Inflight[1]; f.ID != 6 || f.Seq != 9 || f.Phase != session.AwaitPubcomp || f.D.Msg != nil {
		t.Errorf("inflight[1] %+v", f)
	}
}

func checkDelivery(t *testing.T, what string, got, want session.Delivery) {
	t.Helper()
	if d := sameMessage(got.Msg, want.Msg); d != "" {
		t.Errorf("%s: message %s", what, d)
	}
	if got.QoS != want.QoS || got.Retain != want.Retain || !slices.Equal(got.SubIDs, want.SubIDs) {
		t.Errorf("%s: delivery qos %d retain %v ids %v, want %d %v %v", what, got.QoS, got.Retain, got.SubIDs,
			want.QoS, want.Retain, want.SubIDs)
	}
}

func checkGoldenQueue(t *testing.T, s *Store) {
	var seqs []uint64
	err := s.ReadQueue(goldenClient, 0, 1000, 10, func(seq uint64, d session.Delivery) {
		seqs = append(seqs, seq)
		checkDelivery(t, "queued", d, goldenDelivery(int(seq)))
	})
	if err != nil || !slices.Equal(seqs, []uint64{10, 11, 12}) {
		t.Errorf("queue %v, %v", seqs, err)
	}
}

func checkGoldenRetained(t *testing.T, s *Store) {
	want := []*session.Message{goldenMessage("status/dev/42", 1), goldenMessage("status/dev/43", 2)}
	var got []*session.Message
	if err := s.LoadRetained(func(m *session.Message) error { got = append(got, m); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d retained", len(got))
	}
	for i := range want {
		if d := sameMessage(got[i], want[i]); d != "" {
			t.Errorf("retained %s: %s", want[i].Topic, d)
		}
	}
}

func checkGoldenOutbox(t *testing.T, s *Store) {
	if first, next, n, err := s.OutboxBounds("cloud/1"); first != 100 || next != 102 || n != 2 || err != nil {
		t.Errorf("outbox bounds %d %d %d %v", first, next, n, err)
	}
	want := map[uint64]*session.Message{100: goldenMessage("up/a", 3), 101: goldenMessage("up/b", 4)}
	n := 0
	err := s.ReadOutbox("cloud/1", 0, 0, func(seq uint64, _ int64, m *session.Message) bool {
		n++
		if d := sameMessage(m, want[seq]); d != "" {
			t.Errorf("outbox %d: %s", seq, d)
		}
		return true
	})
	if err != nil || n != 2 {
		t.Errorf("read %d outbox entries, %v", n, err)
	}
}
