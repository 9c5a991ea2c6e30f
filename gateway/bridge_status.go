package main

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/ferrygw/ferry/bridge"
)

// bridgeStatus serves GET /v1/admin/bridge?puppets=N&state=S: the state of
// each of the bridge's cloud links (connected, reconnecting,
// bad_credentials, ...), since when, and the last error; the puppets'
// counts by state and, with puppets=N, up to N of them (in state S when
// given), in user order. An agent without the bridge role answers 404.
func (a *agent) bridgeStatus(w http.ResponseWriter, r *http.Request) {
	if a.bridge == nil {
		writeError(w, http.StatusNotFound, "no_bridge", "this agent does not run the bridge role")
		return
	}
	q := r.URL.Query()
	limit := 0
	if v := q.Get("puppets"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > bridge.MaxPuppetList {
			writeError(w, http.StatusBadRequest, "invalid_limit", fmt.Sprintf("puppets must be 0..%d", bridge.MaxPuppetList))
			return
		}
		limit = n
	}
	state := bridge.PuppetState(q.Get("state"))
	if state != "" && !state.Valid() {
		writeError(w, http.StatusBadRequest, "invalid_state", "state must be opening, open, reconnecting, refused or closed")
		return
	}
	st := a.bridge.Status()
	if limit > 0 {
		st.Puppets = a.bridge.Puppets(state, limit)
	}
	writeJSON(w, http.StatusOK, st)
}
