package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/topics"
)

// Topic mapping. A rule has a from filter and a to template:
//
//	from: "sensors/+/#"          an MQTT topic filter (no $share)
//	to:   "site1/{1}/data/{2}"   a topic name with placeholders
//
// A topic matches from exactly as an MQTT subscription would ('+' one
// level, possibly empty; '#' the parent level and every level below; a
// filter starting with a wildcard does not match a topic starting with
// '$'). The template then renders:
//
//   - {topic}: the whole matched topic;
//   - {1}, {2}, ...: what the first, second, ... wildcard of from matched:
//     one level for '+', the remaining levels (with their '/') for '#';
//   - {{ and }}: a literal '{' or '}'. Any other '{' or '}' is an error.
//
// A '#' that matched only its parent level ("sensors/#" matching
// "sensors") captured no level at all. Where its placeholder is a whole
// level of the template, that level disappears with one separator:
// "site/{1}" renders "site", "{1}/site" renders "site", "a/{1}/b" renders
// "a/b"; a repeated one takes the next separator when the one before it
// is gone ("{1}/{1}/x" renders "x"). Elsewhere it renders as "" ("x{1}"
// renders "x"). This differs from a '#' that matched one empty level
// ("sensors/#" matching "sensors/"), which captured "" and keeps its
// level: "site/{1}" renders "site/". So the mapping never invents or loses
// a level.
//
// The rendered topic must be a valid MQTT topic name, or Map reports no
// match: an empty result ("{1}" when '#' captured nothing) or one longer
// than topics.MaxLength is refused. It never contains '+' or '#': the
// template cannot, and neither can a topic name. A rendered topic starts
// with '$' (the namespace reserved for brokers, [MQTT-4.7.2-1]) only when
// the template itself starts with '$', or starts with {topic} and from
// starts with a literal $-level (from "$SYS/broker/#" to "{topic}"): a
// capture never moves a remote "cmd/$SYS/x" into the local "$SYS/x", nor
// "$SYS/$x" into "$x" (from "$SYS/#" to "{1}"). A template cannot start
// with "$share/": that prefix names shared subscriptions, not topics.

// Placeholder is the template that renders the whole topic unchanged; an
// empty template means the same.
const Placeholder = "{topic}"

// Rule is a compiled from/to pair. It is immutable and safe for concurrent
// use.
type Rule struct {
	from, to string
	levels   []string // the filter's levels; "+" and "#" are wildcards
	wild     int      // number of wildcards in from
	hashRef  int      // capture index of a trailing '#', 0 if none
	tmpl     []piece
	identity bool // the template is exactly {topic}
	// dollarOK: the output may start with '$' (see above).
	dollarOK bool
}

// piece is one part of a compiled template: a literal, or a reference to a
// capture (ref > 0) or to the whole topic (ref == 0, lit == "").
type piece struct {
	lit string
	ref int // -1: literal
	// ifHash: a literal separator kept only when the trailing '#'
	// captured at least one level.
	ifHash bool
}

// capture is what one wildcard matched: topic[start:end]; absent for a
// '#' that matched only its parent level.
type capture struct {
	start, end int
	absent     bool
}

// Compile checks from (a topic filter) and to (a template; "" means
// {topic}) and returns the rule. The error says which of the two is wrong.
func Compile(from, to string) (*Rule, error) {
	levels, err := compileFilter(from)
	if err != nil {
		return nil, fmt.Errorf("from %q: %w", from, err)
	}
	r := &Rule{from: from, to: to, levels: levels}
	for _, l := range levels {
		if l == "+" || l == "#" {
			r.wild++
			if l == "#" {
				r.hashRef = r.wild
			}
		}
	}
	if to == "" {
		to = Placeholder
	}
	r.identity = to == Placeholder
	// A leading '$' of the output comes from the template's own text, or
	// from {topic} where from selects $-topics by name; never from a
	// capture (see the notes above).
	fromDollar := !isWildcard(levels[0]) && strings.HasPrefix(levels[0], "$")
	r.dollarOK = strings.HasPrefix(to, "$") || fromDollar && strings.HasPrefix(to, Placeholder)
	if r.tmpl, err = compileTemplate(to, r.wild, r.hashRef); err != nil {
		return nil, fmt.Errorf("to %q: %w", to, err)
	}
	return r, nil
}

