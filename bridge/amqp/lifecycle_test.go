package amqp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// frozenConfig is a configuration whose link goes through a proxy that is
// frozen: the TCP connect succeeds and the AMQP handshake stalls. The dial
// timeout is far beyond the test's waits, so only an abort can end it.
func frozenConfig(t *testing.T) (Config, *upstreamtest.TCPProxy) {
	e := newEnv(t)
	cfg := e.config()
	p := upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, cfg.URL))
	cfg.URL = p.URL(cfg.URL)
	cfg.DialTimeout = time.Hour
	p.Freeze()
	return cfg, p
}

// connectAsync runs Connect in the background and returns its outcome.
func connectAsync(ctx context.Context, u *Upstream) <-chan error {
	res := make(chan error, 1)
	go func() { res <- u.Connect(ctx, nil) }()
	return res
}

func waitErr(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Connect still running after %v", waitLimit)
	}
	panic("unreachable")
}

// TestCloseDuringHandshake: Close aborts a Connect stuck in the AMQP
// handshake (a half-open link) instead of leaving it to the dial timeout.
func TestCloseDuringHandshake(t *testing.T) {
	cfg, p := frozenConfig(t)
	u := New(cfg, upstreamtest.Logger(t))
	res := connectAsync(context.Background(), u)
	poll(t, "connection reached the proxy", func() bool { return p.Conns() == 1 })
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := waitErr(t, res); err == nil {
		t.Fatal("Connect succeeded after Close")
	} else {
		t.Logf("Connect: %v", err)
	}
	waitClosed(t, u.Done(), "Done")
	if !errors.Is(u.Err(), bridge.ErrLinkLost) {
		t.Fatalf("Err = %v", u.Err())
	}
}

// TestCancelDuringHandshake: cancelling Connect's context aborts it in the
// AMQP handshake; the error says so.
func TestCancelDuringHandshake(t *testing.T) {
	cfg, p := frozenConfig(t)
	u := New(cfg, upstreamtest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	res := connectAsync(ctx, u)
	poll(t, "connection reached the proxy", func() bool { return p.Conns() == 1 })
	cancel()
	err := waitErr(t, res)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect: %v, want context.Canceled", err)
	}
	waitClosed(t, u.Done(), "Done")
	p.Thaw()
	poll(t, "proxied connection closed", func() bool { return p.Conns() == 0 })
}

// TestReceiveWithoutHandler: receive keys need a downlink handler.
func TestReceiveWithoutHandler(t *testing.T) {
	u := New(Config{Name: "x", URL: "amqp://127.0.0.1:1/", ReceiveKeys: []string{"a/#"}}, upstreamtest.Logger(t))
	err := u.Connect(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "handler") {
		t.Fatalf("Connect: %v", err)
	}
}

// TestPublishStuck: a publish blocked writing to a half-open link returns
// once its context ends, with ErrLinkLost (the link is closed: a frame
// partly written cannot be taken back), and the confirmations pending then
// get ErrLinkLost.
func TestPublishStuck(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	cfg := e.config()
	p := upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, cfg.URL))
	cfg.URL = p.URL(cfg.URL)
	u := connect(t, cfg, nil)
	c := newConfirms(t)
	p.Freeze()
	big := &bridge.Message{Topic: "big", Payload: make([]byte, 1<<20)}
	var err error
	for err == nil {
		// The socket buffers take a few megabytes; after that Publish
		// blocks until the deadline, which closes the link. (A deadline
		// that falls between two publishes refuses the next one without
		// closing anything: try again.)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		for err == nil {
			big.Seq++
			err = c.publishCtx(ctx, u, big, nil)
		}
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && u.Err() == nil {
			err = nil
		}
	}
	if !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("stuck Publish: %v, want ErrLinkLost", err)
	}
	waitClosed(t, u.Done(), "Done")
	for i, err := range c.wait() {
		if !errors.Is(err, bridge.ErrLinkLost) {
			t.Fatalf("message %d: %v, want ErrLinkLost", i, err)
		}
	}
}

// TestCloseWhilePublishing closes the link under publishers: each Publish
// either fails (and its confirm is never called) or has its confirm called
// exactly once; Done is closed after the last.
func TestCloseWhilePublishing(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	u := New(e.config(), upstreamtest.Logger(t))
	if err := u.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	var published, confirmed, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var once atomic.Bool
				err := u.Publish(context.Background(), msg("p", g*1_000_000+i), func(error) {
					if !once.CompareAndSwap(false, true) {
						t.Error("confirm called twice")
					}
					confirmed.Add(1)
				})
				if err != nil {
					refused.Add(1)
					return
				}
				published.Add(1)
			}
		}()
	}
	poll(t, "some confirmations", func() bool { return confirmed.Load() > 500 })
	if err := u.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	wg.Wait()
	waitClosed(t, u.Done(), "Done")
	if confirmed.Load() != published.Load() || refused.Load() != 4 {
		t.Fatalf("published %d, confirmed %d, refused %d", published.Load(), confirmed.Load(), refused.Load())
	}
}
