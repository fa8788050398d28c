// Package coalesce gathers the small writes a protocol library makes to a
// socket (one per frame or packet: one system call per bridged message)
// into one write per burst. The bridge adapters put a Conn under
// amqp091-go and under the MQTT client and call Flush after each burst
// of publishes.
package coalesce

import (
	"net"
	"sync"
	"time"
)

// Write coalescing (see Conn).
const (
	// flushDelay is how long bytes may wait in the buffer when nobody
	// calls Flush (heartbeats, channel methods, acknowledgements, a lone
	// message).
	flushDelay = time.Millisecond
	// flushSize: a buffer this large is written at once, by the writer
	// (which then waits for the socket: backpressure).
	flushSize = 64 << 10
	// maxKeptBuf is the largest buffer kept for reuse.
	maxKeptBuf = 4 * flushSize
	// closeFlushTimeout bounds the write of what is left at Close.
	closeFlushTimeout = time.Second
)

// Conn is a socket whose writes are collected and sent in one write when
// Flush is called, when flushSize bytes are waiting, or flushDelay after
// the first byte waited, whichever comes first. Reads pass through.
//
// Deadlines pass through to the socket and bound the write of the
// buffer. A failed write of the buffer closes the socket (the protocol
// library's reader then sees the link lost), calls onErr, and every
// later Write and Flush returns the error.
//
// Lock order: wmu before mu.
type Conn struct {
	net.Conn

	// onErr, if set, is called (once, not under a lock) with the error of
	// the first failed write of the buffer.
	onErr func(error)
	delay time.Duration // flushDelay (tests change it)

	wmu sync.Mutex // held while writing to Conn; taken before mu

	mu            sync.Mutex
	buf           []byte // waiting to be written
	spare         []byte // a written buffer, for reuse
	armed         bool   // the timer will flush buf (set while buf is not empty)
	err           error  // sticky: a write failed, or closed
	closed        bool
	writeDeadline time.Time
	timer         *time.Timer
}

// New wraps c. onErr, if not nil, is called once, not under a lock, with
// the error of the first failed write of the buffer.
func New(c net.Conn, onErr func(error)) *Conn {
	b := &Conn{Conn: c, onErr: onErr, delay: flushDelay}
	b.timer = time.AfterFunc(time.Hour, func() { _ = b.Flush() }) // a failure reaches onErr and the next Write
	b.timer.Stop()
	return b
}

// Write queues p. It writes the buffer itself (and returns the error of
// that write) once flushSize bytes wait.
func (b *Conn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= flushSize
	if !full && !b.armed {
		b.armed = true
		b.timer.Reset(b.delay)
	}
	b.mu.Unlock()
	if full {
		if err := b.Flush(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// Flush writes what waits, in one write.
func (b *Conn) Flush() error {
	err, first := b.flush()
	if first && b.onErr != nil {
		b.onErr(err)
	}
	return err
}

// flush is Flush; first says that this write failed, the first one.
func (b *Conn) flush() (err error, first bool) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	if b.err != nil || len(b.buf) == 0 {
		err := b.err
		b.mu.Unlock()
		return err, false
	}
	buf := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.armed = false
	b.mu.Unlock()

	_, err = b.Conn.Write(buf)

	b.mu.Lock()
	if cap(buf) <= maxKeptBuf {
		b.spare = buf[:0]
	}
	if err != nil && b.err == nil {
		b.err = err
		first = true
	}
	if err != nil {
		err = b.err // the first failure (or the close) is what callers see
	}
	b.mu.Unlock()
	if first {
		// The reader sees the link lost.
		_ = b.Conn.Close()
	}
	return err, first
}

// SetDeadline passes through (and is remembered for Close).
func (b *Conn) SetDeadline(t time.Time) error {
	b.mu.Lock()
	b.writeDeadline = t
	b.mu.Unlock()
	return b.Conn.SetDeadline(t)
}

// SetWriteDeadline passes through (and is remembered for Close).
func (b *Conn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	b.writeDeadline = t
	b.mu.Unlock()
	return b.Conn.SetWriteDeadline(t)
}

// Close writes what waits and closes the socket. A write in progress (a
// flush by another goroutine) is waited for, so that what it carries goes
// out first; the write deadline, closeFlushTimeout or the one set earlier
// if sooner, bounds both (a half-open link cannot hold Close longer).
func (b *Conn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	failed := b.err != nil
	if b.err == nil {
		b.err = net.ErrClosed
	}
	buf := b.buf
	b.buf, b.spare = nil, nil
	deadline := time.Now().Add(closeFlushTimeout)
	if !b.writeDeadline.IsZero() && b.writeDeadline.Before(deadline) {
		deadline = b.writeDeadline
	}
	b.mu.Unlock()
	b.timer.Stop()
	if !failed {
		dl := b.Conn.SetWriteDeadline(deadline) // also ends a stuck write in progress
		b.wmu.Lock()
		if dl == nil && len(buf) > 0 {
			_, _ = b.Conn.Write(buf) // closing: a failure changes nothing
		}
		b.wmu.Unlock()
	}
	return b.Conn.Close()
}
