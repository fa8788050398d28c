package broker

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the whole broker configuration. It is plain data: cmd/ferrymq
// fills it from YAML and flags; tests build it in code. Zero values mean
// "use the default" (see Default and each field's comment). yaml tags name
// the config file keys; the broker itself never reads files.
type Config struct {
	// Listeners the broker accepts MQTT connections on.
	// Default: one TCP listener on 127.0.0.1:1883.
	Listeners []Listener `yaml:"listeners"`
	// Storage: where and how sessions are kept.
	Storage Storage `yaml:"storage"`
	// Limits protect the broker from clients and clients from each other.
	Limits Limits `yaml:"limits"`
}

// Listener is one MQTT listening socket.
type Listener struct {
	// Address is host:port, e.g. "127.0.0.1:1883" or "[::1]:1883". Port 0
	// picks a free port (tests). Required.
	Address string `yaml:"address"`
	// AllowAnonymous lets clients connect without credentials. Default:
	// true on a loopback address. A listener on any other address must set
	// it explicitly to true (authentication is not implemented yet).
	AllowAnonymous *bool `yaml:"allow_anonymous"`
}

// Storage configures the session store (cmd/ferrymq opens it; the
// broker sees it through session.Store).
type Storage struct {
	// Dir is the data directory. Default "ferrymq-data" (relative to the
	// working directory). Unused with durability memory.
	Dir string `yaml:"dir"`
	// Durability is when a QoS 1/2 message is acknowledged. "sync"
	// (default): after the batch holding it is fsynced — survives kill -9
	// and power cuts. "batch": once written, fsynced every sync_interval —
	// survives kill -9, a power cut loses up to sync_interval of
	// acknowledged messages. "memory": nothing on disk; a restart loses
	// every session.
	Durability string `yaml:"durability"`
	// SyncInterval is how often "batch" durability fsyncs. Default 100ms.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// MaxDisk bounds the bytes the store may use on disk. Beyond it, and
	// when the filesystem has less than MinFree left, QoS 1/2 publishes are
	// refused (v5: 0x97 quota exceeded; 3.1.1: disconnected, so the client
	// resends later) until space returns. Default 0 = no bound but MinFree.
	MaxDisk int64 `yaml:"max_disk"`
	// MinFree is the free space to leave on the filesystem. Default 64 MiB.
	MinFree int64 `yaml:"min_free"`
	// OnCorruption is what happens when the store cannot be opened
	// because it is damaged: "quarantine" (default) moves the directory
	// aside (named in the log) and starts empty; "refuse" exits with an
	// error, for an operator to decide.
	OnCorruption string `yaml:"on_corruption"`
}

// Storage defaults and choices.
const (
	DurabilitySync       = "sync"
	DurabilityBatch      = "batch"
	DurabilityMemory     = "memory"
	DefaultSyncInterval  = 100 * time.Millisecond
	DefaultMinFree       = 64 << 20
	CorruptionQuarantine = "quarantine"
	CorruptionRefuse     = "refuse"
)

// Limits are per-broker and per-client bounds. Every field has a default
// applied by ApplyDefaults; 0 means "default" except where noted.
type Limits struct {
	// MaxPacketSize is the largest packet accepted from a client, in bytes,
	// fixed header included; larger packets get DISCONNECT 0x95 (v5) or a
	// closed connection (3.1.1). Sent to v5 clients as Maximum Packet Size.
	// Default 1 MiB; at most 268435460 (the protocol maximum).
	MaxPacketSize uint32 `yaml:"max_packet_size"`
	// MaxKeepAlive caps the keep alive a client may ask for, in seconds. A
	// v5 client asking for more (or for 0) gets Server Keep Alive in CONNACK.
	// Default 0 = no limit.
	MaxKeepAlive uint16 `yaml:"max_keepalive"`
	// ReceiveMaximum is how many QoS 1/2 PUBLISHes a client may have
	// unacknowledged towards the broker (v5 Receive Maximum in CONNACK). A
	// v5 client exceeding it gets DISCONNECT 0x93. Default 1024.
	ReceiveMaximum uint16 `yaml:"receive_maximum"`
	// MaxInflight is how many QoS 1/2 messages the broker keeps
	// unacknowledged towards one client; the client's own Receive Maximum
	// lowers it further. Default 128.
	MaxInflight uint16 `yaml:"max_inflight"`
	// MaxQueuedBytes bounds each client's queue of messages waiting to be
	// written or waiting for an inflight slot. Beyond it QoS 0 messages are
	// dropped and counted; QoS 1/2 messages for an offline session are
	// dropped and counted too. Default 8 MiB.
	MaxQueuedBytes int64 `yaml:"max_queued_bytes"`
	// TopicAliasMaximum is how many topic aliases a v5 client may use
	// towards the broker (and the most the broker assigns towards a client).
	// Default 64.
	TopicAliasMaximum uint16 `yaml:"topic_alias_maximum"`
	// MaxSessionExpiry caps a v5 client's Session Expiry Interval, in
	// seconds; the effective value is returned in CONNACK. Default 0 = no cap.
	MaxSessionExpiry uint32 `yaml:"max_session_expiry"`
}

