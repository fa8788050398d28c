// Package bridge will hold the store-and-forward bridge to an upstream
// MQTT or AMQP broker (a later issue).
package bridge
