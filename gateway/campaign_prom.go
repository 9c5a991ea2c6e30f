package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// envPrometheusURL is the default of the agent's -prometheus-url: the
// Prometheus server that PromQL guardrails query (its base URL, such as
// http://prometheus:9090). Unset, PromQL guardrails are inconclusive, which
// holds their campaigns.
const envPrometheusURL = "FERRY_PROMETHEUS_URL"

// Limits of the PromQL client.
const (
	promQueryTimeout = 10 * time.Second
	maxPromAnswer    = 1 << 20
)

// promClient runs instant queries against the Prometheus HTTP API
// (GET /api/v1/query) for PromQL guardrails; the evaluation itself is
// migrate's.
type promClient struct {
	base string
	http *http.Client
}

var _ migrate.PromQuerier = (*promClient)(nil)

// newPromClient returns a client of the Prometheus at base, or an error for
// a URL that is not http(s).
func newPromClient(base string) (*promClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want http(s)://host:port", envPrometheusURL, base)
	}
	return &promClient{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: promQueryTimeout}}, nil
}

// QueryScalar implements migrate.PromQuerier.
func (c *promClient) QueryScalar(ctx context.Context, query string, at time.Time) (float64, error) {
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPromAnswer))
	if err != nil {
		return 0, fmt.Errorf("prometheus: read answer: %w", err)
	}
	v, err := parsePromScalar(b)
	if err != nil {
		return 0, fmt.Errorf("prometheus (HTTP %d): %w", resp.StatusCode, err)
	}
	return v, nil
}

// promAnswer is the envelope of the Prometheus query API.
type promAnswer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

var errPromManySeries = errors.New("query returned more than one series: aggregate it (sum(...))")

// parsePromScalar reads the one number of an instant query's answer: a
// scalar, or a vector of at most one sample (none is 0: no events). An
// error answer, a matrix, several series or a value that is not a number
// are errors.
func parsePromScalar(b []byte) (float64, error) {
	var a promAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return 0, fmt.Errorf("answer is not the query API's JSON: %w", err)
	}
	if a.Status != "success" {
		return 0, fmt.Errorf("query failed: %s: %s", a.ErrorType, a.Error)
	}
	var pair []json.RawMessage
	switch a.Data.ResultType {
	case "scalar":
		if err := json.Unmarshal(a.Data.Result, &pair); err != nil {
			return 0, fmt.Errorf("scalar: %w", err)
		}
	case "vector":
		var vec []struct {
			Value []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(a.Data.Result, &vec); err != nil {
			return 0, fmt.Errorf("vector: %w", err)
		}
		switch len(vec) {
		case 0:
			return 0, nil
		case 1:
			pair = vec[0].Value
		default:
			return 0, errPromManySeries
		}
	default:
		return 0, fmt.Errorf("result type %q: want scalar or vector", a.Data.ResultType)
	}
	if len(pair) != 2 {
		return 0, fmt.Errorf("sample has %d fields, want [time, \"value\"]", len(pair))
	}
	var s string
	if err := json.Unmarshal(pair[1], &s); err != nil {
		return 0, fmt.Errorf("sample value: %w", err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %q: %w", s, err)
	}
	if math.IsNaN(v) {
		return 0, fmt.Errorf("sample value is NaN")
	}
	return v, nil
}
