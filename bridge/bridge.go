package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// Log is the durable store of the outbox logs (persist.Store implements
// it): the bridge commits its own changes (deleting confirmed entries,
// dead letters) and reads the log back in order.
type Log interface {
	Commit(b *session.Batch, done func(error))
	ReadOutbox(name string, from uint64, max int, fn func(seq uint64, stamp int64, m *session.Message) bool) error
	OutboxBounds(name string) (first, next uint64, n int, err error)
}

// Options are a bridge's dependencies.
type Options struct {
	// Log holds the outbox. Required.
	Log Log
	// Dial returns a new, unconnected Upstream for each connection
	// attempt (an amqp or mqtt adapter, or a fake in tests). Required.
	Dial func() Upstream
	// Inject publishes a message on the local broker and calls done once
	// it is durable (broker.Server.Inject). Required for receive rules
	// and for the $SYS statistics.
	Inject func(m *session.Message, done func(error))
	// Logger receives the bridge's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// StatsInterval overrides Config.StatsInterval when not zero;
	// negative: the statistics are never published (tests).
	StatsInterval time.Duration
}

// Bridge is one configured bridge: the outlet the broker offers messages
// to (it implements broker.Outlet), the forwarder that drains the outbox
// to the upstream and the downlink that publishes upstream messages
// locally.
//
// Goroutines, started by Start and stopped by Stop: the link loop (connect,
// forward, reconnect with backoff) and the statistics publisher.
type Bridge struct {
	cfg    Config
	opts   Options
	log    *slog.Logger
	origin string // Message.Origin of what the downlink publishes

	fwd    []*Rule
	recv   []*Rule
	fwdQoS []byte
	fwdQ0  []bool
	recvQS []byte

	ob     *outbox
	first  uint64 // oldest outbox entry at New
	live   chan *Message
	kick   chan struct{} // the backlog went over its bound
	up     atomic.Bool   // connected and forwarding
	oldest atomic.Int64  // stamp of the oldest entry not done (0: unknown)
	stats  Stats
	inject injecting // downlink messages handed to Inject, not yet answered

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// DeadLetterLog returns the name of the log that holds a bridge's dead
// letters (messages the upstream rejected for good). Bridge names never
// contain '!' or '/', so it cannot be another bridge's outbox.
func DeadLetterLog(name string) string { return "!dead/" + name }

// Origin returns the Message.Origin a bridge gives what it publishes
// locally: a bridge never forwards those back up. It starts with U+0000,
// which no client id may contain [MQTT-1.5.4-2].
func Origin(name string) string { return "\x00bridge/" + name }

// New builds a bridge from its configuration (defaults applied, then
// validated) and reads its outbox back: the backlog left by an earlier
// run is forwarded first. Call it before the broker starts accepting
// publishes, and Start once the broker runs.
func New(cfg Config, opts Options) (*Bridge, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate("bridge " + cfg.Name); err != nil {
		return nil, err
	}
	if opts.Log == nil || opts.Dial == nil {
		return nil, errors.New("bridge: Options.Log and Options.Dial are required")
	}
	if opts.Inject == nil && len(cfg.Receive) > 0 {
		return nil, errors.New("bridge: receive rules need Options.Inject")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.StatsInterval == 0 {
		opts.StatsInterval = cfg.StatsInterval
	}
	b := &Bridge{
		cfg: cfg, opts: opts, origin: Origin(cfg.Name),
		log:  opts.Logger.With("bridge", cfg.Name),
		live: make(chan *Message, 1024),
		kick: make(chan struct{}, 1),
	}
	for _, r := range cfg.Forward {
		rule, err := Compile(r.From, r.To)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
		}
		b.fwd, b.fwdQoS, b.fwdQ0 = append(b.fwd, rule), append(b.fwdQoS, *r.QoS), append(b.fwdQ0, r.QueueQoS0)
	}
	for _, r := range cfg.Receive {
		rule, err := Compile(r.From, r.To)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
		}
		b.recv, b.recvQS = append(b.recv, rule), append(b.recvQS, *r.QoS)
	}
	if err := b.restore(); err != nil {
		return nil, err
	}
	return b, nil
}

// restore counts the outbox left by an earlier run.
func (b *Bridge) restore() error {
	first, next, n, err := b.opts.Log.OutboxBounds(b.cfg.Name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", b.cfg.Name, err)
	}
	if n == 0 {
		first, next = 1, 1
	}
	b.first = first
	b.ob = newOutbox(next)
	if n > 0 {
		var bytes int64
		err := b.opts.Log.ReadOutbox(b.cfg.Name, first, 0, func(_ uint64, stamp int64, m *session.Message) bool {
			if bytes == 0 {
				b.oldest.Store(stamp)
			}
			bytes += msgSize(m)
			return true
		})
		if err != nil {
			return fmt.Errorf("bridge %s: %w", b.cfg.Name, err)
		}
		b.ob.count, b.ob.bytes = int64(n), bytes
		b.log.Info("bridge backlog found", "messages", n, "bytes", bytes)
	}
	return nil
}

