package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestRedoAfterRecordWithoutInbox simulates the crash window that writing
// the idempotency record alongside the inbox events opens: the message is
// in the log and recorded, but its inbox events never got written. A
// resend (the record is young) must fill the inboxes once, answer with the
// original sequence, and append nothing.
func TestRedoAfterRecordWithoutInbox(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	id, lr := appendOnly(t, f)
	if err := f.svc.store.remember(ctx, sendRecord{MsgID: id, Conv: lr.Conv, Seq: lr.Seq, At: lr.At, From: "alice", To: "bob"}); err != nil {
		t.Fatal(err)
	}
	a := f.dial(t, "alice", "a", 0)
	b := f.dial(t, "bob", "b", 0)
	colA, colB := collect(a), collect(b)
	for i := range 2 { // the second resend finds the inboxes complete
		ack, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "half"})
		if err != nil {
			t.Fatal(err)
		}
		if ack.Seq != 1 || !ack.Duplicate || !ack.At.Equal(lr.At) {
			t.Errorf("resend %d: ack %+v, want seq 1 duplicate at %v", i, ack, lr.At)
		}
	}
	if next := send(t, a, "bob", "next"); next.Seq != 2 {
		t.Errorf("next seq %d, want 2", next.Seq)
	}
	for name, col := range map[string]*collector{"alice": colA, "bob": colB} {
		col.waitN(t, 2)
		settle()
		if evs := col.events(); len(evs) != 2 || evs[0].MsgID != id || evs[0].Seq != 1 || evs[1].Seq != 2 {
			t.Errorf("%s's inbox: %v", name, msgIDs(evs))
		}
	}
}

// appendOnly appends a message from alice to bob ("half") to the log and
// nothing else, as a send that crashed right after its append leaves it.
func appendOnly(t *testing.T, f *fixture) (string, logRecord) {
	t.Helper()
	id := msgID(t)
	conv := cloudwire.DirectConversationID("alice", "bob")
	lr, dup, err := f.svc.store.append(context.Background(), &convEntry{}, logRecord{MsgID: id, Conv: conv, From: "alice", To: "bob", Text: "half", At: time.Now().UTC().Truncate(time.Millisecond)})
	if err != nil || dup || lr.Seq != 1 {
		t.Fatalf("append: %+v %v %v", lr, dup, err)
	}
	return id, lr
}

// TestRedoPastWindowLeavesNoCopy covers the guard of a redo: a recorded
// send whose log entry the duplicate window no longer covers (here: one
// that is not in the log at all) must not be appended again. The resend
// answers with the record and leaves the log and the inboxes as they were.
func TestRedoPastWindowLeavesNoCopy(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	id := msgID(t)
	conv := cloudwire.DirectConversationID("alice", "bob")
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := f.svc.store.remember(ctx, sendRecord{MsgID: id, Conv: conv, Seq: 7, At: at, From: "alice", To: "bob"}); err != nil {
		t.Fatal(err)
	}
	a := f.dial(t, "alice", "a", 0)
	b := f.dial(t, "bob", "b", 0)
	colB := collect(b)
	collect(a)
	ack, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 7 || !ack.Duplicate {
		t.Errorf("ack %+v, want the record's seq 7, duplicate", ack)
	}
	if _, err := f.svc.store.conv.GetLastMsgForSubject(ctx, convPrefix+conv); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("conversation log after the redo: %v, want empty", err)
	}
	// Again, within the duplicate window that now remembers a removed
	// copy: the record still answers.
	if ack, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "gone"}); err != nil || ack.Seq != 7 {
		t.Errorf("second resend: %+v, %v; want the record's seq 7", ack, err)
	}
	if next := send(t, a, "bob", "next"); next.Seq != 1 {
		t.Errorf("next seq %d, want 1", next.Seq)
	}
	if evs := colB.waitN(t, 1); len(evs) != 1 || evs[0].Text != "next" {
		t.Errorf("bob's inbox: %v", msgIDs(evs))
	}
}