// Defaults.
const (
	DefaultAddress           = "127.0.0.1:1883"
	DefaultDataDir           = "ferrymq-data"
	DefaultMaxPacketSize     = 1 << 20
	MaxPacketSizeLimit       = 268435455 + 5
	DefaultReceiveMaximum    = 1024
	DefaultMaxInflight       = 128
	DefaultMaxQueuedBytes    = 8 << 20
	DefaultTopicAliasMaximum = 64
)

// Default returns the configuration the broker runs with when no file is
// given: one anonymous listener on 127.0.0.1:1883.
func Default() Config {
	var c Config
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills every zero field with its documented default.
func (c *Config) ApplyDefaults() {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Address: DefaultAddress}}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.AllowAnonymous == nil && isLoopback(l.Address) {
			t := true
			l.AllowAnonymous = &t
		}
	}
	st := &c.Storage
	if st.Dir == "" {
		st.Dir = DefaultDataDir
	}
	if st.Durability == "" {
		st.Durability = DurabilitySync
	}
	if st.SyncInterval == 0 {
		st.SyncInterval = DefaultSyncInterval
	}
	if st.MinFree == 0 {
		st.MinFree = DefaultMinFree
	}
	if st.OnCorruption == "" {
		st.OnCorruption = CorruptionQuarantine
	}
	lim := &c.Limits
	if lim.MaxPacketSize == 0 {
		lim.MaxPacketSize = DefaultMaxPacketSize
	}
	if lim.ReceiveMaximum == 0 {
		lim.ReceiveMaximum = DefaultReceiveMaximum
	}
	if lim.MaxInflight == 0 {
		lim.MaxInflight = DefaultMaxInflight
	}
	if lim.MaxQueuedBytes == 0 {
		lim.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if lim.TopicAliasMaximum == 0 {
		lim.TopicAliasMaximum = DefaultTopicAliasMaximum
	}
}

// FieldError is one invalid field. Path is the YAML key path, e.g.
// "listeners[1].address", so cmd/ferrymq can point at a file line.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks a configuration after ApplyDefaults and returns every
// problem (joined with errors.Join; each one is a *FieldError).
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Listeners) == 0 {
		add("listeners", "at least one listener is required")
	}
	seen := map[string]int{}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		if l.Address == "" {
			add(p+".address", "required")
			continue
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			add(p+".address", "%q is not host:port: %v", l.Address, err)
			continue
		}
		if j, dup := seen[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
			add(p+".address", "%q is already used by listeners[%d]", l.Address, j)
		}
		seen[l.Address] = i
		if !isLoopback(l.Address) && (l.AllowAnonymous == nil || !*l.AllowAnonymous) {
			add(p+".allow_anonymous", "listener %q is not on loopback and authentication is not implemented yet: set allow_anonymous: true to accept anonymous clients there", l.Address)
		}
	}
	if c.Limits.MaxPacketSize > MaxPacketSizeLimit {
		add("limits.max_packet_size", "%d is above the protocol maximum %d", c.Limits.MaxPacketSize, MaxPacketSizeLimit)
	} else if c.Limits.MaxPacketSize < 64 {
		add("limits.max_packet_size", "%d is too small (minimum 64)", c.Limits.MaxPacketSize)
	}
	c.validateStorage(add)
	if c.Limits.MaxQueuedBytes < 0 {
		add("limits.max_queued_bytes", "must not be negative")
	}
	return errors.Join(errs...)
}

// isLoopback reports whether a host:port names a loopback address.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateStorage(add func(path, format string, args ...any)) {
	st := &c.Storage
	switch st.Durability {
	case DurabilitySync, DurabilityBatch, DurabilityMemory:
	default:
		add("storage.durability", "%q is not one of sync, batch, memory", st.Durability)
	}
	if st.SyncInterval < 0 || st.SyncInterval > time.Minute {
		add("storage.sync_interval", "%v is outside 0..1m", st.SyncInterval)
	}
	if st.MaxDisk < 0 {
		add("storage.max_disk", "must not be negative")
	} else if st.MaxDisk > 0 && st.MaxDisk < 16<<20 {
		add("storage.max_disk", "%d is too small: the store needs at least 16 MiB", st.MaxDisk)
	}
	if st.MinFree < 0 {
		add("storage.min_free", "must not be negative")
	}
	switch st.OnCorruption {
	case CorruptionQuarantine, CorruptionRefuse:
	default:
		add("storage.on_corruption", "%q is not one of quarantine, refuse", st.OnCorruption)
	}
}
