package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func TestBadCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"http 401", &cloud.DialError{StatusCode: 401}, true},
		{"wrapped 401", fmt.Errorf("dial cloud: %w", &cloud.DialError{StatusCode: 401}), true},
		{"close 4401", &cloud.CloseError{Code: cloudwire.CloseUnauthorized}, true},
		{"http 403", &cloud.DialError{StatusCode: 403}, false},
		{"http 503", &cloud.DialError{StatusCode: 503}, false},
		{"going away", &cloud.CloseError{Code: 1001}, false},
		{"transport", errors.New("connection refused"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := badCredentials(tc.err); got != tc.want {
				t.Fatalf("badCredentials(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestLinkTracker(t *testing.T) {
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "s"}, []string{"state"})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tr := newLinkTracker("link-0", gauge, clock)
	check := func(want LinkState) {
		t.Helper()
		if got := tr.status().State; got != want {
			t.Fatalf("state = %s, want %s", got, want)
		}
		for _, s := range linkStates {
			if v := testutil.ToFloat64(gauge.WithLabelValues(string(s))); v != boolGauge(s == want) {
				t.Fatalf("gauge{%s} = %v with state %s", s, v, want)
			}
		}
	}
	check(LinkStopped)
	tr.set(LinkConnecting, nil)
	now = now.Add(time.Second)
	tr.down(&cloud.DialError{StatusCode: 401, Body: "unauthorized"})
	check(LinkBadCredentials)
	since := tr.status().Since
	now = now.Add(time.Second)
	tr.down(&cloud.DialError{StatusCode: 401, Body: "still"})
	if st := tr.status(); !st.Since.Equal(since) || st.LastErrorAt.Equal(since) {
		t.Fatalf("staying in a state must keep since and update the error: %+v", st)
	}
	tr.set(LinkConnected, nil)
	check(LinkConnected)
	tr.down(errors.New("reset"))
	check(LinkReconnecting)
	tr.set(LinkConnected, nil)
	st := tr.status()
	if st.Reconnects != 1 || st.LastError != "reset" {
		t.Fatalf("after one reconnect: %+v", st)
	}
	for _, s := range linkStates {
		if !s.Valid() {
			t.Fatalf("%s not valid", s)
		}
	}
	if LinkState("up").Valid() {
		t.Fatal("unknown state valid")
	}
}
