// Package broker is the MQTT server: listeners, per-connection read and
// write loops, and one file per protocol concern (connect, publish,
// subscribe, acks, will, disconnect). It routes through topics, keeps
// client state in session and reaches storage only through session.Store.
//
// Lock order (never take an earlier lock while holding a later one):
//
//  1. Server.smu   (session registry)
//  2. sess.mu      (one session's state and its attached connection)
//  3. client.wmu   (one connection's outbound buffer and alias table)
//
// Server.lmu (listeners and the set of live connections) is a leaf: no
// other lock is taken while it is held.
//
// topics.Trie and topics.Retained lock internally and call nothing back,
// so they may be used under any of these. No lock is held while a message
// is routed to other sessions, and no lock is held across a blocking write.
//
// Goroutines, all counted in Server.wg and waited for by Shutdown: one
// acceptLoop per listener; one serve goroutine per connection (it moves to
// a fresh goroutine once, after CONNECT, handing over its count); a writer
// per connection only while its socket pushes back. Session expiry and
// will delay run on time.AfterFunc timers that Shutdown stops; a callback
// already running when Shutdown bumps the session generation finds it
// stale and does nothing.
//
// Shutdown order: listeners, then every connection (v5 DISCONNECT 0x8B,
// wills published), then timers, then the OnStop hooks (bridges), then
// the store.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// Options are the non-config dependencies of a Server.
type Options struct {
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
	// Store makes sessions durable. Default: session.Memory{}.
	Store session.Store
	// Now is the clock (tests may fake it). Default: time.Now.
	Now func() time.Time
}

// Server is one MQTT broker instance. Several may run in one process.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   session.Store
	durable bool // store.Durable(): sessions that outlive their connection are stored
	now     func() time.Time

	trie     *topics.Trie
	retained *topics.Retained[*session.Message]
	shareRR  sync.Map // group key -> *atomic.Uint32 round-robin cursor

	smu      sync.RWMutex
	sessions map[string]*sess // by client id, online and offline
	closing  bool             // guarded by smu: no new sessions once set

	lmu       sync.Mutex
	listeners []net.Listener
	conns     map[*client]struct{} // every live connection, CONNECTed or not
	stopped   bool                 // guarded by lmu: no new connections once set

	// Connections with output produced by store callbacks, written once
	// per store batch (flushLater) when the store tells when a batch ends.
	batchHook bool
	flushMu   sync.Mutex
	flushq    []*client

	outlets  []Outlet // bridges (AddOutlet, before Start)
	onStop   []func() // run by Shutdown before the store closes, once
	stopOnce sync.Once

	wg     sync.WaitGroup // every goroutine the server starts
	stats  Stats
	nextID atomic.Uint64 // for assigned client identifiers
}

// New builds a server from a configuration (defaults applied, then
// validated). It opens nothing: Start does.
func New(cfg Config, opts Options) (*Server, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Store == nil {
		opts.Store = session.Memory{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		log:      opts.Logger,
		store:    opts.Store,
		durable:  opts.Store.Durable(),
		now:      opts.Now,
		trie:     topics.NewTrie(),
		retained: topics.NewRetained[*session.Message](),
		sessions: make(map[string]*sess),
	}
	if h, ok := opts.Store.(interface{ SetAfterBatch(func()) }); ok {
		s.batchHook = true
		h.SetAfterBatch(s.flushQueued)
	}
	return s, nil
}

// Start binds every listener, restores stored sessions and starts
// serving. It fails (and keeps nothing bound) if any listener cannot be
// opened, e.g. "listen tcp 127.0.0.1:1883: bind: address already in use",
// or the store cannot be read.
func (s *Server) Start() error {
	var ls []net.Listener
	closeAll := func() {
		for _, o := range ls {
			o.Close()
		}
	}
	for _, lc := range s.cfg.Listeners {
		l, err := net.Listen("tcp", lc.Address)
		if err != nil {
			closeAll()
			return err
		}
		ls = append(ls, l)
	}
	// Bound first (a port in use fails fast), accepting only once the
	// sessions are back: early clients wait in the listen backlog.
	if err := s.restore(); err != nil {
		closeAll()
		return err
	}
	s.lmu.Lock()
	s.listeners = ls
	s.lmu.Unlock()
	for i, l := range ls {
		lc := s.cfg.Listeners[i]
		s.wg.Add(1)
		go s.acceptLoop(l, lc)
		s.log.Info("listening", "addr", l.Addr().String())
	}
	return nil
}

// Addrs returns the bound listener addresses, in config order.
func (s *Server) Addrs() []net.Addr {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

func (s *Server) acceptLoop(l net.Listener, lc Listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (EMFILE...): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "addr", l.Addr().String(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.lmu.Lock()
		if s.stopped {
			s.lmu.Unlock()
			conn.Close()
			continue
		}
		c := newClient(s, conn, lc)
		if s.conns == nil {
			s.conns = make(map[*client]struct{})
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.lmu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, disconnects every client (v5: DISCONNECT
// 0x8B), publishes their wills as for any connection the server closes
// [MQTT-3.1.2-8], and waits for every goroutine, or until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.smu.Lock()
	s.closing = true
	s.smu.Unlock()
	// Every connection, including those that have not sent CONNECT yet
	// (else Shutdown would wait for their connect timeout).
	s.lmu.Lock()
	s.stopped = true
	for _, l := range s.listeners {
		l.Close()
	}
	all := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.lmu.Unlock()
	for _, c := range all {
		// In parallel: each may wait up to a write deadline for a client
		// that does not read.
		s.goOwned(func() { c.closeWith(errShutdown) })
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("shutdown: %w", ctx.Err())
	}
	s.smu.Lock()
	for _, ss := range s.sessions {
		ss.mu.Lock()
		ss.stopTimers()
		ss.gen++ // a timer callback already running finds its generation stale
		ss.mu.Unlock()
	}
	s.smu.Unlock()
	s.stopOnce.Do(func() {
		for _, fn := range s.onStop {
			fn()
		}
	})
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("shutdown: close store: %w", err)
	}
	return nil
}

// lookup returns the session of clientID, or nil.
func (s *Server) lookup(clientID string) *sess {
	s.smu.RLock()
	ss := s.sessions[clientID]
	s.smu.RUnlock()
	return ss
}

// goOwned runs fn on a goroutine the server waits for at shutdown.
func (s *Server) goOwned(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}
