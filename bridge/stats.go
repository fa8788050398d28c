package bridge

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// Link states (Snapshot.State).
const (
	StateDown       = "down"       // waiting to reconnect
	StateConnecting = "connecting" // dialling
	StateUp         = "up"         // connected and forwarding
	StateBlocked    = "blocked"    // connected; the upstream asked us to pause
)

// Stats are a bridge's counters since it was built.
type Stats struct {
	state       atomic.Value // string
	Forwarded   atomic.Int64 // messages sent upstream (resends included)
	Confirmed   atomic.Int64 // outbox entries the upstream confirmed
	Resent      atomic.Int64 // messages sent again after a reconnect or a rejection
	Received    atomic.Int64 // downlink messages published locally
	Connects    atomic.Int64 // successful connections
	ConnectErrs atomic.Int64 // failed connection attempts
	LinkLosses  atomic.Int64 // connections lost (including confirm timeouts)
	Timeouts    atomic.Int64 // confirmations that did not come in time (half-open link)
	StoreFailed atomic.Int64 // outbox writes that failed (their publisher was refused)
	RefusedFull atomic.Int64 // publishes refused: backlog full (when_full: refuse)
	DeadLetter  atomic.Int64 // messages moved to the dead-letter log

	// Drops, by reason.
	DroppedFull     atomic.Int64 // backlog.max_bytes (drop-oldest, drop-new)
	DroppedAge      atomic.Int64 // backlog.max_age
	DroppedExpired  atomic.Int64 // the message's own expiry passed while it waited
	DroppedOffline  atomic.Int64 // QoS 0 not queued while the link was down (or not keeping up)
	DroppedUnmapped atomic.Int64 // downlink messages no receive rule maps
	DroppedEcho     atomic.Int64 // downlink messages that were our own forwarded ones

	rate atomic.Int64 // confirmed per second over the last stats period (x1000)
}

// Snapshot is a point-in-time copy of a bridge's state and counters.
type Snapshot struct {
	State string
	// Backlog: entries in the outbox not yet confirmed (or dropped).
	BacklogMessages, BacklogBytes int64
	// OldestUnconfirmed is the age of the oldest outbox entry (0 when
	// empty): the link's health, whatever the socket says.
	OldestUnconfirmed                            time.Duration
	Forwarded, Confirmed, Resent, Received       int64
	Connects, ConnectErrs, LinkLosses, Timeouts  int64
	StoreFailed, RefusedFull, DeadLetter         int64
	DroppedFull, DroppedAge, DroppedExpired      int64
	DroppedOffline, DroppedUnmapped, DroppedEcho int64
	ReplayRate                                   float64 // confirmed per second, last stats period
}

// Stats returns the bridge's current state and counters.
func (b *Bridge) Stats() Snapshot {
	st := &b.stats
	n, bytes := b.ob.backlog()
	s := Snapshot{
		State: b.state(), BacklogMessages: n, BacklogBytes: bytes,
		Forwarded: st.Forwarded.Load(), Confirmed: st.Confirmed.Load(), Resent: st.Resent.Load(),
		Received: st.Received.Load(), Connects: st.Connects.Load(), ConnectErrs: st.ConnectErrs.Load(),
		LinkLosses: st.LinkLosses.Load(), Timeouts: st.Timeouts.Load(), StoreFailed: st.StoreFailed.Load(),
		RefusedFull: st.RefusedFull.Load(), DeadLetter: st.DeadLetter.Load(),
		DroppedFull: st.DroppedFull.Load(), DroppedAge: st.DroppedAge.Load(), DroppedExpired: st.DroppedExpired.Load(),
		DroppedOffline: st.DroppedOffline.Load(), DroppedUnmapped: st.DroppedUnmapped.Load(),
		DroppedEcho: st.DroppedEcho.Load(),
		ReplayRate:  float64(st.rate.Load()) / 1000,
	}
	if old := b.oldest.Load(); old != 0 && n > 0 {
		s.OldestUnconfirmed = max(b.opts.Now().Sub(time.Unix(0, old)), 0)
	}
	return s
}

func (b *Bridge) setState(s string) { b.stats.state.Store(s) }

func (b *Bridge) state() string {
	if s, ok := b.stats.state.Load().(string); ok {
		return s
	}
	return StateDown
}

// Topics returns the $SYS topics and values of a snapshot, relative to
// $SYS/broker/bridge/<name>/.
func (s *Snapshot) Topics() [][2]string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	return [][2]string{
		{"state", s.State},
		{"backlog/messages", i(s.BacklogMessages)},
		{"backlog/bytes", i(s.BacklogBytes)},
		{"oldest_unconfirmed_seconds", strconv.FormatFloat(s.OldestUnconfirmed.Seconds(), 'f', 3, 64)},
		{"forwarded", i(s.Forwarded)},
		{"confirmed", i(s.Confirmed)},
		{"resent", i(s.Resent)},
		{"received", i(s.Received)},
		{"replay_rate", strconv.FormatFloat(s.ReplayRate, 'f', 1, 64)},
		{"connects", i(s.Connects)},
		{"connect_errors", i(s.ConnectErrs)},
		{"link_losses", i(s.LinkLosses)},
		{"confirm_timeouts", i(s.Timeouts)},
		{"dead_letter", i(s.DeadLetter)},
		{"refused/full", i(s.RefusedFull)},
		{"refused/store", i(s.StoreFailed)},
		{"dropped/full", i(s.DroppedFull)},
		{"dropped/age", i(s.DroppedAge)},
		{"dropped/expired", i(s.DroppedExpired)},
		{"dropped/offline", i(s.DroppedOffline)},
		{"dropped/unmapped", i(s.DroppedUnmapped)},
		{"dropped/echo", i(s.DroppedEcho)},
	}
}

// publishStats publishes the snapshot as retained QoS 0 messages under
// $SYS/broker/bridge/<name>/ every StatsInterval, and computes the replay
// rate.
func (b *Bridge) publishStats(ctx context.Context) {
	t := time.NewTicker(b.opts.StatsInterval)
	defer t.Stop()
	prev, at := b.stats.Confirmed.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, now := b.stats.Confirmed.Load(), time.Now()
		if d := now.Sub(at).Seconds(); d > 0 {
			b.stats.rate.Store(int64(float64(c-prev) / d * 1000))
		}
		prev, at = c, now
		s := b.Stats()
		base := "$SYS/broker/bridge/" + b.cfg.Name + "/"
		for _, kv := range s.Topics() {
			b.opts.Inject(&session.Message{Topic: base + kv[0], Payload: []byte(kv[1]), Retain: true, Origin: b.origin}, nil)
		}
	}
}
