package session

// Store makes session changes durable. The broker sends QoS 1/2
// acknowledgements only from the done callback of Commit, so a store that
// waits for fsync delays the ack until the data is safe. The persist
// package implements it on Badger; Memory is the in-memory default.
type Store interface {
	// Commit records a batch of changes and calls done once they are as
	// durable as the store promises (possibly on another goroutine). done
	// is called exactly once; a non-nil error means the changes are not
	// stored and the publisher must not be acknowledged.
	Commit(b *Batch, done func(error))
	// Close flushes and releases the store.
	Close() error
}

// Batch is a set of changes committed together. It is filled by the
// broker while routing one publish (every durable destination of it).
type Batch struct {
	// Queued are deliveries added to persistent sessions.
	Queued []QueuedChange
}

// QueuedChange is a delivery queued for an offline or online persistent
// session.
type QueuedChange struct {
	ClientID string
	D        Delivery
}

// Empty reports whether the batch holds no change.
func (b *Batch) Empty() bool { return b == nil || len(b.Queued) == 0 }

// Memory is a Store that keeps nothing: commits are done at once. It is the
// store of `durability: memory` and of this in-memory broker.
type Memory struct{}

// Commit calls done(nil) immediately.
func (Memory) Commit(_ *Batch, done func(error)) { done(nil) }

// Close does nothing.
func (Memory) Close() error { return nil }
