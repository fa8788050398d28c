package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestValidTopicName(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		want  error
	}{
		{"simple", "sport/tennis/player1", nil},
		{"single level", "sport", nil},
		{"leading slash", "/finance", nil},
		{"trailing slash", "sport/", nil},
		{"only separator", "/", nil},
		{"double separator", "a//b", nil},
		{"space", "Accounts payable", nil},
		{"dollar", "$SYS/broker/uptime", nil},
		{"share-looking topic", "$share/g/a", nil},
		{"unicode", "maison/cuisine/température", nil},
		{"max length", strings.Repeat("a", MaxLength), nil},
		{"empty [MQTT-4.7.3-1]", "", ErrEmpty},
		{"too long [MQTT-4.7.3-3]", strings.Repeat("a", MaxLength+1), ErrTooLong},
		{"plus [MQTT-3.3.2-2]", "sport/+", ErrWildcardInTopic},
		{"plus inside level [MQTT-3.3.2-2]", "sport+", ErrWildcardInTopic},
		{"hash [MQTT-3.3.2-2]", "sport/#", ErrWildcardInTopic},
		{"hash alone [MQTT-3.3.2-2]", "#", ErrWildcardInTopic},
		{"null [MQTT-4.7.3-2]", "a\x00b", ErrNullChar},
		{"bad utf8 [MQTT-1.5.4-1]", "a\xffb", ErrInvalidUTF8},
		{"surrogate [MQTT-1.5.4-1]", "a\xed\xa0\x80", ErrInvalidUTF8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidTopicName(tc.topic); !errors.Is(got, tc.want) {
				t.Errorf("ValidTopicName(%.40q) = %v, want %v", tc.topic, got, tc.want)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		want   error
	}{
		// Examples of MQTT 5.0 §4.7.1.
		{"multi-level", "sport/tennis/player1/#", nil},
		{"hash alone [MQTT-4.7.1-1]", "#", nil},
		{"hash after separator [MQTT-4.7.1-1]", "sport/#", nil},
		{"hash after level [MQTT-4.7.1-1]", "sport/tennis#", ErrMultiLevelWildcard},
		{"hash not last [MQTT-4.7.1-1]", "sport/tennis/#/ranking", ErrMultiLevelWildcard},
		{"hash twice [MQTT-4.7.1-1]", "#/#", ErrMultiLevelWildcard},
		{"hash with text [MQTT-4.7.1-1]", "a/#b", ErrMultiLevelWildcard},
		{"plus alone [MQTT-4.7.1-2]", "+", nil},
		{"plus then hash [MQTT-4.7.1-2]", "+/tennis/#", nil},
		{"plus middle [MQTT-4.7.1-2]", "sport/+/player1", nil},
		{"plus in level [MQTT-4.7.1-2]", "sport+", ErrSingleLevelWildcard},
		{"plus twice in level [MQTT-4.7.1-2]", "a/++", ErrSingleLevelWildcard},
		{"plus plus", "+/+", nil},
		{"leading slash plus", "/+", nil},
		{"empty levels", "//", nil},
		{"dollar", "$SYS/#", nil},
		{"empty [MQTT-4.7.3-1]", "", ErrEmpty},
		{"null [MQTT-4.7.3-2]", "a/\x00", ErrNullChar},
		{"bad utf8 [MQTT-1.5.4-1]", "\xc3", ErrInvalidUTF8},
		{"too long [MQTT-4.7.3-3]", strings.Repeat("a", MaxLength+1), ErrTooLong},
		// Shared subscriptions, §4.8.2.
		{"share [MQTT-4.8.2-1]", "$share/g/sport/#", nil},
		{"share plus [MQTT-4.8.2-1]", "$share/consumer1/+", nil},
		{"share hash [MQTT-4.8.2-1]", "$share/g/#", nil},
		{"share nested", "$share/g/$share/h/x", nil},
		{"share empty name [MQTT-4.8.2-1]", "$share//a", ErrShareName},
		{"share no name [MQTT-4.8.2-1]", "$share/", ErrShareName},
		{"share name plus [MQTT-4.8.2-2]", "$share/g+/a", ErrShareName},
		{"share name hash [MQTT-4.8.2-2]", "$share/#/a", ErrShareName},
		{"share name only [MQTT-4.8.2-2]", "$share/g", ErrShareName},
		{"share empty filter [MQTT-4.8.2-2]", "$share/g/", ErrShareFilter},
		{"share bad inner [MQTT-4.8.2-2]", "$share/g/a#", ErrMultiLevelWildcard},
		{"share bad inner plus [MQTT-4.8.2-2]", "$share/g/a+/b", ErrSingleLevelWildcard},
		{"not a share", "$share", nil},
		{"not a share either", "$sharex/g/a", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidFilter(tc.filter); !errors.Is(got, tc.want) {
				t.Errorf("ValidFilter(%.40q) = %v, want %v", tc.filter, got, tc.want)
			}
		})
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		filter, group, inner string
		ok                   bool
	}{
		{"$share/g/a/b", "g", "a/b", true},
		{"$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+", true},
		{"$share/g/#", "g", "#", true},
		{"$share/g/", "g", "", true},
		{"$share/g", "g", "", true},
		{"$share//a", "", "a", true},
		{"$share", "", "", false},
		{"$SHARE/g/a", "", "", false},
		{"a/$share/g/b", "", "", false},
		{"#", "", "", false},
	}
	for _, tc := range tests {
		g, in, ok := ParseShared(tc.filter)
		if g != tc.group || in != tc.inner || ok != tc.ok {
			t.Errorf("ParseShared(%q) = %q, %q, %v; want %q, %q, %v",
				tc.filter, g, in, ok, tc.group, tc.inner, tc.ok)
		}
	}
}

func TestHasWildcard(t *testing.T) {
	for filter, want := range map[string]bool{
		"a/b": false, "a/+": true, "#": true, "+/x": true, "$share/g/a": false,
		"$share/g/a/#": true, "/": false,
	} {
		if got := HasWildcard(filter); got != want {
			t.Errorf("HasWildcard(%q) = %v, want %v", filter, got, want)
		}
	}
}
