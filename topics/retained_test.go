package topics

import (
	"slices"
	"testing"
)

func TestRetainedBasics(t *testing.T) {
	ret := NewRetained[string]()
	if _, ok := ret.Get("a"); ok || ret.Len() != 0 || ret.Delete("a") {
		t.Fatal("empty index not empty")
	}
	ret.Set("a/b", "1")
	ret.Set("a/b", "2") // replaces
	ret.Set("a", "3")
	ret.Set("/", "4")
	ret.Set("$SYS/up", "5")
	if v, ok := ret.Get("a/b"); !ok || v != "2" || ret.Len() != 4 {
		t.Errorf("Get(a/b) = %q, %v; Len %d", v, ok, ret.Len())
	}
	if _, ok := ret.Get("a/b/c"); ok {
		t.Error("Get of an intermediate or missing topic found something")
	}
	if !ret.Delete("a") || ret.Delete("a") {
		t.Error("Delete(a) twice")
	}
	if v, ok := ret.Get("a/b"); !ok || v != "2" {
		t.Error("Delete(a) removed a/b")
	}
}

func TestRetainedMatch(t *testing.T) {
	ret := NewRetained[int]()
	for i, tp := range []string{"sport", "sport/tennis", "sport/tennis/player1",
		"sport/", "/finance", "$SYS/uptime", "$SYS", "a//b"} {
		ret.Set(tp, i)
	}
	tests := []struct {
		filter string
		want   []string
	}{
		{"sport/#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1"}}, // [MQTT-4.7.1-1]
		{"sport/+", []string{"sport/", "sport/tennis"}},
		{"+", []string{"sport"}}, // [MQTT-4.7.2-1]
		{"#", []string{"/finance", "a//b", "sport", "sport/", "sport/tennis", "sport/tennis/player1"}}, // [MQTT-4.7.2-1]
		{"+/+", []string{"/finance", "sport/", "sport/tennis"}},
		{"$SYS/#", []string{"$SYS", "$SYS/uptime"}},
		{"$SYS/+", []string{"$SYS/uptime"}},
		{"a/+/b", []string{"a//b"}},
		{"sport/tennis", []string{"sport/tennis"}},
		{"nothing/here", nil},
		{"", nil},
	}
	for _, tc := range tests {
		var got []string
		ret.Match(tc.filter, func(tp string, _ int) bool { got = append(got, tp); return true })
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Match(%q) = %q, want %q", tc.filter, got, tc.want)
		}
	}
	n := 0
	ret.Match("#", func(string, int) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Match did not stop when fn returned false: %d calls", n)
	}
}

func TestRetainedPruning(t *testing.T) {
	ret := NewRetained[int]()
	topics := []string{"a", "a/b/c/d", "a/b", "/", "//x", "$SYS/a/b"}
	for i, tp := range topics {
		ret.Set(tp, i)
	}
	for _, tp := range topics {
		if !ret.Delete(tp) {
			t.Fatalf("Delete(%q) = false", tp)
		}
	}
	if ret.Len() != 0 || ret.nodeCount() != 0 {
		t.Errorf("Len %d, %d nodes left", ret.Len(), ret.nodeCount())
	}
}
