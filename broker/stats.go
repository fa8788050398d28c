package broker

import "sync/atomic"

// Stats are the broker's counters. All fields are typed atomics (64-bit
// atomics on plain fields panic on 32-bit ARM).
type Stats struct {
	Connections    atomic.Int64 // currently connected clients
	Accepted       atomic.Int64 // connections accepted since start
	MessagesIn     atomic.Int64 // PUBLISH packets received
	MessagesOut    atomic.Int64 // PUBLISH packets sent
	DroppedQoS0    atomic.Int64 // QoS 0 deliveries dropped: the client's outbound queue was full
	DroppedQueue   atomic.Int64 // QoS 1/2 deliveries dropped: the session queue was full
	DroppedTooBig  atomic.Int64 // deliveries larger than the client's Maximum Packet Size
	DroppedExpired atomic.Int64 // deliveries whose message expired before sending
	DroppedOffline atomic.Int64 // QoS 0 deliveries to an offline session
	RefusedFull    atomic.Int64 // answers refused (v5 0x97) or connections closed (3.1.1): the store was full
	DroppedFull    atomic.Int64 // other changes not stored because the store was full (e.g. a QoS 0 retained message, kept in memory only)
	StoreErrors    atomic.Int64 // failed store commits and reads
	RefusedBridge  atomic.Int64 // publishes refused because a bridge's outbox was full (when_full: refuse)
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	Connections, Accepted, MessagesIn, MessagesOut                           int64
	DroppedQoS0, DroppedQueue, DroppedTooBig, DroppedExpired, DroppedOffline int64
	RefusedFull, DroppedFull, StoreErrors, RefusedBridge                     int64
	Sessions, Subscriptions, Retained                                        int
}

// Stats returns the current counters.
func (s *Server) Stats() StatsSnapshot {
	st := &s.stats
	s.smu.RLock()
	n := len(s.sessions)
	s.smu.RUnlock()
	return StatsSnapshot{
		Connections: st.Connections.Load(), Accepted: st.Accepted.Load(),
		MessagesIn: st.MessagesIn.Load(), MessagesOut: st.MessagesOut.Load(),
		DroppedQoS0: st.DroppedQoS0.Load(), DroppedQueue: st.DroppedQueue.Load(),
		DroppedTooBig: st.DroppedTooBig.Load(), DroppedExpired: st.DroppedExpired.Load(),
		DroppedOffline: st.DroppedOffline.Load(),
		RefusedFull:    st.RefusedFull.Load(), DroppedFull: st.DroppedFull.Load(), StoreErrors: st.StoreErrors.Load(),
		RefusedBridge: st.RefusedBridge.Load(),
		Sessions:      n, Subscriptions: s.trie.Len(), Retained: s.retained.Len(),
	}
}
