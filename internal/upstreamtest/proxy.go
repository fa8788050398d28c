package upstreamtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// dialTimeout bounds the proxy's connect to its target.
const dialTimeout = 5 * time.Second

// TCPProxy forwards TCP connections from a loopback port to a target, so
// that a test can take an upstream away under a client: Down closes every
// connection and stops listening (the upstream is down or restarting), Up
// listens again on the same port, Freeze stops forwarding bytes but keeps
// the sockets open (a half-open link: nothing arrives, nothing fails), Thaw
// forwards again. Build one with Proxy; it is closed at the end of the test.
type TCPProxy struct {
	t      testing.TB
	target string
	addr   string // 127.0.0.1:port, fixed for the proxy's life

	mu     sync.Mutex
	ln     net.Listener            // nil while down
	conns  map[*proxyConn]struct{} // open client connections
	thawed chan struct{}           // non-nil while frozen; closed by Thaw
	closed bool                    // Close was called
	wg     sync.WaitGroup          // accept loops and pipes
}

// proxyConn is one proxied connection: the client's socket and ours to the
// target. done is closed when either side is closed.
type proxyConn struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		closeQuietly(c.client)
		closeQuietly(c.server)
	})
}

// Proxy starts a proxy listening on 127.0.0.1 (a free port) that forwards
// every connection to target (host:port). It fails the test when it cannot
// listen. Cleanup closes it and waits for its goroutines.
func Proxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstreamtest: proxy listen: %v", err)
	}
	p := &TCPProxy{
		t:      t,
		target: target,
		addr:   ln.Addr().String(),
		conns:  make(map[*proxyConn]struct{}),
	}
	p.serve(ln)
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address (127.0.0.1:port). It does not change across
// Down and Up.
func (p *TCPProxy) Addr() string { return p.addr }

// URL returns raw (a URL such as amqp://user:pass@host:port/vhost) with its
// host and port replaced by the proxy's address.
func (p *TCPProxy) URL(raw string) string {
	p.t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		p.t.Fatalf("upstreamtest: proxy URL %q: %v", raw, err)
	}
	u.Host = p.addr
	return u.String()
}

// serve starts the accept loop on ln (or closes ln when the proxy was
// closed meanwhile).
func (p *TCPProxy) serve(ln net.Listener) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeQuietly(ln)
		return
	}
	p.ln = ln
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // Down or Close closed the listener
			}
			p.start(c)
		}
	}()
}

// start dials the target for client and pipes both ways. A failed dial
// closes the client (a refused upstream).
func (p *TCPProxy) start(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		p.t.Logf("upstreamtest: proxy dial %s: %v", p.target, err)
		closeQuietly(client)
		return
	}
	c := &proxyConn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.ln == nil || p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go p.pipe(c, server, client)
	go p.pipe(c, client, server)
}

// pipe copies src to dst, holding bytes back while the proxy is frozen,
// until either side fails or ends, or the connection is closed. An end of
// stream closes both sockets (the protocols proxied do not half-close).
func (p *TCPProxy) pipe(c *proxyConn, dst, src net.Conn) {
	defer p.wg.Done()
	defer p.forget(c)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitThawed(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forget closes c and drops it from the open connections.
func (p *TCPProxy) forget(c *proxyConn) {
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// waitThawed blocks while the proxy is frozen. It reports false when c was
// closed meanwhile.
func (p *TCPProxy) waitThawed(c *proxyConn) bool {
	p.mu.Lock()
	thawed := p.thawed
	p.mu.Unlock()
	if thawed == nil {
		return true
	}
	select {
	case <-thawed:
		return true
	case <-c.done:
		return false
	}
}

// Down stops listening and closes every proxied connection: the client
// sees its link drop and its reconnects refused, as when the upstream
// stops. It waits until the connections are closed.
func (p *TCPProxy) Down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if ln != nil {
		closeQuietly(ln)
	}
	for _, c := range conns {
		c.close()
	}
}

// Up listens again on the proxy's address after Down (nothing happens when
// it is listening). It fails the test when the port cannot be taken back.
// A Freeze outlives Down and Up: Thaw ends it.
func (p *TCPProxy) Up() {
	p.t.Helper()
	p.mu.Lock()
	up, closed := p.ln != nil, p.closed
	p.mu.Unlock()
	if up || closed {
		return
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("upstreamtest: proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// Freeze stops forwarding bytes in both directions, on the open
// connections and on new ones, while keeping every socket open: the client
// writes into a void and waits for answers that never come (a half-open
// link). Thaw forwards again, held bytes included.
func (p *TCPProxy) Freeze() {
	p.mu.Lock()
	if p.thawed == nil {
		p.thawed = make(chan struct{})
	}
	p.mu.Unlock()
}

// Thaw ends a Freeze.
func (p *TCPProxy) Thaw() {
	p.mu.Lock()
	if p.thawed != nil {
		close(p.thawed)
		p.thawed = nil
	}
	p.mu.Unlock()
}

// Conns is the number of open proxied connections.
func (p *TCPProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy for good (Down, and Up does nothing any more) and
// waits for its goroutines. The test's Cleanup calls it.
func (p *TCPProxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Down() // before Thaw: held bytes are dropped, not forwarded
	p.Thaw()
	p.wg.Wait()
}

// closeQuietly closes c, a socket or listener being thrown away: its close
// error cannot matter (it may well be broken already).
func closeQuietly(c io.Closer) {
	c.Close()
}
