package main

import "net/http"

// bridgeStatus serves GET /v1/admin/bridge: the state of the bridge's cloud
// links (connected, reconnecting, bad_credentials, ...), since when, and the
// last error. An agent without the bridge role answers 404.
func (a *agent) bridgeStatus(w http.ResponseWriter, _ *http.Request) {
	if a.bridge == nil {
		writeError(w, http.StatusNotFound, "no_bridge", "this agent does not run the bridge role")
		return
	}
	writeJSON(w, http.StatusOK, a.bridge.Status())
}
