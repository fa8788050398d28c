package upstreamtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the Mosquitto helper: the broker accepting connections
// after a start, and exiting after SIGTERM (it saves its database first).
const (
	mosqStartTimeout = 10 * time.Second
	mosqStopTimeout  = 10 * time.Second
	// mosqStartTries is how many free ports StartMosquitto tries: another
	// process may take the port between our probe and Mosquitto's bind.
	mosqStartTries = 3
)

// MosquittoOptions adds to the configuration StartMosquittoWith writes.
type MosquittoOptions struct {
	// Config is appended to the generated mosquitto.conf (directives,
	// one per line), e.g. "max_inflight_messages 10". A listener must not
	// be added: only the loopback one exists.
	Config string
	// ACL, when not empty, is written to an acl_file (Mosquitto's syntax:
	// lines before any "user" line apply to anonymous clients).
	ACL string
	// Users are user names and passwords for a password_file (hashed).
	// Anonymous clients stay allowed; a known user with a wrong password
	// is refused (CONNACK 0x86).
	Users map[string]string
}

// Mosquitto is a Mosquitto broker run by a test on 127.0.0.1. Its
// persistence, configuration and log live in a temporary directory of the
// test, so Stop then Start keeps the sessions and queued messages. It is
// stopped (thawed first when frozen) at the end of the test, and its log is
// printed when the test failed.
type Mosquitto struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	log  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed when cmd has exited
	frozen bool
}

// StartMosquitto starts a Mosquitto with the default test configuration:
// anonymous clients, persistence, no limit on queued messages. The test is
// skipped when the mosquitto binary is missing (it fails instead when
// FERRYMQ_REQUIRE_SERVICES=1).
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	return StartMosquittoWith(t, MosquittoOptions{})
}

// StartMosquittoWith is StartMosquitto with additions to the configuration.
func StartMosquittoWith(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	bin, err := MosquittoBinary()
	if err != nil {
		mosqUnavailable(t, "%v", err)
	}
	m := &Mosquitto{t: t, bin: bin, dir: t.TempDir()}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	m.log = filepath.Join(m.dir, "mosquitto.log")
	t.Cleanup(m.cleanup)
	var last error
	for range mosqStartTries {
		if m.port, err = mosqFreePort(); err != nil {
			t.Fatalf("upstreamtest: %v", err)
		}
		if err := m.writeConfig(o); err != nil {
			t.Fatalf("upstreamtest: mosquitto config: %v", err)
		}
		if last = m.start(); last == nil {
			return m
		}
	}
	t.Fatalf("upstreamtest: %v", last)
	return nil
}

// MosquittoBinary finds the mosquitto executable: $FERRYMQ_MOSQUITTO, then
// the PATH, then the sbin directories packages install it in (often not
// in an ordinary user's PATH).
func MosquittoBinary() (string, error) {
	if p := os.Getenv("FERRYMQ_MOSQUITTO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"} {
		p := filepath.Join(dir, "mosquitto")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("mosquitto not found (install the mosquitto package, or set FERRYMQ_MOSQUITTO)")
}

// mosqUnavailable skips the test, or fails it when the services are
// required (FERRYMQ_REQUIRE_SERVICES=1).
func mosqUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("FERRYMQ_REQUIRE_SERVICES") == "1" {
		t.Fatalf("upstreamtest: "+format+" (FERRYMQ_REQUIRE_SERVICES=1)", args...)
	}
	t.Skipf("upstreamtest: "+format, args...)
}

// mosqFreePort returns a loopback TCP port nothing listens on just now.
func mosqFreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes mosquitto.conf (and the ACL and password files).
func (m *Mosquitto) writeConfig(o MosquittoOptions) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", m.port)
	b.WriteString("allow_anonymous true\n")
	b.WriteString("persistence true\n")
	fmt.Fprintf(&b, "persistence_location %s%c\n", m.dir, filepath.Separator)
	b.WriteString("persistence_file mosquitto.db\n")
	// Tests publish thousands of messages at once to online subscribers:
	// the default (1000 queued per client) would drop some.
	b.WriteString("max_queued_messages 0\n")
	b.WriteString("set_tcp_nodelay true\n")
	fmt.Fprintf(&b, "log_dest file %s\n", m.log)
	b.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	b.WriteString("connection_messages true\n")
	// Run as root, Mosquitto drops to the "mosquitto" user, which cannot
	// write the test's directory: stay who we are.
	if u, err := user.Current(); err == nil && u.Username != "" {
		fmt.Fprintf(&b, "user %s\n", u.Username)
	}
	if o.ACL != "" {
		p := filepath.Join(m.dir, "acl")
		if err := os.WriteFile(p, []byte(o.ACL+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "acl_file %s\n", p)
	}
	if len(o.Users) > 0 {
		p := filepath.Join(m.dir, "passwd")
		if err := os.WriteFile(p, mosqPasswordFile(o.Users), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "password_file %s\n", p)
	}
	if o.Config != "" {
		b.WriteString(o.Config + "\n")
	}
	return os.WriteFile(m.conf, []byte(b.String()), 0o600)
}

