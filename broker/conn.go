package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// connectTimeout bounds how long a new connection may take to send CONNECT.
const connectTimeout = 10 * time.Second

// client is one network connection. Its read goroutine (serve) owns the
// read side; the write side is shared: any goroutine may append packets to
// out under wmu and then flush.
type client struct {
	srv  *Server
	conn net.Conn
	raw  syscall.RawConn // nil when the conn has no file descriptor (tests, TLS later)
	lc   Listener

	// Read side: touched only by the serve goroutine.
	rbuf      []byte
	rpooled   bool
	readFn    func(fd uintptr) bool // c.rawRead, made once: no closure per read
	rn        int                   // result of the last rawRead
	rerr      error
	migrated  bool         // serve has moved to a fresh goroutine after CONNECT
	lastRead  time.Time    // keep alive counts from here
	deadline  time.Time    // read deadline currently set on conn
	bigBuf    atomic.Int64 // cap of a read buffer grown beyond the pool size (observability, tests)
	dirty     []*client    // connections this goroutine appended to, flushed after each read
	inAliases map[uint16]string

	// Fixed after CONNECT.
	id           string
	version      packet.Version
	ss           *sess
	keepAlive    time.Duration
	maxOut       uint32 // client's Maximum Packet Size; 0 = none
	sendQuota    int    // outbound inflight window
	aliasMaxOut  uint16 // aliases we may assign towards the client
	problemInfo  bool   // v5 Request Problem Information
	connected    atomic.Bool
	takenOver    atomic.Bool
	cleanDisconn atomic.Bool  // DISCONNECT received (will handling decided there)
	pendingAcks  atomic.Int32 // answers waiting for the store (ackAfter)
	flushQueued  atomic.Bool  // in Server.flushq

	// Write side, guarded by wmu.
	wmu        sync.Mutex
	out        []byte
	flushing   bool
	flushEnded sync.Cond // L is &wmu; signalled when flushing becomes false
	closed     bool
	outAliases map[string]uint16
	nextAlias  uint16
	willMsg    *will // cleared by a normal DISCONNECT

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when serve has returned and the session is detached

	// Write callback state: used only by the one flusher (flushing set).
	writeFn func(fd uintptr) bool // c.rawWrite, made once
	wbuf    []byte
	wn      int
	werr    error
}

func newClient(s *Server, conn net.Conn, lc Listener) *client {
	c := &client{srv: s, conn: conn, lc: lc, done: make(chan struct{}), version: packet.V311}
	c.flushEnded.L = &c.wmu
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.readFn, c.writeFn = c.rawRead, c.rawWrite
		}
	}
	s.stats.Accepted.Add(1)
	return c
}

// errMigrate asks serve to continue on a fresh goroutine.
var errMigrate = errors.New("continue on a fresh goroutine")

// serve is the connection's read goroutine.
func (c *client) serve() {
	err := c.readLoop()
	if err == errMigrate {
		// Handling CONNECT grew this goroutine's stack, and Go rarely
		// shrinks it: an idle connection parks on a fresh, minimal one
		// instead (about 2 KB less per idle connection). The WaitGroup
		// count passes to the new goroutine.
		go c.serve()
		return
	}
	c.finish(err)
}

// finish tears the connection down once its read loop has ended.
func (c *client) finish(err error) {
	defer c.srv.wg.Done()
	defer func() {
		c.srv.lmu.Lock()
		delete(c.srv.conns, c)
		c.srv.lmu.Unlock()
	}()
	defer close(c.done)
	c.closeWith(err)
	c.releaseReadBuf()
	c.srv.detach(c)
	if c.connected.Load() {
		c.srv.stats.Connections.Add(-1)
	}
	c.logClose(c.closeErr) // the first reason wins (a takeover, a shutdown...)
}

func (c *client) logClose(err error) {
	log := c.logger()
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, errShutdown), errors.Is(err, errTakenOver):
		log.Debug("client disconnected", "reason", err)
	default:
		log.Info("client disconnected", "reason", err)
	}
}

// logger returns the server's logger with this connection's attributes.
// It is built on use: keeping one per connection costs ~300 bytes each.
func (c *client) logger() *slog.Logger {
	if c.id == "" {
		return c.srv.log.With("remote", c.conn.RemoteAddr().String())
	}
	return c.srv.log.With("client", c.id, "remote", c.conn.RemoteAddr().String())
}

