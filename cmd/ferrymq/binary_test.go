package main_test

// Tests of the real ferrymq binary, built once by TestMain: start, talk to
// it with real clients, stop it with signals, and its other commands.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// testVersion is stamped into the binary the way "make build" does.
const testVersion = "v0.0.0-bintest"

var ferrymqBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ferrymq-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "binary_test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goTool = filepath.Join(root, "bin", "go")
		} else {
			fmt.Fprintln(os.Stderr, "binary_test: the go command is not on PATH:", err)
			return 1
		}
	}
	bin := filepath.Join(dir, "ferrymq")
	cmd := exec.Command(goTool, "build", "-o", bin, "-ldflags", "-X main.version="+testVersion, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "binary_test: go build: %v\n%s", err, out)
		return 1
	}
	ferrymqBin = bin
	return m.Run()
}

// childEnv is the environment for the binary: no systemd notify socket.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is a running ferrymq whose stderr lines are collected.
type proc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	mu     sync.Mutex
	lines  []string
	done   chan struct{}
	err    error // from Wait; valid once done is closed
	exited time.Time
}

// startFerrymq starts the binary with args; it is killed at cleanup if it
// is still running.
func startFerrymq(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(ferrymqBin, args...), done: make(chan struct{})}
	p.cmd.Env = childEnv()
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", ferrymqBin, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait() // after the pipe is drained
		p.exited = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) stderrLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

func (p *proc) exitedEarly() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLine waits for a stderr line matching re and returns its submatches.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range p.stderrLines() {
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		if p.exitedEarly() {
			// The last lines may have arrived just before the exit.
			for _, l := range p.stderrLines() {
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			}
			t.Fatalf("ferrymq exited (%v) before logging %s; stderr:\n%s", p.err, re, strings.Join(p.stderrLines(), "\n"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stderr line matching %s; stderr:\n%s", re, strings.Join(p.stderrLines(), "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitExit waits up to d for the process to exit and returns its exit code.
func (p *proc) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("ferrymq did not exit within %v; stderr:\n%s", d, strings.Join(p.stderrLines(), "\n"))
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		t.Fatalf("ferrymq did not exit normally: %v", p.err)
		return -1
	}
}

var startedRe = regexp.MustCompile(`msg="ferrymq started" addrs=(\S+)`)

// startBroker runs "ferrymq run --listen 127.0.0.1:0" and returns the
// process and the address it logged.
func startBroker(t *testing.T) (*proc, string) {
	t.Helper()
	p := startFerrymq(t, "run", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	addr := p.waitLine(t, startedRe)[1]
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("ferrymq started on %q, want 127.0.0.1:<port>", addr)
	}
	// Its per-listener line agrees.
	p.waitLine(t, regexp.MustCompile(`msg=listening addr=`+regexp.QuoteMeta(addr)+`$`))
	return p, addr
}

type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (b *inbox) add(s string) { b.mu.Lock(); b.msgs = append(b.msgs, s); b.mu.Unlock() }
func (b *inbox) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.msgs...)
}

// pahoClient connects a 3.1.1 client (no reconnection).
func pahoClient(t *testing.T, addr, id string, in *inbox, will bool) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
	if in != nil {
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { in.add(m.Topic() + " " + string(m.Payload())) })
	}
	if will {
		o.SetWill("bin/will/"+id, "gone", 1, false)
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(100)
		}
	})
	return c
}

func waitToken(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v (timed out: %v)", what, tok.Error(), tok.Error() == nil)
	}
}

func waitMsgs(t *testing.T, in *inbox, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(in.all()) < len(want) {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := in.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// mosquittoClients returns mosquitto_pub and mosquitto_sub, or "" when they
// are missing (a failure under FERRYMQ_REQUIRE_SERVICES=1).
func mosquittoClients(t *testing.T) (string, string) {
	t.Helper()
	pub, err1 := exec.LookPath("mosquitto_pub")
	sub, err2 := exec.LookPath("mosquitto_sub")
	if err := errors.Join(err1, err2); err != nil {
		if os.Getenv("FERRYMQ_REQUIRE_SERVICES") == "1" {
			t.Fatalf("FERRYMQ_REQUIRE_SERVICES=1 but the Mosquitto clients are missing (apt-get install mosquitto-clients): %v", err)
		}
		t.Logf("Mosquitto clients not installed, that part is skipped: %v", err)
		return "", ""
	}
	return pub, sub
}

// TestBinaryServesClients: the binary logs its bound address and serves
// Paho and Mosquitto clients, in 3.1.1 and 5.0.
func TestBinaryServesClients(t *testing.T) {
	p, addr := startBroker(t)

	var in inbox
	sub := pahoClient(t, addr, "bin-sub", &in, false)
	waitToken(t, "subscribe", sub.Subscribe("bin/#", 2, nil))
	pub := pahoClient(t, addr, "bin-pub", nil, false)
	var want []string
	for q := byte(0); q <= 2; q++ {
		msg := fmt.Sprintf("paho qos %d", q)
		waitToken(t, "publish", pub.Publish("bin/paho", q, false, msg))
		want = append(want, "bin/paho "+msg)
	}
	waitMsgs(t, &in, want)

	pubBin, subBin := mosquittoClients(t)
	if pubBin != "" {
		host, port, _ := net.SplitHostPort(addr)
		for _, v := range []string{"mqttv311", "mqttv5"} {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			// mosquitto_sub gets the message retained, so it needs no
			// synchronisation with the publisher.
			out, err := exec.CommandContext(ctx, pubBin, "-h", host, "-p", port, "-V", v, "-q", "1", "-r",
				"-t", "bin/mosq/"+v, "-m", "hello "+v).CombinedOutput()
			if err != nil {
				cancel()
				t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
			}
			out, err = exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", v, "-q", "1",
				"-t", "bin/mosq/"+v, "-C", "1", "-W", "10", "-v").CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("mosquitto_sub %s: %v\n%s", v, err, out)
			}
			if got, want := string(out), "bin/mosq/"+v+" hello "+v+"\n"; got != want {
				t.Errorf("mosquitto_sub %s printed %q, want %q", v, got, want)
			}
			want = append(want, "bin/mosq/"+v+" hello "+v)
		}
		waitMsgs(t, &in, want)
	}
	if p.exitedEarly() {
		t.Fatalf("ferrymq exited: %v", p.err)
	}
}

