package bridge

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/topics"
)

// mapCases: Compile(from, to).Map(topic) must give want, or no match
// when want is "-".
var mapCases = []struct{ name, from, to, topic, want string }{
	// The example: a whole subtree moves under a prefix.
	{"issue", "sensors/#", "site1/sensors/{1}", "sensors/room1/temp", "site1/sensors/room1/temp"},
	{"issue parent level", "sensors/#", "site1/sensors/{1}", "sensors", "site1/sensors"},
	{"issue empty level", "sensors/#", "site1/sensors/{1}", "sensors/", "site1/sensors/"},
	{"issue other topic", "sensors/#", "site1/sensors/{1}", "sensor", "-"},

	{"identity", "a/+", "{topic}", "a/b", "a/b"},
	{"empty template", "a/+", "", "a/b", "a/b"},
	{"topic inside", "a/+", "up/{topic}/x", "a/b", "up/a/b/x"},
	{"topic twice", "a", "{topic}{topic}", "a", "aa"},
	{"literal only", "a/b", "c", "a/b", "c"},
	{"plus captures", "a/+/c/+", "{2}-{1}", "a/x/c/y", "y-x"},
	{"plus empty level kept", "a/+/c", "z/{1}/z", "a//c", "z//z"},
	{"plus empty alone", "a/+", "{1}", "a/", "-"},
	{"plus inside level", "+/x", "pre{1}post", "mid/x", "premidpost"},
	{"hash levels", "a/#", "b/{1}", "a/x/y/z", "b/x/y/z"},
	{"hash all", "#", "up/{1}", "x//y", "up/x//y"},
	{"hash one level", "#", "up/{1}", "x", "up/x"},
	{"plus and hash", "+/data/#", "{1}/{2}", "dev1/data/t/u", "dev1/t/u"},
	{"plus and hash parent", "+/data/#", "{1}/{2}", "dev1/data", "dev1"},
	{"hash twice", "a/#", "{1}/{1}", "a/x/y", "x/y/x/y"},

	// '#' that matched only its parent level: its level disappears with
	// one separator.
	{"parent last", "a/#", "b/{1}", "a", "b"},
	{"parent first", "a/#", "{1}/b", "a", "b"},
	{"parent middle", "a/#", "x/{1}/y", "a", "x/y"},
	{"parent inside level", "a/#", "x{1}", "a", "x"},
	{"parent inside level middle", "a/#", "x/p{1}q/y", "a", "x/pq/y"},
	{"parent alone", "a/#", "{1}", "a", "-"},
	{"parent after root", "a/#", "/{1}", "a", "-"},
	{"parent before root", "a/#", "{1}/", "a", "-"},
	{"parent repeated", "a/#", "{1}/{1}", "a", "-"},
	{"parent repeated then level", "a/#", "{1}/{1}/x", "a", "x"},
	{"parent repeated around", "a/#", "p/{1}/{1}/q", "a", "p/q"},
	{"parent three times", "a/#", "{1}/x/{1}/{1}", "a", "x"},
	{"parent with empty levels", "a/#", "/x/{1}//", "a", "/x//"},
	{"parent with topic", "a/#", "{topic}/{1}", "a", "a"},
	{"parent two in a level", "a/#", "{1}-{1}/y", "a", "-/y"},
	{"present empty keeps level", "a/#", "{1}/x", "a/", "/x"},
	{"plus empty is not parent", "a/+/#", "{1}/{2}", "a//b", "/b"},

	{"escaped braces", "a/+", "{{{1}}}", "a/x", "{x}"},
	{"escaped placeholder", "a/+", "{{topic}}/{{1}}", "a/x", "{topic}/{1}"},
	{"escaped reversed", "a", "}}{{", "a", "}{"},
	{"escaped around a parent", "a/#", "{{/{1}/}}", "a", "{/}"},

	// $-topics: never matched by a leading wildcard, never produced by a
	// capture.
	{"hash skips $", "#", "{topic}", "$SYS/x", "-"},
	{"plus skips $", "+/x", "{1}", "$SYS/x", "-"},
	{"$ later matched", "a/#", "{1}", "a/$SYS/x", "-"},
	{"$ later, not first", "a/#", "b/{1}", "a/$SYS/x", "b/$SYS/x"},
	{"plus $ not first", "a/+", "{1}", "a/$x", "-"},
	{"plus $ with topic", "a/+", "{1}/{topic}", "a/$x", "-"},
	{"$ literal identity", "$SYS/#", "{topic}", "$SYS/broker/x", "$SYS/broker/x"},
	{"$ literal empty template", "$SYS/+", "", "$SYS/x", "$SYS/x"},
	{"$ literal topic first", "$SYS/+", "{topic}/y", "$SYS/x", "$SYS/x/y"},
	{"$ literal, capture first", "$SYS/#", "{1}", "$SYS/$x/y", "-"},
	{"$ literal, capture without $", "$SYS/#", "{1}", "$SYS/x/y", "x/y"},
	{"$ literal, topic after empty capture", "$SYS/+/#", "{1}{topic}", "$SYS//x", "-"},
	{"$ template", "cmd/#", "$local/{1}", "cmd/x", "$local/x"},
	{"$ template, parent", "cmd/#", "$local/{1}", "cmd", "$local"},
	{"$ from a literal later in the template", "a/#", "{1}$x", "a", "-"},
	{"$ from a literal after a parent level", "a/#", "{1}/$x", "a", "-"},
	{"$ not leading", "$SYS/#", "x/{topic}", "$SYS/a", "x/$SYS/a"},

	// Topics that are not valid names never match.
	{"topic with +", "#", "{topic}", "a/+", "-"},
	{"topic with #", "a/#", "x/{1}", "a/#", "-"},
	{"empty topic", "#", "x", "", "-"},
	{"topic with NUL", "#", "x", "a\x00", "-"},
	{"topic bad UTF-8", "#", "x", "a\xff", "-"},

	{"longer topic", "a", "x", "a/b", "-"},
	{"shorter topic", "a/+", "x", "a", "-"},
	{"deeper topic", "a/+", "x", "a/b/c", "-"},
	{"other literal", "a/b", "x", "a/c", "-"},
	{"case matters", "a", "x", "A", "-"},
}

