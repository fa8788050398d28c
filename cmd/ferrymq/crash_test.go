package main_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// TestCrashKill9: the real binary, publishing QoS 1 and QoS 2 to topics
// with offline persistent subscribers, is killed with SIGKILL at random
// moments (at least 20 rounds) and restarted on the same data directory.
// Every acknowledged message must reach the subscribers (QoS 1 at least
// once, QoS 2 exactly once), and retained messages and subscriptions must
// be intact.
//
// Two persistent publishers (3.1.1 and 5.0) resend, after each restart,
// PUBREL for every QoS 2 message that got PUBREC and PUBLISH with DUP for
// every message not acknowledged, then publish numbered messages (several
// in flight) until the kill. Two persistent subscribers (3.1.1 and 5.0)
// subscribe once; in every fourth round they are online too, answering
// with a lag so that messages are inflight when the broker dies. At the
// end the publishers complete what is outstanding, the subscribers drain
// their sessions, a last publish checks their subscriptions and a fresh
// client checks the retained messages.
//
// FERRYMQ_CRASH_SEED repeats the kill delays and answer lags of a run (the seed is
// logged), FERRYMQ_CRASH_ROUNDS changes the number of rounds and
// FERRYMQ_CRASH_DURABILITY the broker's --durability (sync by default;
// batch must pass too; memory must fail).
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the broker 24 times")
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("FERRYMQ_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("FERRYMQ_CRASH_SEED: %v", err)
		}
	}
	rounds := 24
	if s := os.Getenv("FERRYMQ_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("FERRYMQ_CRASH_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	durability := "sync"
	if s := os.Getenv("FERRYMQ_CRASH_DURABILITY"); s != "" {
		durability = s
	}
	t.Logf("seed %d (FERRYMQ_CRASH_SEED=%d repeats the kill delays), %d rounds, durability %s", seed, seed, rounds, durability)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6b696c6c))

	dir := t.TempDir()
	var slowestStart time.Duration
	start := func() (*proc, string) {
		t.Helper()
		began := time.Now()
		p := startFerrymq(t, "run", "--listen", "127.0.0.1:0", "--data-dir", dir, "--durability", durability)
		addr := p.waitLine(t, startedRe)[1]
		slowestStart = max(slowestStart, time.Since(began))
		return p, addr
	}
	checkLog := func(p *proc, what string) {
		t.Helper()
		for _, l := range p.stderrLines() {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "panic") || strings.Contains(l, "fatal error") {
				t.Errorf("%s: ferrymq logged: %s", what, l)
			}
		}
	}
	kill := func(p *proc, what string) {
		t.Helper()
		if p.exitedEarly() {
			t.Fatalf("%s: ferrymq exited by itself (%v); stderr:\n%s", what, p.err, strings.Join(p.stderrLines(), "\n"))
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("%s: kill: %v", what, err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ferrymq still running 10 s after SIGKILL", what)
		}
		var ee *exec.ExitError
		if !errors.As(p.err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() ||
			ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s: ferrymq ended with %v, not by our SIGKILL; stderr:\n%s", what, p.err, strings.Join(p.stderrLines(), "\n"))
		}
		checkLog(p, what)
	}

	problems := &anomalies{}
	book := &ledger{msgs: map[string]*msgRec{}}
	subs := []*subscriber{
		newSubscriber("crash-sub-311", packet.V311, problems),
		newSubscriber("crash-sub-5", packet.V5, problems),
	}
	pubs := []*publisher{
		newPublisher("pub311", packet.V311, 16, book, problems),
		newPublisher("pub5", packet.V5, 16, book, problems),
	}

	// Setup: the subscriptions and some retained messages, acknowledged,
	// then a kill right away.
	p, addr := start()
	for _, s := range subs {
		m, err := s.connect(addr, "setup")
		if err != nil {
			t.Fatalf("%s: connect: %v", s.name, err)
		}
		err = m.send(&packet.Subscribe{PacketID: 1, Subs: []packet.SubOption{
			{Filter: "crash/q1/#", QoS: 1}, {Filter: "crash/q2/#", QoS: 2}}})
		if err != nil {
			t.Fatalf("%s: subscribe: %v", s.name, err)
		}
		select {
		case ack := <-s.subacks:
			if len(ack.ReasonCodes) != 2 || ack.ReasonCodes[0] != 1 || ack.ReasonCodes[1] != 2 {
				t.Fatalf("%s: SUBACK codes %v, want [1 2]", s.name, ack.ReasonCodes)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no SUBACK", s.name)
		}
		s.mu.Lock()
		s.durable = true
		s.mu.Unlock()
		_ = m.send(&packet.Disconnect{})
		m.waitDone(5 * time.Second)
		m.close()
	}
	rc := dialSync(t, addr, packet.V311, "crash-retain")
	rc.publish(t, 1, true, "crash/ret/a", "ret-a", 1)
	rc.publish(t, 2, true, "crash/ret/b", "ret-b", 2)
	rc.publish(t, 1, true, "crash/ret/gone", "doomed", 3)
	rc.publish(t, 2, true, "crash/ret/gone", "", 4) // deletes it
	rc.m.close()
	kill(p, "setup")

	// The rounds.
	var ackedInRounds, subRounds int
	for r := 1; r <= rounds; r++ {
		what := fmt.Sprintf("round %d", r)
		p, addr := start()
		began := time.Now()
		var wg sync.WaitGroup
		for _, pub := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pub.session(addr, r, true)
			}()
		}
		withSubs := r%4 == 2
		if withSubs {
			subRounds++
			for _, s := range subs {
				s.mu.Lock()
				s.ackLag = time.Duration(1+rng.IntN(20)) * time.Millisecond
				s.mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					m, err := s.connect(addr, what)
					if err != nil {
						return // killed before it got in
					}
					<-m.done
					if err := m.abnormalEnd(); err != nil {
						problems.add("%s: %s: read: %v", s.name, what, err)
					}
					m.nc.Close()
				}()
			}
		}
		// A random moment: mostly while publishing, sometimes while the
		// clients reconnect and resend.
		delay := time.Duration(20+rng.IntN(281)) * time.Millisecond
		if r%5 == 0 {
			delay = time.Duration(rng.IntN(20)) * time.Millisecond
		}
		time.Sleep(time.Until(began.Add(delay)))
		kill(p, what)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the clients did not notice the kill within 20 s", what)
		}
		msgs := book.snapshot()
		acked := 0
		for _, m := range msgs {
			if m.acked {
				acked++
			}
		}
		ackedInRounds = acked
		var outstanding []string
		for _, pub := range pubs {
			outstanding = append(outstanding, fmt.Sprintf("%s %d", pub.name, pub.pending()))
		}
		t.Logf("%s: killed after %v (subscribers online: %v): %d published, %d acknowledged so far; outstanding: %s",
			what, delay, withSubs, len(msgs), acked, strings.Join(outstanding, ", "))
		if t.Failed() {
			t.FailNow()
		}
	}

	// The end: a clean start; the publishers complete their messages.
	p, addr = start()
	var wg sync.WaitGroup
	for _, pub := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !pub.session(addr, rounds+1, false) {
				problems.add("%s: could not reconnect after the last restart", pub.name)
			}
		}()
	}
	wg.Wait()
	for _, pub := range pubs {
		if n := pub.pending(); n > 0 {
			t.Errorf("%s: %d messages still outstanding after the final session", pub.name, n)
		}
	}

	// The subscribers drain their sessions until they have everything and
	// the broker is quiet, or until nothing comes for 10 s.
	msgs := book.snapshot()
	conns := make([]*mconn, len(subs))
	drainStart := time.Now()
	for i, s := range subs {
		s.mu.Lock()
		s.ackLag = 0
		s.mu.Unlock()
		m, err := s.connect(addr, "final")
		if err != nil {
			t.Fatalf("%s: final connect: %v", s.name, err)
		}
		conns[i] = m
	}
	complete := func(s *subscriber) bool {
		got, pending, last := s.stats()
		if pending > 0 || time.Since(last) < 300*time.Millisecond {
			return false
		}
		for _, m := range msgs {
			if !m.retain && m.acked && got[m.payload] == 0 {
				return false
			}
		}
		return true
	}
	for {
		done := true
		quiet := true
		for _, s := range subs {
			_, _, last := s.stats()
			if last.Before(drainStart) {
				last = drainStart
			}
			if time.Since(last) < 10*time.Second {
				quiet = false
			}
			if !complete(s) {
				done = false
			}
		}
		if done || quiet {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("drained in %v; slowest start (restoring the sessions) %v",
		time.Since(drainStart).Round(time.Millisecond), slowestStart.Round(time.Millisecond))

	// Their subscriptions are intact: a last publish reaches them. It also
	// comes after everything queued before it.
	fc := dialSync(t, addr, packet.V5, "crash-final")
	fc.publish(t, 1, false, "crash/q1/final", "final-q1", 1)
	fc.publish(t, 2, false, "crash/q2/final", "final-q2", 2)
	fc.m.close()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range subs {
		for {
			got, pending, last := s.stats()
			if got["final-q1"] > 0 && got["final-q2"] > 0 && pending == 0 && time.Since(last) >= 300*time.Millisecond {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: the last publish did not arrive within 20 s (q1 %d, q2 %d, %d awaiting PUBREL): its subscriptions are not intact",
					s.name, got["final-q1"], got["final-q2"], pending)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, m := range conns {
		_ = m.send(&packet.Disconnect{})
		m.close()
	}

	// The retained messages: a fresh client gets them.
	retained := fetchRetained(t, addr, "crash/ret/#")
	want := map[string]string{"crash/ret/a": "ret-a", "crash/ret/b": "ret-b"}
	for _, pub := range pubs {
		last := ""
		for _, m := range msgs {
			if m.retain && m.pub == pub.name {
				last = m.payload // msgs is sorted by seq
			}
		}
		if last != "" {
			want[pub.liveTopic()] = last
		}
	}
	for topic, payload := range want {
		if got, ok := retained[topic]; !ok {
			t.Errorf("retained message on %s lost (want %q)", topic, payload)
		} else if got != payload {
			t.Errorf("retained message on %s is %q, want %q", topic, got, payload)
		}
	}
	for topic, payload := range retained {
		if _, ok := want[topic]; !ok {
			t.Errorf("unexpected retained message on %s: %q", topic, payload)
		}
	}

	// The deliveries.
	var published, acked, pub1, pub2, retainedPubs, notAcked int
	for _, m := range msgs {
		published++
		switch {
		case m.retain:
			retainedPubs++
		case m.qos == 1:
			pub1++
		default:
			pub2++
		}
		if m.acked {
			acked++
		} else {
			notAcked++
		}
	}
	if notAcked > 0 {
		t.Errorf("%d messages never acknowledged, even after the final session", notAcked)
	}
	byPayload := make(map[string]*msgRec, len(msgs))
	for i := range msgs {
		byPayload[msgs[i].payload] = &msgs[i]
	}
	for _, s := range subs {
		got, _, _ := s.stats()
		var missing1, missing2, dup2, phantoms []string
		delivered, dups1 := 0, 0
		for _, m := range msgs {
			if m.retain {
				continue
			}
			n := got[m.payload]
			if n > 0 {
				delivered++
			}
			switch {
			case m.acked && n == 0 && m.qos == 1:
				missing1 = append(missing1, fmt.Sprintf("%s (round %d)", m.payload, m.round))
			case m.acked && n == 0:
				missing2 = append(missing2, fmt.Sprintf("%s (round %d)", m.payload, m.round))
			case m.qos == 2 && n > 1:
				dup2 = append(dup2, fmt.Sprintf("%s x%d (round %d, acknowledged %v)", m.payload, n, m.round, m.acked))
			case m.qos == 1 && n > 1:
				dups1 += n - 1
			}
		}
		for payload, n := range got {
			if _, ok := byPayload[payload]; !ok && payload != "final-q1" && payload != "final-q2" {
				phantoms = append(phantoms, fmt.Sprintf("%q x%d", payload, n))
			}
		}
		s.mu.Lock()
		redeliv := s.redeliv
		s.mu.Unlock()
		t.Logf("%s: %d of %d messages delivered, %d QoS 1 duplicates, %d QoS 2 resends suppressed by packet id",
			s.name, delivered, pub1+pub2, dups1, redeliv)
		report := func(what string, list []string) {
			if len(list) == 0 {
				return
			}
			sort.Strings(list)
			shown := list
			if len(shown) > 10 {
				shown = shown[:10]
			}
			t.Errorf("%s: %d %s, e.g.:\n  %s", s.name, len(list), what, strings.Join(shown, "\n  "))
		}
		report("acknowledged QoS 1 messages never delivered", missing1)
		report("acknowledged QoS 2 messages never delivered", missing2)
		report("QoS 2 messages delivered more than once", dup2)
		report("deliveries of messages never published", phantoms)
	}
	t.Logf("%d rounds (%d with the subscribers online): %d published (%d QoS 1, %d QoS 2, %d retained), %d acknowledged during the rounds, %d in the end",
		rounds, subRounds, published, pub1, pub2, retainedPubs, ackedInRounds, acked)
	prs := problems.all()
	for i, pr := range prs {
		if i == 30 {
			t.Errorf("protocol: ... and %d more", len(prs)-i)
			break
		}
		t.Errorf("protocol: %s", pr)
	}

	// And it still shuts down cleanly.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM; stderr:\n%s", code, strings.Join(p.stderrLines(), "\n"))
	}
	checkLog(p, "final")
}

// syncClient is a clean-session client that waits for each answer.
type syncClient struct {
	m  *mconn
	in chan packet.Packet
}

func dialSync(t *testing.T, addr string, v packet.Version, id string) *syncClient {
	t.Helper()
	m, _, err := dialMQTT(addr, connectPacket(v, id, false, 0))
	if err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	c := &syncClient{m: m, in: make(chan packet.Packet, 1024)}
	m.start(func(pk packet.Packet) {
		if p, ok := pk.(*packet.Publish); ok { // it aliases the read buffer
			cp := *p
			cp.Topic = strings.Clone(p.Topic)
			cp.Payload = append([]byte(nil), p.Payload...)
			pk = &cp
		}
		c.in <- pk
	})
	t.Cleanup(func() { m.nc.Close() })
	return c
}

func (c *syncClient) next(t *testing.T, d time.Duration) packet.Packet {
	t.Helper()
	select {
	case pk := <-c.in:
		return pk
	case <-time.After(d):
		return nil
	}
}

func (c *syncClient) expect(t *testing.T, kind packet.Type, id uint16) {
	t.Helper()
	pk := c.next(t, 5*time.Second)
	if pk == nil {
		t.Fatalf("no %s for packet id %d within 5 s", kind, id)
	}
	a, ok := pk.(*packet.Ack)
	if !ok || a.Kind != kind || a.PacketID != id || a.ReasonCode >= 0x80 {
		t.Fatalf("got %s %+v, want %s for packet id %d", pk.Type(), pk, kind, id)
	}
}

// publish publishes and completes the QoS 1 or 2 flow.
func (c *syncClient) publish(t *testing.T, qos byte, retain bool, topic, payload string, id uint16) {
	t.Helper()
	if err := c.m.send(&packet.Publish{QoS: qos, Retain: retain, Topic: topic, PacketID: id, Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	if qos == 1 {
		c.expect(t, packet.PUBACK, id)
		return
	}
	c.expect(t, packet.PUBREC, id)
	if err := c.m.send(&packet.Ack{Kind: packet.PUBREL, PacketID: id}); err != nil {
		t.Fatalf("pubrel: %v", err)
	}
	c.expect(t, packet.PUBCOMP, id)
}

// fetchRetained subscribes a fresh client to filter and returns the
// retained messages it gets (topic: payload), once none came for 500 ms.
func fetchRetained(t *testing.T, addr, filter string) map[string]string {
	t.Helper()
	c := dialSync(t, addr, packet.V311, "crash-retained-check")
	if err := c.m.send(&packet.Subscribe{PacketID: 1, Subs: []packet.SubOption{{Filter: filter, QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	got := map[string]string{}
	subacked := false
	for {
		pk := c.next(t, 500*time.Millisecond)
		if pk == nil {
			if !subacked {
				t.Fatalf("no SUBACK")
			}
			break
		}
		switch pk := pk.(type) {
		case *packet.Suback:
			subacked = true
		case *packet.Publish:
			if !pk.Retain {
				t.Errorf("retained check: %s came without the retain flag", pk.Topic)
			}
			if prev, ok := got[pk.Topic]; ok {
				t.Errorf("retained check: %s twice (%q, %q)", pk.Topic, prev, pk.Payload)
			}
			got[pk.Topic] = string(pk.Payload)
			if pk.QoS == 1 {
				_ = c.m.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pk.PacketID})
			}
		default:
			t.Errorf("retained check: unexpected %s", pk.Type())
		}
	}
	_ = c.m.send(&packet.Disconnect{})
	c.m.close()
	return got
}
