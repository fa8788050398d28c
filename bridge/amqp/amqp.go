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
// persistent.
package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
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
// message (an internal error on its side): the message should be resent.
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

	conn    *amqp091.Connection // set by Connect before ready
	pub     *amqp091.Channel
	returns chan amqp091.Return

	// pubMu serializes publishes, so that the pending queue is in
	// delivery-tag order.
	pubMu sync.Mutex

	mu      sync.Mutex
	pending []*pending // unconfirmed publishes, in publish order
	down    bool       // link lost: nothing is added to pending any more
	err     error      // why (set with down)
	wake    chan struct{}

	lost      chan struct{} // closed when down is set
	done      chan struct{} // closed after lost, once every pending confirm was called
	closeOnce sync.Once
	closeErr  error
}

type pending struct {
	dc      *amqp091.DeferredConfirmation // nil when err is already known
	err     error
	key, id string
	seq     uint64
	confirm func(error)
}

// New returns an unconnected upstream; Connect dials it.
func New(cfg Config, log *slog.Logger) *Upstream {
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	return &Upstream{
		cfg:  cfg,
		log:  log.With("upstream", "amqp", "bridge", cfg.Name),
		wake: make(chan struct{}, 1),
		lost: make(chan struct{}),
		done: make(chan struct{}),
	}
}

var _ bridge.Upstream = (*Upstream)(nil)

// Connect dials the broker, checks that the exchange exists, puts a channel
// in confirm mode and, for the downlink, declares the durable queue, binds
// it with every receive key, sets the prefetch and starts consuming with
// manual acknowledgements. Deliveries go to handle one at a time, in order,
// from one goroutine. Connect may be called once; when it fails, Done is
// closed and the Upstream is spent.
func (u *Upstream) Connect(ctx context.Context, handle func(*bridge.Inbound)) error {
	if !u.started.CompareAndSwap(false, true) {
		return errors.New("amqp: Connect called twice, or after Close")
	}
	deliveries, err := u.connect(ctx)
	if err != nil {
		u.fail(err)
		return err
	}
	u.ready.Store(true)
	go u.confirmLoop()
	if deliveries != nil {
		go u.consume(deliveries, handle)
	}
	return nil
}

func (u *Upstream) connect(ctx context.Context) (<-chan amqp091.Delivery, error) {
	cfg := &u.cfg
	keys := make([]string, len(cfg.ReceiveKeys))
	for i, f := range cfg.ReceiveKeys {
		k, err := FilterToBindingKey(f)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	uri, err := amqp091.ParseURI(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("amqp: upstream URL: %w", err)
	}
	where := fmt.Sprintf("%s:%d%s", uri.Host, uri.Port, uri.Vhost)
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName("ferrymq bridge " + cfg.Name)
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
			_ = c.SetDeadline(deadline)
			return c, nil
		},
	}
	if cfg.TLS != nil {
		acfg.TLSClientConfig = cfg.TLS.Clone()
	}
	conn, err := amqp091.DialConfig(cfg.URL, acfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("amqp: connect to %s: %w", where, ctx.Err())
		}
		return nil, fmt.Errorf("amqp: connect to %s: %w", where, err)
	}
	u.mu.Lock()
	u.conn = conn
	down := u.down
	u.mu.Unlock()
	if down { // Close was called meanwhile
		return nil, errClosed
	}
	// The declarations below are RPCs without a context: cancelling ctx
	// closes the connection under them.
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now()) })
	defer stop()
	fail := func(what string, err error) (<-chan amqp091.Delivery, error) {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("amqp: %s on %s: %w", what, where, err)
	}

	connClosed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp091.Blocking, 16))

	pub, err := conn.Channel()
	if err != nil {
		return fail("open channel", err)
	}
	// A missing exchange would close the channel at the first publish;
	// say so now.
	if err := pub.ExchangeDeclarePassive(cfg.Exchange, amqp091.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail(fmt.Sprintf("exchange %q", cfg.Exchange), err)
	}
	if err := pub.Confirm(false); err != nil {
		return fail("confirm mode", err)
	}
	u.returns = pub.NotifyReturn(make(chan amqp091.Return, returnsBuffer))
	pubClosed := pub.NotifyClose(make(chan *amqp091.Error, 1))
	u.pub = pub

	var subClosed chan *amqp091.Error
	var deliveries <-chan amqp091.Delivery
	if len(keys) > 0 {
		sub, err := conn.Channel()
		if err != nil {
			return fail("open channel", err)
		}
		q := cfg.Queue
		if _, err := sub.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return fail(fmt.Sprintf("declare queue %q", q), err)
		}
		for i, k := range keys {
			if err := sub.QueueBind(q, k, cfg.Exchange, false, nil); err != nil {
				return fail(fmt.Sprintf("bind %q (%q) to %q", k, cfg.ReceiveKeys[i], cfg.Exchange), err)
			}
		}
		if err := sub.Qos(cfg.Prefetch, 0, false); err != nil {
			return fail("qos", err)
		}
		subClosed = sub.NotifyClose(make(chan *amqp091.Error, 1))
		deliveries, err = sub.Consume(q, "ferrymq-"+cfg.Name, false, false, false, false, nil)
		if err != nil {
			return fail(fmt.Sprintf("consume %q", q), err)
		}
	}
	if !stop() {
		return fail("connect", ctx.Err())
	}
	go u.watch(connClosed, pubClosed, subClosed, blocks)
	if len(keys) > 0 {
		u.log.Info("amqp upstream connected", "server", where, "exchange", cfg.Exchange, "queue", cfg.Queue, "receive", keys)
	} else {
		u.log.Info("amqp upstream connected", "server", where, "exchange", cfg.Exchange)
	}
	return deliveries, nil
}

