package bridge

import (
	"testing"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestSummedPresence(t *testing.T) {
	for _, tc := range []struct {
		name string
		devs map[string]string
		want string
	}{
		{"no device", nil, legacywire.PresenceOffline},
		{"one idle", map[string]string{"a": cloudwire.PresenceIdle}, legacywire.PresenceIdle},
		{"active beats idle", map[string]string{"a": cloudwire.PresenceIdle, "b": cloudwire.PresenceActive}, legacywire.PresenceActive},
		{"unknown state counts as offline", map[string]string{"a": "away"}, legacywire.PresenceOffline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summedPresence(tc.devs); got != tc.want {
				t.Errorf("summedPresence(%v) = %q, want %q", tc.devs, got, tc.want)
			}
		})
	}
}

func TestCloudState(t *testing.T) {
	for _, status := range []string{legacywire.PresenceActive, legacywire.PresenceIdle, legacywire.PresenceOffline} {
		got, ok := cloudState(status)
		if !ok || (cloudwire.Presence{State: got}).Validate() != nil {
			t.Errorf("cloudState(%q) = %q, %v: not a valid cloud state", status, got, ok)
		}
	}
	if _, ok := cloudState("busy"); ok {
		t.Error("cloudState accepted an unknown status")
	}
}

func TestLegacyDeviceIsAValidCloudDevice(t *testing.T) {
	for _, id := range []string{"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", "short"} {
		d := legacyDevice(legacywire.Certificate{PeerID: id})
		if (cloudwire.Presence{State: cloudwire.PresenceActive, User: "u", Device: d}).Validate() != nil {
			t.Errorf("legacyDevice(%q) = %q is not a valid cloud device id", id, d)
		}
	}
}
