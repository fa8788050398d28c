package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/broker"
)

// config is the whole configuration file: the broker's settings at the
// top level and the bridges (see package bridge) under "bridges".
type config struct {
	broker.Config `yaml:",inline"`
	Bridges       []bridge.Config `yaml:"bridges"`
}

// configError is one problem with the configuration, positioned in its
// source: a file and line, or a flag.
type configError struct {
	Source string // file name or flag ("--listen"); "" = defaults
	Line   int    // 1-based line in Source; 0 if none
	Path   string // YAML key path, e.g. "listeners[1].address"; "" for syntax errors
	Msg    string
}

// String formats the error as "FILE:LINE: path: message".
func (e configError) String() string {
	var b strings.Builder
	src := e.Source
	if src == "" {
		src = "ferrymq"
	}
	b.WriteString(src)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// configFile is a parsed configuration file.
type configFile struct {
	name string
	root *yaml.Node // the top-level mapping; nil for an empty file
}

// loadConfigFile reads and decodes a configuration file. The returned
// Config has no defaults applied. errs holds every syntax, unknown-key and
// type error, positioned in the file.
func loadConfigFile(name string) (config, *configFile, []configError) {
	data, err := os.ReadFile(name)
	if err != nil {
		return config{}, &configFile{name: name}, []configError{{Source: name, Msg: readErrMsg(err)}}
	}
	return parseConfig(name, data)
}

func readErrMsg(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseConfig decodes data (the contents of file name).
func parseConfig(name string, data []byte) (config, *configFile, []configError) {
	var cfg config
	f := &configFile{name: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case err == io.EOF:
		return cfg, f, nil // an empty file: all defaults
	case err != nil:
		return cfg, f, []configError{syntaxError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		e := configError{Source: name, Msg: "only one YAML document is allowed (found a second one)"}
		if err != nil {
			e = syntaxError(name, data, err)
		} else if extra.Line > 0 {
			e.Line = extra.Line
		}
		return cfg, f, []configError{e}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return cfg, f, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return cfg, f, nil // only comments
	}
	if root.Kind == yaml.MappingNode {
		f.root = root
	}
	d := decoder{sizes: sizeKeys}
	d.decode(root, reflect.ValueOf(&cfg).Elem(), "")
	for i := range d.errs {
		d.errs[i].Source = name
	}
	return cfg, f, d.errs
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// parserProblems are the messages of yaml's parser (as opposed to its
// scanner). For them yaml reports the 0-based line where the enclosing
// block started, not where the problem is.
var parserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected key",
	"did not find expected node content",
	"found undefined tag handle",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
}

// syntaxError turns a yaml parse error of data into a positioned
// configError.
func syntaxError(name string, data []byte, err error) configError {
	m := yamlLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return configError{Source: name, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	// yaml's line is imprecise: for parser problems it is 0-based; it
	// often names the start of the enclosing block or scalar rather than
	// the problem; some errors (on the first line, an unknown anchor) have
	// none. Take the first line at or after it where the file, cut short
	// there, already fails the same way: that is where the problem is.
	if slices.Contains(parserProblems, msg) {
		line++
	}
	line = max(line, 1)
	if lines := bytes.SplitAfter(data, []byte("\n")); len(lines) <= 2000 {
		for k := line; k <= len(lines); k++ {
			prefix := bytes.Join(lines[:k], nil)
			var n yaml.Node
			if perr := yaml.Unmarshal(prefix, &n); perr != nil {
				if pm := yamlLineRE.FindStringSubmatch(perr.Error()); pm != nil && pm[2] == msg {
					line = k
					break
				}
			}
		}
	}
	return configError{Source: name, Line: line, Msg: msg}
}

// lineOf returns the line of the key named by path (e.g.
// "listeners[1].address"), or of the nearest enclosing key present in the
// file, or 0 if none is.
func (f *configFile) lineOf(path string) int {
	if f == nil || f.root == nil {
		return 0
	}
	n, line := f.root, f.root.Line
	for _, seg := range strings.Split(path, ".") {
		key, idxs := splitIndex(seg)
		if key != "" {
			v, kline := mappingValue(n, key)
			if v == nil {
				return line
			}
			n, line = v, kline
		}
		for _, i := range idxs {
			if n.Kind == yaml.AliasNode && n.Alias != nil {
				n = n.Alias
			}
			if n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}

// splitIndex splits "listeners[1][2]" into "listeners" and [1 2].
func splitIndex(seg string) (string, []int) {
	key, rest, _ := strings.Cut(seg, "[")
	var idxs []int
	for rest != "" {
		num, after, ok := strings.Cut(rest, "]")
		if !ok {
			break
		}
		i, err := strconv.Atoi(num)
		if err != nil {
			break
		}
		idxs = append(idxs, i)
		rest = strings.TrimPrefix(after, "[")
	}
	return key, idxs
}

// mappingValue finds key in a mapping node and returns its value and the
// key's line.
func mappingValue(n *yaml.Node, key string) (*yaml.Node, int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}

// validate applies the broker's defaults and validation to cfg and turns
// each *broker.FieldError into a configError; source says where a path's
// value came from (file and line, or a flag).
func validate(cfg *config, source func(path string) (string, int)) []configError {
	cfg.ApplyDefaults()
	bridge.ApplyDefaultsAll(cfg.Bridges)
	var out []configError
	errs := append(flattenErrors(cfg.Validate()), flattenErrors(bridge.ValidateAll(cfg.Bridges, "bridges"))...)
	for _, err := range errs {
		var fe *broker.FieldError
		var be *bridge.FieldError
		switch {
		case errors.As(err, &fe):
			src, line := source(fe.Path)
			out = append(out, configError{Source: src, Line: line, Path: fe.Path, Msg: fe.Msg})
		case errors.As(err, &be):
			src, line := source(be.Path)
			out = append(out, configError{Source: src, Line: line, Path: be.Path, Msg: be.Msg})
		default:
			out = append(out, configError{Msg: err.Error()})
		}
	}
	return out
}

// flattenErrors unpacks errors.Join trees into their leaves.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// mergeErrors combines decode errors with validation errors, dropping a
// validation error about a key that already has a decode error (its value
// was not read, so the validation error would only be noise), and orders
// them by source and line.
func mergeErrors(decodeErrs, validateErrs []configError) []configError {
	out := append([]configError(nil), decodeErrs...)
	for _, v := range validateErrs {
		dup := false
		for _, d := range decodeErrs {
			if d.Path == "" || related(d.Path, v.Path) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, v)
		}
	}
	// Sources keep their order of first appearance; within one, by line.
	rank := map[string]int{}
	for _, e := range out {
		if _, ok := rank[e.Source]; !ok {
			rank[e.Source] = len(rank)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if ri, rj := rank[out[i].Source], rank[out[j].Source]; ri != rj {
			return ri < rj
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// related reports whether one path is the other or lies under it.
func related(a, b string) bool {
	under := func(p, parent string) bool {
		return p == parent || strings.HasPrefix(p, parent+".") || strings.HasPrefix(p, parent+"[")
	}
	return under(a, b) || under(b, a)
}

// printErrors writes one line per error.
func printErrors(w io.Writer, errs []configError) {
	for _, e := range errs {
		fmt.Fprintln(w, e.String())
	}
}
