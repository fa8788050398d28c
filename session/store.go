package session

import (
	"errors"
	"time"

	"github.com/ferrymq/ferrymq/topics"
)

// Store makes session changes durable. The broker sends the acknowledgements
// that promise durability (PUBACK, PUBREC, PUBREL, PUBCOMP) only from the
// done callback of Commit, so a store that waits for fsync delays them until
// the data is safe. The persist package implements it on Badger; Memory is
// the store of `durability: memory`.
type Store interface {
	// Durable reports whether the store keeps anything. When false the
	// broker builds no batches and keeps every queue in memory.
	Durable() bool
	// Commit applies the changes of b atomically and calls done exactly
	// once, with nil when they are as durable as the store promises, else
	// with the error (nothing of b is then stored). done callbacks are
	// called in the order of the Commit calls, on any goroutine (possibly
	// inside Commit); done must not block, and may call Commit.
	//
	// Commit encodes b before it returns: the caller may reuse b and the
	// messages it points to at once. Commit never blocks on I/O.
	// An empty or nil b is valid: its done comes after every earlier
	// Commit's done (an ordering barrier).
	Commit(b *Batch, done func(error))
	// Load calls fn once for each stored session (in client id order),
	// at startup, before any Commit.
	Load(fn func(*Saved) error) error
	// LoadRetained calls fn for each stored retained message.
	LoadRetained(fn func(*Message) error) error
	// ReadQueue calls fn, in seq order, for at most max queued deliveries
	// of clientID with from <= seq < to whose Commit is done. Records
	// missing in the range (never committed, or deleted) are skipped.
	ReadQueue(clientID string, from, to uint64, max int, fn func(seq uint64, d Delivery)) error
	// Close flushes and releases the store.
	Close() error
}

// ErrFull is wrapped by the error of a Commit refused because the store
// has reached its disk quota or the disk is (nearly) full. A batch that
// only deletes is never refused: deleting is how space comes back.
var ErrFull = errors.New("session store full")

// Kind says what a Change does.
type Kind uint8

// Change kinds. The fields of Change each kind uses are listed.
const (
	// PutSession stores the session record: ClientID, Info.
	PutSession Kind = iota + 1
	// DelSession deletes a session and everything stored under it
	// (subscriptions, queue, inflight, incoming QoS 2 ids): ClientID.
	DelSession
	// PutSub stores one subscription: ClientID, Sub.
	PutSub
	// DelSub deletes one subscription: ClientID, Sub.Filter.
	DelSub
	// PutQueued stores a delivery queued for the session: ClientID, Seq, D.
	PutQueued
	// DelQueued deletes a queued delivery: ClientID, Seq.
	DelQueued
	// PutInflight stores an outbound message holding a packet identifier:
	// ClientID, PacketID, Phase, Seq, D (D.Msg is nil in AwaitPubcomp).
	PutInflight
	// DelInflight deletes an inflight message: ClientID, PacketID.
	DelInflight
	// PutQoS2In stores an incoming QoS 2 packet id awaiting PUBREL:
	// ClientID, PacketID.
	PutQoS2In
	// DelQoS2In deletes an incoming QoS 2 packet id: ClientID, PacketID.
	DelQoS2In
	// PutRetained stores the retained message D.Msg of topic D.Msg.Topic.
	PutRetained
	// DelRetained deletes the retained message of Topic.
	DelRetained
	// PutOutbox appends the message D.Msg to the durable outbox of
	// bridge Bridge at Seq (the bridge numbers its log), with Stamp (Unix
	// nanoseconds) as the time it entered the outbox.
	PutOutbox
	// DelOutbox deletes the outbox entries of Bridge with From <= seq <
	// Seq (the bridge confirmed or dropped them).
	DelOutbox
)

// Change is one durable change to session state.
type Change struct {
	Kind     Kind
	ClientID string
	Seq      uint64
	PacketID uint16
	Phase    Phase
	D        Delivery
	Sub      topics.Subscription
	Info     Info
	Topic    string
	Bridge   string
	// Stamp (PutOutbox) is when the message entered the outbox, in Unix
	// nanoseconds; From (DelOutbox) is the first seq deleted.
	Stamp int64
	From  uint64
}

// Info is what a session record holds besides its client id.
type Info struct {
	// Version is the protocol version of the last connection (3, 4 or 5).
	Version byte
	// Expiry is the Session Expiry Interval in seconds (NeverExpire:
	// never).
	Expiry uint32
	// DisconnectedAt is when the last connection ended; zero while a
	// connection is attached (after a crash the broker counts the expiry
	// from its restart).
	DisconnectedAt time.Time
}

// Batch is a set of changes committed together, in order. It is filled
// by the broker while handling one packet (for a publish: every durable
// destination of it).
type Batch struct {
	Changes []Change
}

// Add appends a change.
func (b *Batch) Add(c Change) { b.Changes = append(b.Changes, c) }

// Empty reports whether the batch holds no change.
func (b *Batch) Empty() bool { return b == nil || len(b.Changes) == 0 }

// Reset empties the batch, keeping its storage and dropping references.
func (b *Batch) Reset() {
	clear(b.Changes)
	b.Changes = b.Changes[:0]
}

// Saved is a stored session as Load returns it.
type Saved struct {
	ClientID string
	Info     Info
	Subs     []topics.Subscription
	// Inflight are the outbound messages holding a packet identifier, in
	// Seq order (their resend order).
	Inflight []SavedInflight
	// QoS2In are incoming QoS 2 packet ids awaiting PUBREL.
	QoS2In []uint16
	// QueueFirst and QueueNext bound the seqs of the queued deliveries on
	// disk: every one has QueueFirst <= seq < QueueNext (both 0 when the
	// queue is empty). QueueLen is how many there are.
	QueueFirst, QueueNext uint64
	QueueLen              int
	// NextSeq is above every seq stored for the session (queued or
	// inflight): the broker numbers new deliveries from it.
	NextSeq uint64
}

// SavedInflight is one stored inflight message.
type SavedInflight struct {
	Inflight
	Seq uint64
}

// Memory is a Store that keeps nothing: commits are done at once. It is the
// store of `durability: memory`.
type Memory struct{}

// Durable returns false.
func (Memory) Durable() bool { return false }

// Commit calls done(nil) immediately.
func (Memory) Commit(_ *Batch, done func(error)) { done(nil) }

// Load finds nothing.
func (Memory) Load(func(*Saved) error) error { return nil }

// LoadRetained finds nothing.
func (Memory) LoadRetained(func(*Message) error) error { return nil }

// ReadQueue finds nothing.
func (Memory) ReadQueue(string, uint64, uint64, int, func(uint64, Delivery)) error { return nil }

// Close does nothing.
func (Memory) Close() error { return nil }
