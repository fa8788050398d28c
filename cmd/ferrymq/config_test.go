package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/broker"
)

// writeFile writes a config file into a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// errLines formats errors the way check-config prints them.
func errLines(errs []configError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.String())
	}
	return out
}

func checkErrors(t *testing.T, content string, want ...string) {
	t.Helper()
	_, errs := buildConfig(&runOptions{configFile: writeFile(t, "c.yaml", content)})
	got := errLines(errs)
	for i := range got {
		// Drop the temporary directory: compare "c.yaml:LINE: ...".
		got[i] = filepath.Base(got[i])
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d:\n got  %s\n want %s...", i, got[i], want[i])
		}
	}
}

func TestParseGoodFile(t *testing.T) {
	p := writeFile(t, "good.yaml", `
listeners:
  - address: 127.0.0.1:1883
  - address: "[::1]:1884"
    allow_anonymous: false
  - address: 0.0.0.0:8883
    allow_anonymous: true
storage:
  dir: /var/lib/ferrymq
limits:
  max_packet_size: 256KiB
  max_keepalive: 600
  receive_maximum: 100
  max_inflight: 10
  max_queued_bytes: 64KB
  topic_alias_maximum: 5
  max_session_expiry: 86400
`)
	cfg, errs := buildConfig(&runOptions{configFile: p})
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errLines(errs))
	}
	yes, no := true, false
	want := broker.Config{
		Listeners: []broker.Listener{
			{Address: "127.0.0.1:1883", AllowAnonymous: &yes}, // defaulted: loopback
			{Address: "[::1]:1884", AllowAnonymous: &no},
			{Address: "0.0.0.0:8883", AllowAnonymous: &yes},
		},
		Storage: broker.Storage{Dir: "/var/lib/ferrymq", Durability: "sync", SyncInterval: broker.DefaultSyncInterval,
			MinFree: broker.DefaultMinFree, OnCorruption: "quarantine"},
		Limits: broker.Limits{
			MaxPacketSize:     256 << 10,
			MaxKeepAlive:      600,
			ReceiveMaximum:    100,
			MaxInflight:       10,
			MaxQueuedBytes:    64000,
			TopicAliasMaximum: 5,
			MaxSessionExpiry:  86400,
		},
	}
	if !reflect.DeepEqual(cfg.Config, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "---\n"} {
		cfg, errs := buildConfig(&runOptions{configFile: writeFile(t, "e.yaml", content)})
		if len(errs) > 0 {
			t.Fatalf("%q: %v", content, errLines(errs))
		}
		if !reflect.DeepEqual(cfg.Config, broker.Default()) {
			t.Errorf("%q: got %+v, want defaults", content, cfg)
		}
	}
}

func TestNullValueMeansDefault(t *testing.T) {
	cfg, errs := buildConfig(&runOptions{configFile: writeFile(t, "n.yaml", "storage:\nlimits:\n  max_inflight: ~\n")})
	if len(errs) > 0 {
		t.Fatal(errLines(errs))
	}
	if !reflect.DeepEqual(cfg.Config, broker.Default()) {
		t.Errorf("got %+v, want defaults", cfg)
	}
}

func TestUnknownKeyWithLine(t *testing.T) {
	checkErrors(t, `listeners:
  - address: 127.0.0.1:1883
    alow_anonymous: true
`, `c.yaml:3: listeners[0].alow_anonymous: unknown key (did you mean "allow_anonymous"?)`)

	checkErrors(t, "# top\n\nstorag:\n  dir: x\n",
		`c.yaml:3: storag: unknown key (did you mean "storage"?); valid keys here: listeners, storage, limits`)
}

func TestTypeErrorWithLine(t *testing.T) {
	checkErrors(t, "limits:\n  max_inflight: many\n",
		`c.yaml:2: limits.max_inflight: expected a non-negative integer, got "many"`)
	checkErrors(t, "limits:\n  receive_maximum: 70000\n",
		`c.yaml:2: limits.receive_maximum: 70000 is out of range (0 to 65535)`)
	checkErrors(t, "listeners:\n  address: 127.0.0.1:1883\n",
		`c.yaml:2: listeners: expected a list, got a mapping`)
	checkErrors(t, "listeners:\n  - address: 127.0.0.1:1\n    allow_anonymous: maybe\n",
		`c.yaml:3: listeners[0].allow_anonymous: expected true or false, got "maybe"`)
	checkErrors(t, "limits:\n  max_packet_size: 12 parsecs\n",
		`c.yaml:2: limits.max_packet_size: expected a size in bytes`)
	checkErrors(t, "- 1\n", `c.yaml:1: expected a mapping, got a list`)
}

