package topics

import (
	"fmt"
	"slices"
	"testing"
)

// matchCases are the topic matching examples of MQTT 5.0 §4.7 plus edge
// cases around empty levels and '$' topics.
var matchCases = []struct {
	filter, topic string
	want          bool
}{
	// §4.7.1.2 multi-level wildcard.
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/tennis/player1/#", "sport/tennis", false},
	{"sport/#", "sport", true}, // [MQTT-4.7.1-1] '#' includes the parent level
	{"sport/#", "sport/", true},
	{"sport/#", "sports", false},
	{"#", "sport", true},
	{"#", "/", true},
	{"#", "sport/tennis/player1", true},
	// §4.7.1.3 single-level wildcard.
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true}, // '+' matches an empty level
	{"+", "sport", true},
	{"+", "/finance", false},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+/tennis/#", "sport/tennis/player1", true},
	{"+/tennis/#", "sport/tennis", true},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"+/+", "/", true},
	{"+", "/", false},
	{"+/+/+", "a//b", true},
	// Empty levels match exactly.
	{"a//b", "a//b", true},
	{"a//b", "a/b", false},
	{"a/b", "a//b", false},
	{"/a", "a", false},
	{"a/", "a", false},
	{"a", "a/", false},
	{"a/+", "a//", false},
	{"a/#", "a//", true},
	// §4.7.2 topics beginning with '$' [MQTT-4.7.2-1].
	{"#", "$SYS/monitor/Clients", false},
	{"#", "$SYS", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"+", "$SYS", false},
	{"+/#", "$SYS/x", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"$SYS/+/Clients", "$SYS/monitor/Clients", true},
	{"a/#", "a/$x", true}, // only the first level is special
	{"+/+", "a/$x", true},
	{"#", "a$", true},
	// §4.7.3 case sensitive, no normalisation [MQTT-4.7.3-4].
	{"ACCOUNTS", "Accounts", false},
	{"Accounts payable", "Accounts payable", true},
	{"caf\u00e9", "cafe\u0301", false},
}

func TestMatchSpecExamples(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(fmt.Sprintf("%s|%s", tc.filter, tc.topic), func(t *testing.T) {
			if err := ValidFilter(tc.filter); err != nil {
				t.Fatalf("bad case filter: %v", err)
			}
			if err := ValidTopicName(tc.topic); err != nil {
				t.Fatalf("bad case topic: %v", err)
			}
			if got := naiveMatch(tc.filter, tc.topic); got != tc.want {
				t.Errorf("naiveMatch = %v, want %v", got, tc.want)
			}
			tr := NewTrie()
			tr.Subscribe(Subscription{ClientID: "c", Filter: tc.filter})
			tr.Subscribe(Subscription{ClientID: "c", Filter: "$share/g/" + tc.filter})
			var r Result
			tr.Match(tc.topic, &r)
			if got := len(r.Subs) == 1; got != tc.want || len(r.Subs) > 1 {
				t.Errorf("trie: %d subs, want match=%v", len(r.Subs), tc.want)
			}
			if got := len(r.Groups) == 1; got != tc.want || len(r.Groups) > 1 {
				t.Errorf("trie: %d groups, want match=%v", len(r.Groups), tc.want)
			}
			ret := NewRetained[int]()
			ret.Set(tc.topic, 1)
			n := 0
			ret.Match(tc.filter, func(string, int) bool { n++; return true })
			if got := n == 1; got != tc.want || n > 1 {
				t.Errorf("retained: %d matches, want match=%v", n, tc.want)
			}
		})
	}
}

func TestMatchOverlapping(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"a/b", "a/+", "a/#", "#", "+/b", "x/y"} {
		tr.Subscribe(Subscription{ClientID: "c1", Filter: f, QoS: 1})
	}
	tr.Subscribe(Subscription{ClientID: "c2", Filter: "a/b"})
	var r Result
	tr.Match("a/b", &r)
	got := subKeys(r.Subs)
	want := []string{"c1 #", "c1 +/b", "c1 a/#", "c1 a/+", "c1 a/b", "c2 a/b"}
	if !slices.Equal(got, want) {
		t.Errorf("Match(a/b) = %v, want %v", got, want)
	}
	// Match appends; Reset empties.
	tr.Match("x/y", &r)
	if len(r.Subs) != 8 {
		t.Errorf("after second Match: %d subs, want 8", len(r.Subs))
	}
	r.Reset()
	tr.Match("x/y", &r)
	if got := subKeys(r.Subs); !slices.Equal(got, []string{"c1 #", "c1 x/y"}) {
		t.Errorf("Match(x/y) = %v", got)
	}
	r.Reset()
	tr.Match("", &r)
	if len(r.Subs)+len(r.Groups) != 0 {
		t.Errorf("empty topic matched %v", r)
	}
}

