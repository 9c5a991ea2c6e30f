package legacywire

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenFrames returns one value of every frame type, built from a fixed key
// and fixed times so that the bytes (signatures included) are reproducible.
func goldenFrames(tb testing.TB) map[string]any {
	tb.Helper()
	key := testKey(tb, 7)
	at := time.Date(2026, 5, 4, 3, 2, 1, 987_000_000, time.UTC)
	cert := SignCertificate(key, Certificate{
		PeerID:        "12D3KooWGoldenPeerAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		User:          "alice",
		Platform:      "android",
		ClientVersion: "6.2.1",
		Capabilities:  []string{CapBridge},
		NotAfter:      at.Add(24 * time.Hour),
	})
	route := SignRoute(key, RouteRecord{
		User:     "carol",
		PeerID:   "12D3KooWGoldenBridgeAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		Addrs:    []string{"/ip4/127.0.0.1/tcp/4001"},
		Seq:      7,
		NotAfter: at.Add(time.Hour),
	})
	withdrawn := route
	withdrawn.Seq, withdrawn.Withdrawn = 8, true
	withdrawn = SignRoute(key, withdrawn)
	mirror := SignRoute(key, RouteRecord{User: "bob", PeerID: route.PeerID, Addrs: route.Addrs, Seq: 9, NotAfter: at.Add(time.Hour), Kind: RouteMirror})
	revocation := SignRevocation(key, Revocation{
		PeerID:    cert.PeerID,
		User:      cert.User,
		Reason:    "device lost",
		RevokedAt: at,
		NotAfter:  cert.NotAfter,
	})
	msg := ChatMessage{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ab", From: "alice", To: "bob", Text: "hello, bob", SentAt: at}
	offer := FileOffer{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b1", From: "alice", To: "bob", Name: "report.pdf", Size: 70000,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ChunkSize: MaxFileChunk, SentAt: at}
	const callID = "01968c5e-7f3a-7b2c-9d4e-0123456789c0"
	callFrame := func(typ, id string, c CallSignal) ChatFrame { return ChatFrame{Type: typ, ID: id, Call: &c} }
	device := DeviceRecord{Cert: cert, Addrs: []string{"/ip4/127.0.0.1/tcp/4002"}, Expires: at.Add(10 * time.Minute)}
	return map[string]any{
		"certificate":                 cert,
		"route_record":                route,
		"route_withdrawn":             withdrawn,
		"device_record":               device,
		"dir_request_register":        DirRequest{Op: OpRegister, Cert: &cert, Addrs: device.Addrs},
		"dir_request_lookup":          DirRequest{Op: OpLookup, Cert: &cert, User: "bob"},
		"dir_request_route":           DirRequest{Op: OpRoute, Route: &route},
		"dir_response_lookup":         DirResponse{OK: true, Devices: []DeviceRecord{device}, Route: &route},
		"dir_response_refused":        DirResponse{Code: CodeBadCertificate, Error: "certificate signature does not verify"},
		"chat_hello":                  ChatHello{Cert: cert},
		"chat_message":                msg,
		"chat_ack_delivered":          ChatAck{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ab", Status: StatusDelivered},
		"chat_ack_refused":            ChatAck{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ab", Status: StatusRefused, Code: CodeNotYourUser, Error: "from is not the certificate's user"},
		"revocation":                  revocation,
		"dir_request_store":           DirRequest{Op: OpStore, Cert: &cert, Message: &msg},
		"dir_request_register_fetch":  DirRequest{Op: OpRegister, Cert: &cert, Addrs: device.Addrs, Fetch: true},
		"dir_response_held":           DirResponse{OK: true, Messages: []ChatMessage{msg}},
		"chat_ack_stored":             ChatAck{ID: msg.ID, Status: StatusStored},
		"dir_request_revoke":          DirRequest{Op: OpRevoke, Cert: &cert, Revocation: &revocation},
		"dir_request_revocations":     DirRequest{Op: OpRevocations, Cert: &cert},
		"dir_response_revocations":    DirResponse{OK: true, Revocations: []Revocation{revocation}},
		"dir_response_revoked":        DirResponse{Code: CodeRevoked, Error: "certificate revoked"},
		"dir_request_replicate":       DirRequest{Op: OpReplicate, Cert: &cert, Record: &device},
		"dir_request_replicate_route": DirRequest{Op: OpReplicate, Cert: &cert, Route: &route},
		"dir_response_rate_limited":   DirResponse{Code: CodeRateLimited, Error: "too many requests"},
		"dir_response_upgrade_required": DirResponse{Code: CodeUpgradeRequired,
			Error: "Your android app (version 5.9.2) is no longer supported; please update to 6.2.1 or later at https://example.com/update."},
		"dir_response_registered_notice": DirResponse{OK: true, Messages: []ChatMessage{msg},
			Notice: "Your android app (version 5.9.2) is no longer supported; please update to 6.2.1 or later at https://example.com/update. From 2026-06-01 00:00 UTC, new sign-ins and device links with this version will be refused."},
		"chat_message_notice": ChatMessage{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ad", From: NoticesUser, To: "alice",
			Text: "Your android app (version 5.9.2) will stop working on 2026-06-01; please update.", SentAt: at},
		"chat_ack_rate_limited": ChatAck{ID: msg.ID, Status: StatusRefused, Code: CodeRateLimited, Error: "too many messages"},
		"chat2_msg":             ChatFrame{Type: FrameMsg, ID: msg.ID, Msg: &msg},
		"chat2_ack":             ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: msg.ID, Status: StatusDelivered}},
		"chat2_ack_unsupported": ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ac", Status: StatusRefused, Code: CodeUnsupported, Error: "presence is not served here"}},
		"chat2_receipt":         ChatFrame{Type: FrameReceipt, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ad", Receipt: &Receipt{MsgID: msg.ID, Reader: "bob", Sender: "alice", Status: ReceiptRead, At: at}},
		"chat2_typing":          ChatFrame{Type: FrameTyping, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789ae", Typing: &Typing{From: "alice", To: "bob", Active: true, At: at}},
		"chat2_presence":        ChatFrame{Type: FramePresence, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789af", Presence: &Presence{User: "alice", Status: PresenceIdle, At: at}},
		"chat2_subscribe":       ChatFrame{Type: FrameSubscribe, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b0", Subscribe: &Subscribe{User: "alice"}},

		"chat3_file_offer":              ChatFrame{Type: FrameFileOffer, ID: offer.ID, FileOffer: &offer},
		"chat3_file_accept":             ChatFrame{Type: FrameFileAccept, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b2", FileAnswer: &FileAnswer{FileID: offer.ID, From: "bob", To: "alice"}},
		"chat3_file_accept_resume":      ChatFrame{Type: FrameFileAccept, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b3", FileAnswer: &FileAnswer{FileID: offer.ID, From: "bob", To: "alice", Offset: 32768}},
		"chat3_file_decline":            ChatFrame{Type: FrameFileDecline, ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b4", FileAnswer: &FileAnswer{FileID: offer.ID, From: "bob", To: "alice", Reason: "no room on this phone"}},
		"chat3_file_chunk":              ChatFrame{Type: FrameFileChunk, FileChunk: &FileChunk{FileID: offer.ID, Offset: 32768, Data: []byte("%PDF-1.7 golden chunk")}},
		"chat3_ack_file_too_large":      ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: offer.ID, Status: StatusRefused, Code: CodeFileTooLarge, Error: "file of 73400320 bytes, this device takes at most 67108864"}},
		"chat3_ack_unknown_file":        ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789b2", Status: StatusRefused, Code: CodeUnknownFile, Error: "no file 01968c5e-7f3a-7b2c-9d4e-0123456789b1 offered to bob"}},
		"chat2_call_invite":             callFrame(FrameCallInvite, "01968c5e-7f3a-7b2c-9d4e-0123456789c1", CallSignal{CallID: callID, From: "alice", To: "bob", Media: CallVideo, RingMillis: 30000, At: at}),
		"chat2_call_ringing":            callFrame(FrameCallRinging, "01968c5e-7f3a-7b2c-9d4e-0123456789c2", CallSignal{CallID: callID, From: "bob", To: "alice", At: at}),
		"chat2_call_accept":             callFrame(FrameCallAccept, "01968c5e-7f3a-7b2c-9d4e-0123456789c3", CallSignal{CallID: callID, From: "bob", To: "alice", At: at}),
		"chat2_call_reject":             callFrame(FrameCallReject, "01968c5e-7f3a-7b2c-9d4e-0123456789c4", CallSignal{CallID: callID, From: "bob", To: "alice", At: at}),
		"chat2_call_cancel":             callFrame(FrameCallCancel, "01968c5e-7f3a-7b2c-9d4e-0123456789c5", CallSignal{CallID: callID, From: "alice", To: "bob", Reason: CallReasonTimeout, At: at}),
		"chat2_call_answered_elsewhere": callFrame(FrameCallAnsweredElsewhere, "01968c5e-7f3a-7b2c-9d4e-0123456789c6", CallSignal{CallID: callID, From: "alice", To: "bob", At: at}),
		"chat2_call_hangup":             callFrame(FrameCallHangUp, "01968c5e-7f3a-7b2c-9d4e-0123456789c7", CallSignal{CallID: callID, From: "bob", To: "alice", At: at}),
		"chat2_ack_answered_elsewhere":  ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: "01968c5e-7f3a-7b2c-9d4e-0123456789c3", Status: StatusRefused, Code: CodeAnsweredElsewhere, Error: "another device of bob accepted the call"}},
		"dir_request_reports":           DirRequest{Op: OpReports, Cert: &cert},
		"dir_response_undeliverable":    DirResponse{OK: true, Undeliverable: []Undeliverable{{MsgID: msg.ID, From: "alice", To: "bob", Reason: ReasonExpired, At: at}}},
		"route_mirror":                  mirror,
		"dir_response_lookup_mirror":    DirResponse{OK: true, Devices: []DeviceRecord{device}, Mirror: &mirror},
		"history_request":               HistoryRequest{User: "bob", After: "01968c5e-7f3a-7b2c-9d4e-0123456789aa", Since: at.Add(-30 * 24 * time.Hour), Limit: 50},
		"history_page":                  HistoryPage{OK: true, Msgs: []ChatMessage{msg}, More: true},
		"history_page_refused":          HistoryPage{Code: CodeNotYourUser, Error: "only the bridge may read a user's history"},
	}
}

// TestGolden pins the JSON body of every frame type. Run with -update after
// an intended wire change, and bump ProtocolVersion with a history entry.
func TestGolden(t *testing.T) {
	for name, v := range goldenFrames(t) {
		t.Run(name, func(t *testing.T) {
			var frame bytes.Buffer
			if err := WriteFrame(&frame, v); err != nil {
				t.Fatalf("WriteFrame: %v", err)
			}
			// The golden file holds the body; strip the length prefix.
			r := bufio.NewReader(bytes.NewReader(frame.Bytes()))
			if _, err := readLength(r); err != nil {
				t.Fatalf("readLength: %v", err)
			}
			var body bytes.Buffer
			if _, err := r.WriteTo(&body); err != nil {
				t.Fatal(err)
			}
			body.WriteByte('\n')

			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, body.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), body.String()); diff != "" {
				t.Errorf("%s changed (-golden +got):\n%s", path, diff)
			}

			// The golden bytes decode back to the same value.
			ptr := reflect.New(reflect.TypeOf(v))
			if err := ReadFrame(bufio.NewReader(bytes.NewReader(frame.Bytes())), ptr.Interface()); err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if diff := cmp.Diff(v, ptr.Elem().Interface()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}