func TestSyntaxErrorWithLine(t *testing.T) {
	checkErrors(t, "storage:\n  dir: x\n bad: 1\n", `c.yaml:3: did not find expected key`)
	checkErrors(t, "listeners:\n  - address: [1\n", `c.yaml:2: did not find expected ',' or ']'`)
	checkErrors(t, "a: b: c\n", `c.yaml:1: mapping values are not allowed in this context`)
	checkErrors(t, "limits:\n  max_inflight: 1\n\tx: 2\n", `c.yaml:3: found a tab character`)
	checkErrors(t, "limits: 1\n---\nlimits: 2\n", `c.yaml:2: only one YAML document is allowed`)
	checkErrors(t, "storage: {}\nlimits: *nope\n", `c.yaml:2: unknown anchor 'nope' referenced`)
}

func TestValidationErrorMappedToLine(t *testing.T) {
	checkErrors(t, `# comment
listeners:
  - address: 127.0.0.1:1883
  - address: 127.0.0.1:1883
limits:
  max_packet_size: 10
`,
		`c.yaml:4: listeners[1].address: "127.0.0.1:1883" is already used by listeners[0]`,
		`c.yaml:6: limits.max_packet_size: 10 is too small`)

	// The key is missing: the error points at the nearest enclosing item.
	checkErrors(t, "listeners:\n  - allow_anonymous: true\n",
		`c.yaml:2: listeners[0].address: required`)

	// Not on loopback and allow_anonymous not set: the listener's line.
	checkErrors(t, "storage:\n  dir: d\nlisteners:\n  - address: 0.0.0.0:1883\n",
		`c.yaml:4: listeners[0].allow_anonymous: listener "0.0.0.0:1883" is not on loopback`)
}

func TestMultipleErrorsAllReported(t *testing.T) {
	checkErrors(t, `listeners:
  - address: 127.0.0.1:1883
  - address: 10.0.0.1:1883
    colour: blue
  - address: nope
storage:
  dir: [a, b]
  durability: never
limits:
  max_packet_size: lots
  max_queued_bytes: 64KB
  receive_maximum: 70000
  max_inflight: -3
`,
		`c.yaml:3: listeners[1].allow_anonymous: listener "10.0.0.1:1883" is not on loopback`,
		`c.yaml:4: listeners[1].colour: unknown key`,
		`c.yaml:5: listeners[2].address: "nope" is not host:port`,
		`c.yaml:7: storage.dir: expected a string, got a list`,
		`c.yaml:8: storage.durability: "never" is not one of sync, batch, memory`,
		`c.yaml:10: limits.max_packet_size: expected a size in bytes`,
		`c.yaml:12: limits.receive_maximum: 70000 is out of range`,
		`c.yaml:13: limits.max_inflight: expected a non-negative integer, got -3`,
	)
}

func TestDuplicateKey(t *testing.T) {
	checkErrors(t, "limits:\n  max_inflight: 1\n  max_inflight: 2\n",
		`c.yaml:3: limits.max_inflight: duplicate key (first set on line 2)`)
}

func TestMergeKeys(t *testing.T) {
	p := writeFile(t, "m.yaml", `
base: &base
  max_inflight: 7
limits:
  <<: *base
  receive_maximum: 9
`)
	// "base" is not a key of the configuration, so this is an error; but
	// the merge itself works.
	cfg, f, errs := loadConfigFile(p)
	if len(errs) != 1 || errs[0].Path != "base" || errs[0].Line != 2 {
		t.Fatalf("errors: %v", errLines(errs))
	}
	if cfg.Limits.MaxInflight != 7 || cfg.Limits.ReceiveMaximum != 9 {
		t.Errorf("limits %+v", cfg.Limits)
	}
	if got := f.lineOf("limits.receive_maximum"); got != 6 {
		t.Errorf("lineOf = %d, want 6", got)
	}
}

func TestMissingFile(t *testing.T) {
	_, errs := buildConfig(&runOptions{configFile: filepath.Join(t.TempDir(), "nope.yaml")})
	if len(errs) != 1 || !strings.HasSuffix(errs[0].String(), "nope.yaml: no such file or directory") {
		t.Fatalf("errors: %v", errLines(errs))
	}
}

