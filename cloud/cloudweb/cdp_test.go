//go:build linux

package cloudweb_test

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
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// chromiumPath is Debian's Chromium (.ci/packages installs it).
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium driven over the DevTools protocol: a
// WebSocket to the browser target, one page attached with a flat session.
// Calls are synchronous: write a command, read until its answer (events
// are not enabled, so few arrive, and they are skipped).
type browser struct {
	cmd     *exec.Cmd
	conn    *websocket.Conn
	next    int
	session string
	stderr  *bytes.Buffer
}

// startBrowser starts Chromium with a fresh profile and opens a blank
// page. It skips when Chromium is missing, unless CI is set, where it fails.
func startBrowser(tb testing.TB) *browser {
	tb.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("CI: %s is required (.ci/packages lists chromium): %v", chromiumPath, err)
		}
		tb.Skipf("%s not installed (apt-get install chromium); skipping the browser test", chromiumPath)
	}
	profile := tb.TempDir()
	b := &browser{stderr: new(bytes.Buffer)}
	b.cmd = exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--no-default-browser-check",
		"--disable-dev-shm-usage",
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
		if b.conn != nil {
			_ = b.conn.WriteJSON(map[string]any{"id": 1 << 30, "method": "Browser.close"})
			b.conn.Close()
		}
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		// The group of the process this test started, and nothing else.
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	// Chromium writes the port it chose and the browser target's path to
	// DevToolsActivePort in the profile.
	var endpoint string
	deadline := time.Now().Add(waitFor)
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
			tb.Fatalf("no DevToolsActivePort after %v: %s", waitFor, b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, _, err := websocket.DefaultDialer.Dial(endpoint, nil)
	if err != nil {
		tb.Fatalf("dial DevTools %s: %v", endpoint, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots
	b.conn = conn

	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call(tb, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call(tb, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	return b
}

// call sends one DevTools command (to the page when session is set) and
// decodes its result into out.
func (b *browser) call(tb testing.TB, session, method string, params map[string]any, out any) {
	tb.Helper()
	if err := b.roundTrip(session, method, params, out); err != nil {
		tb.Fatalf("%s: %v", method, err)
	}
}

func (b *browser) roundTrip(session, method string, params map[string]any, out any) error {
	b.next++
	id := b.next
	req := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		req["sessionId"] = session
	}
	if err := b.conn.SetWriteDeadline(time.Now().Add(waitFor)); err != nil {
		return err
	}
	if err := b.conn.WriteJSON(req); err != nil {
		return err
	}
	if err := b.conn.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
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

// navigate loads url in the page.
func (b *browser) navigate(tb testing.TB, url string) {
	tb.Helper()
	b.call(tb, b.session, "Page.navigate", map[string]any{"url": url}, nil)
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its JSON-able value into out.
func (b *browser) eval(tb testing.TB, expr string, out any) {
	tb.Helper()
	if err := b.evalErr(expr, out); err != nil {
		tb.Fatalf("eval %q: %v", expr, err)
	}
}

func (b *browser) evalErr(expr string, out any) error {
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
	err := b.roundTrip(b.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	}, &res)
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("%w: %s %s", errJS, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

var errJS = errors.New("javascript exception")

// screenshot saves the page as a PNG among the test's artifacts.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	b.call(t, b.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot %s", path)
}