func TestMap(t *testing.T) {
	for _, tc := range mapCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compile(tc.from, tc.to)
			if err != nil {
				t.Fatalf("Compile(%q, %q): %v", tc.from, tc.to, err)
			}
			got, ok := r.Map(tc.topic)
			if !ok {
				got = "-"
			}
			if got != tc.want || ok && got == "" {
				t.Errorf("Compile(%q, %q).Map(%q) = %q, %v; want %q", tc.from, tc.to, tc.topic, got, ok, tc.want)
			}
			if ref, refOK := refMap(tc.from, tc.to, tc.topic); ref != got && (refOK || ok) {
				t.Errorf("refMap = %q, %v: the reference disagrees", ref, refOK)
			}
		})
	}
}

func TestMapLength(t *testing.T) {
	r, err := Compile("a/#", "{1}/{1}")
	if err != nil {
		t.Fatal(err)
	}
	long := "a/" + strings.Repeat("x", 30000)
	if out, ok := r.Map(long); !ok || len(out) != 60001 {
		t.Errorf("Map of a 30002-byte topic: %d bytes, %v", len(out), ok)
	}
	exact := "a/" + strings.Repeat("x", (topics.MaxLength-1)/2)
	if out, ok := r.Map(exact); !ok || len(out) != topics.MaxLength {
		t.Errorf("Map to exactly MaxLength: %d bytes, %v", len(out), ok)
	}
	if out, ok := r.Map(exact + "x"); ok {
		t.Errorf("Map to MaxLength+1 bytes succeeded (%d bytes)", len(out))
	}
	// A template of many parent-level references compiles in linear time
	// (it took seconds when each one copied the template's pieces).
	r, err = Compile("a/#", strings.Repeat("x/{1}/", 10000))
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := r.Map("a"); !ok || out != strings.Repeat("x/", 10000) {
		t.Errorf("Map of 10000 parent levels: %d bytes, %v", len(out), ok)
	}
	// Many captures (more than Map keeps without allocating).
	from := strings.Repeat("+/", 20) + "#"
	r, err = Compile(from, "{21}/{20}/{1}")
	if err != nil {
		t.Fatal(err)
	}
	topic := ""
	for i := range 20 {
		topic += strconv.Itoa(i) + "/"
	}
	if out, ok := r.Map(topic + "rest/x"); !ok || out != "rest/x/19/0" {
		t.Errorf("21 captures: %q, %v", out, ok)
	}
}

