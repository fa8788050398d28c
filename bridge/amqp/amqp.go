// Package amqp is the bridge's AMQP 0-9-1 upstream (RabbitMQ), over
// github.com/rabbitmq/amqp091-go: a bridge.Upstream that publishes with
// publisher confirms and the mandatory flag, reports basic.return as a
// permanent rejection, and consumes the downlink from a durable queue with
// manual acknowledgements.
//
// Mapping (both directions): MQTT topic <-> routing key with "/" and "."
// exchanged ("a/b/c" <-> "a.b.c"); receive filters become binding keys
// ("+" -> "*", "#" -> "#"); bridge.Message.ID <-> message-id; Seq <->
// header "ferrymq-seq" (long-long); ResponseTopic <-> reply-to (as a
// routing key); CorrelationData <-> correlation-id; ContentType <->
// content-type; Expiry <-> expiration (milliseconds); user properties <->
// headers (a repeated name becomes an array). Messages are published
// persistent. A downlink message whose routing key is not an MQTT topic
// name (it has a "+" or "#", or is empty) is rejected without requeueing.
package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/bridge/coalesce"
)

// Defaults for the zero values of Config.
const (
	DefaultExchange    = "amq.topic"
	DefaultPrefetch    = 64
	DefaultHeartbeat   = 10 * time.Second
	DefaultDialTimeout = 15 * time.Second
	// closeTimeout bounds the connection.close handshake in Close (the
	// link may be half-open).
	closeTimeout = 2 * time.Second
	// returnsBuffer is the capacity of the basic.return listener:
	// amqp091-go drops a notification it cannot deliver within 5 s.
	returnsBuffer = 4096
)

// Config configures one AMQP upstream link.
type Config struct {
	// Name is the bridge's name: the downlink queue is "ferrymq." + Name
	// when Queue is empty, and it names the connection in RabbitMQ's
	// management UI.
	Name string
	// URL is amqp://user:pass@host:port/vhost or amqps://...
	URL string
	// TLS configures amqps:// (nil: the system roots, server name from
	// the URL). It is cloned, never modified.
	TLS *tls.Config
	// Exchange receives forwarded messages and is where ReceiveKeys are
	// bound (default amq.topic). It must exist: Connect checks it.
	Exchange string
	// Queue is the durable downlink queue (default "ferrymq." + Name).
	Queue string
	// ReceiveKeys are MQTT topic filters bound on Exchange for the
	// downlink ("cmd/+/x/#" binds "cmd.*.x.#"). None: no downlink, no
	// queue.
	ReceiveKeys []string
	// Prefetch is how many downlink messages may be unacknowledged at
	// once (default 64).
	Prefetch int
	// Heartbeat is the AMQP heartbeat interval (default 10 s); the
	// library drops the link after about three missed heartbeats.
	Heartbeat time.Duration
	// DialTimeout bounds the TCP connect and the TLS and AMQP handshakes
	// (default 15 s).
	DialTimeout time.Duration
}

func (c *Config) fill() {
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.Queue == "" {
		c.Queue = "ferrymq." + c.Name
	}
	if c.Prefetch <= 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
}

// ErrNacked is returned through a confirmation when the broker nacked the
// message (an internal error on its side, or a queue it was routed to is
// full and refuses publishes: x-overflow reject-publish): the message
// should be resent later.
var ErrNacked = errors.New("amqp: the broker nacked the message")

var (
	errNotConnected = errors.New("amqp: not connected")
	errClosed       = errors.New("amqp: link closed")
	errCancelled    = errors.New("amqp: the broker cancelled the downlink consumer")
)