// readLoop reads and handles packets until the connection ends. It returns
// the reason (nil for a normal DISCONNECT).
func (c *client) readLoop() error {
	if !c.connected.Load() && c.deadline.IsZero() {
		c.setDeadline(time.Now().Add(connectTimeout))
	}
	for {
		if err := c.fill(); err != nil {
			if errors.Is(err, io.EOF) && c.cleanDisconn.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !c.connected.Load() {
					return errConnectTimeout
				}
				if due := c.keepAliveDue(); !due.IsZero() && time.Now().Before(due) {
					c.setDeadline(due) // the deadline was set lazily: not yet due
					continue
				}
				return errKeepAlive
			}
			return err
		}
		err := c.processBuffered()
		c.flushDirty()
		if err != nil {
			return err
		}
		c.lastRead = time.Now()
		c.advanceDeadline()
		if c.connected.Load() && !c.migrated {
			c.migrated = true
			return errMigrate
		}
	}
}

// keepAliveDue is when the connection times out: 1.5 times the negotiated
// keep alive after the last packet [MQTT-3.1.2-24]; zero when there is no
// keep alive.
func (c *client) keepAliveDue() time.Time {
	if c.keepAlive == 0 {
		return time.Time{}
	}
	return c.lastRead.Add(c.keepAlive * 3 / 2)
}

// advanceDeadline moves the read deadline after a read. It is moved only
// when it would change by more than a second (SetReadDeadline costs a
// timer update per read otherwise); an early expiry is re-armed in
// readLoop, so a client is never timed out before it is due.
func (c *client) advanceDeadline() {
	due := c.keepAliveDue()
	if due.IsZero() {
		if !c.deadline.IsZero() {
			c.setDeadline(time.Time{})
		}
		return
	}
	if c.deadline.IsZero() || due.Before(c.deadline) || due.Sub(c.deadline) > time.Second {
		c.setDeadline(due)
	}
}

func (c *client) setDeadline(t time.Time) {
	c.deadline = t
	c.conn.SetReadDeadline(t)
}

// processBuffered decodes and handles every complete packet in rbuf.
func (c *client) processBuffered() error {
	off := 0
	defer func() { c.compact(off) }()
	for off < len(c.rbuf) {
		h, err := packet.ParseFixedHeader(c.rbuf[off:], c.srv.cfg.Limits.MaxPacketSize)
		if errors.Is(err, packet.ErrIncomplete) {
			return nil
		}
		if err != nil {
			return err
		}
		total := h.HeaderLen + h.Remaining
		if len(c.rbuf)-off < total {
			c.growFor(off, total)
			off = 0
			return nil
		}
		body := c.rbuf[off+h.HeaderLen : off+total]
		off += total
		if h.Type == packet.PUBLISH || h.Type == packet.CONNECT || h.Type == packet.AUTH {
			// Decoded []byte fields alias the body: give them their own copy
			// so the read buffer can be reused.
			body = append(make([]byte, 0, len(body)), body...)
		}
		p, err := packet.Decode(h, body, c.version)
		if err != nil {
			if cp, ok := p.(*packet.Connect); ok && !c.connected.Load() {
				c.refuseBadConnect(cp, err)
			}
			return err
		}
		if err := c.handle(p); err != nil {
			return err
		}
		if c.cleanDisconn.Load() {
			return io.EOF
		}
	}
	return nil
}

// refuseBadConnect answers a CONNECT the codec rejected once its
// protocol level is known: an unsupported level gets CONNACK 0x01 in the
// 3.1.1 format [MQTT-3.1.2-2], other errors a v5 CONNACK with the reason
// code [MQTT-3.1.4-1]; then the connection is closed.
func (c *client) refuseBadConnect(cp *packet.Connect, err error) {
	var code packet.ReasonCode
	if !errors.As(err, &code) {
		code = packet.MalformedPacket
	}
	var pe *packet.Error
	if errors.As(err, &pe) && pe.Field == "protocol name" {
		return // not MQTT at all: close without CONNACK [MQTT-3.1.2-1]
	}
	c.version = packet.V311
	if cp.Version == packet.V5 {
		c.version = packet.V5
	} else if code != packet.UnsupportedProtocolVersion {
		return // 3.1.1 has no CONNACK code for malformed packets: just close
	}
	c.sendNow(&packet.Connack{ReasonCode: code})
}

// fill reads more bytes into rbuf. With a raw file descriptor the buffer is
// taken from the pool only once data is ready, so an idle connection holds
// no read buffer.
func (c *client) fill() error {
	if c.raw == nil {
		if c.rbuf == nil {
			c.rbuf, c.rpooled = getBuf(), true
		}
		n, err := c.conn.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if n > 0 {
			return nil
		}
		return err
	}
	if err := c.raw.Read(c.readFn); err != nil {
		return err
	}
	if c.rerr != nil {
		return c.rerr
	}
	if c.rn <= 0 {
		return io.EOF
	}
	c.rbuf = c.rbuf[:len(c.rbuf)+c.rn]
	return nil
}

