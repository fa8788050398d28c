// Package mqtt is the bridge's MQTT 5 upstream: a bridge.Upstream over the
// paho package of github.com/eclipse/paho.golang. It publishes with QoS 0,
// 1 or 2, many messages in flight at once (up to the upstream's Receive
// Maximum), reports a PUBACK/PUBREC reason code >= 0x80 as a permanent
// rejection, and receives the downlink from a persistent session (fixed
// client id, Clean Start false, a Session Expiry Interval) with
// acknowledgements sent only once the bridge has stored a message.
//
// Why paho.golang: the bridge needs MQTT 5. The message id and sequence
// travel as user properties ("ferrymq-id", "ferrymq-seq"), a refusal of one
// message comes as a reason code in its PUBACK or PUBREC, and request/reply
// needs Response Topic and Correlation Data; paho.mqtt.golang speaks MQTT
// 3.1.1 only and can carry none of these. autopaho is not used either: it
// reconnects by itself and queues messages of its own, while the bridge
// owns the reconnect loop and its outbox is the only queue.
//
// How paho is used: paho's Client does the CONNECT handshake, reads and
// writes packets and sends the keepalive pings, but the session state is
// ours (session.go, a paho session.SessionManager). Each Upstream starts
// with an empty one and never resends anything itself: a publish left
// unconfirmed by a lost link is failed with bridge.ErrLinkLost and resent
// by the bridge from its outbox. That state gives packet identifiers,
// enforces the upstream's Receive Maximum, matches each PUBACK/PUBCOMP to
// its publish, and holds back downlink acknowledgements until
// bridge.Inbound.Ack (paho's Publish blocks until the acknowledgement, and
// its manual acknowledgements go out on a 50 ms ticker: neither suits a
// forwarder that keeps hundreds of messages in flight).
//
// Downlink: a QoS 1/2 message is acknowledged (PUBACK; PUBREC, then
// PUBCOMP on the upstream's PUBREL, for QoS 2) only when the bridge calls
// Inbound.Ack, after its local commit, and in order of receipt as MQTT
// requires. MQTT has no way to refuse a message and keep it upstream (any
// PUBACK, even with a failure code, makes the upstream forget it), so
// Inbound.Nack drops the link without acknowledging: the upstream
// redelivers the message, and those after it, on the next connection.
//
// Mapping: bridge.Message.ID and Seq are the user properties "ferrymq-id"
// and "ferrymq-seq" (decimal), followed by Message.User; ResponseTopic,
// CorrelationData and ContentType are the MQTT 5 properties of the same
// name; Expiry is the Message Expiry Interval (rounded up to whole
// seconds). Received messages are mapped back the same way.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/bridge/coalesce"
	"github.com/ferrymq/ferrymq/broker/packet"
)

// Defaults for the zero values of Config.
const (
	DefaultKeepAlive   = 30 * time.Second
	DefaultDialTimeout = 15 * time.Second
	// DefaultSessionExpiry (seconds, 7 days) is how long the upstream
	// keeps our session, and the downlink messages queued in it, while
	// we are offline.
	DefaultSessionExpiry uint32 = 7 * 24 * 3600
	// DefaultMaxInflight bounds the QoS 1/2 publishes unconfirmed at once
	// when the upstream's Receive Maximum allows more.
	DefaultMaxInflight = 1024
	// DefaultDownlinkInflight is our Receive Maximum: how many downlink
	// QoS 1/2 messages the upstream may send before we acknowledge.
	DefaultDownlinkInflight uint16 = 64
	// closeTimeout bounds writing the DISCONNECT in Close (the link may
	// be half-open).
	closeTimeout = 2 * time.Second
)

// Subscription is one downlink topic filter on the upstream.
type Subscription struct {
	// Filter is an MQTT topic filter ("cmd/+/set", "cfg/#").
	Filter string
	// QoS is the subscription's maximum QoS (0, 1 or 2).
	QoS byte
}

