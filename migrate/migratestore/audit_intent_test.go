package migratestore

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
)

// FuzzIntentMsg checks that an intent decodes to the event it was built
// from (with the user and phase of the record it replaces) and that its
// previous link parses back to the record's Audit, as Query reads them.
func FuzzIntentMsg(f *testing.F) {
	f.Add("alice", "legacy", "c1", "op-1", "because", uint64(0), int64(1764000000000))
	f.Add("b.ob", "shadow", "", "", "quote \" and \\ and \u2028", uint64(1<<63), int64(-1))
	f.Fuzz(func(t *testing.T, user, phase, campaign, opID, reason string, prev uint64, ms int64) {
		cur := migrate.User{ID: user, Phase: migrate.Phase(phase), Audit: prev}
		ev := migrate.AuditEvent{At: time.UnixMilli(ms), Kind: migrate.AuditTransition, Actor: migrate.ActorDriver,
			OpID: opID, Campaign: campaign, To: "ready", Reason: reason, Result: migrate.ResultOK,
			Values: map[string]float64{"actual_bp": 12}}
		msg, err := intentMsg(ev, cur)
		if err != nil {
			if migrate.CheckUserID(user) == nil && (campaign == "" || migrate.CheckCampaignName(campaign) == nil) {
				t.Fatalf("valid names refused: %v", err)
			}
			return
		}
		if msg.Subject != auditSubject(campaign, user) {
			t.Fatalf("subject %q, want %q", msg.Subject, auditSubject(campaign, user))
		}
		var got migrate.AuditEvent
		if err := json.Unmarshal(msg.Data, &got); err != nil {
			t.Fatal(err)
		}
		want := ev
		want.User, want.From, want.At = user, phase, ev.At.UTC().Truncate(time.Millisecond)
		// JSON carries valid UTF-8 only: compare with what it can carry.
		var norm migrate.AuditEvent
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &norm); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(norm, got); diff != "" {
			t.Fatalf("decoded intent differs (-want +got):\n%s", diff)
		}
		link, err := strconv.ParseUint(msg.Header.Get(hdrPrev), 10, 64)
		if err != nil || link != prev {
			t.Fatalf("previous link %q (%v), want %d", msg.Header.Get(hdrPrev), err, prev)
		}
	})
}
