// Package broker is the MQTT server: listeners, per-connection read and
// write loops, and one file per protocol concern (connect, publish,
// subscribe, ...). It routes through topics, keeps client state in session
// and reaches storage only through interfaces.
package broker

import (
	"context"
	"log/slog"
	"net"
)

// Options are the non-config dependencies of a Server.
type Options struct {
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
}

// Server is one MQTT broker instance. Several may run in one process.
type Server struct {
	cfg Config
	log *slog.Logger
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
	return &Server{cfg: cfg, log: opts.Logger}, nil
}

// Start binds every listener and starts serving. It fails (and binds
// nothing) if any listener cannot be opened, e.g. "listen tcp
// 127.0.0.1:1883: bind: address already in use".
func (s *Server) Start() error { return nil }

// Addrs returns the bound listener addresses, in config order.
func (s *Server) Addrs() []net.Addr { return nil }

// Shutdown stops accepting, disconnects clients (v5: DISCONNECT 0x8B),
// publishes wills as the spec requires and waits for every goroutine, or
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return nil }