// inboxSamples are events for the encoder tests: every field set, odd
// user ids, and events that differ from their neighbours.
func inboxSamples() []inboxRecord {
	at := time.Date(2026, 11, 24, 1, 2, 3, 4e6, time.UTC)
	base := inboxRecord{Kind: cloudwire.KindMsg, Conv: "c1", Seq: 3, MsgID: "m", From: "alice", FromDevice: "d",
		To: "bob", Text: "hi <&> \"there\" \u2028", Status: "read", By: "bob", UpTo: 2, Op: "add",
		Members: []string{"x", "y"}, Name: "n", Reason: "r", At: at}
	var out []inboxRecord
	for _, u := range []string{"alice", "bob", "a\"b", "<script>", "é", "", "x\u2028y"} {
		ev := base
		ev.User = u
		out = append(out, ev)
	}
	other := base
	other.User, other.Seq, other.Members = "carol", 4, nil
	return append(out, other, base)
}

// TestInboxEncoderMatchesMarshal pins the shared encoding to json.Marshal
// of each event, and checks that sameEvent looks at every field: a field
// added to inboxRecord but not to sameEvent would let events that differ
// in it share one encoding.
func TestInboxEncoderMatchesMarshal(t *testing.T) {
	checkEncoder(t, inboxSamples())
	base := inboxSamples()[0]
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		changed := base
		fv := reflect.ValueOf(&changed).Elem().Field(i)
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(fv.String() + "z")
		case reflect.Uint64:
			fv.SetUint(fv.Uint() + 1)
		case reflect.Slice:
			fv.Set(reflect.ValueOf([]string{"other"}))
		case reflect.Pointer:
			fv.Set(reflect.New(fv.Type().Elem()))
		case reflect.Struct: // time.Time
			fv.Set(reflect.ValueOf(base.At.Add(time.Millisecond)))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", rt.Field(i).Name, fv.Kind())
		}
		if sameEvent(base, changed) {
			t.Errorf("sameEvent ignores field %s", rt.Field(i).Name)
		}
	}
}

// FuzzInboxEncoder checks the shared encoding against json.Marshal for
// arbitrary users and texts.
func FuzzInboxEncoder(f *testing.F) {
	f.Add("alice", "bob", "hello")
	f.Add("a\"b", "<&>", "\u2028\xff")
	f.Fuzz(func(t *testing.T, u1, u2, text string) {
		var evs []inboxRecord
		for _, u := range []string{u1, u2} {
			evs = append(evs, inboxRecord{User: u, Kind: cloudwire.KindMsg, Conv: "c", Seq: 1, MsgID: "m", From: u1, To: u2, Text: text, At: time.Unix(1, 0).UTC()})
		}
		checkEncoder(t, evs)
	})
}