// watch follows the connection and its channels: any close loses the link;
// connection.blocked/unblocked drive Blocked.
func (u *Upstream) watch(connClosed, pubClosed, subClosed chan *amqp091.Error, blocks chan amqp091.Blocking) {
	closed := func(what string, e *amqp091.Error, ok bool) {
		if ok && e != nil {
			u.linkDown(fmt.Errorf("%s closed by the broker: %w", what, e))
		} else {
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

// consume hands deliveries to handle until the channel ends.
func (u *Upstream) consume(deliveries <-chan amqp091.Delivery, handle func(*bridge.Inbound)) {
	for d := range deliveries {
		handle(u.inbound(d))
	}
	// The library closes deliveries when the channel closes and when the
	// broker cancels the consumer (its queue was deleted): either way the
	// link is of no more use.
	u.linkDown(errCancelled)
}

func (u *Upstream) inbound(d amqp091.Delivery) *bridge.Inbound {
	in := &bridge.Inbound{Message: message(&d)}
	var once sync.Once
	in.Ack = func() {
		once.Do(func() {
			if err := d.Ack(false); err != nil {
				u.log.Debug("amqp downlink ack failed (the broker redelivers)", "topic", in.Topic, "err", err)
			}
		})
	}
	in.Nack = func() {
		once.Do(func() {
			if err := d.Nack(false, true); err != nil {
				u.log.Debug("amqp downlink nack failed (the broker redelivers)", "topic", in.Topic, "err", err)
			}
		})
	}
	return in
}

// Publish sends m to the exchange with the mandatory flag, persistent, and
// calls confirm once the broker confirmed it (nil), returned it (an error
// wrapping bridge.ErrRejected), nacked it (ErrNacked) or the link was lost
// first (bridge.ErrLinkLost). Confirmations come in Publish order from one
// goroutine. A message AMQP cannot carry (a short string over 255 bytes)
// is confirmed with bridge.ErrRejected without being sent.
func (u *Upstream) Publish(ctx context.Context, m *bridge.Message, confirm func(error)) error {
	if !u.ready.Load() {
		if err := u.Err(); err != nil {
			return err
		}
		return errNotConnected
	}
	key, msg, perr := publishing(m)
	p := &pending{err: perr, key: key, id: m.ID, seq: m.Seq, confirm: confirm}

	u.pubMu.Lock()
	defer u.pubMu.Unlock()
	if perr == nil {
		select {
		case <-u.lost:
			return u.Err()
		default:
		}
		dc, err := u.pub.PublishWithDeferredConfirmWithContext(ctx, u.cfg.Exchange, key, true, false, msg)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			if errors.Is(err, amqp091.ErrClosed) || u.pub.IsClosed() {
				return fmt.Errorf("%w: publish: %v", bridge.ErrLinkLost, err)
			}
			return fmt.Errorf("amqp: publish: %w", err)
		}
		p.dc = dc
	}
	u.mu.Lock()
	if u.down {
		// The link was lost while we were sending: the confirm loop has
		// already failed the pending publishes, so this one is not
		// queued behind them; it may or may not have reached the broker.
		err := u.err
		u.mu.Unlock()
		return err
	}
	u.pending = append(u.pending, p)
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
	return nil
}

// confirmLoop delivers confirmations in publish order. A basic.return of a
// message reaches our returns channel before the library processes the
// basic.ack of the same message (both come from the connection's reader
// goroutine, in that order), and returns come in publish order: so when
// the head's confirmation is done, its return, if any, is at the head of
// the returns seen so far.
func (u *Upstream) confirmLoop() {
	returns := u.returns
	var returned []amqp091.Return
	drain := func() {
		for returns != nil {
			select {
			case r, ok := <-returns:
				if !ok {
					returns = nil
					return
				}
				returned = append(returned, r)
			default:
				return
			}
		}
	}
	lost := u.lost
	for {
		u.mu.Lock()
		var p *pending
		if len(u.pending) > 0 {
			p = u.pending[0]
		}
		down := u.down
		u.mu.Unlock()

		if p == nil {
			if down {
				break
			}
			select {
			case <-u.wake:
			case r, ok := <-returns:
				if ok {
					returned = append(returned, r)
				} else {
					returns = nil
				}
			case <-lost:
				lost = nil
			}
			continue
		}
		if p.dc != nil && !down {
			select {
			case <-p.dc.Done():
			case r, ok := <-returns:
				if ok {
					returned = append(returned, r)
				} else {
					returns = nil
				}
				continue
			case <-lost:
				lost = nil
				continue
			}
		}

		err := p.err
		if p.dc != nil {
			drain()
			wasReturned := false
			if len(returned) > 0 && returnMatches(&returned[0], p.key, p.id, p.seq) {
				r := returned[0]
				returned[0] = amqp091.Return{}
				returned = returned[1:]
				wasReturned = true
				err = fmt.Errorf("%w: basic.return %d %s (exchange %q, routing key %q)",
					bridge.ErrRejected, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
			}
			if !wasReturned {
				switch {
				case p.dc.Acked():
					err = nil
				case down:
					err = u.Err()
				default:
					// Done and nacked while the channel was still open:
					// unless it was closing (the library nacks what is
					// pending when a channel closes).
					if u.pub.IsClosed() {
						// The watcher reports the broker's reason.
						select {
						case <-u.lost:
						case <-time.After(closeTimeout):
							u.linkDown(errors.New("publishing channel closed"))
						}
						err = u.Err()
					} else {
						err = ErrNacked
					}
				}
			}
		}
		u.mu.Lock()
		u.pending[0] = nil
		u.pending = u.pending[1:]
		if len(u.pending) == 0 {
			u.pending = nil
		}
		u.mu.Unlock()
		p.confirm(err)
	}
	close(u.done)
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
		u.err = fmt.Errorf("%w: %v", bridge.ErrLinkLost, cause)
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

func (u *Upstream) closeConn() {
	u.mu.Lock()
	conn := u.conn
	u.mu.Unlock()
	if conn == nil {
		// Not dialled yet: Connect sees down once it has a connection,
		// and fails, which closes it.
		return
	}
	u.closeOnce.Do(func() {
		// Bounded: on a half-open link the close-ok never comes (the
		// deadline also frees a publish stuck writing to the socket).
		err := conn.CloseDeadline(time.Now().Add(closeTimeout))
		if err != nil && !errors.Is(err, amqp091.ErrClosed) {
			u.closeErr = err
		}
	})
}

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
// the broker's close-ok) and pending confirmations get bridge.ErrLinkLost,
// from the confirm goroutine: Close does not wait for those calls (wait on
// Done for that). Downlink messages not yet acknowledged are redelivered by
// the broker. Close may be called at any time, also during Connect (which
// then fails), and more than once.
func (u *Upstream) Close() error {
	if u.started.CompareAndSwap(false, true) {
		// Never connected: Connect will refuse.
		u.mu.Lock()
		u.down = true
		u.err = fmt.Errorf("%w: %v", bridge.ErrLinkLost, errClosed)
		close(u.lost)
		u.mu.Unlock()
		close(u.done)
		return nil
	}
	u.linkDown(errClosed)
	u.closeConn()
	return u.closeErr
}