// Config configures one MQTT upstream link.
type Config struct {
	// Name is the bridge's name, for logs.
	Name string
	// URL is mqtt://user:pass@host:port or mqtts://... (ports 1883 and
	// 8883 by default). It has no path.
	URL string
	// TLS configures mqtts:// (nil: the system roots, the server name
	// from the URL). It is cloned, never modified.
	TLS *tls.Config
	// ClientID is the fixed client id: the upstream keeps the session
	// (subscriptions, queued downlink messages) under it. Required.
	ClientID string
	// Receive are the downlink subscriptions, made at every connect (the
	// upstream may have lost the session). Nothing is unsubscribed: a
	// filter dropped from Receive stays in the upstream session until it
	// expires, and what the upstream sends for it is still delivered.
	Receive []Subscription
	// KeepAlive is the MQTT keepalive (default 30 s, whole seconds); the
	// link is dropped when a PINGRESP does not come within it.
	KeepAlive time.Duration
	// DialTimeout bounds the TCP connect, the TLS handshake, CONNECT,
	// SUBSCRIBE and their answers (default 15 s).
	DialTimeout time.Duration
	// SessionExpiry is the Session Expiry Interval in seconds (default 7
	// days; math.MaxUint32: never): downlink messages wait upstream that
	// long while we are offline.
	SessionExpiry uint32
	// MaxInflight bounds the QoS 1/2 publishes unconfirmed at once
	// (default 1024) below the upstream's Receive Maximum; Publish waits
	// when they are all in flight.
	MaxInflight int
	// DownlinkInflight is the Receive Maximum we announce: how many
	// downlink QoS 1/2 messages may wait for Inbound.Ack (default 64).
	DownlinkInflight uint16
}

func (c *Config) fill() {
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxInflight > math.MaxUint16 {
		c.MaxInflight = math.MaxUint16
	}
	if c.DownlinkInflight == 0 {
		c.DownlinkInflight = DefaultDownlinkInflight
	}
}

var (
	errNotConnected = errors.New("mqtt: not connected")
	errClosed       = errors.New("mqtt: link closed")
	errNacked       = errors.New("mqtt: a downlink message was not stored locally: dropping the link so that the upstream redelivers it")
)

// Upstream is one MQTT connection. It implements bridge.Upstream; build a
// new one (New) for every connection attempt.
type Upstream struct {
	cfg Config
	log *slog.Logger

	started atomic.Bool
	ready   atomic.Bool // Connect succeeded: Publish may be used

	// Set by Connect before ready, read-only afterwards.
	client   *paho.Client
	limits   limits
	where    string // host:port, for errors and logs
	handle   func(*bridge.Inbound)
	delivers chan *bridge.Inbound // received messages, to the deliver goroutine

	// pubMu serializes Publish (messages go out in Publish order); cur is
	// the publish paho is adding to the session (see AddToSession).
	pubMu sync.Mutex
	cur   *pending
	slots chan struct{} // a token per unconfirmed QoS 1/2 publish

	mu       sync.Mutex
	w        *wire               // the connection, once dialled
	down     bool                // link lost: nothing new is accepted
	err      error               // why (set with down)
	freeIDs  []uint16            // packet identifiers not in use, oldest freed first
	out      map[uint16]*pending // QoS 1/2 publishes awaiting PUBACK/PUBREC/PUBCOMP
	queue    []*pending          // publishes not yet confirmed to the caller, in Publish order
	requests map[uint16]chan<- packets.ControlPacket
	sweep    map[uint16]struct{} // PUBRELs of the connect sweep awaiting PUBCOMP
	swept    chan struct{}       // closed when sweep is empty

	ackMu  sync.Mutex
	inAcks []*inRecord // downlink QoS 1/2 messages not acknowledged yet, in order of receipt

	wake chan struct{} // wakes the confirm loop
	lost chan struct{} // closed when down is set
	done chan struct{} // closed after lost, once every pending confirm was called
}

// limits are what the upstream announced in its CONNACK.
type limits struct {
	window         int    // QoS 1/2 publishes allowed unconfirmed at once
	maxQoS         byte   // Maximum QoS
	retain         bool   // Retain Available
	maxPacket      uint32 // Maximum Packet Size (0: no limit)
	sessionPresent bool
	sessionExpiry  uint32 // as granted: the CONNACK's, or ours
}

// New returns an unconnected upstream; Connect dials it.
func New(cfg Config, log *slog.Logger) *Upstream {
	cfg.fill()
	if log == nil {
		log = slog.Default()
	}
	return &Upstream{
		cfg:  cfg,
		log:  log.With("upstream", "mqtt", "bridge", cfg.Name),
		wake: make(chan struct{}, 1),
		lost: make(chan struct{}),
		done: make(chan struct{}),
	}
}

