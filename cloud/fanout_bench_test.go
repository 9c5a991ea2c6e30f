package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// benchFanOutMembers is the group size of BenchmarkInboxFanOut, the
// group of bench cloud-fanout.
const benchFanOutMembers = 200

// BenchmarkInboxFanOut measures the inbox writes of one group send to
// benchFanOutMembers members (store.fanOut: one asynchronous publish per
// member with its Nats-Msg-Id, every ack awaited) against two other ways
// of writing the same records, in the same run, each reporting CPU per
// record (cpu-ns/record):
//
//   - no-msg-id: the same publishes without Nats-Msg-Id, what the
//     server's duplicate check costs (the check is what makes a redo of
//     an interrupted send harmless, so it stays);
//   - atomic-batch: JetStream's atomic batch publish (server 2.12+, one
//     ack for the whole batch at its commit), which costs more CPU per
//     record here than one ack per record, and is why fanOut does not use
//     it.
func BenchmarkInboxFanOut(b *testing.B) {
	eng := enginetest.Start(b)
	ctx := context.Background()
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := openStore(ctx, eng.JS, 1, Retention{}, m, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	// The same stream settings as the inbox, with atomic batches allowed,
	// for the variants that do not go through the store.
	info, err := st.inbox.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cfg := info.Config
	cfg.Name, cfg.Subjects, cfg.AllowAtomicPublish = "BENCH_INBOX", []string{"bench.inbox.>"}, true
	if _, err := eng.JS.CreateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	events := make([]inboxRecord, benchFanOutMembers)
	for m := range events {
		events[m] = inboxRecord{User: "member-" + strconv.Itoa(m), Kind: "message", MsgID: "id", Conv: "g-bench", Seq: 1,
			From: "member-0", Text: "a message to the whole group", At: time.Now().UTC()}
	}
	enc := inboxEncoder{}
	records := make([][]byte, len(events))
	for i, ev := range events {
		if records[i], err = enc.encode(ev); err != nil {
			b.Fatal(err)
		}
	}
	// sent numbers the fan-outs across every run of the sub-benchmarks
	// (the testing package runs each more than once), so that no message
	// id repeats: a repeat would be answered as a duplicate, not stored.
	sent := 0
	run := func(b *testing.B, fanOut func(n int) error) {
		cpu0, n := processCPU(b), 0
		for b.Loop() {
			if err := fanOut(sent); err != nil {
				b.Fatal(err)
			}
			sent++
			n++
		}
		b.ReportMetric(float64(processCPU(b)-cpu0)/float64(n*benchFanOutMembers), "cpu-ns/record")
	}
	b.Run("store", func(b *testing.B) {
		run(b, func(n int) error {
			for i := range events {
				events[i].MsgID = "store-" + strconv.Itoa(n)
			}
			return st.fanOut(ctx, events, "message")
		})
	})
	b.Run("no-msg-id", func(b *testing.B) {
		run(b, func(int) error {
			futures := make([]jetstream.PubAckFuture, 0, len(records))
			for i, data := range records {
				f, err := eng.JS.PublishMsgAsync(&nats.Msg{Subject: "bench.inbox." + events[i].User, Data: data})
				if err != nil {
					return err
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				}
			}
			return nil
		})
	})
	b.Run("atomic-batch", func(b *testing.B) {
		run(b, func(n int) error {
			batch := uuid.NewString()
			for i, data := range records {
				msg := nats.NewMsg("bench.inbox." + events[i].User)
				msg.Data = data
				msg.Header.Set(jetstream.MsgIDHeader, "batch-"+strconv.Itoa(n)+":"+events[i].User)
				msg.Header.Set("Nats-Batch-Id", batch)
				msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
				switch i {
				case 0: // the start is a request, answered once the batch exists
					if _, err := eng.Conn.RequestMsg(msg, 5*time.Second); err != nil {
						return err
					}
				case len(records) - 1:
					msg.Header.Set("Nats-Batch-Commit", "1")
					r, err := eng.Conn.RequestMsg(msg, 5*time.Second)
					if err != nil {
						return err
					}
					var ack struct {
						Seq   uint64              `json:"seq"`
						Count int                 `json:"count"`
						Error *jetstream.APIError `json:"error"`
					}
					if err := json.Unmarshal(r.Data, &ack); err != nil || ack.Error != nil || ack.Count != len(records) {
						return fmt.Errorf("batch commit answered %s (%v)", r.Data, err)
					}
				default:
					if err := eng.Conn.PublishMsg(msg); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
}
