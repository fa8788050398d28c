package persist

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
	"github.com/tinylib/msgp/msgp"
)

// fullMessage has every stored field set, with the presence bits the
// broker's publicationProps produces.
func fullMessage(topic string) *session.Message {
	m := &session.Message{
		Topic:   topic,
		Payload: []byte("payload of " + topic),
		QoS:     2,
		Retain:  true,
		Expiry:  time.Unix(1900000000, 123456789),
		Origin:  "origin/client",
	}
	m.Props.SetByte(packet.PropPayloadFormat, 1)
	m.Props.ContentType = "text/plain"
	m.Props.ResponseTopic = "resp/" + topic
	m.Props.CorrelationData = []byte{0, 1, 2}
	m.Props.Mark(packet.PropCorrelationData)
	m.Props.User = []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "", Value: ""}}
	return m
}

// sameMessage reports how a and b differ ("" when they do not).
func sameMessage(a, b *session.Message) string {
	switch {
	case (a == nil) != (b == nil):
		return "one is nil"
	case a == nil:
		return ""
	case a.Topic != b.Topic || !bytes.Equal(a.Payload, b.Payload) || a.QoS != b.QoS || a.Retain != b.Retain:
		return "topic, payload, QoS or retain"
	case !a.Expiry.Equal(b.Expiry):
		return "expiry " + a.Expiry.String() + " vs " + b.Expiry.String()
	case a.Origin != b.Origin:
		return "origin"
	case !reflect.DeepEqual(a.Props, b.Props):
		return fmt.Sprintf("props %+v vs %+v", a.Props, b.Props)
	}
	return ""
}

func TestMessageRecordRoundTrip(t *testing.T) {
	zeroFormat := &session.Message{Topic: "z"}
	zeroFormat.Props.SetByte(packet.PropPayloadFormat, 0)
	zeroFormat.Props.Mark(packet.PropCorrelationData) // present, empty
	for _, d := range []session.Delivery{
		{Msg: fullMessage("a/b"), QoS: 1, Retain: true, SubIDs: []uint32{7, 268435455}},
		{Msg: &session.Message{Topic: "t"}},
		{Msg: zeroFormat, QoS: 2},
	} {
		var r MessageRecord
		r.setDelivery(&d)
		b, err := r.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		var back MessageRecord
		if err := unmarshal(&back, b); err != nil {
			t.Fatal(err)
		}
		got := back.delivery()
		if diff := sameMessage(got.Msg, d.Msg); diff != "" {
			t.Errorf("message %q: %s", d.Msg.Topic, diff)
		}
		if got.QoS != d.QoS || got.Retain != d.Retain || !reflect.DeepEqual(got.SubIDs, d.SubIDs) {
			t.Errorf("delivery parts %+v, want %+v", got, d)
		}
	}
}

// TestRecordsSkipUnknownFields checks that a field added by a newer
// ferrymq is ignored, not an error.
func TestRecordsSkipUnknownFields(t *testing.T) {
	b := msgp.AppendMapHeader(nil, 3)
	b = msgp.AppendString(b, "v")
	b = msgp.AppendUint8(b, 5)
	b = msgp.AppendString(b, "future")
	b = msgp.AppendArrayHeader(b, 2)
	b = msgp.AppendString(b, "x")
	b = msgp.AppendMapHeader(b, 0)
	b = msgp.AppendString(b, "e")
	b = msgp.AppendUint32(b, 60)
	var r SessionRecord
	if err := unmarshal(&r, b); err != nil {
		t.Fatal(err)
	}
	if r != (SessionRecord{Version: 5, Expiry: 60}) {
		t.Errorf("decoded %+v", r)
	}
	if err := unmarshal(&r, append(b, 0xc0)); err == nil {
		t.Error("trailing bytes accepted")
	}
}

