package mqtt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge/coalesce"
)

// maxKeptBuffer is the largest write buffer kept between packets.
const maxKeptBuffer = 64 << 10

// wire is the connection as paho sees it. Reads go through a buffer (paho
// reads a packet a few bytes at a time). Writes: paho writes every packet
// with packets.ControlPacket.WriteTo, which locks a connection that is a
// sync.Locker around its pieces; wire collects the pieces and writes the
// whole packet in one write at Unlock, so that packets from several
// goroutines never interleave and a packet is one TLS record; a
// coalesce.Conn, under TLS, then gathers the packets of a burst into one
// system call.
// A read or write error takes the link down with its cause.
type wire struct {
	net.Conn
	bc *coalesce.Conn // the socket under Conn (and TLS): it coalesces writes
	u  *Upstream
	r  *bufio.Reader

	mu  sync.Mutex // held while a packet is being written
	buf []byte     // the packet being written (under mu)

	closeOnce sync.Once
}

func newWire(c net.Conn, bc *coalesce.Conn, u *Upstream) *wire {
	return &wire{Conn: c, bc: bc, u: u, r: bufio.NewReaderSize(c, 16<<10)}
}

// Read reads through the buffer (one reader at a time: paho's).
func (w *wire) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil {
		if errors.Is(err, io.EOF) {
			w.u.linkDown(errors.New("the upstream closed the connection"))
		} else {
			w.u.linkDown(fmt.Errorf("read: %w", err))
		}
	}
	return n, err
}

// Lock starts a packet.
func (w *wire) Lock() { w.mu.Lock() }

// Write adds a piece of the packet being written (under Lock).
func (w *wire) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Unlock writes the packet and ends it. A failed write takes the link down
// (paho cannot see it: the confirmations and Err report it).
func (w *wire) Unlock() {
	var err error
	if len(w.buf) > 0 {
		_, err = w.Conn.Write(w.buf)
		if cap(w.buf) > maxKeptBuffer {
			w.buf = nil
		} else {
			w.buf = w.buf[:0]
		}
	}
	w.mu.Unlock()
	if err != nil {
		w.u.linkDown(fmt.Errorf("write: %w", err))
	}
}

// appender collects pieces into a wire's buffer without locking: the
// caller holds the wire's lock.
type appender wire

func (a *appender) Write(p []byte) (int, error) {
	a.buf = append(a.buf, p...)
	return len(p), nil
}

// send writes packets of our own (acknowledgements, PUBRELs) in one write.
func (w *wire) send(ps ...interface {
	WriteTo(io.Writer) (int64, error)
}) {
	w.Lock()
	for _, p := range ps {
		_, _ = p.WriteTo((*appender)(w))
	}
	w.Unlock()
}

// disconnect writes a normal DISCONNECT unless a write is in progress (it
// may be stuck on a frozen upstream), waiting at most timeout.
func (w *wire) disconnect(timeout time.Duration) {
	if !w.mu.TryLock() {
		return
	}
	_ = w.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, _ = (&packets.Disconnect{ReasonCode: 0, Properties: &packets.Properties{}}).WriteTo((*appender)(w))
	w.Unlock()
}

// Close closes the connection (once; paho closes it too).
func (w *wire) Close() error {
	w.closeOnce.Do(func() { _ = w.Conn.Close() })
	return nil
}

// pinger is paho's default pinger, reporting a keepalive failure as the
// cause of the link loss before paho stops the client.
type pinger struct {
	*paho.DefaultPinger
	u *Upstream
}

// Run runs the pinger until ctx ends or a PINGRESP does not come in time.
func (p *pinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	err := p.DefaultPinger.Run(ctx, conn, keepAlive)
	if err != nil {
		p.u.linkDown(fmt.Errorf("keepalive: %w", err))
	}
	return err
}
