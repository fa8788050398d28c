package persist

import (
	"encoding/binary"
	"errors"
	"strings"
)

// Key prefixes of the v1 schema (see the package documentation). Each ends
// with "/", so a prefix scan never reads another prefix's keys.
const (
	prefixSess   = "v1/sess/"
	prefixSub    = "v1/sub/"
	prefixQueue  = "v1/q/"
	prefixInfl   = "v1/infl/"
	prefixQoS2In = "v1/qos2in/"
	prefixRet    = "v1/ret/"
	prefixOut    = "v1/out/"
)

// clientPrefixes are the prefixes under which a session keeps records
// besides its session key: DelSession clears each of them.
var clientPrefixes = [...]string{prefixSub, prefixQueue, prefixInfl, prefixQoS2In}

// escapeName escapes a client id or bridge name for use as one key
// component: "%" becomes "%25" and "/" becomes "%2F", so the result holds
// no "/".
func escapeName(name string) string {
	if !strings.ContainsAny(name, "%/") {
		return name
	}
	return string(appendEscaped(nil, name))
}

// appendEscaped appends escapeName(name) to b.
func appendEscaped(b []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '%':
			b = append(b, "%25"...)
		case '/':
			b = append(b, "%2F"...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// errBadEscape is the error of unescapeName on a malformed name.
var errBadEscape = errors.New("malformed escaped name")

// unescapeName reverses escapeName. Only the two escapes escapeName
// produces are accepted.
func unescapeName(esc string) (string, error) {
	if !strings.Contains(esc, "%") {
		if strings.Contains(esc, "/") {
			return "", errBadEscape
		}
		return esc, nil
	}
	var b strings.Builder
	b.Grow(len(esc))
	for i := 0; i < len(esc); i++ {
		c := esc[i]
		switch {
		case c == '/':
			return "", errBadEscape
		case c != '%':
			b.WriteByte(c)
		case strings.HasPrefix(esc[i:], "%25"):
			b.WriteByte('%')
			i += 2
		case strings.HasPrefix(esc[i:], "%2F"):
			b.WriteByte('/')
			i += 2
		default:
			return "", errBadEscape
		}
	}
	return b.String(), nil
}

// appendNamePrefix appends prefix, the escaped name and "/": the prefix of
// every key of that client or bridge under prefix.
func appendNamePrefix(b []byte, prefix, name string) []byte {
	b = append(b, prefix...)
	b = appendEscaped(b, name)
	return append(b, '/')
}

// appendSessKey appends v1/sess/<client>.
func appendSessKey(b []byte, client string) []byte {
	return appendEscaped(append(b, prefixSess...), client)
}

// appendSubKey appends v1/sub/<client>/<filter>.
func appendSubKey(b []byte, client, filter string) []byte {
	return append(appendNamePrefix(b, prefixSub, client), filter...)
}

// appendQueueKey appends v1/q/<client>/<seq>.
func appendQueueKey(b []byte, client string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendNamePrefix(b, prefixQueue, client), seq)
}

// appendInflKey appends v1/infl/<client>/<pid>.
func appendInflKey(b []byte, client string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(appendNamePrefix(b, prefixInfl, client), pid)
}

// appendQoS2InKey appends v1/qos2in/<client>/<pid>.
func appendQoS2InKey(b []byte, client string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(appendNamePrefix(b, prefixQoS2In, client), pid)
}

// appendRetKey appends v1/ret/<topic>.
func appendRetKey(b []byte, topic string) []byte {
	return append(append(b, prefixRet...), topic...)
}

// appendOutKey appends v1/out/<bridge>/<seq>.
func appendOutKey(b []byte, bridge string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendNamePrefix(b, prefixOut, bridge), seq)
}

// prefixEnd returns the smallest key above every key starting with p, for
// a range [p, prefixEnd(p)). p must not be all 0xFF bytes (no schema
// prefix is).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	panic("persist: prefixEnd of an all-0xFF prefix")
}

// splitName splits a key under prefix into its escaped name and the rest
// after the "/" that ends the name. ok is false when key is not of that
// form.
func splitName(key []byte, prefix string) (esc string, rest []byte, ok bool) {
	if len(key) < len(prefix) || string(key[:len(prefix)]) != prefix {
		return "", nil, false
	}
	key = key[len(prefix):]
	for i, c := range key {
		if c == '/' {
			return string(key[:i]), key[i+1:], true
		}
	}
	return "", nil, false
}

// parseSeq decodes an 8-byte big-endian seq component.
func parseSeq(rest []byte) (uint64, bool) {
	if len(rest) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(rest), true
}

// parsePID decodes a 2-byte big-endian packet identifier component.
func parsePID(rest []byte) (uint16, bool) {
	if len(rest) != 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(rest), true
}
