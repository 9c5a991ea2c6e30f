package cloudweb_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/cloud/cloudweb"
)

// TestHandler checks what the embedded page is served with: its files, the
// content types browsers need under nosniff, and the security headers.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(cloudweb.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		name, path string
		status     int
		ctype      string
		contains   string
	}{
		{name: "index", path: "/", status: 200, ctype: "text/html", contains: `<script src="app.js" defer>`},
		{name: "script", path: "/app.js", status: 200, ctype: "text/javascript", contains: `"ferry.v1"`},
		{name: "style", path: "/style.css", status: 200, ctype: "text/css", contains: "[hidden]"},
		{name: "missing", path: "/nope.js", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			if tt.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tt.ctype)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
		})
	}
}
