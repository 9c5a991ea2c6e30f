package cloud

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestRetention: the configured bounds (or the defaults for zero fields,
// none for negative ones) are the streams' limits, also when a node starts
// on streams created with other limits; an age under the duplicate window
// is refused.
func TestRetention(t *testing.T) {
	eng := enginetest.Start(t)
	ctx := context.Background()
	cases := []struct {
		name             string
		ret              Retention
		logAge, inboxAge time.Duration
		logMax, inboxMax int64
	}{
		{"defaults", Retention{}, 0, DefaultRetention.InboxMaxAge, DefaultRetention.LogMaxBytes, DefaultRetention.InboxMaxBytes},
		{"set", Retention{LogMaxAge: 48 * time.Hour, LogMaxBytes: 1 << 20, InboxMaxAge: time.Hour, InboxMaxBytes: 2 << 20}, 48 * time.Hour, time.Hour, 1 << 20, 2 << 20},
		{"unbounded", Retention{LogMaxBytes: -1, InboxMaxAge: -1, InboxMaxBytes: -1}, 0, 0, -1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(ctx, Config{JS: eng.JS, TokenKey: testKey.Public().(ed25519.PublicKey), Retention: tc.ret})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				name string
				age  time.Duration
				max  int64
			}{{convStreamName, tc.logAge, tc.logMax}, {inboxStreamName, tc.inboxAge, tc.inboxMax}} {
				st, err := eng.JS.Stream(ctx, s.name)
				if err != nil {
					t.Fatal(err)
				}
				info, err := st.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.Config.MaxAge != s.age || info.Config.MaxBytes != s.max {
					t.Errorf("%s: max age %v, max bytes %d; want %v, %d", s.name, info.Config.MaxAge, info.Config.MaxBytes, s.age, s.max)
				}
			}
		})
	}
	if err := (Config{JS: eng.JS, TokenKey: testKey.Public().(ed25519.PublicKey), Retention: Retention{InboxMaxAge: time.Minute}}).Validate(); err == nil {
		t.Error("an inbox max age under the duplicate window was accepted")
	}
}

// TestSendsRetention: the idempotency records' bucket expires entries
// after Retention.SendsMaxAge (30 days by default, none when negative),
// also when a node starts on a bucket created with another age; an age
// under the duplicate window is refused.
func TestSendsRetention(t *testing.T) {
	eng := enginetest.Start(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		age  time.Duration
		want time.Duration
	}{
		{"default", 0, 30 * 24 * time.Hour},
		{"set", 72 * time.Hour, 72 * time.Hour},
		{"unbounded", -1, 0},
		{"set again", time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(ctx, Config{JS: eng.JS, TokenKey: testKey.Public().(ed25519.PublicKey), Retention: Retention{SendsMaxAge: tc.age}})
			if err != nil {
				t.Fatal(err)
			}
			kv, err := eng.JS.KeyValue(ctx, sendsBucket)
			if err != nil {
				t.Fatal(err)
			}
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.TTL() != tc.want {
				t.Errorf("%s TTL %v, want %v", sendsBucket, st.TTL(), tc.want)
			}
		})
	}
	if err := (Config{JS: eng.JS, TokenKey: testKey.Public().(ed25519.PublicKey), Retention: Retention{SendsMaxAge: time.Minute}}).Validate(); err == nil {
		t.Error("a sends max age under the duplicate window was accepted")
	}
}