func TestKeys(t *testing.T) {
	for _, name := range []string{"", "a", "a/b", "%", "%2F", "/", "a%25/%2f//", "ünï/cödé"} {
		esc := escapeName(name)
		if bytes.IndexByte([]byte(esc), '/') >= 0 {
			t.Errorf("escapeName(%q) = %q holds a /", name, esc)
		}
		back, err := unescapeName(esc)
		if err != nil || back != name {
			t.Errorf("unescapeName(escapeName(%q)) = %q, %v", name, back, err)
		}
	}
	for _, bad := range []string{"%", "%2", "%2f", "%41", "a/b"} {
		if _, err := unescapeName(bad); err == nil {
			t.Errorf("unescapeName(%q) accepted", bad)
		}
	}
	// Client "a" must not see the keys of client "a/b".
	qa := string(appendNamePrefix(nil, prefixQueue, "a"))
	if k := string(appendQueueKey(nil, "a/b", 1)); len(k) >= len(qa) && k[:len(qa)] == qa {
		t.Errorf("%q is a prefix of %q", qa, k)
	}
	for _, tc := range []struct {
		key    []byte
		prefix string
		name   string
		rest   string
	}{
		{appendQueueKey(nil, "c/1", 0x2F2F), prefixQueue, "c/1", "\x00\x00\x00\x00\x00\x00//"},
		{appendInflKey(nil, "%", 0x2F00), prefixInfl, "%", "/\x00"},
		{appendQoS2InKey(nil, "x", 7), prefixQoS2In, "x", "\x00\x07"},
		{appendSubKey(nil, "s", "$share/g/a/+/#"), prefixSub, "s", "$share/g/a/+/#"},
		{appendOutKey(nil, "up/1", 9), prefixOut, "up/1", "\x00\x00\x00\x00\x00\x00\x00\x09"},
	} {
		esc, rest, ok := splitName(tc.key, tc.prefix)
		name, err := unescapeName(esc)
		if !ok || err != nil || name != tc.name || string(rest) != tc.rest {
			t.Errorf("splitName(%q) = %q %q %v %v", tc.key, esc, rest, ok, err)
		}
	}
	if seq, ok := parseSeq(appendQueueKey(nil, "c", 1<<40)[len("v1/q/c/"):]); !ok || seq != 1<<40 {
		t.Errorf("parseSeq = %d, %v", seq, ok)
	}
	if _, ok := parseSeq([]byte{1, 2}); ok {
		t.Error("parseSeq accepted 2 bytes")
	}
	if pid, ok := parsePID([]byte{1, 2}); !ok || pid != 0x102 {
		t.Errorf("parsePID = %d, %v", pid, ok)
	}
	if _, _, ok := splitName([]byte("v1/sess/a"), prefixQueue); ok {
		t.Error("splitName accepted another prefix")
	}
	if k := string(appendSessKey(nil, "a/b")); k != "v1/sess/a%2Fb" {
		t.Errorf("session key %q", k)
	}
	if k := string(appendRetKey(nil, "a/b")); k != "v1/ret/a/b" {
		t.Errorf("retained key %q", k)
	}
	if e := string(prefixEnd([]byte("v1/q/a/"))); e != "v1/q/a0" {
		t.Errorf("prefixEnd = %q", e)
	}
	if e := prefixEnd([]byte{'a', 0xFF}); string(e) != "b" {
		t.Errorf("prefixEnd = %q", e)
	}
}

// commitSync commits changes as one batch and waits for the result.
func commitSync(s *Store, changes ...session.Change) error {
	ch := make(chan error, 1)
	s.Commit(&session.Batch{Changes: changes}, func(err error) { ch <- err })
	return <-ch
}

func mustCommit(t testing.TB, s *Store, changes ...session.Change) {
	t.Helper()
	if err := commitSync(s, changes...); err != nil {
		t.Fatal(err)
	}
}

