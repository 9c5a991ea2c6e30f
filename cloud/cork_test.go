package cloud

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestCorkGathersUntilUncork: corked writes reach the peer only at
// uncork, all of them, in order, including frames past the buffer's
// capacity and one larger than corkLimit; uncorked writes pass straight
// through; the buffer goes back to the pool.
func TestCorkGathersUntilUncork(t *testing.T) {
	client, server := tcpPair(t)
	cc := &corkConn{Conn: server}

	var want bytes.Buffer
	cc.cork()
	for i := range 2000 {
		p := fmt.Appendf(nil, "frame %04d;", i) // 22 KB in all: past the first buffer
		if n, err := cc.Write(p); err != nil || n != len(p) {
			t.Fatalf("corked Write = %d, %v", n, err)
		}
		want.Write(p)
	}
	big := bytes.Repeat([]byte{'x'}, corkLimit+1)
	if _, err := cc.Write(big); err != nil {
		t.Fatal(err)
	}
	want.Write(big)
	if _, err := cc.Write([]byte("tail;")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("tail;")
	if cc.cb == nil {
		t.Fatal("the tail written after the large frame is not gathered")
	}
	if err := cc.uncork(); err != nil {
		t.Fatal(err)
	}
	if cc.cb != nil {
		t.Error("uncork kept the buffer")
	}
	if _, err := cc.Write([]byte("after;")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("after;")

	got := make([]byte, want.Len())
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the peer read other bytes than were written")
	}
}

// TestCorkHoldsBack: nothing corked reaches the peer before uncork.
func TestCorkHoldsBack(t *testing.T) {
	client, server := tcpPair(t)
	cc := &corkConn{Conn: server}
	cc.cork()
	if _, err := cc.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := client.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read before uncork = %d, %v; want nothing", n, err)
	}
	if err := cc.uncork(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after uncork read %q, %v", buf, err)
	}
}

// TestCorkReportsWriteError: a flush to a closed connection fails.
func TestCorkReportsWriteError(t *testing.T) {
	_, server := tcpPair(t)
	cc := &corkConn{Conn: server}
	cc.cork()
	if _, err := cc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if err := cc.uncork(); err == nil {
		t.Error("uncork on a closed connection succeeded")
	}
}