func TestLineOf(t *testing.T) {
	_, f, errs := parseConfig("x.yaml", []byte(`listeners:
  - address: 127.0.0.1:1
  -
    address: 127.0.0.1:2
storage:
  dir: d
`))
	if len(errs) > 0 {
		t.Fatal(errLines(errs))
	}
	for path, want := range map[string]int{
		"listeners":                    1,
		"listeners[0]":                 2,
		"listeners[0].address":         2,
		"listeners[1].address":         4,
		"listeners[1].allow_anonymous": 4, // missing: the item (its mapping starts on line 4)
		"listeners[7].address":         1, // missing: the list
		"storage.dir":                  6,
		"storage.other":                5,
		"limits.max_inflight":          1, // missing: the document
	} {
		if got := f.lineOf(path); got != want {
			t.Errorf("lineOf(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"0": 0, "1024": 1024, "1_000": 1000, "64KB": 64000, "64kb": 64000, "64 KiB": 65536,
		"1MiB": 1 << 20, "1mib": 1 << 20, "2MB": 2e6, "1GiB": 1 << 30, "3GB": 3e9,
		"1TiB": 1 << 40, "10B": 10, " 7 ": 7,
	}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "+1", "1.5MiB", "1 parsec", "0x10", "99999999999TiB", "1 M iB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestSizeKeysExist guards against a renamed field silently losing its
// unit support.
func TestSizeKeysExist(t *testing.T) {
	for path := range sizeKeys {
		typ := reflect.TypeFor[config]()
		for _, key := range strings.Split(path, ".") {
			key = strings.TrimSuffix(key, "[]")
			for typ.Kind() == reflect.Slice || typ.Kind() == reflect.Pointer {
				typ = typ.Elem()
			}
			fields, _ := structFields(typ)
			idx, ok := fields[key]
			if !ok {
				t.Fatalf("size key %q: no field %q", path, key)
			}
			typ = typ.FieldByIndex(idx).Type
		}
		switch typ.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		default:
			t.Errorf("size key %q has type %s", path, typ)
		}
	}
}

// configKeys lists every key path of the configuration (indices as []).
func configKeys(typ reflect.Type, prefix string) []string {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		if typ.Kind() == reflect.Slice {
			prefix += "[]"
		}
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	fields, names := structFields(typ)
	for _, name := range names {
		p := joinPath(prefix, name)
		out = append(out, p)
		out = append(out, configKeys(typ.FieldByIndex(fields[name]).Type, p)...)
	}
	return out
}

// TestExampleConfig keeps deploy/ferrymq.example.yaml current: it must be
// valid, set every key, and hold the defaults (but for storage.dir).
func TestExampleConfig(t *testing.T) {
	const example = "../../deploy/ferrymq.example.yaml"
	cfg, errs := buildConfig(&runOptions{configFile: example})
	if len(errs) > 0 {
		t.Fatalf("%s is invalid:\n%s", example, strings.Join(errLines(errs), "\n"))
	}
	want := broker.Default()
	want.Storage.Dir = "/var/lib/ferrymq"
	if !reflect.DeepEqual(cfg.Config, want) {
		t.Errorf("%s does not hold the defaults:\n got  %+v\nwant %+v", example, cfg, want)
	}
	_, f, _ := loadConfigFile(example)
	for _, key := range configKeys(reflect.TypeFor[broker.Config](), "") {
		if !hasKey(f, strings.ReplaceAll(key, "[]", "[0]")) {
			t.Errorf("%s does not show key %s", example, key)
		}
	}
}

// TestReadmeDocumentsEveryKey keeps the README's configuration reference
// current.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range configKeys(reflect.TypeFor[broker.Config](), "") {
		if !strings.Contains(string(readme), "`"+key+"`") {
			t.Errorf("README.md does not document `%s`", key)
		}
	}
}

func hasKey(f *configFile, path string) bool {
	n := f.root
	for _, seg := range strings.Split(path, ".") {
		key, idxs := splitIndex(seg)
		v, _ := mappingValue(n, key)
		if v == nil {
			return false
		}
		n = v
		for _, i := range idxs {
			if n.Kind != yaml.SequenceNode || i >= len(n.Content) {
				return false
			}
			n = n.Content[i]
		}
	}
	return true
}

// TestBridgeExampleConfig keeps deploy/ferrymq.bridge.example.yaml
// current: valid, showing every bridge key, and the README documents each.
func TestBridgeExampleConfig(t *testing.T) {
	const example = "../../deploy/ferrymq.bridge.example.yaml"
	cfg, errs := buildConfig(&runOptions{configFile: example})
	if len(errs) > 0 {
		t.Fatalf("%s is invalid:\n%s", example, strings.Join(errLines(errs), "\n"))
	}
	if len(cfg.Bridges) != 1 || cfg.Bridges[0].Backlog.MaxBytes != 1<<30 || cfg.Bridges[0].Name != "cloud" {
		t.Errorf("bridges %+v", cfg.Bridges)
	}
	_, f, _ := loadConfigFile(example)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range configKeys(reflect.TypeFor[bridge.Config](), "bridges[]") {
		if !hasKey(f, strings.ReplaceAll(key, "[]", "[0]")) {
			t.Errorf("%s does not show key %s", example, key)
		}
		if !strings.Contains(string(readme), "`"+key+"`") {
			t.Errorf("README.md does not document `%s`", key)
		}
	}
}

// TestBridgeConfigErrors: bridge problems are reported with file and line.
func TestBridgeConfigErrors(t *testing.T) {
	content := `bridges:
  - name: cloud
    upstream: ftp://x
    forward:
      - from: "a/#"
        to: "b/{2}"
    backlog:
      max_bytes: lots
      when_full: sometimes
`
	_, errs := buildConfig(&runOptions{configFile: writeFile(t, "b.yaml", content)})
	got := strings.Join(errLines(errs), "\n")
	for _, want := range []string{
		"b.yaml:3: bridges[0].upstream:",
		"b.yaml:6: bridges[0].forward[0].to:",
		"b.yaml:8: bridges[0].backlog.max_bytes: expected a size",
		"b.yaml:9: bridges[0].backlog.when_full:",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "password") {
		t.Errorf("errors mention a password:\n%s", got)
	}
}