// compileErrors: Compile(from, to) fails, the error naming the field
// ("from" or "to") and containing msg; is, when set, is wrapped.
var compileErrors = []struct {
	from, to, field, msg string
	is                   error
}{
	{"", "", "from", "", topics.ErrEmpty},
	{"a/#/b", "", "from", "", topics.ErrMultiLevelWildcard},
	{"a+", "", "from", "", topics.ErrSingleLevelWildcard},
	{"a\xff", "", "from", "", topics.ErrInvalidUTF8},
	{"$share/g/a", "", "from", "shared subscriptions", errShared},
	{"$share/g/#", "{1}", "from", "shared subscriptions", errShared},
	{"$share/g", "", "from", "", topics.ErrShareName},
	{"a/+", "{", "to", "unclosed '{' at offset 0", nil},
	{"a/+", "x/{1", "to", "unclosed '{' at offset 2", nil},
	{"a/+", "}", "to", "unmatched '}' at offset 0", nil},
	{"a/+", "{1}}", "to", "unmatched '}' at offset 3", nil},
	{"a/+", "{{1}", "to", "unmatched '}'", nil},
	{"a/+", "{}", "to", "unknown placeholder {}", nil},
	{"a/+", "{0}", "to", "unknown placeholder {0}", nil},
	{"a/+", "{01}", "to", "unknown placeholder {01}", nil},
	{"a/+", "{+1}", "to", "cannot contain", nil},
	{"a/+", "{-1}", "to", "unknown placeholder", nil},
	{"a/+", "{ 1}", "to", "unknown placeholder", nil},
	{"a/+", "{x}", "to", "unknown placeholder {x}", nil},
	{"a/+", "{TOPIC}", "to", "unknown placeholder", nil},
	{"a/+", "{99999999999999999999}", "to", "unknown placeholder", nil},
	{"a/+", "{2}", "to", "from has only 1 wildcard(s)", nil},
	{"a/b", "{1}", "to", "from has no wildcard", nil},
	{"a/+", "x/+", "to", "cannot contain '+' or '#'", nil},
	{"a/+", "#", "to", "cannot contain '+' or '#'", nil},
	{"a/+", "x\x00", "to", "", topics.ErrNullChar},
	{"a/+", "x\xff", "to", "", topics.ErrInvalidUTF8},
	{"a/+", strings.Repeat("x", topics.MaxLength+1), "to", "", topics.ErrTooLong},
	{"a/+", "$share/g/{1}", "to", "$share/", nil},
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range compileErrors {
		r, err := Compile(tc.from, tc.to)
		if err == nil {
			t.Errorf("Compile(%q, %.40q) = %v, want an error", tc.from, tc.to, r)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.field+" ") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Compile(%q, %.40q) = %.200q, want %s ... %q", tc.from, tc.to, err, tc.field, tc.msg)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("Compile(%q, %.40q) = %.200q, want it to wrap %v", tc.from, tc.to, err, tc.is)
		}
	}
	// Templates that are valid, for contrast.
	for _, to := range []string{"$share", "x/$share/y", "{{}}", "a{{b", "", "/", strings.Repeat("x", topics.MaxLength)} {
		if _, err := Compile("a/+", to); err != nil {
			t.Errorf("Compile(\"a/+\", %.40q): %v", to, err)
		}
	}
}

