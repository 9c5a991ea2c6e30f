package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// storeFloor is the JetStream work of one cloud send without the cloud:
// on streams set up like the cloud's (file storage, a ten-minute
// duplicate window), a log append carrying its message id with the
// idempotency lookup (a direct get) alongside it, then the two inbox
// writes and the idempotency record (a key-value create) awaited
// together. Its rate is the most the cloud-rtt case could reach on this
// engine with the writes it does today, whatever the cloud code costs.
type storeFloor struct {
	js    jetstream.JetStream
	sends jetstream.KeyValue
}

const (
	storeFloorLog   = "BENCH_FLOOR_LOG"
	storeFloorInbox = "BENCH_FLOOR_INBOX"
	storeFloorSends = "bench_floor_sends"
)

func newStoreFloor(ctx context.Context, js jetstream.JetStream) (*storeFloor, error) {
	for name, subj := range map[string]string{storeFloorLog: "benchfloor.log.>", storeFloorInbox: "benchfloor.inbox.>"} {
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{subj}, Storage: jetstream.FileStorage,
			Duplicates: 10 * time.Minute, AllowDirect: true,
		}); err != nil {
			return nil, fmt.Errorf("store floor stream %s: %w", name, err)
		}
	}
	sends, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: storeFloorSends, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("store floor bucket: %w", err)
	}
	return &storeFloor{js: js, sends: sends}, nil
}

// send does one send's writes for worker i, in its own conversation.
func (f *storeFloor) send(ctx context.Context, i int) error {
	id := uuid.Must(uuid.NewV7()).String()
	record := []byte(`{"msg_id":"` + id + `","conv":"c","seq":1,"at":"2026-01-01T00:00:00.000Z","from":"a","to":"b"}`)
	event := make([]byte, 240) // about a stored inbox event of the benchmark's message
	lookup := make(chan error, 1)
	go func() {
		_, err := f.sends.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			err = nil
		}
		lookup <- err
	}()
	w := strconv.Itoa(i)
	_, err := f.js.PublishMsg(ctx, &nats.Msg{Subject: "benchfloor.log." + w, Data: event}, jetstream.WithMsgID(id))
	if err := errors.Join(err, <-lookup); err != nil {
		return err
	}
	var futures []jetstream.PubAckFuture
	for _, u := range []string{"a" + w, "b" + w} {
		fut, err := f.js.PublishMsgAsync(&nats.Msg{Subject: "benchfloor.inbox." + u, Data: event}, jetstream.WithMsgID(id+":"+u))
		if err != nil {
			return err
		}
		futures = append(futures, fut)
	}
	if _, err := f.sends.Create(ctx, id, record); err != nil {
		return err
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// drop removes the floor's streams from the engine.
func (f *storeFloor) drop(ctx context.Context) error {
	return errors.Join(
		f.js.DeleteStream(ctx, storeFloorLog),
		f.js.DeleteStream(ctx, storeFloorInbox),
		f.js.DeleteKeyValue(ctx, storeFloorSends),
	)
}
