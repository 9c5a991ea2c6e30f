package cloudwire

import (
	"testing"
	"time"
)

// The send path's frames, encoded and decoded by the hand-written and
// plain-head paths and by the reflection paths they replace, in one run:
// go test -run '^$' -bench 'Encode|Decode' ./cloud/cloudwire/
var (
	benchAck   = Ack{Ref: "17", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Conv: "d1cb15457d1ddab60e205c0fe3ca2f65d", Seq: 3, At: time.Date(2026, 3, 4, 5, 6, 7, 891e6, time.UTC)}
	benchEvent = Event{Cursor: 58, User: "bob", Kind: KindMsg, Conv: "d1cb15457d1ddab60e205c0fe3ca2f65d", Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a",
		From: "alice", FromDevice: "dev-1", To: "bob", Text: "benchmark message", At: time.Date(2026, 3, 4, 5, 6, 7, 891e6, time.UTC)}
	benchSendFrame = Send{Ref: "17", To: "bob", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Text: "benchmark message"}
)

func BenchmarkEncodeHot(b *testing.B) {
	for _, tc := range []struct {
		name string
		enc  func(Frame) ([]byte, error)
	}{{"hand", Encode}, {"reflect", encodeReflect}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.enc(benchAck); err != nil {
					b.Fatal(err)
				}
				if _, err := tc.enc(benchEvent); err != nil {
					b.Fatal(err)
				}
				if _, err := tc.enc(benchSendFrame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeHot(b *testing.B) {
	event, err := Encode(benchEvent)
	if err != nil {
		b.Fatal(err)
	}
	ack, err := Encode(benchAck)
	if err != nil {
		b.Fatal(err)
	}
	send, err := Encode(benchSendFrame)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		dec  func([]byte) (Frame, error)
	}{{"plainhead", Decode}, {"full", decodeFull}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, f := range [][]byte{send, ack, event} {
					if _, err := tc.dec(f); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
