// Package cdptest drives headless Chromium over the Chrome DevTools
// protocol for tests of the reference browser client (cloudweb) and of the
// agent that serves it: start a browser, open tabs, navigate, evaluate
// JavaScript, click and type with real input events, take screenshots,
// and read the page's window.ferry.state() as a State.
//
// It needs Debian's Chromium at ChromiumPath: Start skips the test without
// it, and fails it when the environment sets CI. Screenshots go to
// ArtifactDir (FERRY_ARTIFACTS, or go test -artifacts -outputdir DIR).
//
// It speaks the DevTools protocol over gorilla/websocket and imports
// nothing of Ferry, so any package's tests may use it.
package cdptest
