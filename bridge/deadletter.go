package bridge

import (
	"fmt"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// DeadLetter is one message the upstream rejected for good.
type DeadLetter struct {
	Seq   uint64    // its seq in the outbox it came from
	Time  time.Time // when it entered the outbox
	Msg   *session.Message
	Bytes int
}

// ListDeadLetters calls fn for every dead letter of bridge name, oldest
// first, until fn returns false. It reads the store only: use it on a
// store no broker has open (ferrymq dead-letters list).
func ListDeadLetters(log Log, name string, fn func(DeadLetter) bool) error {
	return log.ReadOutbox(DeadLetterLog(name), 0, 0, func(seq uint64, stamp int64, m *session.Message) bool {
		return fn(DeadLetter{Seq: seq, Time: time.Unix(0, stamp), Msg: m, Bytes: len(m.Payload)})
	})
}

// replayChunk is how many dead letters one replay batch moves (one
// transaction: each moves atomically).
const replayChunk = 512

// ReplayDeadLetters moves every dead letter of bridge name back to the end
// of its outbox, stamped now, so that the next run sends it again; it
// returns how many it moved. Each chunk moves in one transaction (put in
// the outbox and delete from the dead-letter log together). Use it on a
// store no broker has open (ferrymq dead-letters replay).
func ReplayDeadLetters(log Log, name string, now time.Time) (int, error) {
	_, next, _, err := log.OutboxBounds(name)
	if err != nil {
		return 0, err
	}
	next = max(next, 1)
	moved := 0
	for {
		var b session.Batch
		n := 0
		err := log.ReadOutbox(DeadLetterLog(name), 0, replayChunk, func(seq uint64, _ int64, m *session.Message) bool {
			b.Add(session.Change{Kind: session.PutOutbox, Bridge: name, Seq: next, Stamp: now.UnixNano(),
				D: session.Delivery{Msg: m, QoS: m.QoS}})
			// One key each: a point delete shares the transaction.
			b.Add(session.Change{Kind: session.DelOutbox, Bridge: DeadLetterLog(name), From: seq, Seq: seq + 1})
			next++
			n++
			return true
		})
		if err != nil {
			return moved, err
		}
		if len(b.Changes) == 0 {
			return moved, nil
		}
		done := make(chan error, 1)
		log.Commit(&b, func(err error) { done <- err })
		if err := <-done; err != nil {
			return moved, fmt.Errorf("bridge %s: replay dead letters: %w", name, err)
		}
		moved += n
	}
}