// loadAll returns every saved session by client id.
func loadAll(t testing.TB, s *Store) (map[string]*session.Saved, []string) {
	t.Helper()
	byID := make(map[string]*session.Saved)
	var order []string
	err := s.Load(func(sv *session.Saved) error {
		byID[sv.ClientID] = sv
		order = append(order, sv.ClientID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byID, order
}

func delivery(topic string, qos byte, ids ...uint32) session.Delivery {
	return session.Delivery{Msg: fullMessage(topic), QoS: qos, Retain: qos == 2, SubIDs: ids}
}

func queued(client string, seq uint64, topic string) session.Change {
	return session.Change{Kind: session.PutQueued, ClientID: client, Seq: seq, D: delivery(topic, 1, 3)}
}

// everyKind commits one or more changes of every kind and returns the
// client id that owns the full session.
func everyKind(t *testing.T, s *Store) string {
	const c = "c/1%"
	disc := time.Unix(1800000000, 42)
	mustCommit(t, s,
		session.Change{Kind: session.PutSession, ClientID: c, Info: session.Info{Version: 5, Expiry: 3600, DisconnectedAt: disc}},
		session.Change{Kind: session.PutSession, ClientID: "c+", Info: session.Info{Version: 4, Expiry: session.NeverExpire}},
		session.Change{Kind: session.PutSession, ClientID: "gone", Info: session.Info{Version: 4}},
		session.Change{Kind: session.PutSub, ClientID: c, Sub: topics.Subscription{Filter: "$share/g/a/+/#", QoS: 2,
			NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455}},
		session.Change{Kind: session.PutSub, ClientID: c, Sub: topics.Subscription{Filter: "b", QoS: 1}},
		session.Change{Kind: session.PutSub, ClientID: c, Sub: topics.Subscription{Filter: "x/y"}},
		queued(c, 5, "q/5"), queued(c, 6, "q/6"), queued(c, 8, "q/8"),
		queued("gone", 1, "q/1"),
		session.Change{Kind: session.PutInflight, ClientID: c, PacketID: 0x2F2F, Phase: session.AwaitPuback, Seq: 3, D: delivery("i/3", 1, 1, 2)},
		session.Change{Kind: session.PutInflight, ClientID: c, PacketID: 1, Phase: session.AwaitPubcomp, Seq: 2},
		session.Change{Kind: session.PutInflight, ClientID: c, PacketID: 9, Phase: session.AwaitPubrec, Seq: 4, D: delivery("i/4", 2)},
		session.Change{Kind: session.PutQoS2In, ClientID: c, PacketID: 7},
		session.Change{Kind: session.PutQoS2In, ClientID: c, PacketID: 300},
		session.Change{Kind: session.PutRetained, D: session.Delivery{Msg: fullMessage("r/1")}},
		session.Change{Kind: session.PutRetained, D: session.Delivery{Msg: fullMessage("r/2")}},
		session.Change{Kind: session.PutOutbox, Bridge: "up/1", Seq: 1, D: session.Delivery{Msg: fullMessage("o/1")}},
		session.Change{Kind: session.PutOutbox, Bridge: "up/1", Seq: 2, D: session.Delivery{Msg: fullMessage("o/2")}},
		session.Change{Kind: session.PutOutbox, Bridge: "up/1", Seq: 3, D: session.Delivery{Msg: fullMessage("o/3")}},
	)
	mustCommit(t, s,
		session.Change{Kind: session.DelSub, ClientID: c, Sub: topics.Subscription{Filter: "x/y"}},
		session.Change{Kind: session.DelQueued, ClientID: c, Seq: 6},
		session.Change{Kind: session.DelInflight, ClientID: c, PacketID: 9},
		session.Change{Kind: session.DelQoS2In, ClientID: c, PacketID: 300},
		session.Change{Kind: session.DelRetained, Topic: "r/2"},
		session.Change{Kind: session.DelOutbox, Bridge: "up/1", Seq: 2},
		session.Change{Kind: session.DelSession, ClientID: "gone"},
	)
	return c
}

// checkEveryKind checks what everyKind left.
func checkEveryKind(t *testing.T, s *Store, c string) {
	byID, order := loadAll(t, s)
	if !slices.Equal(order, []string{"c+", c}) {
		t.Fatalf("sessions %q", order)
	}
	if in := byID["c+"].Info; in.Version != 4 || in.Expiry != session.NeverExpire || !in.DisconnectedAt.IsZero() {
		t.Errorf("c+ info %+v", in)
	}
	sv := byID[c]
	if sv.Info.Version != 5 || sv.Info.Expiry != 3600 || !sv.Info.DisconnectedAt.Equal(time.Unix(1800000000, 42)) {
		t.Errorf("info %+v", sv.Info)
	}
	wantSubs := []topics.Subscription{
		{ClientID: c, Filter: "$share/g/a/+/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455},
		{ClientID: c, Filter: "b", QoS: 1},
	}
	if !reflect.DeepEqual(sv.Subs, wantSubs) {
		t.Errorf("subs %+v", sv.Subs)
	}
	if sv.QueueFirst != 5 || sv.QueueNext != 9 || sv.QueueLen != 2 || sv.NextSeq != 9 {
		t.Errorf("queue first %d next %d len %d, NextSeq %d", sv.QueueFirst, sv.QueueNext, sv.QueueLen, sv.NextSeq)
	}
	if !slices.Equal(sv.QoS2In, []uint16{7}) {
		t.Errorf("qos2in %v", sv.QoS2In)
	}
	if len(sv.Inflight) != 2 {
		t.Fatalf("inflight %+v", sv.Inflight)
	}
	if f := sv.Inflight[0]; f.Seq != 2 || f.ID != 1 || f.Phase != session.AwaitPubcomp || f.D.Msg != nil {
		t.Errorf("inflight[0] %+v", f)
	}
	want := delivery("i/3", 1, 1, 2)
	f := sv.Inflight[1]
	if f.Seq != 3 || f.ID != 0x2F2F || f.Phase != session.AwaitPuback || sameMessage(f.D.Msg, want.Msg) != "" ||
		f.D.QoS != 1 || f.D.Retain || !slices.Equal(f.D.SubIDs, want.SubIDs) {
		t.Errorf("inflight[1] %+v", f)
	}
	var seqs []uint64
	err := s.ReadQueue(c, 0, 100, 0, func(seq uint64, d session.Delivery) {
		seqs = append(seqs, seq)
		if w := delivery(fmt.Sprintf("q/%d", seq), 1, 3); sameMessage(d.Msg, w.Msg) != "" || d.QoS != 1 || !slices.Equal(d.SubIDs, w.SubIDs) {
			t.Errorf("queued %d: %+v", seq, d)
		}
	})
	if err != nil || !slices.Equal(seqs, []uint64{5, 8}) {
		t.Errorf("queue %v, %v", seqs, err)
	}
	var ret []string
	err = s.LoadRetained(func(m *session.Message) error {
		ret = append(ret, m.Topic)
		if d := sameMessage(m, fullMessage(m.Topic)); d != "" {
			t.Errorf("retained %s: %s", m.Topic, d)
		}
		return nil
	})
	if err != nil || !slices.Equal(ret, []string{"r/1"}) {
		t.Errorf("retained %v, %v", ret, err)
	}
	first, next, n, err := s.OutboxBounds("up/1")
	if err != nil || first != 2 || next != 4 || n != 2 {
		t.Errorf("outbox bounds %d %d %d %v", first, next, n, err)
	}
}

func TestCommitLoadEveryKind(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	c := everyKind(t, s)
	checkEveryKind(t, s, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkEveryKind(t, openTest(t, Options{Dir: dir}), c)
}

// countKeys counts the keys under prefix.
func countKeys(t testing.TB, s *Store, prefix string) int {
	t.Helper()
	n := 0
	err := s.DB().View(func(txn *badger.Txn) error {
		return scan(txn, prefix, false, func(*badger.Item) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fillQueue queues n small deliveries for client, seqs 1..n, in batches.
func fillQueue(t testing.TB, s *Store, client string, n int) {
	t.Helper()
	d := session.Delivery{Msg: &session.Message{Topic: "t", Payload: []byte("p"), QoS: 1}, QoS: 1}
	var b session.Batch
	var wg sync.WaitGroup
	var failed atomic.Value
	for seq := 1; seq <= n; seq++ {
		b.Add(session.Change{Kind: session.PutQueued, ClientID: client, Seq: uint64(seq), D: d})
		if len(b.Changes) == 1000 || seq == n {
			wg.Add(1)
			s.Commit(&b, func(err error) {
				if err != nil {
					failed.Store(err)
				}
				wg.Done()
			})
			b.Reset()
		}
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
}

func TestDelSessionBig(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir(), Durability: Batch})
	const n = 100_000
	info := session.Info{Version: 5, Expiry: 60}
	mustCommit(t, s, session.Change{Kind: session.PutSession, ClientID: "a", Info: info},
		session.Change{Kind: session.PutSession, ClientID: "a/b", Info: info},
		session.Change{Kind: session.PutSub, ClientID: "a", Sub: topics.Subscription{Filter: "f"}},
		session.Change{Kind: session.PutQoS2In, ClientID: "a", PacketID: 1},
		session.Change{Kind: session.PutInflight, ClientID: "a", PacketID: 1, Seq: n + 1, Phase: session.AwaitPubcomp},
		queued("a/b", 1, "other"))
	start := time.Now()
	fillQueue(t, s, "a", n)
	t.Logf("queued %d records in %v", n, time.Since(start))
	if got := countKeys(t, s, "v1/q/a/"); got != n {
		t.Fatalf("%d queued", got)
	}
	start = time.Now()
	commits := s.Stats().Commits
	// Delete and recreate in one batch: the new session starts empty,
	// and the put before the delete is dropped.
	mustCommit(t, s, queued("a", n+5, "before"),
		session.Change{Kind: session.DelSession, ClientID: "a"},
		session.Change{Kind: session.PutSession, ClientID: "a", Info: session.Info{Version: 4}},
		queued("a", 7, "after"))
	t.Logf("deleted %d records in %v, %d transactions", n+3, time.Since(start), s.Stats().Commits-commits)
	byID, _ := loadAll(t, s)
	sv := byID["a"]
	if sv == nil || sv.Info.Version != 4 || len(sv.Subs) != 0 || len(sv.Inflight) != 0 || len(sv.QoS2In) != 0 ||
		sv.QueueFirst != 7 || sv.QueueNext != 8 || sv.QueueLen != 1 {
		t.Fatalf("after delete: %+v", sv)
	}
	if other := byID["a/b"]; other == nil || other.QueueLen != 1 {
		t.Errorf("client a/b touched: %+v", other)
	}
	// Deleting again is harmless.
	mustCommit(t, s, session.Change{Kind: session.DelSession, ClientID: "a"})
	mustCommit(t, s, session.Change{Kind: session.DelSession, ClientID: "a"})
	if got := countKeys(t, s, "v1/q/a/"); got != 0 {
		t.Errorf("%d queued left", got)
	}
}

func TestReadQueueRange(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	for _, seq := range []uint64{3, 4, 7, 8, 9, 20, 0x2F2F} {
		mustCommit(t, s, queued("c", seq, fmt.Sprint("t", seq)))
	}
	mustCommit(t, s, queued("c/x", 5, "other"), queued("b", 5, "other"))
	for _, tc := range []struct {
		from, to uint64
		max      int
		want     []uint64
	}{
		{0, 100, 0, []uint64{3, 4, 7, 8, 9, 20}},
		{0, math.MaxUint64, -1, []uint64{3, 4, 7, 8, 9, 20, 0x2F2F}},
		{5, 100, 2, []uint64{7, 8}},
		{4, 9, 10, []uint64{4, 7, 8}},
		{8, 8, 10, nil},
		{9, 3, 10, nil},
		{21, 100, 10, nil},
		{0, 100, 1, []uint64{3}},
	} {
		var got []uint64
		err := s.ReadQueue("c", tc.from, tc.to, tc.max, func(seq uint64, d session.Delivery) {
			if d.Msg.Topic != fmt.Sprint("t", seq) {
				t.Errorf("seq %d holds %q", seq, d.Msg.Topic)
			}
			got = append(got, seq)
		})
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ReadQueue(%d, %d, %d) = %v, %v; want %v", tc.from, tc.to, tc.max, got, err, tc.want)
		}
	}
}

func TestOutbox(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	if f, nx, n, err := s.OutboxBounds("b"); f != 0 || nx != 0 || n != 0 || err != nil {
		t.Errorf("empty bounds %d %d %d %v", f, nx, n, err)
	}
	for seq := uint64(10); seq < 20; seq++ {
		mustCommit(t, s, session.Change{Kind: session.PutOutbox, Bridge: "b", Seq: seq,
			D: session.Delivery{Msg: &session.Message{Topic: fmt.Sprint("o", seq), QoS: 1}}})
	}
	mustCommit(t, s, session.Change{Kind: session.PutOutbox, Bridge: "b/c", Seq: 1,
		D: session.Delivery{Msg: &session.Message{Topic: "other"}}})
	read := func(from uint64, max, stopAfter int) []uint64 {
		var got []uint64
		err := s.ReadOutbox("b", from, max, func(seq uint64, _ int64, m *session.Message) bool {
			if m.Topic != fmt.Sprint("o", seq) {
				t.Errorf("seq %d holds %q", seq, m.Topic)
			}
			got = append(got, seq)
			return len(got) < stopAfter
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(0, 3, 100); !slices.Equal(got, []uint64{10, 11, 12}) {
		t.Errorf("read max 3: %v", got)
	}
	if got := read(18, 0, 100); !slices.Equal(got, []uint64{18, 19}) {
		t.Errorf("read from 18: %v", got)
	}
	if got := read(0, 0, 2); !slices.Equal(got, []uint64{10, 11}) {
		t.Errorf("read stopping after 2: %v", got)
	}
	mustCommit(t, s, session.Change{Kind: session.DelOutbox, Bridge: "b", Seq: 15})
	if f, nx, n, err := s.OutboxBounds("b"); f != 15 || nx != 20 || n != 5 || err != nil {
		t.Errorf("bounds after delete %d %d %d %v", f, nx, n, err)
	}
	mustCommit(t, s, session.Change{Kind: session.DelOutbox, Bridge: "b", Seq: math.MaxUint64})
	if _, _, n, _ := s.OutboxBounds("b"); n != 0 {
		t.Errorf("%d entries left", n)
	}
	if _, _, n, _ := s.OutboxBounds("b/c"); n != 1 {
		t.Errorf("bridge b/c has %d entries", n)
	}
}

// TestOutboxRanges: DelOutbox deletes exactly [From, Seq), key by key
// when small, as a range delete starting at From when large; stamps are
// kept.
func TestOutboxRanges(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	const n = 3*pointDeletes + 10
	var b session.Batch
	for seq := uint64(1); seq <= n; seq++ {
		b.Add(session.Change{Kind: session.PutOutbox, Bridge: "r", Seq: seq, Stamp: int64(seq) * 1000,
			D: session.Delivery{Msg: &session.Message{Topic: "t", Payload: []byte("x"), QoS: 1}}})
		if len(b.Changes) == 1000 {
			mustCommit(t, s, b.Changes...)
			b.Reset()
		}
	}
	mustCommit(t, s, b.Changes...)
	first := func() (uint64, int) {
		f, _, cnt, err := s.OutboxBounds("r")
		if err != nil {
			t.Fatal(err)
		}
		return f, cnt
	}
	// Small: seqs 1..99 key by key.
	mustCommit(t, s, session.Change{Kind: session.DelOutbox, Bridge: "r", From: 1, Seq: 100})
	if f, cnt := first(); f != 100 || cnt != n-99 {
		t.Fatalf("after [1,100): first %d, %d entries", f, cnt)
	}
	// Large, from the middle: a range delete that keeps what is below From.
	mustCommit(t, s, session.Change{Kind: session.DelOutbox, Bridge: "r", From: 200, Seq: 200 + 2*pointDeletes})
	if f, cnt := first(); f != 100 || cnt != n-99-2*pointDeletes {
		t.Fatalf("after the range: first %d, %d entries", f, cnt)
	}
	var seqs []uint64
	err := s.ReadOutbox("r", 195, 10, func(seq uint64, stamp int64, m *session.Message) bool {
		if stamp != int64(seq)*1000 {
			t.Errorf("seq %d: stamp %d", seq, stamp)
		}
		seqs = append(seqs, seq)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{195, 196, 197, 198, 199, 200 + 2*pointDeletes, 201 + 2*pointDeletes, 202 + 2*pointDeletes, 203 + 2*pointDeletes, 204 + 2*pointDeletes}
	if !slices.Equal(seqs, want) {
		t.Errorf("read %v, want %v", seqs, want)
	}
	// Empty and inverted ranges delete nothing.
	mustCommit(t, s, session.Change{Kind: session.DelOutbox, Bridge: "r", From: 150, Seq: 150},
		session.Change{Kind: session.DelOutbox, Bridge: "r", From: 160, Seq: 150})
	if f, cnt := first(); f != 100 || cnt != n-99-2*pointDeletes {
		t.Fatalf("after empty ranges: first %d, %d entries", f, cnt)
	}
}

func TestLoadDeletesOrphans(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	mustCommit(t, s, session.Change{Kind: session.PutSession, ClientID: "kept"}, queued("kept", 1, "t"),
		queued("orphan/1", 1, "t"), queued("orphan/1", 2, "t"),
		session.Change{Kind: session.PutSub, ClientID: "orphan/1", Sub: topics.Subscription{Filter: "f"}},
		session.Change{Kind: session.PutInflight, ClientID: "orphan/1", PacketID: 1, Phase: session.AwaitPubcomp},
		session.Change{Kind: session.PutQoS2In, ClientID: "orphan2", PacketID: 1})
	byID, order := loadAll(t, s)
	if !slices.Equal(order, []string{"kept"}) || byID["kept"].QueueLen != 1 {
		t.Fatalf("loaded %v", order)
	}
	mustCommit(t, s) // barrier: the orphan deletes are done
	for _, p := range clientPrefixes {
		if n := countKeys(t, s, p); n != 0 && (p != prefixQueue || n != 1) {
			t.Errorf("%d keys left under %s", n, p)
		}
	}
}

func TestLoadCorrupt(t *testing.T) {
	for _, key := range []string{"v1/sess/x", "v1/sub/x/f", "v1/infl/x/\x00\x01", "v1/q/x/short", "v1/ret/t", "v1/sess/a/b"} {
		s := openTest(t, Options{Durability: Memory})
		mustCommit(t, s, session.Change{Kind: session.PutSession, ClientID: "x"})
		if err := applySync(s, Put([]byte(key), []byte{0xc1})); err != nil {
			t.Fatal(err)
		}
		err := s.Load(func(*session.Saved) error { return nil })
		if err == nil {
			err = s.LoadRetained(func(*session.Message) error { return nil })
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), strconv.Quote(key)) {
			t.Errorf("%q: %v", key, err)
		}
		s.Close()
	}
	s := openTest(t, Options{Durability: Memory})
	if err := applySync(s, Put(appendQueueKey(nil, "x", 2), []byte("junk"))); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadQueue("x", 0, 10, 0, func(uint64, session.Delivery) {}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadQueue of a corrupt record: %v", err)
	}
}

// TestCommitFromDone commits from inside done callbacks (on the writer)
// and checks the order of every done.
func TestCommitFromDone(t *testing.T) {
	s := openTest(t, Options{Dir: t.TempDir()})
	const depth = 50
	var got []int // written by the writer only, read after the last done
	last := make(chan struct{})
	var step func(i int) func(error)
	step = func(i int) func(error) {
		return func(err error) {
			if err != nil {
				t.Error(err)
			}
			got = append(got, i)
			if i == depth {
				close(last)
				return
			}
			s.Commit(&session.Batch{Changes: []session.Change{queued("c", uint64(i+1), "t")}}, step(i+1))
		}
	}
	s.Commit(&session.Batch{Changes: []session.Change{queued("c", 0, "t")}}, step(0))
	<-last
	for i, v := range got {
		if v != i {
			t.Fatalf("done order %v", got)
		}
	}
	if n := countKeys(t, s, "v1/q/c/"); n != depth+1 {
		t.Errorf("%d queued, want %d", n, depth+1)
	}
}

// TestCommitCopies checks that Commit encodes before returning: the
// caller reuses the batch and the message at once.
func TestCommitCopies(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	m := &session.Message{Topic: "t", Payload: []byte("original")}
	b := &session.Batch{}
	b.Add(session.Change{Kind: session.PutQueued, ClientID: "c", Seq: 1, D: session.Delivery{Msg: m, QoS: 1}})
	ch := make(chan error, 1)
	s.Commit(b, func(err error) { ch <- err })
	copy(m.Payload, "scribble")
	b.Changes[0].Seq = 99
	b.Reset()
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	var payload string
	if err := s.ReadQueue("c", 0, 100, 0, func(seq uint64, d session.Delivery) { payload = fmt.Sprint(seq, string(d.Msg.Payload)) }); err != nil {
		t.Fatal(err)
	}
	if payload != "1original" {
		t.Errorf("stored %q", payload)
	}
}

// TestCommitBadChangeInOrder checks that a batch that cannot be encoded
// fails in its turn, after the commits before it.
func TestCommitBadChangeInOrder(t *testing.T) {
	s := openTest(t, Options{Durability: Memory})
	results := make(chan string, 3)
	s.Commit(&session.Batch{Changes: []session.Change{queued("c", 1, "t")}}, func(err error) { results <- fmt.Sprint("first ", err) })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: session.PutQueued, ClientID: "c"}}}, func(err error) { results <- fmt.Sprint("bad ", err != nil) })
	s.Commit(&session.Batch{Changes: []session.Change{{Kind: 200}}}, func(err error) { results <- fmt.Sprint("unknown ", err != nil) })
	for _, want := range []string{"first <nil>", "bad true", "unknown true"} {
		if got := <-results; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// TestRangeDeleteOrderedInBatch queues requests without waiting, so the
// writer takes them in one batch: a DelSession must delete what the
// requests before it wrote and nothing after it.
func TestRangeDeleteOrderedInBatch(t *testing.T) {
	s := openTest(t, Options{Durability: Memory, MaxBatchDelay: 20 * time.Millisecond})
	results := make(chan error, 64)
	commit := func(changes ...session.Change) {
		s.Commit(&session.Batch{Changes: changes}, func(err error) { results <- err })
	}
	for seq := uint64(1); seq <= 20; seq++ {
		commit(queued("a", seq, "t"))
	}
	commit(session.Change{Kind: session.PutOutbox, Bridge: "b", Seq: 1, D: session.Delivery{Msg: fullMessage("o")}})
	commit(session.Change{Kind: session.DelSession, ClientID: "a"},
		session.Change{Kind: session.PutOutbox, Bridge: "b", Seq: 2, D: session.Delivery{Msg: fullMessage("o")}},
		session.Change{Kind: session.DelOutbox, Bridge: "b", Seq: 3})
	commit(putSession("a"), queued("a", 99, "t"))
	for range 23 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Commits > 10 {
		t.Logf("%d commits: the requests were not batched; the test proves less", st.Commits)
	}
	byID, _ := loadAll(t, s)
	if sv := byID["a"]; sv == nil || sv.QueueLen != 1 || sv.QueueFirst != 99 {
		t.Errorf("after delete and recreate: %+v", sv)
	}
	if _, _, n, err := s.OutboxBounds("b"); n != 0 || err != nil {
		t.Errorf("outbox holds %d, %v", n, err)
	}
}

// BenchmarkCommitSync measures group commit with Sync durability: many
// committers, one small PutQueued each, waiting for their done.
func BenchmarkCommitSync(b *testing.B) {
	s := openTest(b, Options{Dir: b.TempDir()})
	var seq atomic.Uint64
	b.SetParallelism(100)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		var batch session.Batch
		m := &session.Message{Topic: "sensors/dev-17/temp", Payload: []byte(`{"t":21.5,"ts":1790000000}`), QoS: 1}
		for pb.Next() {
			batch.Reset()
			batch.Add(session.Change{Kind: session.PutQueued, ClientID: "dev-17", Seq: seq.Add(1),
				D: session.Delivery{Msg: m, QoS: 1}})
			s.Commit(&batch, func(err error) { done <- err })
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	st := s.Stats()
	b.ReportMetric(float64(st.Requests)/float64(max(st.Commits, 1)), "records/commit")
}
