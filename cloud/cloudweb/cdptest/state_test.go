//go:build linux

package cdptest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestStateHelpers(t *testing.T) {
	s := State{
		Presence: []Presence{
			{User: "bob", Device: "b1", State: "idle"},
			{User: "bob", Device: "b2", State: "active"},
			{User: "cleo", Device: "c1", State: "idle"},
			{User: "dan", Device: "d1", State: "offline"},
		},
		Typing: map[string][]string{"c1": {"bob"}},
		Convs: []Conv{{ID: "c1", Msgs: []Msg{
			{Seq: 1, Kind: "msg", MsgID: "m1", From: "bob", Text: "hi"},
			{Seq: 2, Kind: "group", From: "bob"},
			{Seq: 3, Kind: "msg", MsgID: "m3", From: "alice", Text: "hello"},
		}}},
	}
	for user, want := range map[string]string{"bob": "active", "cleo": "idle", "dan": "offline", "eve": "offline"} {
		if got := s.PresenceOf(user); got != want {
			t.Errorf("PresenceOf(%s) = %s, want %s", user, got, want)
		}
	}
	if !s.IsTyping("c1", "bob") || s.IsTyping("c1", "cleo") || s.IsTyping("c2", "bob") {
		t.Error("IsTyping")
	}
	if got := s.Texts("c1"); !slices.Equal(got, []string{"bob: hi", "alice: hello"}) {
		t.Errorf("Texts = %q", got)
	}
	if m, ok := s.Msg("m3"); !ok || m.Seq != 3 {
		t.Errorf("Msg(m3) = %+v, %v", m, ok)
	}
	if _, ok := s.Conv("c2"); ok {
		t.Error("Conv(c2) found")
	}
}

func TestArtifactDir(t *testing.T) {
	root := t.TempDir()
	t.Setenv("FERRY_ARTIFACTS", root)
	t.Run("sub test", func(t *testing.T) {
		dir := ArtifactDir(t)
		if want := filepath.Join(root, "TestArtifactDir__sub_test"); dir != want {
			t.Fatalf("ArtifactDir = %s, want %s", dir, want)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("not a directory: %v", err)
		}
	})
}

func TestJSString(t *testing.T) {
	for in, want := range map[string]string{
		`#msgs li[data-msg-id="x"]`: `"#msgs li[data-msg-id=\"x\"]"`,
		"a\\b\n":                    `"a\\b\n"`,
	} {
		if got := jsString(in); got != want {
			t.Errorf("jsString(%q) = %s, want %s", in, got, want)
		}
	}
}
