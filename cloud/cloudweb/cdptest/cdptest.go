//go:build linux

package cdptest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ChromiumPath is Debian's Chromium (.ci/packages installs it).
const ChromiumPath = "/usr/bin/chromium"

// WaitFor bounds every DevTools call and every wait of this package;
// nothing takes near it on a healthy run.
const WaitFor = 20 * time.Second

// ErrJS is returned (wrapped) when an evaluated expression throws.
var ErrJS = errors.New("javascript exception")

// Browser is one headless Chromium driven over the DevTools protocol: one
// WebSocket to the browser target, pages attached to it with flat sessions.
// Calls are synchronous and serialized: write a command, read until its
// answer (events are not enabled, so few arrive, and they are skipped).
type Browser struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer

	mu   sync.Mutex // one command at a time on conn
	conn *websocket.Conn
	next int
}

// Page is one tab of a Browser.
type Page struct {
	b       *Browser
	target  string
	session string
}

// Start starts Chromium with a fresh profile. It skips the test when
// Chromium is missing, unless the environment sets CI, where it fails.
// Cleanup ends Chromium and its renderers.
func Start(tb testing.TB) *Browser {
	tb.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("CI: %s is required (.ci/packages lists chromium): %v", ChromiumPath, err)
		}
		tb.Skipf("%s not installed (apt-get install chromium); skipping the browser test", ChromiumPath)
	}
	profile := tb.TempDir()
	b := &Browser{stderr: new(bytes.Buffer)}
	b.cmd = exec.Command(ChromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--no-default-browser-check",
		"--disable-dev-shm-usage",
		// Tabs the test is not looking at must keep their timers and
		// sockets going, as two devices would.
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--disable-backgrounding-occluded-windows",
		"--user-data-dir="+profile,
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--window-size=1000,700",
		"about:blank")
	b.cmd.Stderr = b.stderr
	// Its own process group, so that cleanup ends the renderers too.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		b.mu.Lock()
		if b.conn != nil {
			_ = b.conn.WriteJSON(map[string]any{"id": 1 << 30, "method": "Browser.close"})
			b.conn.Close()
		}
		b.mu.Unlock()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		// The group of the process this helper started, and nothing else.
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	// Chromium writes the port it chose and the browser target's path to
	// DevToolsActivePort in the profile.
	var endpoint string
	deadline := time.Now().Add(WaitFor)
	for endpoint == "" {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if lines := strings.Fields(string(data)); err == nil && len(lines) == 2 {
			endpoint = "ws://127.0.0.1:" + lines[0] + lines[1]
			break
		}
		select {
		case <-exited:
			tb.Fatalf("chromium exited: %s", b.stderr)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no DevToolsActivePort after %v: %s", WaitFor, b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, _, err := websocket.DefaultDialer.Dial(endpoint, nil)
	if err != nil {
		tb.Fatalf("dial DevTools %s: %v", endpoint, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots
	b.conn = conn
	return b
}

// NewPage opens a blank tab and attaches to it.
func (b *Browser) NewPage(tb testing.TB) *Page {
	tb.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.roundTrip("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		tb.Fatalf("Target.createTarget: %v", err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.roundTrip("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		tb.Fatalf("Target.attachToTarget: %v", err)
	}
	return &Page{b: b, target: target.TargetID, session: att.SessionID}
}

func (b *Browser) roundTrip(session, method string, params map[string]any, out any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	req := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		req["sessionId"] = session
	}
	if err := b.conn.SetWriteDeadline(time.Now().Add(WaitFor)); err != nil {
		return err
	}
	if err := b.conn.WriteJSON(req); err != nil {
		return err
	}
	if err := b.conn.SetReadDeadline(time.Now().Add(WaitFor)); err != nil {
		return err
	}
	for {
		var resp struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := b.conn.ReadJSON(&resp); err != nil {
			return err
		}
		if resp.ID != id {
			continue // an event, or a late answer
		}
		if resp.Error != nil {
			return fmt.Errorf("devtools error %d: %s", resp.Error.Code, resp.Error.Message)
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(resp.Result, out)
	}
}

// Call sends one DevTools command to the page and decodes its result into
// out (nil drops it).
func (p *Page) Call(tb testing.TB, method string, params map[string]any, out any) {
	tb.Helper()
	if err := p.b.roundTrip(p.session, method, params, out); err != nil {
		tb.Fatalf("%s: %v", method, err)
	}
}

// Navigate loads url in the page.
func (p *Page) Navigate(tb testing.TB, url string) {
	tb.Helper()
	p.Call(tb, "Page.navigate", map[string]any{"url": url}, nil)
}

// Focus brings the page to the front and gives it the focus, as a user
// switching to this tab would: the page gets focus events and
// document.hasFocus() turns true (and false in the tab that had it).
func (p *Page) Focus(tb testing.TB) {
	tb.Helper()
	if err := p.b.roundTrip("", "Target.activateTarget", map[string]any{"targetId": p.target}, nil); err != nil {
		tb.Fatalf("Target.activateTarget: %v", err)
	}
	p.Call(tb, "Page.bringToFront", nil, nil)
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its JSON-able value into out (nil drops it).
func (p *Page) Eval(tb testing.TB, expr string, out any) {
	tb.Helper()
	if err := p.EvalErr(expr, out); err != nil {
		tb.Fatalf("eval %q: %v", expr, err)
	}
}

// EvalErr is Eval returning the error, for polling a page that may still
// be loading.
func (p *Page) EvalErr(expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.roundTrip(p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	}, &res)
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("%w: %s %s", ErrJS, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// Click clicks the element that selector names with a real mouse event
// (DevTools Input), at its centre: the page sees a trusted pointer and
// click, as from a user.
func (p *Page) Click(tb testing.TB, selector string) {
	tb.Helper()
	var box struct{ X, Y float64 }
	p.Eval(tb, `(() => {
		const el = document.querySelector(`+jsString(selector)+`);
		if (!el) throw new Error("no element " + `+jsString(selector)+`);
		el.scrollIntoView({block: "center"});
		const r = el.getBoundingClientRect();
		return {x: r.left + r.width / 2, y: r.top + r.height / 2};
	})()`, &box)
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		p.Call(tb, "Input.dispatchMouseEvent", map[string]any{
			"type": typ, "x": box.X, "y": box.Y, "button": "left", "clickCount": 1,
		}, nil)
	}
}

// Type focuses the element that selector names and types text into it as
// key events, one character at a time.
func (p *Page) Type(tb testing.TB, selector, text string) {
	tb.Helper()
	p.Eval(tb, `document.querySelector(`+jsString(selector)+`).focus()`, nil)
	for _, r := range text {
		p.Call(tb, "Input.dispatchKeyEvent", map[string]any{"type": "keyDown", "text": string(r)}, nil)
		p.Call(tb, "Input.dispatchKeyEvent", map[string]any{"type": "keyUp"}, nil)
	}
}

// Text returns the textContent of the element selector names.
func (p *Page) Text(tb testing.TB, selector string) string {
	tb.Helper()
	var s string
	p.Eval(tb, `document.querySelector(`+jsString(selector)+`).textContent`, &s)
	return s
}

// Attr returns attribute attr of the element selector names: "" when it
// is absent, "true" for a boolean attribute that is present.
func (p *Page) Attr(tb testing.TB, selector, attr string) string {
	tb.Helper()
	var s string
	p.Eval(tb, `(() => {
		const v = document.querySelector(`+jsString(selector)+`).getAttribute(`+jsString(attr)+`);
		return v === null ? "" : v === "" ? "true" : v;
	})()`, &s)
	return s
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Screenshot saves the page as name.png in the test's artifact directory
// (ArtifactDir) and logs the path. Headless Chromium paints only the tab
// in front: Focus a background page first, or the capture times out.
func (p *Page) Screenshot(t testing.TB, name string) {
	t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	p.Call(t, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(ArtifactDir(t), name+".png")
	if err := os.WriteFile(path, png, 0o600); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot %s", path)
}

// ArtifactDir is where a test's screenshots go: FERRY_ARTIFACTS/<test
// name> when that variable names a directory (kept after the run),
// otherwise the test's own artifact directory (kept with go test
// -artifacts -outputdir DIR, removed after the test without).
func ArtifactDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("FERRY_ARTIFACTS")
	if root == "" {
		return t.ArtifactDir()
	}
	name := strings.NewReplacer("/", "__", string(os.PathSeparator), "__", " ", "_").Replace(t.Name())
	dir := filepath.Join(root, name)
	// #nosec G703 -- the directory the person running the tests named, and
	// the test's own name with its separators replaced.
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatalf("FERRY_ARTIFACTS: %v", err)
	}
	return dir
}

// Wait evaluates expr every few milliseconds until its value, decoded into
// a T, satisfies ok, and returns it. Evaluation errors (a page still
// loading) and null values are retried until WaitFor has passed; then the
// test fails with what, the last value and the last error.
func Wait[T any](tb testing.TB, p *Page, expr, what string, ok func(T) bool) T {
	tb.Helper()
	deadline := time.Now().Add(WaitFor)
	var last T
	var lastErr error
	for time.Now().Before(deadline) {
		var v *T
		lastErr = p.EvalErr(expr, &v)
		if lastErr == nil && v != nil {
			last = *v
			if ok(last) {
				return last
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	tb.Fatalf("page: %s not reached in %v; last value %+v, last error %v", what, WaitFor, last, lastErr)
	return last
}
