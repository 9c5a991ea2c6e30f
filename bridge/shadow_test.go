package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// TestShadowStatsSurviveRestart: the per-user summaries the gates read are
// written to JetStream KV when the writer stops and read back by the next
// bridge on the same engine; LastMismatches stays bounded.
func TestShadowStatsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	eng := enginetest.StartIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	open := func(js jetstream.JetStream) *shadowStats {
		t.Helper()
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: shadowBucket, History: 1, TTL: shadowMaxAge})
		if err != nil {
			t.Fatal(err)
		}
		st, err := loadShadowStats(ctx, js, kv, time.Now, log)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	st := open(eng.JS)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.run(runCtx) }()
	for i := range 20 {
		st.record("sam", fmt.Sprint("m", i), CompareMismatch)
	}
	st.record("sam", "m20", CompareMatch)
	st.record("sam", "m21", CompareMissing)
	st.update("sam", func(s *ShadowStats) { s.BackfillDone = true })
	st.record("ann", "a1", CompareMatch)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want, _ := st.get("sam")
	if want.Samples != 21 || want.Mismatches != 20 || want.Missing != 1 || !want.BackfillDone || len(want.LastMismatches) != maxLastMismatches || want.LastMismatches[maxLastMismatches-1] != "m19" {
		t.Fatalf("summary %+v", want)
	}
	eng.Close()

	eng = enginetest.StartIn(t, dir)
	again := open(eng.JS)
	got, ok := again.get("sam")
	if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after restart %+v, want %+v", got, want)
	}
	if a, ok := again.get("ann"); !ok || a.Samples != 1 {
		t.Fatalf("ann after restart %+v", a)
	}
	if _, ok := again.get("nobody"); ok {
		t.Fatal("a summary for nobody")
	}
}

func TestSameCopy(t *testing.T) {
	l := legacywire.ChatMessage{ID: "m", From: "ann", To: "sam", Text: "hi"}
	c := cloudwire.Message{MsgID: "m", From: "ann", To: "sam", Text: "hi"}
	direct := cloudwire.DirectConversationID("ann", "sam")
	if !sameCopy(c, direct, l) {
		t.Error("equal copies differ")
	}
	for name, change := range map[string]func(c *cloudwire.Message){
		"text": func(c *cloudwire.Message) { c.Text = "hi!" },
		"from": func(c *cloudwire.Message) { c.From = "bob" },
		"to":   func(c *cloudwire.Message) { c.To = "bob" },
	} {
		c2 := c
		change(&c2)
		if sameCopy(c2, direct, l) {
			t.Errorf("%s changed, same copy", name)
		}
	}
	group := cloudwire.GroupConversationID("ann", "create-1")
	lg := l
	lg.Text = groupText("friends", "hi")
	if !sameCopy(cloudwire.Message{From: "ann", Text: "hi"}, group, lg) {
		t.Error("a group message's chat v2 rendering differs from its cloud copy")
	}
	if sameCopy(cloudwire.Message{From: "ann", Text: "hi"}, group, l) {
		t.Error("a group message without its group name matches")
	}
}