// checkEncoder encodes evs with one inboxEncoder and compares each with
// json.Marshal's bytes.
func checkEncoder(t *testing.T, evs []inboxRecord) {
	t.Helper()
	var enc inboxEncoder
	for i, ev := range evs {
		got, err := enc.encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("event %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// checkFrames runs records through one frameCache and compares each frame
// with what eventFrame makes of the record alone.
func checkFrames(t *testing.T, svc *Service, records [][]byte) {
	t.Helper()
	var fc frameCache
	for i, data := range records {
		cursor := uint64(1000 + i)
		got, gotAt := fc.frameOf(svc, cursor, inboxPrefix+"x", data)
		want, wantAt := svc.eventFrame(cursor, inboxPrefix+"x", data)
		if string(got) != string(want) || !gotAt.Equal(wantAt) {
			t.Errorf("record %d %.60q:\n got %.200s %v\nwant %.200s %v", i, data, got, gotAt, want, wantAt)
		}
	}
}

// TestReusedIDPastWindowRefused: another sender reusing a recorded message
// id that the log's duplicate window no longer covers gets a conflict, and
// the copy its append made is gone again.
func TestReusedIDPastWindowRefused(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	id := msgID(t)
	if err := f.svc.store.remember(ctx, sendRecord{MsgID: id, Conv: cloudwire.DirectConversationID("alice", "bob"), Seq: 1,
		At: time.Now().UTC().Truncate(time.Millisecond), From: "alice", To: "bob"}); err != nil {
		t.Fatal(err)
	}
	c := f.dial(t, "carol", "c", 0)
	d := f.dial(t, "dave", "d", 0)
	colD := collect(d)
	collect(c)
	_, err := c.Send(ctx, cloudwire.Send{To: "dave", MsgID: id, Text: "mine"})
	serverError(t, err, cloudwire.CodeConflict)
	conv := cloudwire.DirectConversationID("carol", "dave")
	if _, err := f.svc.store.conv.GetLastMsgForSubject(ctx, convPrefix+conv); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("carol and dave's log after the refused send: %v, want empty", err)
	}
	if next := send(t, c, "dave", "next"); next.Seq != 1 {
		t.Errorf("next seq %d, want 1", next.Seq)
	}
	if evs := colD.waitN(t, 1); len(evs) != 1 || evs[0].Text != "next" {
		t.Errorf("dave's inbox: %v", msgIDs(evs))
	}
}

// feedSamples are stored inbox records as the live feed reads them: the
// shared encodings of fan-outs, records that differ in one field, corrupt
// and unencodable ones.
func feedSamples(t testing.TB) [][]byte {
	var out [][]byte
	var enc inboxEncoder
	for _, ev := range inboxSamples() {
		b, err := enc.encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	big := inboxSamples()[0]
	big.Text = string(make([]byte, cloudwire.MaxFrameSize))
	b, err := json.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, b, []byte(`{"user":"x"`), []byte(`not json`), []byte(`{"user":"a\"b","kind":5}`), out[0])
}

// TestFrameCacheMatches pins the live feed's shared frames to what
// eventFrame makes of each record alone.
func TestFrameCacheMatches(t *testing.T) {
	checkFrames(t, newFixture(t, nil).svc, feedSamples(t))
}

// FuzzFrameCache feeds pairs of arbitrary records through one frameCache
// and checks each frame against eventFrame's.
func FuzzFrameCache(f *testing.F) {
	svc := newFixture(f, nil).svc
	for _, b := range feedSamples(f) {
		f.Add(b, []byte(`{"user":"other",`+string(b[min(len(b), 10):])))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		checkFrames(t, svc, [][]byte{a, b, a})
	})
}

// TestFrameCacheRepeatedUserKey: a record that names its user twice
// must not become a template whose user is spliced.
func TestFrameCacheRepeatedUserKey(t *testing.T) {
	var records [][]byte
	for _, data := range []string{
		`{"user":"a","kind":"msg","conv":"c","seq":1,"msg_id":"m","from":"a","to":"b","user":"b","at":"2026-11-24T01:02:03.004Z"}`,
		`{"user":"c","kind":"msg","conv":"c","seq":1,"msg_id":"m","from":"a","to":"b","user":"b","at":"2026-11-24T01:02:03.004Z"}`,
		`{"user":"b","kind":"msg","conv":"c","seq":1,"msg_id":"m","from":"a","to":"b","at":"2026-11-24T01:02:03.004Z"}`,
		`{"user":"d","kind":"msg","conv":"c","seq":1,"msg_id":"m","from":"a","to":"b","at":"2026-11-24T01:02:03.004Z"}`,
	} {
		records = append(records, []byte(data))
	}
	checkFrames(t, newFixture(t, nil).svc, records)
}

// TestResendAfterFailedLookup: a send whose idempotency lookup fails
// (NATS restarting) gets an error but keeps its log copy; the resend of
// the same id then completes it, and the recipient gets it once. (Deleting
// the copy left its id in the duplicate window pointing at nothing, and
// every resend within the window failed: TestFaultNATSRestart.)
func TestResendAfterFailedLookup(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	a := f.dial(t, "alice", "a", 0)
	b := f.dial(t, "bob", "b", 0)
	colB := collect(b)
	collect(a)
	id := msgID(t)
	fail := func(m string) error {
		if m == id {
			return errors.New("lookup failed (test)")
		}
		return nil
	}
	f.svc.store.lookupFault.Store(&fail)
	if _, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "once"}); err == nil {
		t.Fatal("send with a failing lookup succeeded")
	}
	f.svc.store.lookupFault.Store(nil)
	for i := range 2 {
		ack, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "once"})
		if err != nil {
			t.Fatalf("resend %d: %v", i+1, err)
		}
		if ack.Seq != 1 {
			t.Errorf("resend %d: seq %d, want 1", i+1, ack.Seq)
		}
	}
	if next := send(t, a, "bob", "next"); next.Seq != 2 {
		t.Errorf("next seq %d, want 2", next.Seq)
	}
	if evs := colB.waitN(t, 2); len(evs) != 2 || evs[0].MsgID != id || evs[1].Text != "next" {
		t.Errorf("bob's inbox: %v, want %s then next", msgIDs(evs), id)
	}
}
