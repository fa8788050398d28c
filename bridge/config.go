package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/topics"
)

// Config is one bridge (an item of the "bridges" list of the config
// file). Like broker.Config it is plain data: cmd/ferrymq fills it from
// YAML, tests build it in code. Zero values mean "use the default" (see
// each field); ApplyDefaults fills them in, Validate checks the result.
type Config struct {
	// Name identifies the bridge in store keys (v1/out/<name>/...), in
	// $SYS/broker/bridge/<name>/... and in logs: 1 to 64 letters, digits,
	// '-' or '_', starting with a letter or digit, unique. Required.
	Name string `yaml:"name"`
	// Upstream is the broker to bridge to: amqp://, amqps:// (RabbitMQ or
	// another AMQP 0-9-1 broker; the path is the virtual host), mqtt:// or
	// mqtts:// (MQTT). User and password go in the URL
	// (amqp://user:pass@host/), percent-encoded; they are never printed.
	// The port defaults to the scheme's (5672, 5671, 1883, 8883).
	// Required.
	Upstream UpstreamURL `yaml:"upstream"`
	// ClientID is the fixed MQTT client id the bridge connects with (with
	// a persistent session, so downlink messages wait upstream while the
	// gateway is offline). Required for MQTT upstreams. For AMQP it names
	// the durable downlink queue (see DownlinkQueue) and is required when
	// there are receive rules: every gateway needs its own queue.
	ClientID string `yaml:"client_id"`
	// Exchange is the AMQP exchange forwarded messages are published to
	// and receive rules bind to; a topic exchange. Topic a/b/c is routing
	// key a.b.c (see RoutingKey). Default "amq.topic". Not used with MQTT
	// upstreams (setting it is an error).
	Exchange string `yaml:"exchange"`
	// Forward rules send local messages upstream. A message is forwarded
	// once, by the first rule that matches it.
	Forward []ForwardRule `yaml:"forward"`
	// Receive rules publish upstream messages locally. A message is
	// published once, by the first rule that maps it.
	Receive []ReceiveRule `yaml:"receive"`
	// Backlog bounds what waits in the outbox while the upstream is away.
	Backlog Backlog `yaml:"backlog"`
	// Replay paces forwarding, in particular the drain of a backlog.
	Replay Replay `yaml:"replay"`
	// Reconnect is the backoff between connection attempts.
	Reconnect Reconnect `yaml:"reconnect"`
	// ConfirmTimeout is how long a forwarded message may wait for its
	// upstream confirmation. A later confirmation means the link is
	// half-open (a frozen or unreachable peer with the socket still up):
	// the bridge drops the connection and reconnects, resending what was
	// unconfirmed. Default 30s.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// StatsInterval is how often the bridge publishes its state and
	// counters under $SYS/broker/bridge/<name>/. Default 10s.
	StatsInterval time.Duration `yaml:"stats_interval"`
}

// ForwardRule maps local topics to upstream topics.
type ForwardRule struct {
	// From is a local MQTT topic filter (not $share/...). Required.
	From string `yaml:"from"`
	// To is the upstream topic template: {topic} is the whole topic, {1},
	// {2}, ... what each wildcard of From matched (see Compile). Default
	// "{topic}" (unchanged). With an AMQP upstream the result becomes the
	// routing key (see RoutingKey).
	To string `yaml:"to"`
	// QoS is the QoS of the upstream publish (MQTT upstreams; AMQP
	// always uses publisher confirms and persistent messages): 1 or 2
	// are confirmed before the outbox entry is deleted, 0 is sent without
	// confirmation (at most once). 0..2, default 1.
	QoS *byte `yaml:"qos"`
	// QueueQoS0 queues QoS 0 messages in the outbox like QoS 1/2 ones.
	// By default a QoS 0 message is forwarded only while the link is up
	// and counted as dropped otherwise.
	QueueQoS0 bool `yaml:"queue_qos0"`
}