// Upstream is one AMQP connection: a publishing channel in confirm mode and,
// when there are receive keys, a consuming channel. It implements
// bridge.Upstream; build a new one (New) for every connection attempt.
type Upstream struct {
	cfg Config
	log *slog.Logger

	started atomic.Bool
	ready   atomic.Bool // Connect succeeded: Publish may be used
	blocked atomic.Bool

	conn    *amqp091.Connection           // set (under mu) by Connect
	wire    atomic.Pointer[coalesce.Conn] // the socket, once dialled
	pub     *amqp091.Channel              // set by Connect before ready
	sub     *amqp091.Channel              // the downlink channel, if any (set before consume starts)
	returns chan amqp091.Return           // set by Connect before the confirm loop starts

	// pubMu serializes publishes, so that the pending queue is in
	// delivery-tag order.
	pubMu sync.Mutex

	mu       sync.Mutex
	pending  []*pending // unconfirmed publishes, in publish order
	down     bool       // link lost: nothing is added to pending any more
	err      error      // why (set with down)
	closeErr error      // from closing the connection
	wake     chan struct{}

	results resultQueue // confirmations waiting to be delivered

	lost      chan struct{} // closed when down is set
	done      chan struct{} // closed after lost, once every pending confirm was called
	closeOnce sync.Once
}

// New returns an unconnected upstream; Connect dials it.
func New(cfg Config, log *slog.Logger) *Upstream {
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	return &Upstream{
		cfg:     cfg,
		log:     log.With("upstream", "amqp", "bridge", cfg.Name),
		wake:    make(chan struct{}, 1),
		results: resultQueue{wake: make(chan struct{}, 1)},
		lost:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

var _ bridge.Upstream = (*Upstream)(nil)

// Connect dials the broker, checks that the exchange exists, puts a channel
// in confirm mode and, for the downlink, declares the durable queue, binds
// it with every receive key, sets the prefetch and starts consuming with
// manual acknowledgements. Deliveries go to handle one at a time, in order,
// from one goroutine. Cancelling ctx, or calling Close, aborts Connect
// wherever it is (also in the middle of the AMQP handshake). Connect may be
// called once; when it fails, Done is closed and the Upstream is spent.
func (u *Upstream) Connect(ctx context.Context, handle func(*bridge.Inbound)) error {
	if !u.started.CompareAndSwap(false, true) {
		return errors.New("amqp: Connect called twice, or after Close")
	}
	deliveries, err := u.connect(ctx, handle != nil)
	if err != nil {
		u.fail(err)
		return err
	}
	u.ready.Store(true)
	go u.confirmLoop()
	go u.deliverLoop()
	if deliveries != nil {
		go u.consume(deliveries, handle)
	}
	return nil
}

// connect dials and declares (see Connect), and starts the watcher.
func (u *Upstream) connect(ctx context.Context, handler bool) (<-chan amqp091.Delivery, error) {
	cfg := &u.cfg
	keys, err := bindingKeys(cfg.ReceiveKeys)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 && !handler {
		return nil, errors.New("amqp: receive keys but no downlink handler")
	}
	uri, err := amqp091.ParseURI(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("amqp: upstream URL: %w", err)
	}
	where := fmt.Sprintf("%s (vhost %q)", net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)), uri.Vhost)
	// Close aborts Connect like a cancelled ctx.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-u.lost:
			cancel(errClosed)
		case <-ctx.Done():
		}
	}()
	fail := func(err error) (<-chan amqp091.Delivery, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return nil, fmt.Errorf("amqp: %s: %w", where, err)
	}

	conn, err := u.dial(ctx)
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	u.mu.Lock()
	u.conn = conn
	u.mu.Unlock()
	// The declarations below are RPCs without a context: cancelling ctx
	// closes the connection under them.
	stop := context.AfterFunc(ctx, u.closeConn)
	defer stop()

	connClosed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp091.Blocking, 16))
	pubClosed, err := u.openPublisher(conn)
	if err != nil {
		return fail(err)
	}
	var subClosed chan *amqp091.Error
	var deliveries <-chan amqp091.Delivery
	if len(keys) > 0 {
		if subClosed, deliveries, err = u.openDownlink(conn, keys); err != nil {
			return fail(err)
		}
	}
	if !stop() {
		return fail(errors.New("connect aborted"))
	}
	go u.watch(connClosed, pubClosed, subClosed, blocks)
	if len(keys) > 0 {
		u.log.Info("amqp upstream connected", "server", where, "exchange", cfg.Exchange, "queue", cfg.Queue, "receive", keys)
	} else {
		u.log.Info("amqp upstream connected", "server", where, "exchange", cfg.Exchange)
	}
	return deliveries, nil
}

