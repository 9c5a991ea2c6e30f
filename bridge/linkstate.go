package bridge

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// LinkState is the state of the bridge's link to the cloud service, stable
// in logs, JSON and the state label of gateway_bridge_link_state.
type LinkState string

// Link states. A link starts stopped, is connecting until its first dial
// succeeds, then alternates between connected and reconnecting (or
// bad_credentials, when the cloud refused the bridge's token: 401 before the
// upgrade or close 4401 after it), and is stopped again when Run returns.
const (
	LinkStopped        LinkState = "stopped"
	LinkConnecting     LinkState = "connecting"
	LinkConnected      LinkState = "connected"
	LinkReconnecting   LinkState = "reconnecting"
	LinkBadCredentials LinkState = "bad_credentials"
)

var linkStates = []LinkState{LinkStopped, LinkConnecting, LinkConnected, LinkReconnecting, LinkBadCredentials}

// Valid reports whether s is a known link state.
func (s LinkState) Valid() bool {
	for _, k := range linkStates {
		if s == k {
			return true
		}
	}
	return false
}

// LinkStatus is a snapshot of one cloud link, as the admin API shows it.
type LinkStatus struct {
	Name  string    `json:"name"`
	State LinkState `json:"state"`
	// Since is when the link entered State.
	Since time.Time `json:"since"`
	// LastError is why the link last went down or failed to come up; it
	// stays after a reconnect, with LastErrorAt, for the operator.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Reconnects counts the links that came up after the first one.
	Reconnects uint64 `json:"reconnects"`
}

// Status is the bridge's state as the admin API shows it: every link of
// the pool in index order (link 0 carries the feed) and the puppets'
// counts by state (Bridge.Puppets lists them).
type Status struct {
	Links   []LinkStatus  `json:"links"`
	Puppets PuppetSummary `json:"puppets"`
}

// linkTracker holds one link's state and mirrors it into the state gauge.
type linkTracker struct {
	gauge *prometheus.GaugeVec
	now   func() time.Time

	mu sync.Mutex
	st LinkStatus
	up bool // a link has been connected at least once
}

func newLinkTracker(name string, gauge *prometheus.GaugeVec, now func() time.Time) *linkTracker {
	t := &linkTracker{gauge: gauge, now: now, st: LinkStatus{Name: name}}
	t.set(LinkStopped, nil)
	return t
}

// set moves the link to state; a non-nil err becomes the last error. Staying
// in the same state keeps Since.
func (t *linkTracker) set(state LinkState, err error) {
	now := t.now().UTC()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.st.LastError = err.Error()
		t.st.LastErrorAt = now
	}
	if state == LinkConnected {
		if t.up {
			t.st.Reconnects++
		}
		t.up = true
	}
	if t.st.State == state {
		return
	}
	t.st.State, t.st.Since = state, now
	for _, s := range linkStates {
		t.gauge.WithLabelValues(string(s)).Set(boolGauge(s == state))
	}
}

// down records a failed or ended link: bad credentials when the cloud
// refused the token, reconnecting otherwise.
func (t *linkTracker) down(err error) {
	if badCredentials(err) {
		t.set(LinkBadCredentials, err)
		return
	}
	t.set(LinkReconnecting, err)
}

func (t *linkTracker) status() LinkStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// badCredentials reports whether err is the cloud refusing the bridge's
// token: HTTP 401 before the upgrade, or close 4401 after it.
func badCredentials(err error) bool {
	var de *cloud.DialError
	if errors.As(err, &de) && de.StatusCode == http.StatusUnauthorized {
		return true
	}
	var ce *cloud.CloseError
	return errors.As(err, &ce) && ce.Code == cloudwire.CloseUnauthorized
}

// Status returns the state of the bridge's cloud links and the counts of
// its puppets by state.
func (b *Bridge) Status() Status {
	st := Status{Links: make([]LinkStatus, len(b.links)), Puppets: b.puppets.summary("", 0)}
	for i, l := range b.links {
		st.Links[i] = l.state.status()
	}
	return st
}
