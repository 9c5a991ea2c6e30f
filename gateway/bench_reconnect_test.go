package main

import (
	"testing"

	"github.com/ferrygw/ferry/cloud"
)

// TestReconnectMaxHandshakes checks the admission override of the
// reconnect benchmark: unset is the product's default, a positive number
// is taken, anything else is refused rather than silently ignored.
func TestReconnectMaxHandshakes(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		want      int
		wantErr   bool
	}{
		{name: "unset", env: "", want: cloud.DefaultMaxHandshakes},
		{name: "raised", env: "10000", want: 10000},
		{name: "zero", env: "0", wantErr: true},
		{name: "negative", env: "-1", wantErr: true},
		{name: "not a number", env: "many", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(reconnectHandshakesEnv, tc.env)
			got, err := rcMaxHandshakes()
			if (err != nil) != tc.wantErr {
				t.Fatalf("rcMaxHandshakes() error = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Fatalf("rcMaxHandshakes() = %d, want %d", got, tc.want)
			}
		})
	}
}