// bindingKeys maps the receive filters to binding keys.
func bindingKeys(filters []string) ([]string, error) {
	keys := make([]string, len(filters))
	for i, f := range filters {
		k, err := FilterToBindingKey(f)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// dial opens the AMQP connection. The TCP connect, TLS and AMQP handshakes
// are bounded by DialTimeout and aborted when ctx ends (which closes the
// socket under them).
func (u *Upstream) dial(ctx context.Context) (*amqp091.Connection, error) {
	cfg := &u.cfg
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName("ferrymq bridge " + cfg.Name)
	var stopAbort func() bool
	acfg := amqp091.Config{
		Heartbeat:  cfg.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: cfg.DialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the TLS and AMQP handshakes; amqp091-go clears
			// it once the connection is open.
			deadline := time.Now().Add(cfg.DialTimeout)
			if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
				deadline = dl
			}
			if err := c.SetDeadline(deadline); err != nil {
				c.Close()
				return nil, err
			}
			stopAbort = context.AfterFunc(ctx, func() { c.Close() })
			bc := coalesce.New(c, nil)
			u.wire.Store(bc)
			return bc, nil
		},
	}
	if cfg.TLS != nil {
		acfg.TLSClientConfig = cfg.TLS.Clone()
	}
	conn, err := amqp091.DialConfig(cfg.URL, acfg)
	if stopAbort != nil && !stopAbort() && err == nil {
		// ctx ended just as the handshake succeeded: the socket is
		// closed under the connection, which ends by itself.
		err = errors.New("aborted")
	}
	return conn, err
}

// openPublisher opens the publishing channel: it checks the exchange and
// puts the channel in confirm mode, with the mandatory returns listened to.
func (u *Upstream) openPublisher(conn *amqp091.Connection) (closed chan *amqp091.Error, err error) {
	pub, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	// A missing exchange would close the channel at the first publish;
	// say so now.
	x := u.cfg.Exchange
	if err := pub.ExchangeDeclarePassive(x, amqp091.ExchangeTopic, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("exchange %q: %w", x, err)
	}
	if err := pub.Confirm(false); err != nil {
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	u.returns = pub.NotifyReturn(make(chan amqp091.Return, returnsBuffer))
	closed = pub.NotifyClose(make(chan *amqp091.Error, 1))
	u.pub = pub
	return closed, nil
}

// openDownlink opens the consuming channel: it declares the durable queue,
// binds it with keys, sets the prefetch and starts consuming.
func (u *Upstream) openDownlink(conn *amqp091.Connection, keys []string) (closed chan *amqp091.Error, deliveries <-chan amqp091.Delivery, err error) {
	cfg := &u.cfg
	sub, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	q := cfg.Queue
	if _, err := sub.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return nil, nil, fmt.Errorf("declare queue %q: %w", q, err)
	}
	for i, k := range keys {
		if err := sub.QueueBind(q, k, cfg.Exchange, false, nil); err != nil {
			return nil, nil, fmt.Errorf("bind %q (%q) to %q: %w", k, cfg.ReceiveKeys[i], cfg.Exchange, err)
		}
	}
	if err := sub.Qos(cfg.Prefetch, 0, false); err != nil {
		return nil, nil, fmt.Errorf("qos: %w", err)
	}
	closed = sub.NotifyClose(make(chan *amqp091.Error, 1))
	deliveries, err = sub.Consume(q, "ferrymq-"+cfg.Name, false, false, false, false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("consume %q: %w", q, err)
	}
	u.sub = sub
	return closed, deliveries, nil
}

// watch follows the connection and its channels: any close loses the link;
// connection.blocked/unblocked drive Blocked.
func (u *Upstream) watch(connClosed, pubClosed, subClosed chan *amqp091.Error, blocks chan amqp091.Blocking) {
	closed := func(what string, e *amqp091.Error, ok bool) {
		switch {
		case ok && e != nil && e.Server:
			u.linkDown(fmt.Errorf("%s closed by the broker: %w", what, e))
		case ok && e != nil: // a socket error, a missed heartbeat
			u.linkDown(fmt.Errorf("%s failed: %w", what, e))
		default:
			u.linkDown(fmt.Errorf("%s closed", what))
		}
	}
	for {
		select {
		case e, ok := <-connClosed:
			closed("connection", e, ok)
			return
		case e, ok := <-pubClosed:
			closed("publishing channel", e, ok)
			return
		case e, ok := <-subClosed:
			closed("downlink channel", e, ok)
			return
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			u.blocked.Store(b.Active)
			if b.Active {
				u.log.Warn("amqp upstream blocked publishing", "reason", b.Reason)
			} else {
				u.log.Info("amqp upstream unblocked publishing")
			}
		case <-u.lost:
			return
		}
	}
}