// TestBinarySignals: SIGTERM and SIGINT make the broker disconnect its
// clients and exit 0 within 5 s, logging that it stopped.
func TestBinarySignals(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGTERM", syscall.SIGTERM}, {"SIGINT", syscall.SIGINT}} {
		sig := tc.sig
		t.Run(tc.name, func(t *testing.T) {
			p, addr := startBroker(t)
			lost := make(chan struct{})
			o := mqtt.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("bin-sig").
				SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5*time.Second).
				SetWill("bin/will", "gone", 1, false).
				SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
			c := mqtt.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			waitToken(t, "subscribe", c.Subscribe("bin/will", 1, nil))

			start := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code := p.waitExit(t, 6*time.Second)
			if d := p.exited.Sub(start); d > 5*time.Second {
				t.Errorf("exit took %v, want under 5 s", d)
			}
			if code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
			}
			select {
			case <-lost:
			case <-time.After(5 * time.Second):
				t.Errorf("the client was not disconnected")
			}
			stderr := strings.Join(p.stderrLines(), "\n")
			for _, want := range []string{`msg="shutting down"`, `msg=stopped`} {
				if !strings.Contains(stderr, want) {
					t.Errorf("no %s line in stderr:\n%s", want, stderr)
				}
			}
			if p.stdout.Len() != 0 {
				t.Errorf("stdout: %q", p.stdout.String())
			}
		})
	}
}

// TestBinaryAddressInUse: a second instance on the same port prints one
// line and exits 1; the first one keeps serving.
func TestBinaryAddressInUse(t *testing.T) {
	first, addr := startBroker(t)
	second := startFerrymq(t, "run", "--listen", addr, "--data-dir", t.TempDir())
	if code := second.waitExit(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	lines := second.stderrLines()
	want := regexp.MustCompile(`^ferrymq: listen tcp ` + regexp.QuoteMeta(addr) + `: bind: address already in use$`)
	if len(lines) != 1 || !want.MatchString(lines[0]) {
		t.Errorf("stderr %q, want exactly one line matching %s", lines, want)
	}
	if second.stdout.Len() != 0 {
		t.Errorf("stdout: %q", second.stdout.String())
	}
	if first.exitedEarly() {
		t.Fatalf("the first instance exited: %v", first.err)
	}
	pahoClient(t, addr, "bin-still-there", nil, false)
}

// run runs the binary to completion and returns its exit code and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferrymqBin, args...)
	cmd.Env = childEnv()
	cmd.Dir = t.TempDir()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("%q: %v", args, err)
	}
	return code, o.String(), e.String()
}

func TestBinaryVersion(t *testing.T) {
	code, stdout, stderr := run(t, "version")
	if code != 0 {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	want := regexp.MustCompile(`^ferrymq ` + regexp.QuoteMeta(testVersion) + ` \(go1\.\d+[^,]*, [a-z0-9]+/[a-z0-9]+\)\n$`)
	if !want.MatchString(stdout) {
		t.Errorf("stdout %q, want a line matching %s", stdout, want)
	}
}

func TestBinaryCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("listeners:\n  - address: 127.0.0.1:1883\nlimits:\n  max_packet_size: 256KiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badYAML := "listeners:\n" +
		"  - address: 127.0.0.1:1883\n" +
		"    alow_anonymous: true\n" + // line 3
		"limits:\n" +
		"  receive_maximum: 70000\n" + // line 5
		"  max_packet_size: lots\n" // line 6
	if err := os.WriteFile(bad, []byte(badYAML), 0o644); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := run(t, "check-config", "-c", good)
	if code != 0 || stdout != good+": ok\n" || stderr != "" {
		t.Errorf("good file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = run(t, "check-config", "-c", bad)
	if code != 1 {
		t.Errorf("bad file: exit %d, want 1", code)
	}
	if stdout != "" {
		t.Errorf("bad file: stdout %q", stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	wantLines := []string{
		regexp.QuoteMeta(bad) + `:3: listeners\[0\]\.alow_anonymous: unknown key`,
		regexp.QuoteMeta(bad) + `:5: limits\.receive_maximum: `,
		regexp.QuoteMeta(bad) + `:6: limits\.max_packet_size: `,
	}
	if len(lines) != len(wantLines) {
		t.Fatalf("bad file: stderr has %d lines, want %d:\n%s", len(lines), len(wantLines), stderr)
	}
	for i, w := range wantLines {
		if !regexp.MustCompile("^" + w).MatchString(lines[i]) {
			t.Errorf("bad file: line %d %q, want it to start like %s", i+1, lines[i], w)
		}
	}

	// run refuses the same file, with the same positions, and exits 1.
	code, _, stderr = run(t, "run", "-c", bad)
	if code != 1 || !strings.Contains(stderr, bad+":3:") {
		t.Errorf("run -c bad.yaml: exit %d, stderr %q", code, stderr)
	}
}