// rawRead is the RawConn read callback (c.readFn). A wake-up that finds no
// data neither keeps a pool buffer nor writes c.rbuf: an idle connection
// leaves its fields untouched.
func (c *client) rawRead(fd uintptr) bool {
	buf := c.rbuf
	if buf == nil {
		buf = getBuf()
	}
	m, e := syscall.Read(int(fd), buf[len(buf):cap(buf)])
	if e == syscall.EAGAIN || e == syscall.EINTR {
		if c.rbuf == nil {
			putBuf(buf)
		}
		return false
	}
	c.rn, c.rerr = m, e
	if c.rbuf == nil {
		if m <= 0 { // EOF or error: nothing to keep
			putBuf(buf)
			return true
		}
		c.rbuf, c.rpooled = buf, true
	}
	return true
}

// growFor makes rbuf able to hold a whole packet of total bytes starting at
// off (already checked against max_packet_size), moving the partial packet
// to the front.
func (c *client) growFor(off, total int) {
	if total <= cap(c.rbuf) {
		if off > 0 {
			n := copy(c.rbuf, c.rbuf[off:])
			c.rbuf = c.rbuf[:n]
		}
		return
	}
	// Grow step by step as data arrives: a 5-byte header alone must not make
	// every connection hold max_packet_size bytes.
	nb := make([]byte, len(c.rbuf)-off, min(total, max(2*cap(c.rbuf), 64<<10)))
	copy(nb, c.rbuf[off:])
	c.bigBuf.Store(int64(cap(nb)))
	c.releaseReadBuf()
	c.rbuf, c.rpooled = nb, false
}

// compact drops the first off bytes of rbuf, releasing it when empty.
func (c *client) compact(off int) {
	if off == 0 {
		return
	}
	if off >= len(c.rbuf) {
		c.releaseReadBuf()
		return
	}
	n := copy(c.rbuf, c.rbuf[off:])
	c.rbuf = c.rbuf[:n]
}

func (c *client) releaseReadBuf() {
	if c.rbuf == nil {
		return // leave the fields of an idle connection untouched
	}
	if c.rpooled {
		putBuf(c.rbuf)
	}
	c.rbuf, c.rpooled = nil, false
}

// closeWith ends the connection once: a v5 client is told why with a
// DISCONNECT carrying the reason code of err [MQTT-4.13.1-1]; a 3.1.1
// client is just closed.
func (c *client) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		// connected first: it is stored after version, maxOut and
		// problemInfo, so reading them is safe from any goroutine
		// (Shutdown may close a connection still in handleConnect).
		if code, ok := disconnectCode(err); ok && c.connected.Load() && c.version == packet.V5 {
			d := &packet.Disconnect{ReasonCode: code, Props: c.reasonProps(err)}
			c.fitReason(d, &d.Props) // [MQTT-3.14.2-3]
			c.sendNow(d)
		}
		c.wmu.Lock()
		c.closed = true
		c.out = nil
		c.wmu.Unlock()
		c.conn.Close()
	})
}

// sendNow writes one packet synchronously with a short deadline, after
// whatever is already queued, as the last packet of the connection: the
// final DISCONNECT or a refusing CONNACK. Nothing is queued after it
// [MQTT-3.14.4-1].
//
// If a flush is in progress it first waits for it (bounded by a write
// deadline for a client that does not read): the packet goes out after
// the ones being written instead of being dropped with them at the close
// (a takeover right after CONNACK lost its DISCONNECT 0x8E). It then
// writes as the flusher, so no one else writes meanwhile. Never called by
// a flusher of c.
func (c *client) sendNow(p packet.Packet) {
	deadline := time.Now().Add(time.Second) // for the wait and the write together
	c.wmu.Lock()
	if c.flushing {
		c.conn.SetWriteDeadline(deadline)
		for c.flushing {
			c.flushEnded.Wait()
		}
	}
	if c.closed {
		c.wmu.Unlock()
		return
	}
	buf, _ := packet.Encode(c.out, p, c.version) // on error: what was queued
	c.out = nil
	c.flushing = true
	c.closed = true
	c.wmu.Unlock()
	if len(buf) > 0 {
		c.conn.SetWriteDeadline(deadline)
		c.conn.Write(buf)
	}
	c.endFlush()
}