// From returns the rule's filter.
func (r *Rule) From() string { return r.from }

// To returns the rule's template as given ("" stays "").
func (r *Rule) To() string { return r.to }

// Wildcards returns the number of wildcards in From: the highest {N} the
// template may use.
func (r *Rule) Wildcards() int { return r.wild }

// errShared refuses $share filters in rules: the bridge is not a member
// of a group, and the filter would mean nothing upstream either.
var errShared = errors.New("shared subscriptions ($share/...) cannot be bridged")

// compileFilter validates a filter and splits it into levels.
func compileFilter(from string) ([]string, error) {
	if err := topics.ValidFilter(from); err != nil {
		return nil, err
	}
	if _, _, ok := topics.ParseShared(from); ok {
		return nil, errShared
	}
	return strings.Split(from, "/"), nil
}

// compileTemplate parses a template. wild is the number of captures
// available (-1: unknown, any {N} is accepted) and hashRef the index of a
// trailing '#' capture (0: none).
func compileTemplate(to string, wild, hashRef int) ([]piece, error) {
	switch {
	case len(to) > topics.MaxLength:
		return nil, topics.ErrTooLong
	case !utf8.ValidString(to):
		return nil, topics.ErrInvalidUTF8
	case strings.IndexByte(to, 0) >= 0:
		return nil, topics.ErrNullChar
	case strings.ContainsAny(to, "+#"):
		return nil, errors.New("a template cannot contain '+' or '#': it renders a topic name")
	case strings.HasPrefix(to, "$share/"):
		return nil, errors.New("a template cannot start with \"$share/\": it renders a topic name, not a shared subscription")
	}
	ps, err := parseTemplate(to, wild)
	if err != nil {
		return nil, err
	}
	if hashRef > 0 {
		ps = splitHashSeparators(ps, hashRef)
	}
	return ps, nil
}