// mosqPasswordFile renders users in Mosquitto's password file format with
// its "$6$" hashes: base64(salt) and base64(SHA-512(password || salt)).
func mosqPasswordFile(users map[string]string) []byte {
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		salt := make([]byte, 12)
		_, _ = rand.Read(salt)
		h := sha512.Sum512(append([]byte(users[n]), salt...))
		fmt.Fprintf(&b, "%s:$6$%s$%s\n", n, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(h[:]))
	}
	return b.Bytes()
}

// start runs mosquitto and waits until its port accepts connections.
func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return errors.New("mosquitto is already running")
	}
	out, err := os.OpenFile(filepath.Join(m.dir, "mosquitto.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(exited)
	}()
	m.cmd, m.exited, m.frozen = cmd, exited, false

	deadline := time.Now().Add(mosqStartTimeout)
	for {
		c, err := net.DialTimeout("tcp", m.addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			m.cmd = nil
			return fmt.Errorf("mosquitto on port %d exited at start: %s", m.port, m.tail())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.signalAndWait(syscall.SIGKILL)
			return fmt.Errorf("mosquitto on port %d not accepting after %v: %s", m.port, mosqStartTimeout, m.tail())
		}
	}
}

// tail is the end of the broker's log and output, for error messages.
func (m *Mosquitto) tail() string {
	var s string
	for _, f := range []string{m.log, filepath.Join(m.dir, "mosquitto.out")} {
		if b, err := os.ReadFile(f); err == nil {
			s += string(b)
		}
	}
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return strings.TrimSpace(s)
}

// signalAndWait sends sig and waits for the process to exit (SIGKILL
// after mosqStopTimeout). m.mu must be held.
func (m *Mosquitto) signalAndWait(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	if m.frozen && sig != syscall.SIGKILL {
		_ = m.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(mosqStopTimeout):
		m.t.Errorf("upstreamtest: mosquitto did not exit on %v: killing it", sig)
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd, m.frozen = nil, false
}

func (m *Mosquitto) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Addr is the broker's address, "127.0.0.1:port" (the same after Start).
func (m *Mosquitto) Addr() string { return m.addr() }

// URL is "mqtt://127.0.0.1:port".
func (m *Mosquitto) URL() string { return "mqtt://" + m.addr() }

// Port is the broker's TCP port.
func (m *Mosquitto) Port() int { return m.port }

// Dir is the directory holding the configuration, the database
// (mosquitto.db) and the log.
func (m *Mosquitto) Dir() string { return m.dir }

// Log returns what the broker logged so far.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// Stop ends the broker cleanly (SIGTERM; it saves its database and closes
// every connection) and waits for it to exit. Stopping a frozen broker
// thaws it first.
func (m *Mosquitto) Stop() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.signalAndWait(syscall.SIGTERM)
}

// Kill ends the broker at once (SIGKILL): what it did not save is lost,
// and its clients' connections are reset. It works on a frozen broker.
func (m *Mosquitto) Kill() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.signalAndWait(syscall.SIGKILL)
}

// Start runs the broker again after Stop or Kill, with the same port,
// configuration and data, and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("upstreamtest: %v", err)
	}
}

// Freeze stops the broker's process (SIGSTOP): connections stay open but
// nothing is read or answered, like a half-open link.
func (m *Mosquitto) Freeze() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		m.t.Fatalf("upstreamtest: Freeze: mosquitto is not running")
	}
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		m.t.Fatalf("upstreamtest: SIGSTOP mosquitto: %v", err)
	}
	m.frozen = true
}

// Thaw resumes a frozen broker (SIGCONT).
func (m *Mosquitto) Thaw() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || !m.frozen {
		return
	}
	if err := m.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		m.t.Fatalf("upstreamtest: SIGCONT mosquitto: %v", err)
	}
	m.frozen = false
}

// Running reports whether the broker process is running (frozen or not).
func (m *Mosquitto) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// cleanup stops the broker at the end of the test and prints its log when
// the test failed.
func (m *Mosquitto) cleanup() {
	m.mu.Lock()
	m.signalAndWait(syscall.SIGTERM)
	m.mu.Unlock()
	if m.t.Failed() {
		m.t.Logf("upstreamtest: mosquitto log (port %d):\n%s", m.port, m.tail())
	}
}