var _ bridge.Upstream = (*Upstream)(nil)

// Connect dials the upstream, sends CONNECT with the fixed client id, Clean
// Start false and the Session Expiry Interval (user name and password from
// the URL), subscribes to the Receive filters (every time: it is idempotent
// and covers a session the upstream lost) and, when the upstream still had
// our session, releases the QoS 2 packet identifiers an earlier connection
// may have left half done (see sweepQoS2). Received messages go to handle
// one at a time, in order, from one goroutine; a nil handle drops them
// unacknowledged. Connect may be called once; when it fails, Done is
// closed and the Upstream is spent.
func (u *Upstream) Connect(ctx context.Context, handle func(*bridge.Inbound)) error {
	if !u.started.CompareAndSwap(false, true) {
		return errors.New("mqtt: Connect called twice, or after Close")
	}
	u.handle = handle
	if err := u.connect(ctx); err != nil {
		u.fail(err)
		return err
	}
	u.ready.Store(true)
	go u.confirmLoop()
	go u.deliver()
	return nil
}

// connect does the work of Connect; any error leaves cleaning up to fail.
func (u *Upstream) connect(ctx context.Context) error {
	cfg := &u.cfg
	ep, err := cfg.endpoint()
	if err != nil {
		return err
	}
	u.where = ep.Address()
	u.delivers = make(chan *bridge.Inbound, cfg.DownlinkInflight)

	deadline := time.Now().Add(cfg.DialTimeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	failed := func(what string, err error) error {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		} else if dctx.Err() != nil && !errors.Is(err, dctx.Err()) {
			err = fmt.Errorf("timed out after %v (%v)", cfg.DialTimeout, err)
		}
		return fmt.Errorf("mqtt: %s %s: %w", what, u.where, err)
	}

	w, err := u.dial(dctx, ep)
	if err != nil {
		return failed("connect to", err)
	}
	// Cancelling ctx (or the deadline) closes the connection under
	// whatever waits on it.
	stop := context.AfterFunc(dctx, func() { w.Close() })
	defer stop()

	u.client = paho.NewClient(paho.ClientConfig{
		ClientID:           cfg.ClientID,
		Conn:               w,
		Session:            (*session)(u),
		PingHandler:        &pinger{DefaultPinger: paho.NewDefaultPinger(), u: u},
		OnPublishReceived:  []func(paho.PublishReceived) (bool, error){u.received},
		PacketTimeout:      cfg.DialTimeout,
		OnServerDisconnect: func(*paho.Disconnect) {}, // see session.ConnectionLost
		OnClientError:      func(err error) { u.log.Debug("mqtt client stopped", "err", err) },
	})
	ca, err := u.client.Connect(dctx, u.connectPacket(ep))
	if err != nil {
		u.client = nil // it stopped by itself
		if ca != nil && ca.ReasonCode >= 0x80 {
			rs := ""
			if ca.Properties != nil {
				rs = ca.Properties.ReasonString
			}
			return fmt.Errorf("mqtt: connect to %s: CONNACK reason %s", u.where, reasonText(ca.ReasonCode, rs))
		}
		return failed("connect to", err)
	}
	if err := u.subscribe(dctx); err != nil {
		return err
	}
	if u.limits.sessionPresent {
		if err := u.sweepQoS2(dctx); err != nil {
			return failed("release earlier QoS 2 packet identifiers on", err)
		}
	}
	if !stop() {
		return failed("connect to", dctx.Err())
	}
	u.log.Info("mqtt upstream connected", "server", u.where, "client_id", cfg.ClientID,
		"session_present", u.limits.sessionPresent, "session_expiry_s", u.limits.sessionExpiry,
		"receive_maximum", u.limits.window,
		"receive", len(cfg.Receive))
	return nil
}