func TestRuleAccessors(t *testing.T) {
	r, err := Compile("a/+/#", "")
	if err != nil {
		t.Fatal(err)
	}
	if r.From() != "a/+/#" || r.To() != "" || r.Wildcards() != 2 {
		t.Errorf("From %q To %q Wildcards %d", r.From(), r.To(), r.Wildcards())
	}
	for topic, want := range map[string]bool{"a/b": true, "a/b/c/d": true, "a": false, "b/c": false, "a/": true} {
		if r.Matches(topic) != want {
			t.Errorf("Matches(%q) = %v", topic, !want)
		}
	}
	// Matches but renders nothing valid: Matches is true, Map fails.
	r, _ = Compile("a/#", "{1}")
	if !r.Matches("a") {
		t.Error(`"a/#" does not match "a"`)
	}
	if out, ok := r.Map("a"); ok {
		t.Errorf("Map(\"a\") = %q, want no match (empty)", out)
	}
}

func TestFirstMatch(t *testing.T) {
	var rules []*Rule
	for _, ft := range [][2]string{{"a/#", "{1}"}, {"a/+", "second/{1}"}, {"#", "any/{1}"}} {
		r, err := Compile(ft[0], ft[1])
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	tests := []struct {
		topic, out string
		i          int
	}{
		{"a/b", "b", 0},
		{"a", "any/a", 2}, // rule 0 matches but renders "", rule 1 does not match
		{"x/y", "any/x/y", 2},
		{"$SYS/x", "", -1},
		{"a/+", "", -1},
	}
	for _, tc := range tests {
		if i, out := FirstMatch(rules, tc.topic); i != tc.i || out != tc.out {
			t.Errorf("FirstMatch(%q) = %d, %q; want %d, %q", tc.topic, i, out, tc.i, tc.out)
		}
	}
	if i, out := FirstMatch(nil, "a"); i != -1 || out != "" {
		t.Errorf("FirstMatch(nil) = %d, %q", i, out)
	}
}

func TestRoutingKey(t *testing.T) {
	tests := []struct{ topic, key string }{
		{"a/b/c", "a.b.c"},
		{"a", "a"},
		{"/", "."},
		{"a//b", "a..b"},
		{"v1.0/x%", "v1%2E0.x%25"},
		{"%2E", "%252E"},
		{"a*/#x", "a*.#x"}, // not a valid topic, but RoutingKey does not judge
		{strings.Repeat("a", MaxKeyLength), strings.Repeat("a", MaxKeyLength)},
	}
	for _, tc := range tests {
		key, err := RoutingKey(tc.topic)
		if err != nil || key != tc.key {
			t.Errorf("RoutingKey(%q) = %q, %v; want %q", tc.topic, key, err, tc.key)
		}
	}
	for _, topic := range []string{strings.Repeat("a", MaxKeyLength+1), strings.Repeat(".", 100)} {
		if key, err := RoutingKey(topic); !errors.Is(err, ErrKeyTooLong) {
			t.Errorf("RoutingKey(%.20q...) = %.20q, %v; want ErrKeyTooLong", topic, key, err)
		}
	}
}

func TestTopicFromRoutingKey(t *testing.T) {
	tests := []struct {
		key, topic string
		err        error
	}{
		{"a.b.c", "a/b/c", nil},
		{"v1%2E0.x%25", "v1.0/x%", nil},
		{"v1%2e0", "v1.0", nil},
		{"%252E", "%2E", nil},
		{"%41%", "%41%", nil}, // unknown escapes stay
		{"a%2", "a%2", nil},
		{"a/b.c", "a/b/c", nil},
		{"..", "//", nil},
		{"", "", topics.ErrEmpty},
		{"a.#", "", topics.ErrWildcardInTopic},
		{"*.+", "", topics.ErrWildcardInTopic},
		{"a\x00", "", topics.ErrNullChar},
		{"\xff", "", topics.ErrInvalidUTF8},
	}
	for _, tc := range tests {
		topic, err := TopicFromRoutingKey(tc.key)
		if topic != tc.topic || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("TopicFromRoutingKey(%q) = %q, %v; want %q, %v", tc.key, topic, err, tc.topic, tc.err)
		}
	}
}

