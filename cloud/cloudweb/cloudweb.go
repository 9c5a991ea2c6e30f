package cloudweb

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy keeps the page to its own scripts and its own
// origin's WebSocket ('self' covers ws: and wss: to the same host), and out
// of frames (clickjacking).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page and its assets from the embedded files, at the
// root of whatever path it is mounted on.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// The directory is embedded at build time; this cannot fail.
		panic("cloudweb: " + err.Error())
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Small files; a new binary must not be hidden behind a stale cache.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
