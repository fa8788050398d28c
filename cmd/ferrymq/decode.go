package main

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder fills a Go value from a YAML node tree, strictly: every key must
// name a field, every scalar must fit its field's type. Unlike yaml's own
// decoder it keeps going after an error and records each one with its line
// and its key path (listeners[0].address), so check-config can report every
// problem at once.
//
// It is driven by the yaml struct tags of broker.Config, so fields added to
// the broker's config are picked up without changes here.
type decoder struct {
	errs []configError
	// sizes holds the key paths (indices written as []) whose integer
	// values also accept units, e.g. "1MiB".
	sizes map[string]bool
}

var (
	yamlUnmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[time.Duration]()
)

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, configError{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// decode stores n into v (which must be settable).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// "key:" or "key: ~" means "not set": keep the zero value so the
		// broker's default applies.
		v.SetZero()
		return
	}
	if v.CanAddr() {
		if pt := v.Addr().Type(); pt.Implements(yamlUnmarshalerType) || pt.Implements(textUnmarshalerType) {
			if err := n.Decode(v.Addr().Interface()); err != nil {
				d.errorf(n, path, "%s", trimYAMLError(err))
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "expected a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.errorf(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		d.decodeInt(n, v, path)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.decodeUint(n, v, path)
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || n.Decode(&f) != nil {
			d.errorf(n, path, "expected a number, got %s", describe(n))
			return
		}
		v.SetFloat(f)
	case reflect.Interface:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errorf(n, path, "%s", trimYAMLError(err))
		}
	default:
		d.errorf(n, path, "cannot be set from a config file (Go type %s)", v.Type())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	fields, names := structFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.decodeMerge(val, v, path)
			continue
		}
		p := joinPath(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key must be a plain string, got %s", describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.errorf(k, p, "duplicate key (first set on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			msg := "unknown key"
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errorf(k, p, "%s; valid keys here: %s", msg, strings.Join(names, ", "))
			continue
		}
		d.decode(val, v.FieldByIndex(idx), p)
	}
}

// decodeMerge applies a YAML merge key ("<<: *defaults") to a struct.
func (d *decoder) decodeMerge(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		d.decodeStruct(n, v, path)
	case yaml.SequenceNode:
		for _, c := range n.Content {
			d.decodeMerge(c, v, path)
		}
	default:
		d.errorf(n, path, "merge key (<<) needs a mapping, got %s", describe(n))
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.errorf(n, path, "cannot be set from a config file (Go type %s)", v.Type())
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key must be a plain string, got %s", describe(k))
			continue
		}
		p := joinPath(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			d.errorf(k, p, "duplicate key (first set on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, p)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

func (d *decoder) decodeInt(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
		return
	}
	var x int64
	switch {
	case v.Type() == durationType:
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
			return
		}
		x = int64(dur)
	case d.isSize(path):
		u, err := parseSize(n.Value)
		if err != nil {
			d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
			return
		}
		if u > math.MaxInt64 {
			d.errorf(n, path, "%s is out of range (at most %d)", n.Value, int64(math.MaxInt64))
			return
		}
		x = int64(u)
	default:
		if n.Decode(&x) != nil {
			d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
			return
		}
	}
	if v.OverflowInt(x) {
		bits := v.Type().Bits()
		d.errorf(n, path, "%s is out of range (%d to %d)", n.Value, int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
		return
	}
	v.SetInt(x)
}

func (d *decoder) decodeUint(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
		return
	}
	var x uint64
	var err error
	if d.isSize(path) {
		x, err = parseSize(n.Value)
	} else {
		err = n.Decode(&x)
	}
	if err != nil {
		d.errorf(n, path, "expected %s, got %s", d.want(v, path), describe(n))
		return
	}
	if v.OverflowUint(x) {
		d.errorf(n, path, "%s is out of range (0 to %d)", n.Value, uint64(1)<<v.Type().Bits()-1)
		return
	}
	v.SetUint(x)
}

// want describes what an integer field accepts, for error messages.
func (d *decoder) want(v reflect.Value, path string) string {
	switch {
	case v.Type() == durationType:
		return "a duration such as 30s or 5m"
	case d.isSize(path):
		return "a size in bytes (an integer, optionally with a unit: 64KiB, 1MiB, 512KB)"
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		return "a non-negative integer"
	default:
		return "an integer"
	}
}

func (d *decoder) isSize(path string) bool {
	return d.sizes[genericPath(path)]
}

// genericPath turns "listeners[3].x" into "listeners[].x".
func genericPath(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		b.WriteByte(path[i])
		if path[i] == '[' {
			for i+1 < len(path) && path[i+1] != ']' {
				i++
			}
		}
	}
	return b.String()
}

// structFields maps the YAML key of every settable field of t (inline
// structs flattened) to its field index, and returns the keys in
// declaration order.
func structFields(t reflect.Type) (map[string][]int, []string) {
	fields := map[string][]int{}
	var names []string
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			idx := append(slices.Clone(prefix), i)
			if slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if _, dup := fields[name]; !dup {
				names = append(names, name)
			}
			fields[name] = idx
		}
	}
	walk(t, nil)
	return fields, names
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return strconv.Quote(n.Value)
		case "!!null":
			return "nothing"
		default:
			return n.Value
		}
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// trimYAMLError strips yaml's "yaml: unmarshal errors:\n  line N: " framing
// (we print the line ourselves).
func trimYAMLError(err error) string {
	var msgs []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "yaml: ")
		if line == "" || line == "unmarshal errors:" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "line "); ok {
			if _, after, ok := strings.Cut(rest, ": "); ok {
				line = after
			}
		}
		msgs = append(msgs, line)
	}
	return strings.Join(msgs, "; ")
}

// suggest returns the candidate closest to key if it is a likely typo.
func suggest(key string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(key), c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
