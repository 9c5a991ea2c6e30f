package cloud

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestUpgradeRequired: a hello the version check refuses closes with 4426
// and the JSON reason, which the Go client returns as an
// *UpgradeRequiredError; other versions and bridges open as usual.
func TestUpgradeRequired(t *testing.T) {
	deadline := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var seen cloudwire.Hello
	f := newFixture(t, func(c *Config) {
		c.CheckClient = func(_ context.Context, user string, h cloudwire.Hello) *cloudwire.UpgradeRequired {
			if h.ClientVersion != "5.9.2" {
				return nil
			}
			seen = h
			return &cloudwire.UpgradeRequired{Minimum: "6.2.1", UpdateURL: "https://example.com/update", Deadline: deadline, Notice: "Please update."}
		}
	})
	_, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: token(t, "eve", cloudwire.RoleUser),
		Hello: cloudwire.Hello{Device: "d", Platform: "android", ClientVersion: "5.9.2"}})
	var up *UpgradeRequiredError
	if !errors.As(err, &up) || !errors.Is(err, ErrUpgradeRequired) {
		t.Fatalf("Dial = %v, want an *UpgradeRequiredError", err)
	}
	if up.Reason.Minimum != "6.2.1" || up.Reason.UpdateURL != "https://example.com/update" || !up.Reason.Deadline.Equal(deadline) || up.Reason.Notice != "Please update." {
		t.Errorf("reason = %+v", up.Reason)
	}
	closeCode(t, err, cloudwire.CloseUpgradeRequired)
	if seen.Token != "" || seen.Platform != "android" {
		t.Errorf("CheckClient saw %+v, want the hello without its token", seen)
	}
	c, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: token(t, "eve", cloudwire.RoleUser),
		Hello: cloudwire.Hello{Device: "d", Platform: "android", ClientVersion: "6.2.1"}})
	if err != nil {
		t.Fatalf("Dial with a supported version: %v", err)
	}
	c.Close()
	// The check applies to user sessions only: a bridge may open.
	f.dialRole(t, "eve", cloudwire.RoleBridge, "bridge-1", 0)
}