// Name returns the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

// Start runs the link loop and the statistics publisher until Stop.
func (b *Bridge) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	f := newForwarder(b, b.first)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f.loop(ctx)
	}()
	if b.opts.StatsInterval > 0 && b.opts.Inject != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.publishStats(ctx)
		}()
	}
}

// Stop ends the link (unconfirmed messages stay in the outbox), stores
// which entries were confirmed, and returns once every goroutine of the
// bridge has ended. Call it before the store is closed.
func (b *Bridge) Stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	b.wg.Wait()
}

// Offer implements broker.Outlet: a message that matches a forward rule
// (and was not published by this bridge's own downlink) goes to the
// outbox with its upstream topic and QoS; a QoS 0 one, unless the rule
// queues QoS 0, is forwarded at once while the link is up and counted as
// dropped otherwise. When the backlog is full, when_full decides.
func (b *Bridge) Offer(m *session.Message, durable bool) (session.Change, bool, error) {
	if m.Origin == b.origin {
		return session.Change{}, false, nil
	}
	i, topic := FirstMatch(b.fwd, m.Topic)
	if i < 0 {
		return session.Change{}, false, nil
	}
	qos := b.fwdQoS[i]
	if !durable || (m.QoS == 0 && !b.fwdQ0[i]) {
		b.forwardLive(m, topic, qos)
		return session.Change{}, false, nil
	}
	fm := &session.Message{Topic: topic, Payload: m.Payload, QoS: qos, Retain: m.Retain, Props: m.Props, Expiry: m.Expiry}
	var limit, max int64
	switch b.cfg.Backlog.WhenFull {
	case DropOldest:
		max = b.cfg.Backlog.MaxBytes
	default:
		limit = b.cfg.Backlog.MaxBytes
	}
	stamp := b.opts.Now().UnixNano()
	seq, ok, over := b.ob.add(fm, stamp, limit, max)
	if !ok {
		if b.cfg.Backlog.WhenFull == Refuse {
			b.stats.RefusedFull.Add(1)
			return session.Change{}, false, fmt.Errorf("bridge %s: backlog full (backlog.max_bytes %d): %w", b.cfg.Name, limit, session.ErrFull)
		}
		b.stats.DroppedFull.Add(1)
		return session.Change{}, false, nil
	}
	if over {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return session.Change{Kind: session.PutOutbox, Bridge: b.cfg.Name, Seq: seq, Stamp: stamp,
		D: session.Delivery{Msg: fm, QoS: qos}}, true, nil
}

// Committed implements broker.Outlet.
func (b *Bridge) Committed(seq uint64, err error) {
	if err != nil {
		b.stats.StoreFailed.Add(1)
	}
	b.ob.resolve(seq, err)
}

// forwardLive hands a message that is not queued to the link, if it is
// up and keeping up.
func (b *Bridge) forwardLive(m *session.Message, topic string, qos byte) {
	if !b.up.Load() {
		b.stats.DroppedOffline.Add(1)
		return
	}
	bm := toMessage(m, b.opts.Now())
	bm.Topic, bm.QoS = topic, qos
	select {
	case b.live <- bm:
	default:
		b.stats.DroppedOffline.Add(1)
	}
}

// messageID is the stable id of outbox entry seq: the same on every
// resend, unique across gateways (client id or bridge name) and across a
// store that was reset (the stamp).
func (b *Bridge) messageID(seq uint64, stamp int64) string {
	return b.idPrefix() + strconv.FormatInt(stamp, 36) + "-" + strconv.FormatUint(seq, 10)
}

// idPrefix starts every id this bridge gives: "<client_id or name>-".
func (b *Bridge) idPrefix() string {
	if b.cfg.ClientID != "" {
		return b.cfg.ClientID + "-"
	}
	return b.cfg.Name + "-"
}

// toMessage converts a local message for the upstream.
func toMessage(m *session.Message, now time.Time) *Message {
	p := &m.Props
	bm := &Message{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData, ContentType: p.ContentType,
	}
	if !m.Expiry.IsZero() {
		bm.Expiry = max(m.Expiry.Sub(now), time.Millisecond)
	}
	if len(p.User) > 0 {
		bm.User = make([]UserProperty, len(p.User))
		for i, u := range p.User {
			bm.User[i] = UserProperty{Key: u.Key, Value: u.Value}
		}
	}
	return bm
}