func TestBindingKey(t *testing.T) {
	tests := []struct {
		filter, key string
		err         error
	}{
		{"cmd/+/#", "cmd.*.#", nil},
		{"#", "#", nil},
		{"+", "*", nil},
		{"a.b/+/c%", "a%2Eb.*.c%25", nil},
		{"a*/b", "a*.b", nil},
		{"a/*/b", "", ErrLiteralStar},
		{"*", "", ErrLiteralStar},
		{strings.Repeat("ab/", 90) + "#", "", ErrKeyTooLong},
	}
	for _, tc := range tests {
		key, err := BindingKey(tc.filter)
		if key != tc.key || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("BindingKey(%.30q) = %q, %v; want %q, %v", tc.filter, key, err, tc.key, tc.err)
		}
	}
}

// refMap is Map written the slow, obvious way, for TestMap and FuzzMap
// to compare with: match level by level, render the template level by
// level, leave out a level that is exactly the placeholder of a '#' that
// matched only its parent level, then check the result.
func refMap(from, to, topic string) (string, bool) {
	if topics.ValidTopicName(topic) != nil {
		return "", false
	}
	fl, tl := strings.Split(from, "/"), strings.Split(topic, "/")
	if (fl[0] == "+" || fl[0] == "#") && topic[0] == '$' {
		return "", false
	}
	caps, absent := refMatch(fl, tl)
	if caps == nil {
		return "", false
	}
	if to == "" {
		to = Placeholder
	}
	var levels []string
	for _, lv := range strings.Split(to, "/") {
		if absent != "" && lv == absent {
			continue
		}
		levels = append(levels, refExpand(lv, topic, caps))
	}
	out := strings.Join(levels, "/")
	if topics.ValidTopicName(out) != nil {
		return "", false
	}
	fromDollar := fl[0] != "+" && fl[0] != "#" && strings.HasPrefix(fl[0], "$")
	if out[0] == '$' && to[0] != '$' && !(fromDollar && strings.HasPrefix(to, Placeholder)) {
		return "", false
	}
	return out, true
}

// refMatch matches topic levels tl against filter levels fl: the
// captures (non-nil on a match), and the placeholder of a '#' that
// matched only its parent level ("" if none).
func refMatch(fl, tl []string) (caps []string, absent string) {
	caps = []string{}
	for i, f := range fl {
		switch {
		case f == "#" && i == len(tl):
			return append(caps, ""), "{" + strconv.Itoa(len(caps)+1) + "}"
		case f == "#":
			return append(caps, strings.Join(tl[i:], "/")), ""
		case i >= len(tl):
			return nil, ""
		case f == "+":
			caps = append(caps, tl[i])
		case f != tl[i]:
			return nil, ""
		}
	}
	if len(fl) != len(tl) {
		return nil, ""
	}
	return caps, ""
}

// refExpand renders one level of a valid template.
func refExpand(lv, topic string, caps []string) string {
	var b strings.Builder
	for i := 0; i < len(lv); i++ {
		switch {
		case strings.HasPrefix(lv[i:], "{{"), strings.HasPrefix(lv[i:], "}}"):
			b.WriteByte(lv[i])
			i++
		case lv[i] == '{':
			end := i + strings.IndexByte(lv[i:], '}')
			if name := lv[i+1 : end]; name == "topic" {
				b.WriteString(topic)
			} else {
				n, _ := strconv.Atoi(name)
				b.WriteString(caps[n-1])
			}
			i = end
		default:
			b.WriteByte(lv[i])
		}
	}
	return b.String()
}

