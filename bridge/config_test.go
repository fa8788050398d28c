package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fieldErrors flattens the tree of joined errors Validate and ValidateAll
// return into its *FieldError leaves, failing on any other leaf.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		default:
			t.Errorf("error %T %q is not a *FieldError", err, err)
		}
	}
	walk(err)
	return out
}

// errPaths returns the sorted paths of the FieldErrors in err.
func errPaths(t *testing.T, err error) []string {
	t.Helper()
	var paths []string
	for _, fe := range fieldErrors(t, err) {
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	return paths
}

func qosPtr(q byte) *byte { return &q }

// mqttBridge is a valid MQTT bridge before ApplyDefaults.
func mqttBridge() Config {
	return Config{
		Name:     "cloud",
		Upstream: "mqtts://gw:pw@broker.example",
		ClientID: "gw-1",
		Forward:  []ForwardRule{{From: "sensors/#", To: "site1/sensors/{1}"}, {From: "alarms/+"}},
		Receive:  []ReceiveRule{{From: "cmd/gw-1/#", To: "cmd/{1}", QoS: qosPtr(2)}},
	}
}

// amqpBridge is a valid AMQP bridge before ApplyDefaults.
func amqpBridge() Config {
	return Config{
		Name:     "rabbit",
		Upstream: "amqps://gw:pw@rabbit.example/site1",
		ClientID: "gw-1",
		Forward:  []ForwardRule{{From: "sensors/+/temp", To: "temp.{1}"}},
		Receive:  []ReceiveRule{{From: "cmd/+/#"}},
	}
}

func TestConfigApplyDefaults(t *testing.T) {
	c := amqpBridge()
	c.ApplyDefaults()
	want := amqpBridge()
	want.Exchange = DefaultExchange
	want.Forward[0].QoS = qosPtr(DefaultQoS)
	want.Receive[0].To = Placeholder
	want.Receive[0].QoS = qosPtr(DefaultQoS)
	want.Backlog = Backlog{MaxBytes: DefaultMaxBytes, MaxAge: DefaultMaxAge, WhenFull: DropOldest}
	want.Replay = Replay{MaxInflight: DefaultMaxInflight}
	want.Reconnect = Reconnect{Min: time.Second, Max: 2 * time.Minute}
	want.ConfirmTimeout = 30 * time.Second
	want.StatsInterval = 10 * time.Second
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ApplyDefaults:\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate("bridges[0]"); err != nil {
		t.Errorf("Validate after ApplyDefaults: %v", err)
	}
	again := c
	again.ApplyDefaults()
	if !reflect.DeepEqual(again, c) {
		t.Errorf("ApplyDefaults is not idempotent")
	}
}

func TestConfigApplyDefaultsKeepsValues(t *testing.T) {
	c := mqttBridge()
	c.Forward[0].QoS = qosPtr(0)
	c.Backlog = Backlog{MaxBytes: 10, MaxAge: time.Hour, WhenFull: Refuse}
	c.Replay = Replay{MaxInflight: 3, MaxRate: 2.5}
	c.Reconnect = Reconnect{Min: 5 * time.Minute}
	c.ConfirmTimeout = time.Second
	c.ApplyDefaults()
	switch {
	case c.Exchange != "":
		t.Errorf("MQTT exchange = %q, want none", c.Exchange)
	case *c.Forward[0].QoS != 0 || *c.Forward[1].QoS != 1 || *c.Receive[0].QoS != 2:
		t.Errorf("QoS = %d %d %d, want 0 1 2", *c.Forward[0].QoS, *c.Forward[1].QoS, *c.Receive[0].QoS)
	case c.Forward[0].To != "site1/sensors/{1}" || c.Forward[1].To != Placeholder:
		t.Errorf("forward to = %q %q", c.Forward[0].To, c.Forward[1].To)
	case c.Backlog != Backlog{MaxBytes: 10, MaxAge: time.Hour, WhenFull: Refuse}:
		t.Errorf("backlog = %+v", c.Backlog)
	case c.Replay != Replay{MaxInflight: 3, MaxRate: 2.5}:
		t.Errorf("replay = %+v", c.Replay)
	case c.Reconnect != Reconnect{Min: 5 * time.Minute, Max: 5 * time.Minute}:
		t.Errorf("reconnect = %+v, want max raised to min", c.Reconnect)
	case c.ConfirmTimeout != time.Second:
		t.Errorf("confirm_timeout = %v", c.ConfirmTimeout)
	}
	// An upper-case scheme is still AMQP.
	a := amqpBridge()
	a.Upstream = "AMQP://rabbit.example"
	cs := []Config{a, mqttBridge()}
	ApplyDefaultsAll(cs)
	if cs[0].Exchange != DefaultExchange || cs[1].Backlog.WhenFull != DropOldest {
		t.Errorf("ApplyDefaultsAll: exchange %q, when_full %q", cs[0].Exchange, cs[1].Backlog.WhenFull)
	}
}

// validateCases change a valid bridge (mqtt or amqp, after defaults) and
// list the paths of every error Validate("bridges[0]") must return.
var validateCases = []struct {
	name  string
	amqp  bool
	edit  func(*Config)
	paths []string
	msg   string // a substring of the first error's message
}{
	{name: "mqtt ok", edit: func(*Config) {}},
	{name: "amqp ok", amqp: true, edit: func(*Config) {}},
	{name: "name 64 chars", edit: func(c *Config) { c.Name = strings.Repeat("a", 64) }},
	{name: "no name", edit: func(c *Config) { c.Name = "" }, paths: []string{"bridges[0].name"}, msg: "required"},
	{name: "name 65 chars", edit: func(c *Config) { c.Name = strings.Repeat("a", 65) }, paths: []string{"bridges[0].name"}},
	{name: "name starts with -", edit: func(c *Config) { c.Name = "-x" }, paths: []string{"bridges[0].name"}},
	{name: "name with /", edit: func(c *Config) { c.Name = "a/b" }, paths: []string{"bridges[0].name"}},
	{name: "name with .", edit: func(c *Config) { c.Name = "a.b" }, paths: []string{"bridges[0].name"}},
	{name: "no upstream", edit: func(c *Config) { c.Upstream = "" }, paths: []string{"bridges[0].upstream"}, msg: "required"},
	{name: "http upstream", edit: func(c *Config) { c.Upstream = "http://h" }, paths: []string{"bridges[0].upstream"}, msg: "not an amqp://"},
	{name: "bad client id with bad upstream", edit: func(c *Config) { c.Upstream = "x"; c.ClientID = "a\nb" },
		paths: []string{"bridges[0].client_id", "bridges[0].upstream"}},
	{name: "mqtt without client id", edit: func(c *Config) { c.ClientID = "" }, paths: []string{"bridges[0].client_id"}, msg: "required with an MQTT upstream"},
	{name: "mqtt with exchange", edit: func(c *Config) { c.Exchange = "x" }, paths: []string{"bridges[0].exchange"}, msg: "only used with an AMQP upstream"},
	{name: "client id control char", edit: func(c *Config) { c.ClientID = "gw\x00" }, paths: []string{"bridges[0].client_id"}, msg: "control character"},
	{name: "client id DEL", edit: func(c *Config) { c.ClientID = "gw\x7f" }, paths: []string{"bridges[0].client_id"}},
	{name: "client id bad UTF-8", edit: func(c *Config) { c.ClientID = "gw\xff" }, paths: []string{"bridges[0].client_id"}, msg: "UTF-8"},
	{name: "client id too long", edit: func(c *Config) { c.ClientID = strings.Repeat("x", 65536) }, paths: []string{"bridges[0].client_id"}, msg: "65535"},
	{name: "amqp receive without client id", amqp: true, edit: func(c *Config) { c.ClientID = "" },
		paths: []string{"bridges[0].client_id"}, msg: "durable queue"},
	{name: "amqp forward only without client id", amqp: true, edit: func(c *Config) { c.ClientID = ""; c.Receive = nil }},
	{name: "amqp queue name too long", amqp: true, edit: func(c *Config) { c.ClientID = strings.Repeat("x", 241) },
		paths: []string{"bridges[0].client_id"}, msg: "queue name"},
	{name: "amqp long client id without queue", amqp: true, edit: func(c *Config) { c.ClientID = strings.Repeat("x", 241); c.Receive = nil }},
	{name: "amqp no exchange", amqp: true, edit: func(c *Config) { c.Exchange = "" }, paths: []string{"bridges[0].exchange"}, msg: "required"},
	{name: "amqp exchange too long", amqp: true, edit: func(c *Config) { c.Exchange = strings.Repeat("e", 256) }, paths: []string{"bridges[0].exchange"}},
	{name: "amqp exchange 255 bytes", amqp: true, edit: func(c *Config) { c.Exchange = strings.Repeat("e", 255) }},
	{name: "amqp exchange control char", amqp: true, edit: func(c *Config) { c.Exchange = "ex\t" }, paths: []string{"bridges[0].exchange"}},
	{name: "amqp exchange bad UTF-8", amqp: true, edit: func(c *Config) { c.Exchange = "\xc3" }, paths: []string{"bridges[0].exchange"}},
	{name: "no rules", edit: func(c *Config) { c.Forward, c.Receive = nil, nil }, paths: []string{"bridges[0].forward"}, msg: "at least one"},
	{name: "receive only", edit: func(c *Config) { c.Forward = nil }},
	{name: "forward from empty", edit: func(c *Config) { c.Forward[1].From = "" }, paths: []string{"bridges[0].forward[1].from"}, msg: "required"},
	{name: "forward from # not last", edit: func(c *Config) { c.Forward[1].From = "a/#/b" }, paths: []string{"bridges[0].forward[1].from"}},
	{name: "forward from shared", edit: func(c *Config) { c.Forward[1].From = "$share/g/a" }, paths: []string{"bridges[0].forward[1].from"}, msg: "shared"},
	{name: "forward to unknown capture", edit: func(c *Config) { c.Forward[0].To = "x/{2}" }, paths: []string{"bridges[0].forward[0].to"}, msg: "only 1 wildcard"},
	{name: "forward to capture without wildcard", edit: func(c *Config) { c.Forward[0].From = "a"; c.Forward[0].To = "{1}" },
		paths: []string{"bridges[0].forward[0].to"}, msg: "no wildcard"},
	{name: "forward to unclosed", edit: func(c *Config) { c.Forward[1].To = "a/{1" }, paths: []string{"bridges[0].forward[1].to"}, msg: "unclosed"},
	{name: "forward to wildcard", edit: func(c *Config) { c.Forward[1].To = "a/+" }, paths: []string{"bridges[0].forward[1].to"}},
	{name: "forward to $share", edit: func(c *Config) { c.Forward[1].To = "$share/g/x" }, paths: []string{"bridges[0].forward[1].to"}},
	{name: "bad from, any capture", edit: func(c *Config) { c.Forward[0].From = "a+"; c.Forward[0].To = "{9}" },
		paths: []string{"bridges[0].forward[0].from"}},
	{name: "bad from and bad to", edit: func(c *Config) { c.Forward[0].From = "a+"; c.Forward[0].To = "{x}" },
		paths: []string{"bridges[0].forward[0].from", "bridges[0].forward[0].to"}},
	{name: "forward qos 3", edit: func(c *Config) { c.Forward[1].QoS = qosPtr(3) }, paths: []string{"bridges[0].forward[1].qos"}, msg: "not 0, 1 or 2"},
	{name: "receive qos 3", edit: func(c *Config) { c.Receive[0].QoS = qosPtr(3) }, paths: []string{"bridges[0].receive[0].qos"}},
	{name: "receive to bad", edit: func(c *Config) { c.Receive[0].To = "}" }, paths: []string{"bridges[0].receive[0].to"}},
	{name: "mqtt receive literal star", edit: func(c *Config) { c.Receive[0].From = "cmd/*/x"; c.Receive[0].To = "" }},
	{name: "amqp receive literal star", amqp: true, edit: func(c *Config) { c.Receive[0].From = "cmd/*/x" },
		paths: []string{"bridges[0].receive[0].from"}, msg: "binding key"},
	{name: "amqp forward literal star", amqp: true, edit: func(c *Config) { c.Forward[0].From = "cmd/*/x"; c.Forward[0].To = "" }},
	{name: "amqp binding key too long", amqp: true, edit: func(c *Config) { c.Receive[0].From = strings.Repeat("abc/", 70) + "#" },
		paths: []string{"bridges[0].receive[0].from"}},
	{name: "backlog negative", edit: func(c *Config) { c.Backlog.MaxBytes = -1; c.Backlog.MaxAge = -1 },
		paths: []string{"bridges[0].backlog.max_age", "bridges[0].backlog.max_bytes"}, msg: "negative"},
	{name: "when_full unknown", edit: func(c *Config) { c.Backlog.WhenFull = "drop" }, paths: []string{"bridges[0].backlog.when_full"}},
	{name: "when_full drop-new", edit: func(c *Config) { c.Backlog.WhenFull = DropNew }},
	{name: "when_full refuse", edit: func(c *Config) { c.Backlog.WhenFull = Refuse }},
	{name: "max_inflight 0", edit: func(c *Config) { c.Replay.MaxInflight = 0 }, paths: []string{"bridges[0].replay.max_inflight"}},
	{name: "max_inflight 65536", edit: func(c *Config) { c.Replay.MaxInflight = 65536 }, paths: []string{"bridges[0].replay.max_inflight"}},
	{name: "max_inflight 65535", edit: func(c *Config) { c.Replay.MaxInflight = 65535 }},
	{name: "max_rate NaN", edit: func(c *Config) { c.Replay.MaxRate = math.NaN() }, paths: []string{"bridges[0].replay.max_rate"}},
	{name: "max_rate Inf", edit: func(c *Config) { c.Replay.MaxRate = math.Inf(1) }, paths: []string{"bridges[0].replay.max_rate"}},
	{name: "max_rate negative", edit: func(c *Config) { c.Replay.MaxRate = -1 }, paths: []string{"bridges[0].replay.max_rate"}},
	{name: "reconnect zero", edit: func(c *Config) { c.Reconnect = Reconnect{} },
		paths: []string{"bridges[0].reconnect.max", "bridges[0].reconnect.min"}},
	{name: "reconnect max below min", edit: func(c *Config) { c.Reconnect = Reconnect{Min: time.Minute, Max: time.Second} },
		paths: []string{"bridges[0].reconnect.max"}, msg: "less than reconnect.min"},
	{name: "reconnect min = max", edit: func(c *Config) { c.Reconnect = Reconnect{Min: time.Minute, Max: time.Minute} }},
	{name: "confirm_timeout negative", edit: func(c *Config) { c.ConfirmTimeout = -time.Second }, paths: []string{"bridges[0].confirm_timeout"}},
	{name: "everything at once", edit: func(c *Config) {
		*c = Config{Forward: []ForwardRule{{}}, Receive: []ReceiveRule{{From: "#", To: "{2}"}}}
	}, paths: []string{
		"bridges[0].backlog.when_full", "bridges[0].confirm_timeout", "bridges[0].forward[0].from",
		"bridges[0].name", "bridges[0].receive[0].to", "bridges[0].reconnect.max", "bridges[0].reconnect.min",
		"bridges[0].replay.max_inflight", "bridges[0].stats_interval", "bridges[0].upstream",
	}},
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range validateCases {
		t.Run(tc.name, func(t *testing.T) {
			c := mqttBridge()
			if tc.amqp {
				c = amqpBridge()
			}
			c.ApplyDefaults()
			tc.edit(&c)
			err := c.Validate("bridges[0]")
			if got := errPaths(t, err); !slices.Equal(got, tc.paths) {
				t.Fatalf("error paths %q, want %q; error:\n%v", got, tc.paths, err)
			}
			if tc.msg != "" && !strings.Contains(fieldErrors(t, err)[0].Msg, tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestConfigValidateRelativePaths(t *testing.T) {
	c := mqttBridge()
	c.ApplyDefaults()
	c.Name = ""
	c.Forward[1].To = "{2}"
	c.Backlog.WhenFull = "x"
	got := errPaths(t, c.Validate(""))
	want := []string{"backlog.when_full", "forward[1].to", "name"}
	if !slices.Equal(got, want) {
		t.Errorf("paths %q, want %q", got, want)
	}
	var fe *FieldError
	if err := c.Validate("b"); !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), "b.") {
		t.Errorf("Validate(\"b\") = %v, want FieldErrors under b.", err)
	}
}

// TestConfigValidateAll checks the cross-bridge rules: unique names, and
// no client id twice on one MQTT broker.
func TestConfigValidateAll(t *testing.T) {
	withUpstream := func(c Config, name, up, id string) Config {
		c.Name, c.Upstream, c.ClientID = name, UpstreamURL(up), id
		return c
	}
	m, a := mqttBridge(), amqpBridge()
	tests := []struct {
		name  string
		cs    []Config
		paths []string
		msg   string
	}{
		{"none", nil, nil, ""},
		{"distinct", []Config{m, a}, nil, ""},
		{"duplicate name", []Config{m, a, withUpstream(m, "cloud", "mqtt://other", "x")}, []string{"bridges[2].name"}, "bridges[0]"},
		{"duplicate empty names", []Config{withUpstream(m, "", "mqtt://a", "x"), withUpstream(m, "", "mqtt://b", "y")},
			[]string{"bridges[0].name", "bridges[1].name"}, "required"},
		{"same client id, same broker", []Config{m, withUpstream(m, "two", "mqtts://broker.example:8883", "gw-1")},
			[]string{"bridges[1].client_id"}, `"gw-1" is already the client id of bridges[0] on broker.example:8883`},
		{"host case differs", []Config{m, withUpstream(m, "two", "MQTTS://Broker.Example", "gw-1")},
			[]string{"bridges[1].client_id"}, "already the client id"},
		{"three times", []Config{m, withUpstream(m, "two", "mqtts://broker.example", "gw-1"), withUpstream(m, "three", "mqtts://broker.example", "gw-1")},
			[]string{"bridges[1].client_id", "bridges[2].client_id"}, "bridges[0]"},
		{"same client id, other port", []Config{m, withUpstream(m, "two", "mqtts://broker.example:8884", "gw-1")}, nil, ""},
		{"same client id, other host", []Config{m, withUpstream(m, "two", "mqtts://broker2.example", "gw-1")}, nil, ""},
		{"same client id on AMQP", []Config{a, withUpstream(a, "two", "amqps://rabbit.example/site1", "gw-1")}, nil, ""},
		{"invalid bridge inside", []Config{m, withUpstream(m, "two", "ftp://x", "gw-1")}, []string{"bridges[1].upstream"}, "not an amqp://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := slices.Clone(tc.cs)
			ApplyDefaultsAll(cs)
			err := ValidateAll(cs, "bridges")
			if got := errPaths(t, err); !slices.Equal(got, tc.paths) {
				t.Fatalf("paths %q, want %q; error:\n%v", got, tc.paths, err)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestDownlinkQueue(t *testing.T) {
	c := amqpBridge()
	if q := c.DownlinkQueue(); q != "ferrymq.gw-1.rabbit" {
		t.Errorf("DownlinkQueue = %q", q)
	}
}

// parseCases are upstream URLs and what Parse makes of them: the
// endpoint's fields, or a substring of the error.
var parseCases = []struct {
	in                    string
	scheme, host          string
	port                  int
	user, password, vhost string
	err                   string
}{
	{in: "amqp://rabbit", scheme: "amqp", host: "rabbit", port: 5672, vhost: "/"},
	{in: "amqps://rabbit", scheme: "amqps", host: "rabbit", port: 5671, vhost: "/"},
	{in: "mqtt://broker", scheme: "mqtt", host: "broker", port: 1883},
	{in: "mqtts://broker/", scheme: "mqtts", host: "broker", port: 8883},
	{in: "AMQP://Rabbit:1", scheme: "amqp", host: "Rabbit", port: 1, vhost: "/"},
	{in: "amqp://rabbit:65535/", scheme: "amqp", host: "rabbit", port: 65535, vhost: "/"},
	{in: "amqp://rabbit:/", scheme: "amqp", host: "rabbit", port: 5672, vhost: "/"},
	{in: "amqp://u:p@rabbit:5673/site1", scheme: "amqp", host: "rabbit", port: 5673, user: "u", password: "p", vhost: "site1"},
	{in: "amqp://rabbit/%2F", scheme: "amqp", host: "rabbit", port: 5672, vhost: "/"},
	{in: "amqp://rabbit/a%2Fb", scheme: "amqp", host: "rabbit", port: 5672, vhost: "a/b"},
	{in: "amqp://rabbit/v%40x", scheme: "amqp", host: "rabbit", port: 5672, vhost: "v@x"},
	{in: "amqp://rabbit/site?heartbeat=10", scheme: "amqp", host: "rabbit", port: 5672, vhost: "site"},
	{in: "amqp://u%40corp:p%2F%3F%23%40%25@rabbit", scheme: "amqp", host: "rabbit", port: 5672, user: "u@corp", password: "p/?#@%", vhost: "/"},
	{in: "amqp://u:p@ss@rabbit", scheme: "amqp", host: "rabbit", port: 5672, user: "u", password: "p@ss", vhost: "/"},
	{in: "mqtt://u@broker", scheme: "mqtt", host: "broker", port: 1883, user: "u"},
	{in: "mqtt://:p@broker", scheme: "mqtt", host: "broker", port: 1883, password: "p"},
	{in: "amqp://[::1]", scheme: "amqp", host: "::1", port: 5672, vhost: "/"},
	{in: "mqtts://[2001:db8::1]:8884", scheme: "mqtts", host: "2001:db8::1", port: 8884},
	{in: "mqtt://[fe80::1%25eth0]:1884", scheme: "mqtt", host: "fe80::1%eth0", port: 1884},
	{in: "mqtt://192.0.2.1:1", scheme: "mqtt", host: "192.0.2.1", port: 1},
	{in: "", err: "not an amqp://"},
	{in: "rabbit:5672", err: "not an amqp://"},
	{in: "amqp:rabbit", err: "not an amqp://"},
	{in: "http://rabbit", err: "not an amqp://"},
	{in: "amqp+tls://rabbit", err: "not an amqp://"},
	{in: "amqp://", err: "no host"},
	{in: "amqp:///vhost", err: "no host"},
	{in: "mqtt://:1883", err: "no host"},
	{in: "mqtt://u:p@", err: "no host"},
	{in: "amqp://::1/", err: "brackets"},
	{in: "amqp://[::1/", err: "missing ']'"},
	{in: "amqp://rabbit:0", err: `port "0" is outside 1..65535`},
	{in: "amqp://rabbit:65536", err: `port "65536" is outside`},
	{in: "amqp://rabbit:99999999999999999999", err: "is outside"},
	{in: "amqp://rabbit:x", err: "invalid port"},
	{in: "amqp://rabbit:-1", err: "invalid port"},
	{in: "amqp://rab bit", err: "invalid character"},
	{in: "amqp://rabbit/\x7f", err: "control character"},
	{in: "amqp://rabbit/#", err: "fragment"},
	{in: "amqp://rabbit/site#x", err: "fragment"},
	{in: "mqtt://broker/topic", err: "no path or query"},
	{in: "mqtt://broker?x=1", err: "no path or query"},
	{in: "amqp://rabbit/v@x", err: "an '@' after the host"},
	{in: "amqp://u:p/q@rabbit", err: "an '@' after the host"},
	{in: "amqp://u:5672?q@rabbit", err: "an '@' after the host"},
	{in: "amqp://u:1#q@rabbit", err: "an '@' after the host"},
	{in: "amqp://u:p q@rabbit", err: "user name or password is not valid"},
	{in: "amqp://u:p%zz@rabbit", err: "user name or password is not valid"},
	{in: "amqp://u:p%@rabbit", err: "user name or password is not valid"},
}

func TestUpstreamParse(t *testing.T) {
	for _, tc := range parseCases {
		ep, err := UpstreamURL(tc.in).Parse()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, %v; want error %q", tc.in, ep, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		got := [...]any{ep.Scheme, ep.Host, ep.Port, ep.Username, ep.Password, ep.Vhost}
		want := [...]any{tc.scheme, tc.host, tc.port, tc.user, tc.password, tc.vhost}
		if got != want {
			t.Errorf("Parse(%q) = %v, want %v", tc.in, got, want)
		}
		amqp := tc.scheme == "amqp" || tc.scheme == "amqps"
		tls := tc.scheme == "amqps" || tc.scheme == "mqtts"
		if ep.AMQP() != amqp || ep.TLS() != tls || UpstreamURL(tc.in).isAMQP() != amqp {
			t.Errorf("Parse(%q): AMQP %v TLS %v isAMQP %v", tc.in, ep.AMQP(), ep.TLS(), UpstreamURL(tc.in).isAMQP())
		}
		// URL round-trips with an explicit port.
		again, err := UpstreamURL(ep.URL()).Parse()
		if err != nil || *again != (Endpoint{ep.Scheme, ep.Host, ep.Port, ep.Username, ep.Password, ep.Vhost, again.url}) {
			t.Errorf("Parse(%q).URL() = %q parses as %#v, %v", tc.in, ep.URL(), again, err)
		}
	}
}

func TestEndpointURLs(t *testing.T) {
	tests := []struct{ in, url, str, addr string }{
		{"amqp://u:p@rabbit/site", "amqp://u:p@rabbit:5672/site", "amqp://u:xxxxx@rabbit:5672/site", "rabbit:5672"},
		{"mqtts://broker", "mqtts://broker:8883", "mqtts://broker:8883", "broker:8883"},
		{"mqtt://u@[::1]:1", "mqtt://u@[::1]:1", "mqtt://u@[::1]:1", "[::1]:1"},
		{"amqps://u:p%2F@rabbit:1/?heartbeat=5", "amqps://u:p%2F@rabbit:1/?heartbeat=5", "amqps://u:xxxxx@rabbit:1/?heartbeat=5", "rabbit:1"},
	}
	for _, tc := range tests {
		ep, err := UpstreamURL(tc.in).Parse()
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if ep.URL() != tc.url || ep.String() != tc.str || ep.Address() != tc.addr {
			t.Errorf("%q: URL %q String %q Address %q; want %q %q %q", tc.in, ep.URL(), ep.String(), ep.Address(), tc.url, tc.str, tc.addr)
		}
	}
	// An Endpoint built by hand (not by Parse) prints from its fields.
	ep := Endpoint{Scheme: "amqp", Host: "h", Port: 1, Username: "u", Password: "p", Vhost: "v"}
	if ep.URL() != "amqp://u:p@h:1/v" || ep.String() != "amqp://u:xxxxx@h:1/v" {
		t.Errorf("hand-made endpoint: URL %q String %q", ep.URL(), ep.String())
	}
	want := `bridge.Endpoint{Scheme:"amqp", Host:"h", Port:1, Username:"u", Password:"xxxxx", Vhost:"v"}`
	if got := fmt.Sprintf("%#v", &ep); got != want {
		t.Errorf("%%#v = %s, want %s", got, want)
	}
}

func TestUpstreamURLString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"amqp://rabbit/site", "amqp://rabbit/site"},
		{"amqp://u:pw@rabbit/site", "amqp://u:xxxxx@rabbit/site"},
		{"amqp://u@rabbit", "amqp://u@rabbit"},
		{"amqp://u:p@ss@rabbit", "amqp://u:xxxxx@rabbit"},
		{"amqp://u:pw/x@rabbit/", "amqp://xxxxx@rabbit/"},
		{"amqp://u:5672?pw@rabbit/", "amqp://xxxxx@rabbit/"},
		{"amqp://u:1#pw@rabbit", "amqp://xxxxx@rabbit"},
		{"amqp://u:p w@rabbit", "amqp://xxxxx@rabbit"},
		{"u:pw@rabbit", "xxxxx@rabbit"},
		{"u:pw@rabbit://x", "xxxxx@rabbit://x"},
		{"/x://u:pw@rabbit", "/x://xxxxx@rabbit"},
		{"mqtt://broker/v@x", "mqtt://xxxxx@x"},
		{"not a url", "not a url"},
	}
	for _, tc := range tests {
		if got := UpstreamURL(tc.in).String(); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// testPassword is the distinctive password of TestPasswordNeverShown;
// "%zz" follows it in one spelling (an invalid escape url.Parse quotes).
const testPassword = "S3cr3tPw"

// secretURLs spell testPassword in valid and invalid upstream URLs, the
// invalid ones in every way that once made an error or String quote part
// of the user info.
var secretURLs = []string{
	"amqp://gw:" + testPassword + "@rabbit/site",
	"amqps://gw:" + testPassword + "@rabbit:5671/?heartbeat=10",
	"mqtt://gw:" + testPassword + "@broker",
	"mqtts://gw:" + testPassword + "@[::1]:8883",
	"mqtt://gw:" + testPassword + "@broker/path",
	"mqtt://gw:" + testPassword + "@broker:0",
	"mqtt://gw:" + testPassword + "@broker/#",
	"amqp://gw:" + testPassword + "@",
	"amqp://gw:" + testPassword + "@::1",
	"amqp://gw:" + testPassword + "/x@rabbit",
	"amqp://gw:5672?" + testPassword + "@rabbit",
	"amqp://gw:1#" + testPassword + "@rabbit",
	"amqp://gw:" + testPassword + "%zz@rabbit",
	"amqp://gw:" + testPassword + " x@rabbit",
	"amqp://gw:" + testPassword + "\x01@rabbit",
	"amqp://gw:" + testPassword + "@rab bit",
	"amqp://gw:p@ss" + testPassword + "@rabbit",
	"amqp://" + testPassword + ":x/y@rabbit",
	"amqp://gw:" + testPassword + "@rabbit/v@x",
	"ftp://gw:" + testPassword + "@rabbit",
	"gw:" + testPassword + "@rabbit",
	"gw:" + testPassword + "@rabbit://x",
	"/x://gw:" + testPassword + "@rabbit",
}

// showsPassword reports whether s shows testPassword, or the invalid
// escape next to it, in clear or in hex.
func showsPassword(s string) bool {
	for _, bad := range []string{testPassword, "%zz", fmt.Sprintf("%x", testPassword), fmt.Sprintf("%X", testPassword)} {
		if strings.Contains(s, bad) {
			return true
		}
	}
	return false
}

// printedForms formats v every way a log line or an error might.
func printedForms(v any) []string {
	var out []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.40s", "%T %[1]v"} {
		out = append(out, fmt.Sprintf(f, v))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("bridge", "v", v, slog.Group("g", "v", v))
		out = append(out, b.String())
	}
	j, err := json.Marshal(v)
	return append(out, string(j), fmt.Sprint(err))
}

func TestPasswordNeverShown(t *testing.T) {
	for _, raw := range secretURLs {
		u := UpstreamURL(raw)
		c := mqttBridge()
		c.Upstream = u
		c.ApplyDefaults()
		shown := printedForms(u)
		shown = append(shown, printedForms(c)...)
		shown = append(shown, printedForms(&c)...)
		shown = append(shown, fmt.Sprint(c.Validate("bridges[0]")), fmt.Sprint(ValidateAll([]Config{c, c}, "bridges")))
		ep, err := u.Parse()
		shown = append(shown, fmt.Sprint(err))
		if err == nil {
			if !strings.Contains(ep.URL(), testPassword) {
				t.Errorf("%q: URL() %q lost the password", raw, ep.URL())
			}
			shown = append(shown, ep.String())
			shown = append(shown, printedForms(ep)...)
			shown = append(shown, printedForms(*ep)...)
		}
		for _, s := range shown {
			if showsPassword(s) {
				t.Errorf("%q: the password shows in %q", raw, s)
			}
		}
	}
}
