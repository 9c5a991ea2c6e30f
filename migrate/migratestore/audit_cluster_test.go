package migratestore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// TestAuditQueryRidesOutLeaderLoss records events on a three-node cluster
// with the audit stream replicated three times, shuts down the server that
// leads the stream and queries at once, while the cluster elects another:
// the query answers every event, as an operator reading the audit log after
// losing a node expects.
func TestAuditQueryRidesOutLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := enginetest.StartCluster(t, 3)
	js := c.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := NewAudit(ctx, js, "", 3)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	events := make([]migrate.AuditEvent, n)
	for i := range events {
		events[i] = migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: migrate.ActorDriver,
			Campaign: "drill", User: fmt.Sprintf("u-%03d", i), To: string(migrate.PhaseShadow), Result: migrate.ResultOK}
	}
	if err := a.Record(ctx, events...); err != nil {
		t.Fatal(err)
	}
	info, err := a.st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("audit stream has no cluster leader: %+v", info.Cluster)
	}
	leader := info.Cluster.Leader
	for _, s := range c.Servers {
		if s.Name() == leader {
			s.Shutdown()
		}
	}
	got, err := a.Query(ctx, AuditQuery{Campaign: "drill"})
	if err != nil {
		t.Fatalf("query right after the stream leader %s stopped: %v", leader, err)
	}
	if len(got) != n {
		t.Fatalf("query answered %d events, want %d", len(got), n)
	}
	for i, ev := range got {
		if ev.User != events[i].User {
			t.Fatalf("event %d is %s's, want %s's", i, ev.User, events[i].User)
		}
	}
	t.Logf("answered all %d events after stream leader %s stopped", n, leader)
}

// TestTransient tells the errors a cluster gives during an election from
// the ones a retry cannot mend.
func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("migratestore: audit fetch: %w", nats.ErrNoResponders), true},
		{jetstream.ErrNoHeartbeat, true},
		{nats.ErrTimeout, true},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("x: %w", &jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}), true},
		{&jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{nats.ErrConnectionClosed, false},
		{ErrChainTooLong, false},
		{errors.New("decode audit event: bad json"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
