package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// Audit stream defaults.
const (
	DefaultAuditStream = "FERRY_AUDIT"
	// auditSubjectPrefix starts every audit subject:
	// ferry.audit.<campaign token>.<user token>, where a campaign token is
	// "c_" + name, a user token "u_" + id, and either is "none" when the
	// event has no campaign or user. Consumers filter on these tokens.
	auditSubjectPrefix = "ferry.audit"
	noToken            = "none"
	// DefaultAuditMaxAge is how long audit events are kept.
	DefaultAuditMaxAge = 400 * 24 * time.Hour
	// MaxAuditQuery bounds the events one Query returns.
	MaxAuditQuery = 10000
)

// Audit is the append-only decision log in a JetStream stream. Record waits
// for every event's acknowledgement: with the embedded engine an
// acknowledged event survives kill -9 (see gateway/engine).
type Audit struct {
	js     jetstream.JetStream
	stream string
}

// NewAudit creates or updates the audit stream (stream "" means
// DefaultAuditStream).
func NewAudit(ctx context.Context, js jetstream.JetStream, stream string, replicas int) (*Audit, error) {
	if stream == "" {
		stream = DefaultAuditStream
	}
	if replicas == 0 {
		replicas = DefaultReplicas
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        stream,
		Description: "Ferry audit log: every migration decision (JSON of migrate.AuditEvent)",
		Subjects:    []string{auditSubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      DefaultAuditMaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream %s: %w", stream, err)
	}
	return &Audit{js: js, stream: stream}, nil
}

func auditSubject(campaign, user string) string {
	c, u := noToken, noToken
	if campaign != "" {
		c = "c_" + campaign
	}
	if user != "" {
		u = "u_" + user
	}
	return auditSubjectPrefix + "." + c + "." + u
}

// Record appends events, publishing them together and waiting for every
// acknowledgement (one grouped round of fsyncs rather than one per event;
// a round per batchWindow events for large batches).
func (a *Audit) Record(ctx context.Context, events ...migrate.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, min(len(events), batchWindow))
	var errs []error
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs = append(errs, err)
			case <-ctx.Done():
				return fmt.Errorf("migratestore: audit: %w", ctx.Err())
			}
		}
		futures = futures[:0]
		return nil
	}
	for _, ev := range events {
		if len(futures) == batchWindow {
			// Stay under the client's limit on pending publishes.
			if err := wait(); err != nil {
				return err
			}
		}
		if ev.Campaign != "" && migrate.CheckCampaignName(ev.Campaign) != nil {
			return fmt.Errorf("migratestore: audit: %w", migrate.CheckCampaignName(ev.Campaign))
		}
		if ev.User != "" {
			if err := migrate.CheckUserID(ev.User); err != nil {
				return fmt.Errorf("migratestore: audit: %w", err)
			}
		}
		ev.At = ev.At.UTC().Truncate(time.Millisecond)
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("migratestore: encode audit event: %w", err)
		}
		f, err := a.js.PublishAsync(auditSubject(ev.Campaign, ev.User), data)
		if err != nil {
			return fmt.Errorf("migratestore: publish audit event: %w", err)
		}
		futures = append(futures, f)
	}
	if err := wait(); err != nil {
		return err
	}
	if len(errs) > 0 {
		return fmt.Errorf("migratestore: audit: %d of %d events not stored: %w", len(errs), len(events), errors.Join(errs...))
	}
	return nil
}

// AuditQuery selects audit events; empty fields select everything.
type AuditQuery struct {
	Campaign string
	User     string
	Since    time.Time
	// Limit caps the events returned (0 or more than MaxAuditQuery:
	// MaxAuditQuery); the oldest matching events come first.
	Limit int
}

// Query returns the matching events in the order they were recorded.
func (a *Audit) Query(ctx context.Context, q AuditQuery) ([]migrate.AuditEvent, error) {
	if q.Campaign != "" {
		if err := migrate.CheckCampaignName(q.Campaign); err != nil {
			return nil, err
		}
	}
	if q.User != "" {
		if err := migrate.CheckUserID(q.User); err != nil {
			return nil, err
		}
	}
	if q.Limit <= 0 || q.Limit > MaxAuditQuery {
		q.Limit = MaxAuditQuery
	}
	c, u := "*", "*"
	if q.Campaign != "" {
		c = "c_" + q.Campaign
	}
	if q.User != "" {
		u = "u_" + q.User
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{auditSubjectPrefix + "." + c + "." + u}}
	if !q.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := q.Since
		cfg.OptStartTime = &since
	}
	s, err := a.js.Stream(ctx, a.stream)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream: %w", err)
	}
	out := []migrate.AuditEvent{}
	if info.State.Msgs == 0 {
		return out, nil
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit consumer: %w", err)
	}
	// An ordered consumer says how many messages are left after each one;
	// a filter that matches nothing delivers nothing, so ask first.
	cinfo, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit consumer: %w", err)
	}
	if cinfo.NumPending == 0 {
		return out, nil
	}
	for len(out) < q.Limit {
		batch, err := cons.Fetch(min(q.Limit-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("migratestore: audit fetch: %w", err)
		}
		n := 0
		var pending uint64 = 1
		for m := range batch.Messages() {
			n++
			var ev migrate.AuditEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				return nil, fmt.Errorf("migratestore: decode audit event: %w", err)
			}
			out = append(out, ev)
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("migratestore: audit fetch: %w", err)
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	return out, nil
}
