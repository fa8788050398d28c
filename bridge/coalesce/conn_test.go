package coalesce

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes chan int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes <- len(p)
	return c.Conn.Write(p)
}

func TestBufConnCoalesces(t *testing.T) {
	client, server := tcpPair(t)
	cc := &countConn{Conn: client, writes: make(chan int, 100)}
	b := New(cc, nil)
	defer b.Close()
	b.delay = time.Hour // only Flush writes here
	var want []byte
	for i := range 10 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 100)
		want = append(want, p...)
		if _, err := b.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := <-cc.writes; n != len(want) {
		t.Fatalf("first write of %d bytes, want all %d at once", n, len(want))
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestBufConnTimerFlushes(t *testing.T) {
	client, server := tcpPair(t)
	b := New(client, nil)
	defer b.Close()
	if _, err := b.Write([]byte("heartbeat")); err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 9)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "heartbeat" {
		t.Fatalf("read %q, %v: the timer did not flush", got, err)
	}
}

func TestBufConnLargeWritesGoOut(t *testing.T) {
	client, server := tcpPair(t)
	b := New(client, nil)
	defer b.Close()
	done := make(chan []byte)
	go func() {
		got, _ := io.ReadAll(io.LimitReader(server, 1<<20))
		done <- got
	}()
	var want []byte
	for i := range 1 << 10 {
		p := bytes.Repeat([]byte{byte(i)}, 1<<10)
		want = append(want, p...)
		if _, err := b.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, not what was written (%d)", len(got), len(want))
	}
}

// A write stuck on a peer that does not read is bounded by the write
// deadline; the error is sticky, reported once, and the socket is closed.
func TestBufConnDeadlineBoundsStuckWrite(t *testing.T) {
	client, server := tcpPair(t)
	reported := make(chan error, 2)
	b := New(client, func(err error) { reported <- err })
	defer b.Close()
	_ = server // never reads
	if err := b.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1<<20)
	start := time.Now()
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		_, err = b.Write(p)
		if err == nil {
			err = b.Flush()
		}
	}
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want a timeout", err)
	}
	select {
	case e := <-reported:
		if e != err {
			t.Fatalf("reported %v, returned %v", e, err)
		}
	case <-time.After(time.Second):
		t.Fatal("onErr not called")
	}
	if _, err2 := b.Write([]byte("x")); err2 != err {
		t.Fatalf("next Write: %v, want the sticky %v", err2, err)
	}
	if err2 := b.Flush(); err2 != err {
		t.Fatalf("next Flush: %v, want the sticky %v", err2, err)
	}
	select {
	case e := <-reported:
		t.Fatalf("reported twice (%v)", e)
	default:
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the socket is still open")
	}
}

// slowConn delays every write (a flush caught by Close on its way out).
type slowConn struct {
	net.Conn
	started chan struct{}
}

func (c *slowConn) Write(p []byte) (int, error) {
	select {
	case c.started <- struct{}{}:
	default:
	}
	time.Sleep(100 * time.Millisecond)
	return c.Conn.Write(p)
}

// A flush in progress when Close is called still goes out, before what
// waited, and then the socket closes.
func TestCloseDuringFlush(t *testing.T) {
	client, server := tcpPair(t)
	sc := &slowConn{Conn: client, started: make(chan struct{}, 1)}
	b := New(sc, nil)
	b.delay = time.Hour
	if _, err := b.Write([]byte("ack1;")); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- b.Flush() }()
	<-sc.started // the flush holds "ack1;" and has not written it yet
	if _, err := b.Write([]byte("disconnect")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Errorf("the flush caught by Close: %v", err)
	}
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "ack1;disconnect" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// Close writes what waits, and does not wait long for a stuck write.
func TestBufConnClose(t *testing.T) {
	client, server := tcpPair(t)
	b := New(client, nil)
	b.delay = time.Hour // only Close writes here
	if _, err := b.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}

	client, server = tcpPair(t)
	b = New(client, nil)
	stuck := make(chan error)
	go func() {
		p := make([]byte, 1<<20)
		for {
			if _, err := b.Write(p); err != nil {
				stuck <- err
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond) // the peer never reads: a flush is stuck
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close waits for a stuck write")
	}
	select {
	case <-stuck:
	case <-time.After(3 * time.Second):
		t.Fatal("the stuck write did not end with Close")
	}
	_ = server
}