// TestSubscribeReplaces proves [MQTT-3.8.4-3]: an identical filter from the
// same client replaces the subscription instead of adding one.
func TestSubscribeReplaces(t *testing.T) {
	tr := NewTrie()
	if tr.Subscribe(Subscription{ClientID: "c", Filter: "a/+", QoS: 0, ID: 1}) {
		t.Fatal("first Subscribe reported replaced")
	}
	tr.Subscribe(Subscription{ClientID: "c", Filter: "b"})
	if !tr.Subscribe(Subscription{ClientID: "c", Filter: "a/+", QoS: 2, ID: 7, NoLocal: true}) {
		t.Fatal("second Subscribe did not report replaced") // [MQTT-3.8.4-3]
	}
	if tr.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tr.Len())
	}
	var r Result
	tr.Match("a/x", &r)
	want := Subscription{ClientID: "c", Filter: "a/+", QoS: 2, ID: 7, NoLocal: true}
	if len(r.Subs) != 1 || r.Subs[0] != want {
		t.Fatalf("Match = %+v, want [%+v]", r.Subs, want)
	}
	// Replacement keeps the original subscription order.
	subs := tr.Subscriptions("c")
	if len(subs) != 2 || subs[0] != want || subs[1].Filter != "b" {
		t.Errorf("Subscriptions = %+v", subs)
	}
	// A different client with the same filter is a separate subscription.
	if tr.Subscribe(Subscription{ClientID: "d", Filter: "a/+"}) {
		t.Error("other client's Subscribe reported replaced")
	}
}

func TestUnsubscribe(t *testing.T) {
	tr := NewTrie()
	tr.Subscribe(Subscription{ClientID: "c", Filter: "a/b"})
	tr.Subscribe(Subscription{ClientID: "c", Filter: "$share/g/a/b"})
	tr.Subscribe(Subscription{ClientID: "d", Filter: "a/b"})
	if tr.Unsubscribe("c", "a/+") || tr.Unsubscribe("x", "a/b") {
		t.Error("Unsubscribe of a missing subscription reported existed")
	}
	if !tr.Unsubscribe("c", "a/b") {
		t.Error("Unsubscribe(c, a/b) = false")
	}
	if tr.Unsubscribe("c", "a/b") {
		t.Error("second Unsubscribe(c, a/b) = true")
	}
	var r Result
	tr.Match("a/b", &r)
	if got := subKeys(r.Subs); !slices.Equal(got, []string{"d a/b"}) || len(r.Groups) != 1 {
		t.Errorf("Match = %v, %d groups", got, len(r.Groups))
	}
	if n := tr.UnsubscribeAll("c"); n != 1 {
		t.Errorf("UnsubscribeAll(c) = %d, want 1", n)
	}
	if n := tr.UnsubscribeAll("c"); n != 0 {
		t.Errorf("second UnsubscribeAll(c) = %d, want 0", n)
	}
	if tr.Len() != 1 || len(tr.Subscriptions("c")) != 0 {
		t.Errorf("Len = %d, Subscriptions(c) = %v", tr.Len(), tr.Subscriptions("c"))
	}
}

func TestPruning(t *testing.T) {
	tr := NewTrie()
	filters := []string{"a", "a/b", "a/b/c", "a/+/c", "a/#", "#", "+", "/", "//",
		"$SYS/#", "$share/g/a/b", "$share/h/a/b", "$share/g/+/#", "x/y/z/w"}
	for i := range 50 {
		for _, f := range filters {
			tr.Subscribe(Subscription{ClientID: fmt.Sprint("c", i), Filter: f})
		}
	}
	if tr.nodeCount() == 0 {
		t.Fatal("no nodes after subscribing")
	}
	// Half by Unsubscribe, in a different order than subscribed; half by
	// UnsubscribeAll.
	for i := range 25 {
		for j := len(filters) - 1; j >= 0; j-- {
			if !tr.Unsubscribe(fmt.Sprint("c", i), filters[j]) {
				t.Fatalf("Unsubscribe(c%d, %q) = false", i, filters[j])
			}
		}
	}
	for i := 25; i < 50; i++ {
		if n := tr.UnsubscribeAll(fmt.Sprint("c", i)); n != len(filters) {
			t.Fatalf("UnsubscribeAll = %d", n)
		}
	}
	if n := tr.nodeCount(); n != 0 {
		t.Errorf("%d nodes left after unsubscribing everything", n)
	}
	if tr.Len() != 0 || len(tr.clients) != 0 || tr.root.subs.items != nil || tr.root.groups != nil {
		t.Errorf("trie not empty: Len %d, %d clients", tr.Len(), len(tr.clients))
	}
}

func TestSubscriptionsOrder(t *testing.T) {
	tr := NewTrie()
	filters := []string{"z", "a", "m/#", "$share/g/b", "+"}
	for _, f := range filters {
		tr.Subscribe(Subscription{ClientID: "c", Filter: f})
	}
	var got []string
	for _, s := range tr.Subscriptions("c") {
		got = append(got, s.Filter)
	}
	if !slices.Equal(got, filters) {
		t.Errorf("Subscriptions = %v, want %v", got, filters)
	}
	if s := tr.Subscriptions("nobody"); len(s) != 0 {
		t.Errorf("Subscriptions(nobody) = %v", s)
	}
}

func subKeys(subs []Subscription) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.ClientID + " " + s.Filter
	}
	slices.Sort(out)
	return out
}
