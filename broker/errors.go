package broker

import (
	"errors"
	"fmt"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// Connection-ending conditions that are not protocol errors of the peer.
var (
	errShutdown       = fmt.Errorf("server shutting down: %w", packet.ServerShuttingDown)
	errTakenOver      = fmt.Errorf("session taken over by a new connection: %w", packet.SessionTakenOver)
	errKeepAlive      = fmt.Errorf("no packet within 1.5 x keep alive: %w", packet.KeepAliveTimeout)
	errConnectTimeout = errors.New("no CONNECT within the connect timeout")
	errNotConnect     = fmt.Errorf("first packet is not CONNECT [MQTT-3.1.0-1]: %w", packet.ProtocolError)
	errSecondConnect  = fmt.Errorf("second CONNECT [MQTT-3.1.0-2]: %w", packet.ProtocolError)
)

// protoErr is a protocol violation with a reason code and an explanation
// that goes to the log and, when the client asked for problem
// information, into the DISCONNECT reason string.
func protoErr(code packet.ReasonCode, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), code)
}

// disconnectCode is the reason code a v5 client is sent when the server
// ends its connection with err; ok is false when nothing should be sent
// (clean close, I/O failure).
func disconnectCode(err error) (packet.ReasonCode, bool) {
	if err == nil || errors.Is(err, errConnectTimeout) {
		return 0, false
	}
	var code packet.ReasonCode
	if errors.As(err, &code) && code.IsError() {
		return code, true
	}
	return 0, false
}

// fitReason drops the Reason String from pr, the properties of p, when it
// would make p larger than the client's Maximum Packet Size
// [MQTT-3.1.2-24] [MQTT-3.2.2-19] [MQTT-3.14.2-3].
func (c *client) fitReason(p packet.Packet, pr *packet.Properties) {
	if c.maxOut > 0 && pr.ReasonString != "" && uint32(packet.EncodedLen(p, c.version)) > c.maxOut {
		pr.ReasonString = ""
		pr.Clear(packet.PropReasonString)
	}
}

// reasonProps carries err's text as a v5 Reason String when the client
// has not turned problem information off [MQTT-3.1.2-29].
func (c *client) reasonProps(err error) packet.Properties {
	var p packet.Properties
	if err != nil && c.problemInfo {
		p.ReasonString = err.Error()
	}
	return p
}