// endpoint checks the configuration and parses the URL.
func (c *Config) endpoint() (*bridge.Endpoint, error) {
	ep, err := bridge.UpstreamURL(c.URL).Parse()
	if err != nil {
		return nil, fmt.Errorf("mqtt: upstream URL: %w", err)
	}
	if ep.AMQP() {
		return nil, fmt.Errorf("mqtt: upstream URL %s: not mqtt:// or mqtts://", ep)
	}
	if c.ClientID == "" {
		return nil, errors.New("mqtt: a fixed client id is required (the upstream keeps the session under it)")
	}
	for _, s := range c.Receive {
		if s.Filter == "" || s.QoS > 2 {
			return nil, fmt.Errorf("mqtt: receive filter %q with QoS %d: not a valid subscription", s.Filter, s.QoS)
		}
	}
	return ep, nil
}

// dial opens the TCP (and TLS) connection, registered in u.w so that Close
// can interrupt what follows.
func (u *Upstream) dial(ctx context.Context, ep *bridge.Endpoint) (*wire, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", u.where)
	if err != nil {
		return nil, err
	}
	bc := coalesce.New(raw, func(err error) { u.linkDown(fmt.Errorf("write: %w", err)) })
	var conn net.Conn = bc
	if ep.TLS() {
		tc := &tls.Config{}
		if u.cfg.TLS != nil {
			tc = u.cfg.TLS.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = ep.Host
		}
		c := tls.Client(conn, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = c
	}
	w := newWire(conn, bc, u)
	u.mu.Lock()
	down := u.down
	if !down {
		u.w = w
	}
	u.mu.Unlock()
	if down { // Close was called meanwhile
		w.Close()
		return nil, errClosed
	}
	return w, nil
}

func (u *Upstream) connectPacket(ep *bridge.Endpoint) *paho.Connect {
	cfg := &u.cfg
	keepAlive := (cfg.KeepAlive + time.Second - 1) / time.Second
	if keepAlive > math.MaxUint16 {
		keepAlive = math.MaxUint16
	}
	expiry, recvMax := cfg.SessionExpiry, cfg.DownlinkInflight
	cp := &paho.Connect{
		ClientID:   cfg.ClientID,
		KeepAlive:  uint16(keepAlive),
		CleanStart: false,
		Properties: &paho.ConnectProperties{
			SessionExpiryInterval: &expiry,
			ReceiveMaximum:        &recvMax,
			RequestProblemInfo:    true, // reason strings in PUBACK & co
		},
	}
	if ep.Username != "" {
		cp.Username, cp.UsernameFlag = ep.Username, true
	}
	if ep.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(ep.Password), true
	}
	return cp
}