// ReceiveRule maps upstream topics to local topics.
type ReceiveRule struct {
	// From is an MQTT topic filter on the upstream: for MQTT the
	// subscription; for AMQP the binding of the downlink queue on
	// Exchange, written in MQTT syntax (see BindingKey: "cmd/+/#" binds
	// "cmd.*.#"). Required.
	From string `yaml:"from"`
	// To is the local topic template, as in ForwardRule. Default
	// "{topic}".
	To string `yaml:"to"`
	// QoS is the QoS of the upstream subscription (MQTT upstreams; AMQP
	// deliveries are always acknowledged after the local commit). Use 1
	// or 2 for commands that must survive the gateway being offline. 0..2,
	// default 1.
	QoS *byte `yaml:"qos"`
}

// Backlog bounds the outbox of one bridge.
type Backlog struct {
	// MaxBytes bounds the payload and topic bytes waiting in the outbox.
	// Default 1 GiB. (The store's own limits, storage.max_disk and
	// storage.min_free, apply as well.)
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxAge is how long a message may wait in the outbox; older ones are
	// dropped and counted. Default 168h (7 days).
	MaxAge time.Duration `yaml:"max_age"`
	// WhenFull is what happens when a new message would exceed MaxBytes:
	// "drop-oldest" (default) deletes the oldest waiting messages,
	// "drop-new" drops the new one (its publisher is still acknowledged),
	// "refuse" refuses the publish (v5: 0x97 quota exceeded; 3.1.1: the
	// client is disconnected and resends later). Every drop is counted by
	// reason.
	WhenFull string `yaml:"when_full"`
}

// Backlog policies.
const (
	DropOldest = "drop-oldest"
	DropNew    = "drop-new"
	Refuse     = "refuse"
)

// Replay paces forwarding.
type Replay struct {
	// MaxInflight is how many forwarded messages may wait for their
	// upstream confirmation at once (an MQTT upstream's Receive Maximum
	// lowers it further). It is also the most duplicates a reconnect can
	// cause. 1..65535, default 256.
	MaxInflight int `yaml:"max_inflight"`
	// MaxRate caps forwarding in messages per second. Default 0 =
	// unlimited.
	MaxRate float64 `yaml:"max_rate"`
}

// Reconnect is the exponential backoff with full jitter between
// connection attempts (see Backoff).
type Reconnect struct {
	// Min is the ceiling of the first delay. Default 1s.
	Min time.Duration `yaml:"min"`
	// Max is the largest ceiling the delays grow to. Default 2m, or Min
	// when Min is larger.
	Max time.Duration `yaml:"max"`
}

// Defaults.
const (
	DefaultExchange       = "amq.topic"
	DefaultQoS            = 1
	DefaultMaxBytes       = 1 << 30
	DefaultMaxAge         = 168 * time.Hour
	DefaultWhenFull       = DropOldest
	DefaultMaxInflight    = 256
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = 2 * time.Minute
	DefaultConfirmTimeout = 30 * time.Second
	DefaultStatsInterval  = 10 * time.Second
)

// ApplyDefaults fills every zero field of c with its documented default.
func (c *Config) ApplyDefaults() {
	if c.Exchange == "" && c.Upstream.isAMQP() {
		c.Exchange = DefaultExchange
	}
	for i := range c.Forward {
		defaultRule(&c.Forward[i].To, &c.Forward[i].QoS)
	}
	for i := range c.Receive {
		defaultRule(&c.Receive[i].To, &c.Receive[i].QoS)
	}
	setDefault(&c.Backlog.MaxBytes, DefaultMaxBytes)
	setDefault(&c.Backlog.MaxAge, DefaultMaxAge)
	setDefault(&c.Backlog.WhenFull, DefaultWhenFull)
	setDefault(&c.Replay.MaxInflight, DefaultMaxInflight)
	setDefault(&c.Reconnect.Min, DefaultReconnectMin)
	setDefault(&c.Reconnect.Max, max(DefaultReconnectMax, c.Reconnect.Min))
	setDefault(&c.ConfirmTimeout, DefaultConfirmTimeout)
	setDefault(&c.StatsInterval, DefaultStatsInterval)
}

// ApplyDefaultsAll applies the defaults to every bridge of cs.
func ApplyDefaultsAll(cs []Config) {
	for i := range cs {
		cs[i].ApplyDefaults()
	}
}