// TestMapMatchesReference compares Map with refMap on rules and topics
// built at random from the pieces that matter (wildcards, placeholders,
// escapes, '$', empty levels), which byte-level fuzzing reaches slowly.
func TestMapMatchesReference(t *testing.T) {
	src := rand.New(rand.NewPCG(7, 11))
	levels := func(parts []string, n int, last ...string) string {
		ls := make([]string, 1+src.IntN(n))
		for i := range ls {
			ls[i] = parts[src.IntN(len(parts))]
		}
		if len(last) > 0 && src.IntN(2) == 0 {
			ls[len(ls)-1] = last[0]
		}
		return strings.Join(ls, "/")
	}
	toParts := []string{"a", "/", "/", "{1}/", "/{1}", "{1}", "{2}", "{topic}", "{{", "}}", "$"}
	compiled, matched := 0, 0
	for range 200000 {
		from := levels([]string{"a", "$s", "+", "+", ""}, 3, "#")
		topic := levels([]string{"a", "$s", "$", "", "x"}, 4)
		var to strings.Builder
		for range 1 + src.IntN(6) {
			to.WriteString(toParts[src.IntN(len(toParts))])
		}
		r, err := Compile(from, to.String())
		if err != nil {
			continue
		}
		compiled++
		out, ok := r.Map(topic)
		if ref, refOK := refMap(from, to.String(), topic); ref != out || refOK != ok {
			t.Fatalf("Compile(%q, %q).Map(%q) = %q, %v; the reference says %q, %v", from, to.String(), topic, out, ok, ref, refOK)
		}
		if ok {
			matched++
		}
	}
	if compiled < 50000 || matched < 5000 {
		t.Errorf("only %d rules compiled and %d topics mapped: the generator needs work", compiled, matched)
	}
}

// FuzzMap checks that Compile and Map never panic, that a successful Map
// yields a valid topic name that the reference refMap agrees with, and
// that RoutingKey and TopicFromRoutingKey round-trip every topic.
func FuzzMap(f *testing.F) {
	for _, tc := range mapCases {
		f.Add(tc.from, tc.to, tc.topic)
	}
	for _, tc := range compileErrors {
		if len(tc.to) < 100 {
			f.Add(tc.from, tc.to, "a/b")
		}
	}
	f.Fuzz(func(t *testing.T, from, to, topic string) {
		checkRoutingKey(t, topic)
		r, err := Compile(from, to)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "from ") && !strings.HasPrefix(err.Error(), "to ") {
				t.Fatalf("Compile(%q, %q) = %q: does not say which field", from, to, err)
			}
			return
		}
		out, ok := r.Map(topic)
		if ok {
			if err := topics.ValidTopicName(out); err != nil {
				t.Fatalf("Compile(%q, %q).Map(%q) = %q: %v", from, to, topic, out, err)
			}
			if !r.Matches(topic) {
				t.Fatalf("Compile(%q, %q).Map(%q) = %q, but Matches is false", from, to, topic, out)
			}
		}
		if ref, refOK := refMap(from, to, topic); ref != out || refOK != ok {
			t.Fatalf("Compile(%q, %q).Map(%q) = %q, %v; the reference says %q, %v", from, to, topic, out, ok, ref, refOK)
		}
	})
}

// checkRoutingKey checks that a valid topic survives RoutingKey and
// TopicFromRoutingKey unchanged.
func checkRoutingKey(t *testing.T, topic string) {
	if topics.ValidTopicName(topic) != nil {
		return
	}
	key, err := RoutingKey(topic)
	if err != nil {
		if !errors.Is(err, ErrKeyTooLong) || len(topic) <= MaxKeyLength/3 {
			t.Fatalf("RoutingKey(%q): %v", topic, err)
		}
		return
	}
	if back, err := TopicFromRoutingKey(key); err != nil || back != topic {
		t.Fatalf("RoutingKey(%q) = %q, back to %q, %v", topic, key, back, err)
	}
}
