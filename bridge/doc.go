// Package bridge is the store-and-forward bridge to an upstream MQTT or
// AMQP 0-9-1 broker (DESIGN.md §5): a durable outbox per bridge, a
// forwarder that reads it in order and deletes an entry only when the
// upstream has confirmed it, and a downlink that publishes upstream
// messages locally and acknowledges them after the local commit.
// Upstream is the small interface the adapters (bridge/amqp, bridge/mqtt)
// implement.
package bridge