func defaultRule(to *string, qos **byte) {
	setDefault(to, Placeholder)
	if *qos == nil {
		q := byte(DefaultQoS)
		*qos = &q
	}
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// FieldError is one invalid field. Path is the YAML key path, e.g.
// "bridges[0].forward[1].to", so cmd/ferrymq can point at a file line.
// It has the shape of broker.FieldError (the bridge does not import the
// broker).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// errList collects FieldErrors under a path prefix.
type errList struct {
	prefix string
	errs   []error
}

func (l *errList) add(key, format string, args ...any) {
	path := l.prefix
	if key != "" {
		if path != "" && !strings.HasPrefix(key, "[") {
			path += "."
		}
		path += key
	}
	l.errs = append(l.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// ValidateAll validates every bridge of cs (after ApplyDefaults) with
// paths "<path>[i]..." (path is normally "bridges"), and that names are
// unique and no two MQTT bridges share a client id on the same upstream
// (they would take each other's session over, forever).
func ValidateAll(cs []Config, path string) error {
	l := &errList{prefix: path}
	names := map[string]int{}
	clients := map[string]int{}
	for i := range cs {
		c := &cs[i]
		p := fmt.Sprintf("[%d]", i)
		if err := c.Validate(l.prefix + p); err != nil {
			l.errs = append(l.errs, err)
		}
		if j, dup := names[c.Name]; dup && c.Name != "" {
			l.add(p+".name", "%q is already the name of %s[%d]", c.Name, path, j)
		} else {
			names[c.Name] = i
		}
		if ep, err := c.Upstream.Parse(); err == nil && !ep.AMQP() && c.ClientID != "" {
			// Host names are case-insensitive: MQTT://Broker and
			// mqtt://broker are one broker, one session namespace.
			k := strings.ToLower(ep.Address()) + " " + c.ClientID
			if j, dup := clients[k]; dup {
				l.add(p+".client_id", "%q is already the client id of %s[%d] on %s", c.ClientID, path, j, ep.Address())
			} else {
				clients[k] = i
			}
		}
	}
	return errors.Join(l.errs...)
}

// Validate checks one bridge after ApplyDefaults and returns every
// problem, joined with errors.Join; each is a *FieldError whose Path
// starts with path (e.g. "bridges[0]"; "" for paths relative to the
// bridge).
func (c *Config) Validate(path string) error {
	l := &errList{prefix: path}
	c.validateName(l)
	ep := c.validateUpstream(l)
	amqp := ep != nil && ep.AMQP()
	if len(c.Forward) == 0 && len(c.Receive) == 0 {
		l.add("forward", "a bridge needs at least one forward or receive rule")
	}
	for i, r := range c.Forward {
		validateRule(l, fmt.Sprintf("forward[%d]", i), r.From, r.To, r.QoS, false)
	}
	for i, r := range c.Receive {
		validateRule(l, fmt.Sprintf("receive[%d]", i), r.From, r.To, r.QoS, amqp)
	}
	c.validateBacklog(l)
	c.validateReplay(l)
	c.validateTimers(l)
	return errors.Join(l.errs...)
}

// nameRE: what a bridge name may be (safe in store keys, topic levels and
// AMQP queue names).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

func (c *Config) validateName(l *errList) {
	switch {
	case c.Name == "":
		l.add("name", "required")
	case !nameRE.MatchString(c.Name):
		l.add("name", "%q: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", c.Name)
	}
}

// validateUpstream checks upstream, client_id and exchange, and returns
// the parsed upstream (nil when invalid).
func (c *Config) validateUpstream(l *errList) *Endpoint {
	if msg := checkClientID(c.ClientID); msg != "" {
		l.add("client_id", "%s", msg)
	}
	if c.Upstream == "" {
		l.add("upstream", "required (amqp://, amqps://, mqtt:// or mqtts:// URL)")
		return nil
	}
	ep, err := c.Upstream.Parse()
	if err != nil {
		l.add("upstream", "%v", err)
		return nil
	}
	if !ep.AMQP() {
		if c.ClientID == "" {
			l.add("client_id", "required with an MQTT upstream: a fixed id keeps the upstream session (and the commands queued in it) across reconnects")
		}
		if c.Exchange != "" {
			l.add("exchange", "only used with an AMQP upstream")
		}
		return ep
	}
	switch q := c.DownlinkQueue(); {
	case len(c.Receive) == 0:
		// No downlink queue: the client id is not used.
	case c.ClientID == "":
		l.add("client_id", "required with receive rules on an AMQP upstream: it names this gateway's durable queue (%s)", q)
	case len(q) > MaxKeyLength:
		l.add("client_id", "too long: the downlink queue name %q would exceed %d bytes", q, MaxKeyLength)
	}
	if msg := checkAMQPName(c.Exchange); msg != "" {
		l.add("exchange", "%s", msg)
	}
	return ep
}

// checkClientID returns what is wrong with a client id, or "".
func checkClientID(id string) string {
	switch {
	case len(id) > topics.MaxLength:
		return "longer than 65535 bytes"
	case !utf8.ValidString(id):
		return "not valid UTF-8"
	case strings.ContainsFunc(id, isControl):
		return fmt.Sprintf("%q contains a control character", id)
	}
	return ""
}

// checkAMQPName checks an exchange name: a short string, printable.
func checkAMQPName(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > MaxKeyLength:
		return fmt.Sprintf("longer than %d bytes", MaxKeyLength)
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	case strings.ContainsFunc(name, isControl):
		return fmt.Sprintf("%q contains a control character", name)
	}
	return ""
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validateRule checks one forward or receive rule under key.
func validateRule(l *errList, key, from, to string, qos *byte, amqp bool) {
	levels, err := compileFilter(from)
	switch {
	case from == "":
		l.add(key+".from", "required")
	case err != nil:
		l.add(key+".from", "%q is not a valid topic filter: %v", from, err)
	case amqp:
		if _, err := BindingKey(from); err != nil {
			l.add(key+".from", "%q as an AMQP binding key: %v", from, err)
		}
	}
	wild, hashRef := -1, 0 // unknown when from is invalid
	if err == nil {
		wild = 0
		for _, lv := range levels {
			if isWildcard(lv) {
				wild++
			}
		}
		if levels[len(levels)-1] == "#" {
			hashRef = wild
		}
	}
	if _, err := compileTemplate(orIdentity(to), wild, hashRef); err != nil {
		l.add(key+".to", "%q: %v", to, err)
	}
	if qos != nil && *qos > 2 {
		l.add(key+".qos", "%d is not 0, 1 or 2", *qos)
	}
}

func orIdentity(to string) string {
	if to == "" {
		return Placeholder
	}
	return to
}

func (c *Config) validateBacklog(l *errList) {
	b := &c.Backlog
	if b.MaxBytes < 0 {
		l.add("backlog.max_bytes", "must not be negative")
	}
	if b.MaxAge < 0 {
		l.add("backlog.max_age", "must not be negative")
	}
	switch b.WhenFull {
	case DropOldest, DropNew, Refuse:
	default:
		l.add("backlog.when_full", "%q is not one of drop-oldest, drop-new, refuse", b.WhenFull)
	}
}

func (c *Config) validateReplay(l *errList) {
	r := &c.Replay
	if r.MaxInflight < 1 || r.MaxInflight > 65535 {
		l.add("replay.max_inflight", "%d is outside 1..65535", r.MaxInflight)
	}
	if math.IsNaN(r.MaxRate) || math.IsInf(r.MaxRate, 0) || r.MaxRate < 0 {
		l.add("replay.max_rate", "%v: use a non-negative number of messages per second (0 = unlimited)", r.MaxRate)
	}
}

func (c *Config) validateTimers(l *errList) {
	rc := &c.Reconnect
	if rc.Min <= 0 {
		l.add("reconnect.min", "must be positive")
	}
	if rc.Max <= 0 {
		l.add("reconnect.max", "must be positive")
	} else if rc.Min > rc.Max {
		l.add("reconnect.max", "%v is less than reconnect.min (%v)", rc.Max, rc.Min)
	}
	if c.ConfirmTimeout <= 0 {
		l.add("confirm_timeout", "must be positive")
	}
	if c.StatsInterval < 100*time.Millisecond {
		l.add("stats_interval", "%v: use at least 100ms", c.StatsInterval)
	}
}

// DownlinkQueue is the name of the durable AMQP queue the receive rules
// bind: "ferrymq.<client_id>.<name>", unique per gateway and bridge.
func (c *Config) DownlinkQueue() string {
	return "ferrymq." + c.ClientID + "." + c.Name
}

// UpstreamURL is an upstream broker URL. It is a string in the config;
// printing or encoding it (String, every fmt verb, slog, JSON and YAML
// encoding through MarshalText) hides the password. The config is read,
// never written back, so nothing needs the password in encoded form.
type UpstreamURL string

// Upstream URL schemes.
const (
	SchemeAMQP  = "amqp"
	SchemeAMQPS = "amqps"
	SchemeMQTT  = "mqtt"
	SchemeMQTTS = "mqtts"
)

// defaultPorts by scheme.
var defaultPorts = map[string]int{SchemeAMQP: 5672, SchemeAMQPS: 5671, SchemeMQTT: 1883, SchemeMQTTS: 8883}

// redacted replaces passwords in printed URLs.
const redacted = "xxxxx"

// String returns the URL with its password replaced by "xxxxx". When the
// user info is not what url.Parse would read (no "://", or a '/', '?' or
// '#' before the last '@': a password with an unescaped '/' is cut there),
// everything that may be user info, between "://" and the last '@', is
// hidden, user name included.
func (u UpstreamURL) String() string {
	s := string(u)
	start, at, ok := splitUserinfo(s)
	if at < 0 {
		return s // no '@': no user info, nothing to hide
	}
	if ok {
		if pu, err := url.Parse(s); err == nil && pu.User != nil {
			return pu.Redacted()
		}
	}
	return s[:start] + redacted + s[at:]
}

// splitUserinfo locates the user info of s: from start (after the first
// "://" before the last '@'; 0 when there is none) to at, the last '@' of
// s (-1 when s has none). ok reports whether s has a scheme and the '@'
// ends its authority (no '/', '?' or '#' before it): only then does
// url.Parse read the same user info.
func splitUserinfo(s string) (start, at int, ok bool) {
	at = strings.LastIndexByte(s, '@')
	if at < 0 {
		return 0, -1, false
	}
	i := strings.Index(s[:at], "://")
	if i < 0 {
		return 0, at, false
	}
	start = i + 3
	return start, at, !strings.ContainsAny(s[start:at], "/?#")
}

// GoString hides the password from %#v too.
func (u UpstreamURL) GoString() string { return strconv.Quote(u.String()) }

// Format hides the password from every fmt verb (%s, %v, %q, %x, even
// %d), as if u were the string String returns.
func (u UpstreamURL) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), u.String())
}