// linkDown records that the link is lost (the first cause wins), wakes the
// confirm loop and closes the connection in the background.
func (u *Upstream) linkDown(cause error) {
	u.mu.Lock()
	if u.down {
		u.mu.Unlock()
		return
	}
	u.down = true
	if errors.Is(cause, bridge.ErrLinkLost) {
		u.err = cause
	} else {
		u.err = fmt.Errorf("%w: %w", bridge.ErrLinkLost, cause)
	}
	u.mu.Unlock()
	if cause != errClosed {
		u.log.Warn("amqp upstream link lost", "err", cause)
	}
	close(u.lost)
	go u.closeConn()
}

// fail ends an Upstream whose Connect failed.
func (u *Upstream) fail(err error) {
	u.mu.Lock()
	if !u.down {
		u.down = true
		u.err = err
		close(u.lost)
	}
	u.mu.Unlock()
	u.closeConn()
	close(u.done)
}

// closeConn closes the connection, if there is one, once; later calls wait
// for the first. The close handshake is bounded: on a half-open link the
// close-ok never comes (the deadline also frees a publish stuck writing to
// the socket).
func (u *Upstream) closeConn() {
	u.mu.Lock()
	conn := u.conn
	u.mu.Unlock()
	if conn == nil {
		// Not dialled yet: Connect sees that the link is down once it
		// has a connection, and fails, which closes it.
		return
	}
	u.closeOnce.Do(func() {
		err := conn.CloseDeadline(time.Now().Add(closeTimeout))
		if err != nil && !errors.Is(err, amqp091.ErrClosed) {
			u.mu.Lock()
			u.closeErr = fmt.Errorf("amqp: close: %w", err)
			u.mu.Unlock()
		}
	})
}

// Flush writes at once what the connection buffered (bridge.Flusher): the
// publishes since the last Flush go out in one write. Left alone, the
// buffer is written a millisecond after it started to fill. An error
// (wrapping bridge.ErrLinkLost) means the link is lost.
func (u *Upstream) Flush() error {
	w := u.wire.Load()
	if w == nil {
		return nil
	}
	if err := w.Flush(); err != nil {
		u.linkDown(fmt.Errorf("write: %w", err))
		return u.Err()
	}
	return nil
}

var _ bridge.Flusher = (*Upstream)(nil)

// Blocked reports whether the broker sent connection.blocked (a resource
// alarm) and not yet connection.unblocked.
func (u *Upstream) Blocked() bool { return u.blocked.Load() }

// Done is closed once the link is lost (the connection or a channel closed,
// the downlink consumer was cancelled, Close was called, or Connect failed)
// and every pending confirmation has been called: no confirm call follows.
func (u *Upstream) Done() <-chan struct{} { return u.done }

// Err says why the link was lost (nil while it is up). It wraps
// bridge.ErrLinkLost, except after a failed Connect, where it is Connect's
// error.
func (u *Upstream) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// Close ends the link: the connection is closed (waiting at most 2 s for
// the broker's close-ok: the error then says the handshake did not finish)
// and pending confirmations get bridge.ErrLinkLost, from the confirm
// goroutine: Close does not wait for those calls (wait on Done for that).
// Downlink messages not yet acknowledged are redelivered by the broker.
// Close may be called at any time, also during Connect (which then fails
// at once), and more than once.
func (u *Upstream) Close() error {
	if u.started.CompareAndSwap(false, true) {
		// Never connected: Connect will refuse.
		u.mu.Lock()
		u.down = true
		u.err = fmt.Errorf("%w: %w", bridge.ErrLinkLost, errClosed)
		close(u.lost)
		u.mu.Unlock()
		close(u.done)
		return nil
	}
	u.linkDown(errClosed)
	u.closeConn()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closeErr
}