// subscribe subscribes to the Receive filters in one SUBSCRIBE: No Local
// (what we publish on this connection does not come back to us: no loop
// in a bidirectional bridge), Retain As Published (Inbound.Retain is the
// publisher's flag) and Retain Handling 1 (retained messages are sent for
// a new subscription only, not at every reconnect).
func (u *Upstream) subscribe(ctx context.Context) error {
	if len(u.cfg.Receive) == 0 {
		return nil
	}
	s := &paho.Subscribe{Subscriptions: make([]paho.SubscribeOptions, len(u.cfg.Receive))}
	for i, r := range u.cfg.Receive {
		s.Subscriptions[i] = paho.SubscribeOptions{
			Topic: r.Filter, QoS: r.QoS, NoLocal: true, RetainAsPublished: true, RetainHandling: 1,
		}
	}
	sa, err := u.client.Subscribe(ctx, s)
	if sa != nil {
		rs := ""
		if sa.Properties != nil {
			rs = sa.Properties.ReasonString
		}
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(u.cfg.Receive) {
				return fmt.Errorf("mqtt: subscribe to %q on %s: SUBACK reason %s", u.cfg.Receive[i].Filter, u.where, reasonText(code, rs))
			}
			if i < len(u.cfg.Receive) && code < u.cfg.Receive[i].QoS {
				u.log.Warn("mqtt upstream granted a lower QoS", "filter", u.cfg.Receive[i].Filter, "qos", code)
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("mqtt: subscribe on %s: %w", u.where, err)
	}
	return nil
}

// reasonText is "0x87 not authorized", with the upstream's reason string
// when it sent one.
func reasonText(code byte, reasonString string) string {
	s := fmt.Sprintf("0x%02X %s", code, packet.ReasonCode(code).Error())
	if reasonString != "" {
		s += ": " + reasonString
	}
	return s
}

// markDown records that the link is lost (the first cause wins), fails the
// requests paho waits on and wakes the confirm loop and Publish. It
// reports whether this call took the link down.
func (u *Upstream) markDown(cause error) bool {
	return u.setDown(cause, cause != errClosed)
}

func (u *Upstream) setDown(cause error, logIt bool) bool {
	u.mu.Lock()
	if u.down {
		u.mu.Unlock()
		return false
	}
	u.down = true
	if errors.Is(cause, bridge.ErrLinkLost) {
		u.err = cause
	} else {
		u.err = fmt.Errorf("%w: %v", bridge.ErrLinkLost, cause)
	}
	requests := u.requests
	u.requests = nil
	u.mu.Unlock()
	for _, r := range requests {
		select { // a zero packet tells paho the request was dropped
		case r <- packets.ControlPacket{}:
		default:
		}
	}
	if logIt && u.ready.Load() { // a failed Connect is the bridge's to log
		u.log.Warn("mqtt upstream link lost", "server", u.where, "err", cause)
	}
	close(u.lost)
	u.signal()
	return true
}

// linkDown takes the link down and closes the connection: paho's reader
// fails and the client stops.
func (u *Upstream) linkDown(cause error) {
	u.markDown(cause)
	u.mu.Lock()
	w := u.w
	u.mu.Unlock()
	if w != nil {
		w.Close()
	}
}

// fail ends an Upstream whose Connect failed: Err is then Connect's error.
func (u *Upstream) fail(err error) {
	u.setDown(err, false) // the bridge logs Connect's error
	u.mu.Lock()
	u.err = err
	w := u.w
	u.mu.Unlock()
	if w != nil {
		w.Close()
	}
	if u.client != nil {
		<-u.client.Done()
	}
	close(u.done)
}

func (u *Upstream) signal() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Blocked is always false: MQTT has no flow control beyond the Receive
// Maximum, which Publish honours by waiting.
func (u *Upstream) Blocked() bool { return false }

// ReceiveMaximum is how many QoS 1/2 publishes may be unconfirmed at once
// on this link: the upstream's Receive Maximum from its CONNACK (65535 when
// it sent none), at most Config.MaxInflight. Publish waits beyond it. It
// is 0 before Connect succeeded.
func (u *Upstream) ReceiveMaximum() int {
	if !u.ready.Load() {
		return 0
	}
	return u.limits.window
}

// Done is closed once the link is lost (a read or write error, a DISCONNECT
// from the upstream, a keepalive timeout, a Nack, Close, or a failed
// Connect), every pending confirmation has been called and paho's
// goroutines have ended: no confirm call follows. A handle call in progress
// may still be running.
func (u *Upstream) Done() <-chan struct{} { return u.done }

// Err says why the link was lost (nil while it is up). It wraps
// bridge.ErrLinkLost, except after a failed Connect, where it is Connect's
// error.
func (u *Upstream) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// Flush writes at once what the connection buffered (bridge.Flusher): the
// packets since the last Flush go out in one write. Left alone, the buffer
// is written a millisecond after it started to fill. An error (wrapping
// bridge.ErrLinkLost) means the link is lost.
func (u *Upstream) Flush() error {
	u.mu.Lock()
	w := u.w
	u.mu.Unlock()
	if w == nil {
		return nil
	}
	if err := w.bc.Flush(); err != nil {
		u.linkDown(fmt.Errorf("write: %w", err))
		return u.Err()
	}
	return nil
}

var _ bridge.Flusher = (*Upstream)(nil)

// Close ends the link: a DISCONNECT (normal: the upstream keeps the session)
// is written when the connection is not stuck in a write, and the
// connection is closed. Pending confirmations get bridge.ErrLinkLost from
// the confirm goroutine: Close does not wait for those calls (wait on Done
// for that). Downlink messages not yet acknowledged are redelivered by the
// upstream on the next connection. Close may be called at any time, also
// during Connect (which then fails), and more than once.
func (u *Upstream) Close() error {
	if u.started.CompareAndSwap(false, true) {
		// Never connected: Connect will refuse.
		u.markDown(errClosed)
		close(u.done)
		return nil
	}
	first := u.markDown(errClosed)
	u.mu.Lock()
	w := u.w
	u.mu.Unlock()
	if w == nil {
		return nil // Connect sees down once it has a connection
	}
	if first && u.ready.Load() {
		w.disconnect(closeTimeout)
	}
	w.Close()
	return nil
}
