package cloud

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestSessionAndFrameMetrics: sessions are counted by client kind (token
// in the header, in hello, or a bridge), and every frame written is
// counted by its type.
func TestSessionAndFrameMetrics(t *testing.T) {
	f := newFixture(t, nil)
	native := f.dial(t, "alice", "a1", 0)
	bridge := f.dialRole(t, "bridge", cloudwire.RoleBridge, "br", 0)
	browser, err := Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Token: token(t, "bob", cloudwire.RoleUser), Device: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { browser.Close() })
	for _, c := range []*Client{native, bridge, browser} {
		waitSynced(t, c)
		collect(c)
	}
	send(t, native, "bob", "hi")
	for _, k := range []string{kindNative, kindBrowser, kindBridge} {
		if v := testutil.ToFloat64(f.svc.m.sessions.WithLabelValues(k)); v != 1 {
			t.Errorf("gateway_cloud_sessions{kind=%s} = %v, want 1", k, v)
		}
	}
	deadline := time.Now().Add(waitFor)
	want := map[string]float64{cloudwire.TypeWelcome: 3, cloudwire.TypeSynced: 3, cloudwire.TypeAck: 1}
	for typ, n := range want {
		for testutil.ToFloat64(f.svc.m.framesSent.WithLabelValues(typ)) < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if v := testutil.ToFloat64(f.svc.m.framesSent.WithLabelValues(typ)); v != n {
			t.Errorf("gateway_cloud_frames_sent_total{type=%s} = %v, want %v", typ, v, n)
		}
	}
	native.Close()
	waitDone(t, native)
	deadline = time.Now().Add(waitFor)
	for testutil.ToFloat64(f.svc.m.sessions.WithLabelValues(kindNative)) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if v := testutil.ToFloat64(f.svc.m.sessions.WithLabelValues(kindNative)); v != 0 {
		t.Errorf("gateway_cloud_sessions{kind=native} = %v after close, want 0", v)
	}
}
