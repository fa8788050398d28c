package persist

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/ferrymq/ferrymq/session"
)

// TestReleaseTablePages: the table files' mappings are advised away and
// the data reads back intact afterwards.
func TestReleaseTablePages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	s := openTest(t, Options{Dir: t.TempDir(), Durability: Batch})
	var b session.Batch
	for seq := uint64(1); seq <= 60000; seq++ {
		b.Add(session.Change{Kind: session.PutOutbox, Bridge: "b", Seq: seq,
			D: session.Delivery{Msg: &session.Message{Topic: "t", Payload: fmt.Appendf(nil, "payload-%d-0123456789012345678901234567890123456789", seq)}}})
		if len(b.Changes) == 2000 {
			mustCommit(t, s, b.Changes...)
			b.Reset()
		}
	}
	if err := s.db.Flatten(1); err != nil { // write the memtables out as tables
		t.Fatal(err)
	}
	waitFor(t, "table files", func() bool { return s.releaseTablePages() > 0 })
	n := 0
	err := s.ReadOutbox("b", 0, 0, func(seq uint64, _ int64, m *session.Message) bool {
		if string(m.Payload) != fmt.Sprintf("payload-%d-0123456789012345678901234567890123456789", seq) {
			t.Fatalf("seq %d: %q", seq, m.Payload)
		}
		n++
		return true
	})
	if err != nil || n != 60000 {
		t.Fatalf("read %d: %v", n, err)
	}
}
