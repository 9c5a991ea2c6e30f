package enginetest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of in-process nats-servers on loopback.
type Cluster struct {
	Servers []*server.Server
	URLs    string // every client URL, comma-separated, as nats.Connect takes them
}

// StartCluster starts n clustered JetStream servers on 127.0.0.1, each
// routed to all the others, and waits until the cluster has a JetStream
// meta leader.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	routes := make([]string, n)
	cports := make([]int, n)
	for i := range n {
		p := FreePort(tb)
		cports[i], _ = strconv.Atoi(p)
		routes[i] = "nats://127.0.0.1:" + p
	}
	c := &Cluster{}
	var urls []string
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("ferry-n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "ferry", Host: "127.0.0.1", Port: cports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			tb.Fatal(err)
		}
		go srv.Start()
		tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(20 * time.Second) {
			tb.Fatalf("nats server %d not ready", i)
		}
		c.Servers = append(c.Servers, srv)
		urls = append(urls, srv.ClientURL())
	}
	c.URLs = strings.Join(urls, ",")
	nc, err := nats.Connect(c.URLs)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no JetStream meta leader in the cluster after a minute: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// JetStream connects to every server of c, reconnecting every 50 ms for as
// long as it takes (a test that stops a server goes on with the others),
// and closes the connection at cleanup.
func (c *Cluster) JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(c.URLs, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
