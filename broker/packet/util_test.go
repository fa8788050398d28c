package packet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// unhex decodes a hex string; spaces, newlines and '|' are ignored.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "\n", "", "\t", "", "|", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func mustUnhex(s string) []byte {
	s = strings.NewReplacer(" ", "", "\n", "", "\t", "", "|", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(fmt.Sprintf("bad hex %q: %v", s, err))
	}
	return b
}

// pk builds the hex of a whole packet: first byte, remaining length
// computed from the body, body. Parts are hex strings (see s and hx).
func pk(first string, parts ...string) string {
	body := mustUnhex(strings.Join(parts, ""))
	return first + " " + hex.EncodeToString(appendVarint(nil, len(body))) + " " + hex.EncodeToString(body)
}

// s is the hex of an MQTT UTF-8 string: 2-byte length and the bytes.
func s(str string) string {
	return fmt.Sprintf("%04x", len(str)) + hex.EncodeToString([]byte(str)) + " "
}

// hx is the hex of raw bytes.
func hx(str string) string { return hex.EncodeToString([]byte(str)) + " " }

// props is the hex of a property list: its varint length, then the parts.
func props(parts ...string) string {
	body := mustUnhex(strings.Join(parts, ""))
	return hex.EncodeToString(appendVarint(nil, len(body))) + " " + hex.EncodeToString(body) + " "
}

// decodeBytes runs ParseFixedHeader + Decode on one whole packet.
func decodeBytes(b []byte, v Version) (Packet, error) {
	h, err := ParseFixedHeader(b, 0)
	if err != nil {
		return nil, err
	}
	if h.Size() != len(b) {
		return nil, fmt.Errorf("fixture: header says %d bytes, have %d", h.Size(), len(b))
	}
	return Decode(h, b[h.HeaderLen:], v)
}

// normalize makes empty slices nil so DeepEqual ignores the difference.
func normalize(p Packet) Packet {
	np := func(pr *Properties) {
		if len(pr.CorrelationData) == 0 {
			pr.CorrelationData = nil
		}
		if len(pr.AuthData) == 0 {
			pr.AuthData = nil
		}
		if len(pr.SubscriptionIDs) == 0 {
			pr.SubscriptionIDs = nil
		}
		if len(pr.User) == 0 {
			pr.User = nil
		}
	}
	switch p := p.(type) {
	case *Connect:
		c := *p
		np(&c.Props)
		np(&c.WillProps)
		if len(c.WillPayload) == 0 {
			c.WillPayload = nil
		}
		if len(c.Password) == 0 {
			c.Password = nil
		}
		return &c
	case *Publish:
		c := *p
		np(&c.Props)
		if len(c.Payload) == 0 {
			c.Payload = nil
		}
		return &c
	case *Connack:
		c := *p
		np(&c.Props)
		return &c
	case *Ack:
		c := *p
		np(&c.Props)
		return &c
	case *Subscribe:
		c := *p
		np(&c.Props)
		return &c
	case *Suback:
		c := *p
		np(&c.Props)
		return &c
	case *Unsubscribe:
		c := *p
		np(&c.Props)
		return &c
	case *Unsuback:
		c := *p
		np(&c.Props)
		if len(c.ReasonCodes) == 0 {
			c.ReasonCodes = nil
		}
		return &c
	case *Disconnect:
		c := *p
		np(&c.Props)
		return &c
	case *Auth:
		c := *p
		np(&c.Props)
		return &c
	}
	return p
}

func packetsEqual(a, b Packet) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

// checkErr requires err to be an *Error with the given code and field.
func checkErr(t testing.TB, err error, code ReasonCode, field string) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not *Error", err, err)
	}
	if pe.Code != code {
		t.Errorf("code = %v, want %v (err: %v)", pe.Code, code, err)
	}
	if field != "" && pe.Field != field {
		t.Errorf("field = %q, want %q (err: %v)", pe.Field, field, err)
	}
	if !errors.Is(err, code) {
		t.Errorf("errors.Is(err, %v) = false", code)
	}
}