// LogValue hides the password from slog.
func (u UpstreamURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalText hides the password from encoders (JSON, as used by
// slog.JSONHandler for a whole Config, and YAML). Decoding reads the
// plain string: there is no UnmarshalText.
func (u UpstreamURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// isAMQP reports whether u has an AMQP scheme (whether or not it is
// otherwise valid).
func (u UpstreamURL) isAMQP() bool {
	scheme, _, _ := strings.Cut(string(u), "://")
	scheme = strings.ToLower(scheme)
	return scheme == SchemeAMQP || scheme == SchemeAMQPS
}

// Endpoint is a parsed, valid UpstreamURL. Printing or encoding it hides
// the password, as for UpstreamURL; URL returns the full URL.
type Endpoint struct {
	Scheme   string // amqp, amqps, mqtt or mqtts
	Host     string // host name or IP address (no brackets)
	Port     int    // as given, or the scheme's default
	Username string
	Password string
	// Vhost is the AMQP virtual host: the unescaped path without its
	// leading '/', "/" when the path is empty or "/".
	Vhost string
	url   *url.URL
}

// AMQP reports whether the upstream speaks AMQP 0-9-1 (else MQTT).
func (e Endpoint) AMQP() bool { return e.Scheme == SchemeAMQP || e.Scheme == SchemeAMQPS }

// TLS reports whether the connection uses TLS (amqps, mqtts).
func (e Endpoint) TLS() bool { return e.Scheme == SchemeAMQPS || e.Scheme == SchemeMQTTS }

// Address returns host:port, for dialing.
func (e Endpoint) Address() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// URL returns the full URL, password included, with the port made
// explicit: for the client library, never for logs.
func (e Endpoint) URL() string { return e.full().String() }

// String returns the URL without its password, for logs.
func (e Endpoint) String() string { return e.full().Redacted() }

// GoString hides the password from %#v.
func (e Endpoint) GoString() string {
	pw := ""
	if e.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("bridge.Endpoint{Scheme:%q, Host:%q, Port:%d, Username:%q, Password:%q, Vhost:%q}",
		e.Scheme, e.Host, e.Port, e.Username, pw, e.Vhost)
}

// Format hides the password from every fmt verb: %#v is GoString, the
// others format String.
func (e Endpoint) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, e.GoString())
		return
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), e.String())
}

