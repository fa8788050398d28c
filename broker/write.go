package broker

import (
	"sync"
	"syscall"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Outbound path. Packets for a connection are encoded into its out buffer
// under wmu. Whoever appended then flushes: the first flusher tries one
// non-blocking write of everything queued; if the socket cannot take it
// all, a writer goroutine finishes the job with blocking writes while new
// packets keep being appended. So a publisher never waits on a slow
// subscriber [design §3], fan-out costs about one write per subscriber per
// read batch, and an idle connection holds no buffer and no goroutine.

const (
	readBufSize = 4096
	maxPooled   = 64 << 10 // larger buffers are left to the GC
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, readBufSize); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > maxPooled || cap(b) < readBufSize {
		return
	}
	b = b[:0]
	bufPool.Put(&b)
}

// appendPacket encodes p into the out buffer. It returns false if the
// connection is closed or p cannot be encoded.
func (c *client) appendPacket(p packet.Packet) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.appendLocked(p)
}

func (c *client) appendLocked(p packet.Packet) bool {
	if c.closed {
		return false
	}
	if c.out == nil {
		c.out = getBuf()
	}
	b, err := packet.Encode(c.out, p, c.version)
	if err != nil {
		c.srv.log.Warn("encode failed", "client", c.id, "packet", p.Type().String(), "err", err)
		return false
	}
	c.out = b
	return true
}

// markDirty records that target has data to flush at the end of the
// current read batch. Only the serve goroutine calls it on itself.
func (c *client) markDirty(target *client) {
	if n := len(c.dirty); n > 0 && c.dirty[n-1] == target {
		return
	}
	c.dirty = append(c.dirty, target)
}

func (c *client) flushDirty() {
	for i, t := range c.dirty {
		t.flush()
		c.dirty[i] = nil
	}
	if cap(c.dirty) > 256 {
		c.dirty = nil
	} else {
		c.dirty = c.dirty[:0]
	}
}

// flush writes the out buffer if no one else is writing. It never blocks
// on the socket: leftovers go to a writer goroutine.
func (c *client) flush() { c.flushOpt(false) }

// flushAsync is flush for the store's writer goroutine: a write error
// closes the connection on another goroutine (closing may wait for a
// final DISCONNECT to be written).
func (c *client) flushAsync() { c.flushOpt(true) }

func (c *client) flushOpt(async bool) {
	for {
		c.wmu.Lock()
		if c.flushing || c.closed || len(c.out) == 0 {
			c.wmu.Unlock()
			return
		}
		buf := c.out
		c.out = nil
		c.flushing = true
		c.wmu.Unlock()

		n, err := c.tryWrite(buf)
		if err != nil {
			c.endFlush()
			putBuf(buf)
			if async {
				c.srv.goOwned(func() { c.closeWith(err) })
			} else {
				c.closeWith(err)
			}
			return
		}
		if n < len(buf) {
			rest := buf[n:]
			c.srv.goOwned(func() { c.writer(rest, buf) })
			return
		}
		putBuf(buf)
		c.endFlush()
	}
}

func (c *client) endFlush() {
	c.wmu.Lock()
	c.flushing = false
	c.flushEnded.Broadcast()
	c.wmu.Unlock()
}

// tryWrite writes as much of b as the socket takes without blocking.
func (c *client) tryWrite(b []byte) (int, error) {
	if c.raw == nil {
		return 0, nil // no descriptor: let the writer goroutine do it
	}
	c.wbuf, c.wn, c.werr = b, 0, nil
	err := c.raw.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wbuf = nil
	if err != nil {
		return n, err
	}
	return n, werr
}

// rawWrite is the RawConn write callback (c.writeFn): it writes c.wbuf
// until done or the socket would block, and never waits.
func (c *client) rawWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		m, e := syscall.Write(int(fd), c.wbuf[c.wn:])
		if m > 0 {
			c.wn += m
		}
		switch e {
		case nil, syscall.EINTR:
		case syscall.EAGAIN:
			return true
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// writer finishes a flush with blocking writes, then keeps writing what
// others append until the buffer is empty. first is the unwritten tail of
// the buffer whose storage is orig.
func (c *client) writer(first, orig []byte) {
	buf := first
	for {
		if _, err := c.conn.Write(buf); err != nil {
			putBuf(orig)
			c.endFlush()
			c.closeWith(err)
			return
		}
		putBuf(orig)
		c.wmu.Lock()
		if c.closed || len(c.out) == 0 {
			c.flushing = false
			c.flushEnded.Broadcast()
			c.wmu.Unlock()
			return
		}
		buf, orig = c.out, c.out
		c.out = nil
		c.wmu.Unlock()
	}
}