// parseTemplate splits to into literals and references.
func parseTemplate(to string, wild int) ([]piece, error) {
	var ps []piece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			ps = append(ps, piece{lit: lit.String(), ref: -1})
			lit.Reset()
		}
	}
	for i := 0; i < len(to); i++ {
		c := to[i]
		switch {
		case (c == '{' || c == '}') && i+1 < len(to) && to[i+1] == c:
			lit.WriteByte(c) // {{ or }}
			i++
		case c == '}':
			return nil, fmt.Errorf("unmatched '}' at offset %d (write }} for a literal '}')", i)
		case c == '{':
			end := strings.IndexByte(to[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed '{' at offset %d (write {{ for a literal '{')", i)
			}
			ref, err := parseRef(to[i+1:i+end], wild)
			if err != nil {
				return nil, err
			}
			flush()
			ps = append(ps, piece{ref: ref})
			i += end
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return ps, nil
}

// parseRef reads the inside of a placeholder: "topic" (0) or a capture
// number 1..wild.
func parseRef(name string, wild int) (int, error) {
	if name == "topic" {
		return 0, nil
	}
	n, err := strconv.Atoi(name)
	if err != nil || n < 1 || name[0] == '0' || name[0] == '+' {
		return 0, fmt.Errorf("unknown placeholder {%s}: use {topic} or {1}, {2}, ... (write {{ for a literal '{')", name)
	}
	switch {
	case wild == 0:
		return 0, fmt.Errorf("{%d}: from has no wildcard to capture", n)
	case wild > 0 && n > wild:
		return 0, fmt.Errorf("{%d}: from has only %d wildcard(s)", n, wild)
	}
	return n, nil
}

// splitHashSeparators marks, for each reference to the trailing '#' that
// is a whole level of the template, one adjacent '/' as present only when
// '#' captured something: the one before it, else (first level, or the
// one before already taken by a repeated reference: "{1}/{1}/x") the one
// after it. One pass, linear in the number of pieces.
func splitHashSeparators(ps []piece, hashRef int) []piece {
	out := make([]piece, 0, len(ps)+len(ps)/2)
	sep := piece{lit: "/", ref: -1, ifHash: true}
	claimNext := false // the next literal's leading '/' is taken
	for i, p := range ps {
		if claimNext && p.ref < 0 {
			claimNext = false
			out = append(out, sep)
			if p.lit = p.lit[1:]; p.lit == "" {
				continue
			}
		}
		out = append(out, p)
		if p.ref != hashRef {
			continue
		}
		before := i == 0 || isSepEnd(ps[i-1])
		after := i == len(ps)-1 || isSepStart(ps[i+1])
		if !before || !after {
			continue // part of a level: renders ""
		}
		switch prev := &out[max(len(out)-2, 0)]; {
		case i > 0 && !prev.ifHash && prev.lit == "/":
			prev.ifHash = true
		case i > 0 && !prev.ifHash:
			prev.lit = prev.lit[:len(prev.lit)-1]
			out = append(out[:len(out)-1], sep, p)
		default:
			claimNext = i+1 < len(ps)
		}
	}
	return out
}

func isSepEnd(p piece) bool   { return p.ref < 0 && strings.HasSuffix(p.lit, "/") }
func isSepStart(p piece) bool { return p.ref < 0 && strings.HasPrefix(p.lit, "/") }

// maxInlineCaptures is how many captures Map keeps without allocating.
const maxInlineCaptures = 8

// Map matches topic against the rule's filter and renders the template.
// ok is false when topic is not a valid topic name, does not match, or
// renders to something that is not a valid topic name (see the package
// notes on empty '#' captures and '$').
func (r *Rule) Map(topic string) (string, bool) {
	if topics.ValidTopicName(topic) != nil {
		return "", false
	}
	var buf [maxInlineCaptures]capture
	caps, ok := r.match(topic, buf[:0])
	if !ok {
		return "", false
	}
	out := topic
	if !r.identity {
		out = r.render(topic, caps)
	}
	if !r.validOutput(out) {
		return "", false
	}
	return out, true
}

// Matches reports whether topic matches the rule's filter, without
// rendering.
func (r *Rule) Matches(topic string) bool {
	var buf [maxInlineCaptures]capture
	_, ok := r.match(topic, buf[:0])
	return ok
}

// match walks the filter and the topic level by level, appending one
// capture per wildcard.
func (r *Rule) match(topic string, caps []capture) ([]capture, bool) {
	if len(r.levels) > 0 && isWildcard(r.levels[0]) && strings.HasPrefix(topic, "$") {
		return nil, false // [MQTT-4.7.2-1]
	}
	pos, more := 0, true // pos: start of the next topic level
	for _, l := range r.levels {
		if l == "#" {
			return append(caps, capture{start: pos, end: len(topic), absent: !more}), true
		}
		if !more {
			return nil, false
		}
		end := strings.IndexByte(topic[pos:], '/')
		next := len(topic)
		if end < 0 {
			end, more = len(topic), false
		} else {
			end += pos
			next = end + 1
		}
		switch l {
		case "+":
			caps = append(caps, capture{start: pos, end: end})
		default:
			if topic[pos:end] != l {
				return nil, false
			}
		}
		pos = next
	}
	return caps, !more
}

func isWildcard(level string) bool { return level == "+" || level == "#" }

// render builds the output of the template for a matched topic.
func (r *Rule) render(topic string, caps []capture) string {
	hashAbsent := r.hashRef > 0 && caps[r.hashRef-1].absent
	n := 0
	for _, p := range r.tmpl {
		n += len(r.pieceText(p, topic, caps, hashAbsent))
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range r.tmpl {
		b.WriteString(r.pieceText(p, topic, caps, hashAbsent))
	}
	return b.String()
}

// pieceText is what one template piece renders as.
func (r *Rule) pieceText(p piece, topic string, caps []capture, hashAbsent bool) string {
	switch {
	case p.ref < 0 && p.ifHash && hashAbsent:
		return ""
	case p.ref < 0:
		return p.lit
	case p.ref == 0:
		return topic
	}
	c := caps[p.ref-1]
	return topic[c.start:c.end]
}

// validOutput checks a rendered topic: a valid topic name, and not a
// $-topic unless the rule allows it.
func (r *Rule) validOutput(out string) bool {
	if topics.ValidTopicName(out) != nil {
		return false
	}
	return r.dollarOK || !strings.HasPrefix(out, "$")
}

// FirstMatch maps topic with the first rule of rules that matches it and
// renders a valid topic. i is that rule's index, or -1 when none does.
func FirstMatch(rules []*Rule, topic string) (i int, out string) {
	for i, r := range rules {
		if out, ok := r.Map(topic); ok {
			return i, out
		}
	}
	return -1, ""
}

// AMQP topic exchanges separate the words of routing and binding keys
// with '.', where MQTT separates levels with '/'. An MQTT level may itself
// contain '.', so a plain replacement would turn the topic "v1.0/x" into
// the routing key "v1.0.x" and back into "v1/0/x". ferrymq therefore
// escapes, inside levels, '.' as "%2E" and '%' as "%25" (so the escape is
// reversible): topic "v1.0/x%" is routing key "v1%2E0.x%25". Topics
// without '.' or '%' map exactly as in RabbitMQ's MQTT plugin ("a/b/c" is
// "a.b.c"), so AMQP consumers bind the keys they would expect.
//
// In binding keys '+' becomes '*' and '#' stays '#'. A literal filter
// level "*" has no AMQP spelling (it would be a wildcard) and is refused.

// MaxKeyLength is the longest AMQP routing or binding key (a short
// string).
const MaxKeyLength = 255

// Errors of the AMQP key conversions.
var (
	ErrKeyTooLong  = fmt.Errorf("bridge: AMQP key longer than %d bytes", MaxKeyLength)
	ErrLiteralStar = errors.New("bridge: a filter level \"*\" has no AMQP binding key spelling (it would match any word)")
)

// RoutingKey returns the AMQP routing key of an MQTT topic name: '/'
// becomes '.', and '.' and '%' inside levels are escaped as "%2E" and
// "%25". The error is ErrKeyTooLong when the key exceeds MaxKeyLength.
func RoutingKey(topic string) (string, error) {
	var key string
	if strings.ContainsAny(topic, ".%") {
		key = keyEscaper.Replace(topic)
	} else {
		key = strings.ReplaceAll(topic, "/", ".")
	}
	if len(key) > MaxKeyLength {
		return "", ErrKeyTooLong
	}
	return key, nil
}

var keyEscaper = strings.NewReplacer("/", ".", ".", "%2E", "%", "%25")

// TopicFromRoutingKey is the inverse of RoutingKey: '.' becomes '/',
// "%2E" (or "%2e") '.', "%25" '%'. Any other '%' is kept as it is, so
// keys published by AMQP clients that never escape still map; a '/' in a
// routing key also separates levels (as in RabbitMQ's MQTT plugin). The error
// wraps a topics.Err* value when the result is not a valid topic name
// (empty, or containing '+' or '#', U+0000 or bad UTF-8).
func TopicFromRoutingKey(key string) (string, error) {
	topic := strings.ReplaceAll(key, ".", "/")
	if strings.IndexByte(topic, '%') >= 0 {
		topic = unescapeKey(topic)
	}
	if err := topics.ValidTopicName(topic); err != nil {
		return "", fmt.Errorf("bridge: routing key %q is not a topic name: %w", key, err)
	}
	return topic, nil
}

// unescapeKey decodes %2E and %25, leaving every other '%' alone.
func unescapeKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			switch s[i+1 : i+3] {
			case "2E", "2e":
				b.WriteByte('.')
				i += 2
				continue
			case "25":
				b.WriteByte('%')
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// BindingKey returns the AMQP binding key of an MQTT filter: levels
// become words as in RoutingKey, '+' becomes '*' and '#' stays '#'. The
// filter must be valid and not shared (Compile checks both). A literal
// level "*" gives ErrLiteralStar, a key over MaxKeyLength ErrKeyTooLong.
func BindingKey(filter string) (string, error) {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch l {
		case "*":
			return "", ErrLiteralStar
		case "+":
			levels[i] = "*"
		case "#":
		default:
			levels[i] = levelEscaper.Replace(l)
		}
	}
	key := strings.Join(levels, ".")
	if len(key) > MaxKeyLength {
		return "", ErrKeyTooLong
	}
	return key, nil
}

var levelEscaper = strings.NewReplacer(".", "%2E", "%", "%25")
