package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestAdminMalformedBodies sends malformed bodies to every admin endpoint
// that takes one: each gets a 4xx with a JSON error naming its code, never
// a 5xx or a dropped connection, and the agent keeps serving.
func TestAdminMalformedBodies(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	paths := []string{
		"/v1/admin/users/carol/phase",
		"/v1/admin/legacy/certificates",
		"/v1/admin/cloud/tokens",
		"/v1/admin/campaigns",
		"/v1/admin/campaigns/spring/start",
		"/v1/admin/freeze",
		"/v1/admin/users/carol/hold",
		"/v1/admin/users/carol/resume",
		"/v1/admin/users/carol/exempt",
		"/v1/admin/versions/retire",
		"/v1/admin/versions/block",
	}
	bodies := map[string]string{
		"empty":              "",
		"truncated":          `{"phase":"sha`,
		"null":               "null",
		"array":              "[]",
		"string":             `"x"`,
		"unknown field":      `{"teleport":true}`,
		"wrong types":        `{"phase":7,"reason":[],"user":{},"ttl":false,"platform":1,"version":null,"name":3}`,
		"invalid UTF-8":      "{\"reason\":\"\xff\xfe\"}",
		"two objects":        `{"reason":"a"}{"reason":"b"}`,
		"over the body size": `{"reason":"` + strings.Repeat("r", maxAdminBody) + `"}`,
		"nested too deep":    strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		"huge number":        `{"ttl":1e999999}`,
		"bad duration":       `{"user":"carol","ttl":"forever"}`,
		"negative duration":  `{"user":"carol","ttl":"-1h"}`,
		"control characters": "{\"reason\":\"\u0000\u0001\"}",
	}
	refused := 0
	for _, path := range paths {
		for name, body := range bodies {
			req, _ := http.NewRequest(http.MethodPost, ta.a.adminURL()+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+ta.a.adminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("%s, %s: %v", path, name, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e apiError
			switch {
			case resp.StatusCode < 400 && name == "null":
				// null decodes to an empty request; some commands take none.
			case resp.StatusCode < 400 || resp.StatusCode >= 500:
				t.Errorf("%s, %s: status %d, want a 4xx: %s", path, name, resp.StatusCode, b)
			case json.Unmarshal(b, &e) != nil || e.Code == "" || e.Error == "":
				t.Errorf("%s, %s: status %d with body %q, want a JSON error", path, name, resp.StatusCode, b)
			default:
				refused++
			}
		}
	}
	resp, err := http.Get(ta.a.adminURL() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after the malformed bodies: %v", err)
	}
	resp.Body.Close()
	userToken(t, ta, "carol") // a well-formed call still works
	tally("attacks_refused", refused)
}
