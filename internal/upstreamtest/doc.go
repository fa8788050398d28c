// Package upstreamtest starts and controls real upstream brokers (Mosquitto, RabbitMQ) for tests, on loopback only.
//
// Mosquitto runs as a child process of the test (StartMosquitto) on a free
// 127.0.0.1 port with its configuration, persistence and log in the test's
// temporary directory: a test can stop and restart it (sessions survive),
// kill it, or freeze it (SIGSTOP: a half-open link). RabbitMQ is a service
// of the machine (RabbitMQ). Proxy puts a loopback TCP proxy between a
// client and a broker, to take the link down or freeze it under the
// client. When a broker is not available the test is skipped, or fails
// when FERRYMQ_REQUIRE_SERVICES=1 (CI).
package upstreamtest
