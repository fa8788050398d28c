package broker_test

// Interoperability tests: Mosquitto's command line clients (mosquitto_pub,
// mosquitto_sub). Shared helpers are in interop_helpers_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferrymq/broker"
)

// mosquittoTools returns the paths of mosquitto_pub and mosquitto_sub, or
// skips the test (fails it under FERRYMQ_REQUIRE_SERVICES=1).
func mosquittoTools(t *testing.T) (pub, sub string) {
	t.Helper()
	pub, err1 := exec.LookPath("mosquitto_pub")
	sub, err2 := exec.LookPath("mosquitto_sub")
	if err := errors.Join(err1, err2); err != nil {
		if os.Getenv("FERRYMQ_REQUIRE_SERVICES") == "1" {
			t.Fatalf("FERRYMQ_REQUIRE_SERVICES=1 but the Mosquitto clients are missing (apt-get install mosquitto-clients): %v", err)
		}
		t.Skipf("Mosquitto clients not installed (apt-get install mosquitto-clients): %v", err)
	}
	return pub, sub
}

// mosqSub is a running mosquitto_sub.
type mosqSub struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

// startMosqSub starts mosquitto_sub with args against the broker and waits
// until its subscription is in place (the broker's subscription count
// grows).
func startMosqSub(t *testing.T, bin string, s *broker.Server, args ...string) *mosqSub {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	before := s.Stats().Subscriptions
	m := &mosqSub{done: make(chan struct{})}
	m.cmd = exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port, "-W", "10"}, args...)...)
	m.cmd.Stdout = &m.stdout
	m.cmd.Stderr = &m.stderr
	if err := m.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	go func() {
		m.err = m.cmd.Wait()
		cancel()
		close(m.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-m.done
	})
	ioWait(t, "mosquitto_sub to subscribe", 5*time.Second, func() bool {
		select {
		case <-m.done:
			t.Fatalf("mosquitto_sub %q exited early: %v\nstdout: %s\nstderr: %s", args, m.err, &m.stdout, &m.stderr)
		default:
		}
		return s.Stats().Subscriptions > before
	})
	return m
}

