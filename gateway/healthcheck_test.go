package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthcheck runs `gateway healthcheck` against a real agent and
// against admin listeners that fail in each way a container can see: every
// failure is an error (exit 1) with a one-line reason, never a usage error.
func TestHealthcheck(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	closed := httptest.NewServer(nil)
	closed.Close()
	down := closed.URL
	for _, tc := range []struct {
		name   string
		args   []string
		env    string
		reason string // "" means healthy
	}{
		{"agent", []string{"-addr", ta.a.adminURL()}, "", ""},
		{"agent from FERRY_ADDR", nil, ta.a.adminURL(), ""},
		{"host:port without scheme", []string{"-addr", strings.TrimPrefix(ta.a.adminURL(), "http://")}, "", ""},
		{"unhealthy", []string{"-addr", serve(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "engine down", http.StatusServiceUnavailable)
		})}, "", "HTTP 503"},
		{"wrong answer", []string{"-addr", serve(func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("not ok\nat all\n"))
		})}, "", `"not ok\nat all"`},
		{"no answer in time", []string{"-timeout", "200ms", "-addr", serve(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		})}, "", "no answer within 200ms"},
		{"nothing listening", []string{"-addr", down}, "", "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envAddr, tc.env)
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"healthcheck"}, tc.args...), &out, &errOut)
			if tc.reason == "" {
				if err != nil || !strings.HasPrefix(out.String(), "ok ") {
					t.Fatalf("healthy agent: err %v, out %q", err, out.String())
				}
				return
			}
			if err == nil || errors.Is(err, errUsage) {
				t.Fatalf("got %v, want a failure (exit 1)", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.reason) || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("reason %q: want one line containing %q", msg, tc.reason)
			}
		})
	}
	for _, args := range [][]string{{"extra"}, {"-timeout", "0s"}, {"-nope"}} {
		if err := run(context.Background(), append([]string{"healthcheck"}, args...), &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, errUsage) && !strings.Contains(err.Error(), "flag provided but not defined") {
			t.Errorf("healthcheck %v: %v, want a usage error", args, err)
		}
	}
}