// LogValue hides the password from slog.
func (e Endpoint) LogValue() slog.Value { return slog.StringValue(e.String()) }

// MarshalText hides the password from encoders (JSON, YAML).
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// full returns a copy of the parsed URL with the port made explicit (a URL
// built from the fields for an Endpoint that Parse did not make).
func (e Endpoint) full() *url.URL {
	var u url.URL
	if e.url != nil {
		u = *e.url
	} else {
		u.Scheme = e.Scheme
		if e.Password != "" {
			u.User = url.UserPassword(e.Username, e.Password)
		} else if e.Username != "" {
			u.User = url.User(e.Username)
		}
		if e.AMQP() && e.Vhost != "" && e.Vhost != "/" {
			u.Path = "/" + e.Vhost
		}
	}
	u.Host = e.Address()
	return &u
}

// Parse checks the URL and splits it. Errors never contain the password
// (nor, when the user info itself is malformed, any of it).
func (u UpstreamURL) Parse() (*Endpoint, error) {
	scheme, _, found := strings.Cut(string(u), "://")
	port, known := defaultPorts[strings.ToLower(scheme)]
	if !found || !known {
		return nil, fmt.Errorf("%s: not an amqp://, amqps://, mqtt:// or mqtts:// URL", u)
	}
	pu, err := parseURL(string(u))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if pu.Hostname() == "" {
		return nil, fmt.Errorf("%s: no host (write %s://host:port/)", u, pu.Scheme)
	}
	if strings.Contains(pu.Hostname(), ":") && !strings.HasPrefix(pu.Host, "[") {
		return nil, fmt.Errorf("%s: an IPv6 address goes in brackets (%s://[::1]:%d/)", u, pu.Scheme, port)
	}
	if p := pu.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("%s: port %q is outside 1..65535", u, p)
		}
	}
	if pu.Fragment != "" || strings.Contains(string(u), "#") {
		return nil, fmt.Errorf("%s: a fragment (#...) means nothing here", u)
	}
	ep := &Endpoint{Scheme: pu.Scheme, Host: pu.Hostname(), Port: port, url: pu}
	if pu.User != nil {
		ep.Username = pu.User.Username()
		ep.Password, _ = pu.User.Password()
	}
	if ep.AMQP() {
		ep.Vhost = "/"
		if pu.Path != "" && pu.Path != "/" {
			ep.Vhost = pu.Path[1:]
		}
		return ep, nil
	}
	if (pu.Path != "" && pu.Path != "/") || pu.RawQuery != "" {
		return nil, fmt.Errorf("%s: an MQTT upstream URL has no path or query", u)
	}
	return ep, nil
}

// Errors of parseURL. Neither quotes the URL: the user info may be there.
var (
	errAtAfterHost = errors.New("an '@' after the host: percent-encode '/', '?', '#' and '@' in the user name and password (%2F, %3F, %23, %40), and '@' in the path (%40)")
	errUserinfo    = errors.New("the user name or password is not valid in a URL: percent-encode its reserved characters (e.g. ' ' as %20, '%' as %25)")
)

// parseURL parses s (it has a "://") so that no error shows its user
// info: url.Parse reports the first problem it meets, quoting it, and a
// password with a '/' or a '%' in it would be quoted. It parses s with the
// user info masked first, so its errors concern the rest; if that parses,
// an error of the real s can only come from the user info.
func parseURL(s string) (*url.URL, error) {
	start, at, ok := splitUserinfo(s)
	if at >= 0 && !ok {
		return nil, errAtAfterHost
	}
	masked := s
	if at >= 0 {
		masked = s[:start] + "user:" + redacted + s[at:]
	}
	if _, err := url.Parse(masked); err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // url.Error repeats the URL
		}
		return nil, err
	}
	pu, err := url.Parse(s)
	if err != nil {
		return nil, errUserinfo
	}
	return pu, nil
}