// wait waits for mosquitto_sub to exit 0 and returns its output lines.
func (m *mosqSub) wait(t *testing.T) []string {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("mosquitto_sub did not exit")
	}
	if m.err != nil {
		t.Fatalf("mosquitto_sub %q: %v\nstdout: %s\nstderr: %s", m.cmd.Args, m.err, &m.stdout, &m.stderr)
	}
	out := strings.TrimSuffix(m.stdout.String(), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// runMosq runs a Mosquitto client to completion with stdin and returns its
// combined output, failing the test on a non-zero exit.
func runMosq(t *testing.T, bin string, s *broker.Server, stdin string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

func checkLines(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("mosquitto_sub printed %d lines:\n%s\nwant %d lines:\n%s",
			len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

// TestInteropMosquitto: mosquitto_pub and mosquitto_sub, 3.1.1 and 5.0.
func TestInteropMosquitto(t *testing.T) {
	pubBin, subBin := mosquittoTools(t)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			for _, q := range []string{"1", "2"} {
				t.Run("qos"+q, func(t *testing.T) {
					s, _ := ioStart(t, nil)
					sub := startMosqSub(t, subBin, s, "-V", v, "-t", "mosq/q", "-q", q, "-C", "10", "-F", "%t|%q|%r|%p")
					var want []string
					for i := range 10 {
						msg := fmt.Sprintf("msg-%s-%d", v, i)
						runMosq(t, pubBin, s, "", "-V", v, "-t", "mosq/q", "-q", q, "-m", msg)
						want = append(want, "mosq/q|"+q+"|0|"+msg)
					}
					checkLines(t, sub.wait(t), want)
				})
			}
			t.Run("retained", func(t *testing.T) {
				s, _ := ioStart(t, nil)
				runMosq(t, pubBin, s, "", "-V", v, "-t", "mosq/ret", "-q", "1", "-r", "-m", "kept "+v)
				ioWait(t, "the retained message", 5*time.Second, func() bool { return s.Stats().Retained == 1 })
				// The retained message arrives with the SUBACK, so this
				// mosquitto_sub is just run to completion.
				out := runMosq(t, subBin, s, "", "-V", v, "-t", "mosq/#", "-q", "1", "-C", "1", "-W", "10", "-F", "%t|%q|%r|%p")
				checkLines(t, strings.Split(strings.TrimSuffix(out, "\n"), "\n"), []string{"mosq/ret|1|1|kept " + v})
				// An empty retained message clears it.
				runMosq(t, pubBin, s, "", "-V", v, "-t", "mosq/ret", "-q", "1", "-r", "-n")
				ioWait(t, "the retained message to be cleared", 5*time.Second, func() bool { return s.Stats().Retained == 0 })
			})
			t.Run("lines", func(t *testing.T) {
				s, _ := ioStart(t, nil)
				sub := startMosqSub(t, subBin, s, "-V", v, "-t", "mosq/lines", "-q", "1", "-C", "100")
				var in strings.Builder
				var want []string
				for i := range 100 {
					l := fmt.Sprintf("line %03d of %s", i, v)
					in.WriteString(l + "\n")
					want = append(want, l)
				}
				runMosq(t, pubBin, s, in.String(), "-V", v, "-t", "mosq/lines", "-q", "1", "-l")
				checkLines(t, sub.wait(t), want)
			})
			t.Run("persistent", func(t *testing.T) {
				s, _ := ioStart(t, nil)
				session := []string{"-V", v, "-i", "mosq-persist-" + v, "-c", "-q", "1", "-t", "mosq/persist"}
				if v == "mqttv5" {
					session = append(session, "-x", "60")
				}
				// Subscribe and leave at once (-E).
				runMosq(t, subBin, s, "", append(session, "-E", "-W", "10")...)
				if n := s.Stats().Subscriptions; n != 1 {
					t.Fatalf("after mosquitto_sub -c -E: %d subscriptions, want 1", n)
				}
				ioWait(t, "the subscriber to go offline", 5*time.Second, func() bool { return s.Stats().Connections == 0 })
				var want []string
				for i := range 5 {
					msg := fmt.Sprintf("offline %d", i)
					runMosq(t, pubBin, s, "", "-V", v, "-t", "mosq/persist", "-q", "1", "-m", msg)
					want = append(want, msg)
				}
				// The queued messages are delivered on reconnection; the
				// subscription already exists so the broker's count does not
				// grow: run it to completion instead.
				checkLines(t, strings.Split(strings.TrimSuffix(
					runMosq(t, subBin, s, "", append(session, "-C", "5", "-W", "10")...), "\n"), "\n"), want)
			})
			t.Run("will", func(t *testing.T) {
				s, _ := ioStart(t, nil)
				format := "%t|%q|%r|%p"
				willArgs := []string{"--will-topic", "mosq/will/gone", "--will-payload", "bye " + v, "--will-qos", "1"}
				want := "mosq/will/gone|1|0|bye " + v
				if v == "mqttv5" {
					format = "%t|%q|%r|%C|%R|%D|%P|%p"
					willArgs = append(willArgs,
						"-D", "will", "content-type", "text/plain",
						"-D", "will", "response-topic", "mosq/reply",
						"-D", "will", "correlation-data", "corr-42",
						"-D", "will", "payload-format-indicator", "1",
						"-D", "will", "user-property", "why", "killed",
						"-D", "will", "user-property", "why", "twice")
					want = "mosq/will/gone|1|0|text/plain|mosq/reply|corr-42|why:killed why:twice|bye " + v
				}
				watcher := startMosqSub(t, subBin, s, "-V", v, "-t", "mosq/will/#", "-q", "1", "-C", "1", "-F", format)
				doomed := startMosqSub(t, subBin, s, append([]string{"-V", v, "-t", "mosq/other", "-q", "1"}, willArgs...)...)
				// SIGKILL: the TCP connection closes without DISCONNECT.
				if err := doomed.cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				checkLines(t, watcher.wait(t), []string{want})
			})
			if v != "mqttv5" {
				return
			}
			t.Run("topic-alias", func(t *testing.T) {
				// mosquitto_pub -l with a topic alias sends the topic on the
				// first PUBLISH only, then the alias alone.
				s, _ := ioStart(t, nil)
				sub := startMosqSub(t, subBin, s, "-V", v, "-t", "mosq/alias/#", "-q", "1", "-C", "20", "-F", "%t|%p")
				var in strings.Builder
				var want []string
				for i := range 20 {
					fmt.Fprintf(&in, "aliased %02d\n", i)
					want = append(want, fmt.Sprintf("mosq/alias/t|aliased %02d", i))
				}
				runMosq(t, pubBin, s, in.String(), "-V", v, "-t", "mosq/alias/t", "-q", "1", "-l", "-D", "publish", "topic-alias", "1")
				checkLines(t, sub.wait(t), want)
			})
			t.Run("user-property", func(t *testing.T) {
				s, _ := ioStart(t, nil)
				sub := startMosqSub(t, subBin, s, "-V", v, "-t", "mosq/props", "-q", "1", "-C", "1", "-F", "%P|%R|%C|%p")
				runMosq(t, pubBin, s, "", "-V", v, "-t", "mosq/props", "-q", "1", "-m", "with props",
					"-D", "publish", "user-property", "k", "v",
					"-D", "publish", "user-property", "k", "v2",
					"-D", "publish", "user-property", "site", "plant-3",
					"-D", "publish", "response-topic", "mosq/reply",
					"-D", "publish", "content-type", "text/plain")
				checkLines(t, sub.wait(t), []string{"k:v k:v2 site:plant-3|mosq/reply|text/plain|with props"})
			})
		})
	}
}

// TestInteropMosquittoStoppedSubscriber: a subscriber that stops reading
// (mosquitto_sub under SIGSTOP) blocks neither the publisher nor the other
// subscribers; once it resumes it gets every QoS 1 message, in order.
func TestInteropMosquittoStoppedSubscriber(t *testing.T) {
	const n, size = 1000, 4 << 10
	_, subBin := mosquittoTools(t)
	s, addr := ioStart(t, nil)
	slow := startMosqSub(t, subBin, s, "-V", "mqttv5", "-i", "mosq-slow", "-t", "slow/t", "-q", "1", "-C", strconv.Itoa(n), "-W", "30")
	if err := slow.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = slow.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()

	var fast ioInbox
	fsub, _ := v3Connect(t, addr, "v311-fast", &fast, nil)
	v3Subscribe(t, fsub, map[string]byte{"slow/t": 1})
	pub, _ := v3Connect(t, addr, "v311-slow-pub", nil, nil)
	pad := strings.Repeat("x", size)
	payload := func(i int) string { return fmt.Sprintf("%04d", i) + pad }
	start := time.Now()
	toks := make([]mqtt.Token, n)
	for i := range n {
		toks[i] = pub.Publish("slow/t", 1, false, payload(i))
	}
	for i, tok := range toks {
		v3Wait(t, "publish "+strconv.Itoa(i)+" while a subscriber is stopped", tok)
	}
	t.Logf("%d × %d B published and acknowledged in %v with a stopped subscriber", n, size, time.Since(start))
	msgs := fast.waitN(t, n, 15*time.Second)
	for i, m := range msgs {
		if m.Payload != payload(i) {
			t.Fatalf("fast subscriber: message %d is %.8q…, want %.8q…", i, m.Payload, payload(i))
		}
	}
	if st := s.Stats(); st.DroppedQueue != 0 {
		t.Errorf("broker dropped %d QoS 1 messages (%d bytes queued is under max_queued_bytes)", st.DroppedQueue, n*size)
	}

	resume()
	lines := slow.wait(t)
	if len(lines) != n {
		t.Fatalf("stopped subscriber got %d messages after resuming, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != payload(i) {
			t.Fatalf("stopped subscriber: message %d is %.8q… (%d bytes), want %.8q…", i, l, len(l), payload(i))
		}
	}
}
