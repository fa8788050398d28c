// Package bridge is the store-and-forward bridge to an upstream MQTT or
// AMQP 0-9-1 broker (DESIGN.md §5): a durable outbox per bridge, a
// forwarder that reads it in order and deletes an entry only when the
// upstream has confirmed it, and a downlink that publishes upstream
// messages locally and acknowledges them after the local commit.
// Upstream is the small interface the adapters (bridge/amqp, bridge/mqtt)
// implement.
//
// Data flow: the broker offers every publish to Bridge.Offer (the
// broker.Outlet interface, wired by cmd/ferrymq); a message matching a
// forward rule gets the next seq and a session.PutOutbox change that the
// broker commits in the publish's own batch, then Committed. The forwarder
// reads committed entries in seq order (from RAM while it keeps up, from
// the store otherwise), publishes up to max_inflight of them, and deletes
// done entries in ranges.
//
// Goroutines: Start runs two, stopped and waited for by Stop — the link
// loop (connect, forward, reconnect after a backoff; the forwarder state
// belongs to it alone) and the $SYS statistics publisher. Adapters run
// their own goroutines per link and end them in Close. On Stop the link
// loop waits (at most stopSettle) for the downlink messages handed to the
// broker to be stored, so that their acknowledgements reach the upstream
// before Close.
//
// Locks: outbox.mu, forwarder.mu (the confirmations handed over by the
// adapters) and injecting.mu are leaves: nothing else is locked or called while either is
// held. Offer and Committed never block.
package bridge
