package topics

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxLength is the longest topic name or filter, in bytes, that MQTT can
// carry in a UTF-8 encoded string [MQTT-4.7.3-3].
const MaxLength = 65535

// sharePrefix starts every shared subscription filter [MQTT-4.8.2-1].
const sharePrefix = "$share/"

// Validation errors. ValidTopicName and ValidFilter return exactly these
// values, so callers can compare with errors.Is to pick a reason code.
var (
	// ErrEmpty: topic names and filters are at least one character long.
	ErrEmpty = errors.New("topics: topic name or filter is empty")
	// ErrTooLong: longer than MaxLength bytes.
	ErrTooLong = errors.New("topics: topic name or filter is longer than 65535 bytes")
	// ErrInvalidUTF8: not well-formed UTF-8.
	ErrInvalidUTF8 = errors.New("topics: topic name or filter is not valid UTF-8")
	// ErrNullChar: contains U+0000.
	ErrNullChar = errors.New("topics: topic name or filter contains U+0000")
	// ErrWildcardInTopic: a topic name contains '+' or '#'.
	ErrWildcardInTopic = errors.New("topics: topic name contains a wildcard character '+' or '#'")
	// ErrMultiLevelWildcard: '#' is not the whole last level of a filter.
	ErrMultiLevelWildcard = errors.New("topics: '#' must be the whole last level of a topic filter")
	// ErrSingleLevelWildcard: '+' is not a whole level of a filter.
	ErrSingleLevelWildcard = errors.New("topics: '+' must occupy a whole level of a topic filter")
	// ErrShareName: the share name of a $share filter is empty or contains
	// '+', '#' or '/' (or is not followed by '/').
	ErrShareName = errors.New("topics: shared subscription needs a non-empty share name without '+', '#' or '/', followed by '/'")
	// ErrShareFilter: the filter after "$share/<group>/" is empty.
	ErrShareFilter = errors.New("topics: shared subscription has an empty topic filter after the share name")
)

// checkString applies the rules common to topic names and filters.
func checkString(s string) error {
	switch {
	case s == "":
		return ErrEmpty // [MQTT-4.7.3-1]
	case len(s) > MaxLength:
		return ErrTooLong // [MQTT-4.7.3-3]
	case !utf8.ValidString(s):
		return ErrInvalidUTF8 // [MQTT-1.5.4-1]
	case strings.IndexByte(s, 0) >= 0:
		return ErrNullChar // [MQTT-4.7.3-2] [MQTT-1.5.4-2]
	}
	return nil
}

// ValidTopicName reports whether topic may be used as the topic name of a
// PUBLISH: non-empty [MQTT-4.7.3-1], no wildcard characters [MQTT-3.3.2-2],
// no U+0000 [MQTT-4.7.3-2], at most 65535 bytes [MQTT-4.7.3-3] and valid
// UTF-8 [MQTT-1.5.4-1]. The error is one of the Err* values.
func ValidTopicName(topic string) error {
	if err := checkString(topic); err != nil {
		return err
	}
	if strings.ContainsAny(topic, "+#") {
		return ErrWildcardInTopic // [MQTT-3.3.2-2]
	}
	return nil
}

// ValidFilter reports whether filter may be subscribed to. Besides the rules
// of ValidTopicName (except the wildcard ban), '#' may only be the whole last
// level [MQTT-4.7.1-1] and '+' only a whole level [MQTT-4.7.1-2]. A filter
// starting with "$share/" is a shared subscription: it needs a non-empty
// share name without '+', '#' or '/' followed by '/' and a non-empty valid
// filter [MQTT-4.8.2-1] [MQTT-4.8.2-2]. The error is one of the Err* values.
func ValidFilter(filter string) error {
	if err := checkString(filter); err != nil {
		return err
	}
	if group, inner, ok := ParseShared(filter); ok {
		if group == "" || strings.ContainsAny(group, "+#") {
			return ErrShareName // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
		}
		if len(sharePrefix)+len(group) == len(filter) {
			return ErrShareName // no '/' after the share name [MQTT-4.8.2-2]
		}
		if inner == "" {
			return ErrShareFilter // [MQTT-4.8.2-2]
		}
		filter = inner
	}
	return checkWildcards(filter)
}

// checkWildcards enforces the placement of '+' and '#' in a filter.
func checkWildcards(filter string) error {
	rest, more := filter, true
	for more {
		var level string
		level, rest, more = cut(rest)
		if strings.IndexByte(level, '#') >= 0 && (level != "#" || more) {
			return ErrMultiLevelWildcard // [MQTT-4.7.1-1]
		}
		if strings.IndexByte(level, '+') >= 0 && level != "+" {
			return ErrSingleLevelWildcard // [MQTT-4.7.1-2]
		}
	}
	return nil
}

// ParseShared splits a shared subscription filter "$share/<group>/<inner>"
// [MQTT-4.8.2-1]. ok is false when filter does not start with "$share/"; it
// is true for every filter that does, even a malformed one ("$share/g" gives
// group "g" and inner ""): use ValidFilter to reject those.
func ParseShared(filter string) (group, inner string, ok bool) {
	rest, found := strings.CutPrefix(filter, sharePrefix)
	if !found {
		return "", "", false
	}
	group, inner, _ = strings.Cut(rest, "/") // share name ends at the first '/' [MQTT-4.8.2-2]
	return group, inner, true
}

// HasWildcard reports whether a valid filter contains '+' or '#', i.e. may
// match more than one topic name. Shared filters are judged by their inner
// filter (a valid share name has no wildcard characters).
func HasWildcard(filter string) bool {
	return strings.ContainsAny(filter, "+#")
}

// cut returns the first level of s, the remainder after its separator, and
// whether there was a separator (so whether at least one more level, possibly
// empty, follows). It never allocates.
func cut(s string) (level, rest string, more bool) {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}
