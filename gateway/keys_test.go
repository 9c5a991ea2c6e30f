package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// TestLoadOrCreateRace checks that agents racing to create a key in a shared
// data directory all end up with the same key, the one on disk.
func TestLoadOrCreateRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "token.key")
	const n = 8
	got := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, err := loadOrCreate(path, func() ([]byte, error) { return []byte{byte(i)}, nil })
			if err != nil {
				t.Error(err)
			}
			got[i] = b
		})
	}
	wg.Wait()
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if !bytes.Equal(b, onDisk) {
			t.Fatalf("caller %d got %v, the file holds %v", i, b, onDisk)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// TestAgentTokenIssuerAndAudience: with -token-issuer and -token-audience
// set, every token the agent issues carries them (the cloud user token of
// the admin API, the bridge's credential, which connects, and the admin
// token, for the admin API's own audience), and its cloud service refuses
// tokens of the same key with the default issuer or audience.
func TestAgentTokenIssuerAndAudience(t *testing.T) {
	cfg := agentPorts(t)
	cfg.TokenIssuer, cfg.TokenAudience = "ops-eu", "chat-eu"
	ta := startAgent(t, t.TempDir(), cfg)
	pub := ta.a.tokenKey.Public().(ed25519.PublicKey)
	now := time.Now()

	user := userToken(t, ta, "carol")
	c, err := cloudwire.TokenPolicy{Key: pub, Issuer: "ops-eu", Audience: "chat-eu"}.Verify(user, now)
	if err != nil || c.Subject != "carol" || c.Role != cloudwire.RoleUser {
		t.Fatalf("user token: %+v, %v", c, err)
	}
	if _, err := (cloudwire.TokenPolicy{Key: pub}).Verify(user, now); !errors.Is(err, cloudwire.ErrTokenIssuer) {
		t.Errorf("user token under the default policy: %v, want ErrTokenIssuer", err)
	}
	admin, err := cloudwire.TokenPolicy{Key: pub, Issuer: "ops-eu", Audience: adminAudience}.Verify(ta.a.adminToken, now)
	if err != nil || admin.Role != cloudwire.RoleAdmin {
		t.Fatalf("admin token: %+v, %v", admin, err)
	}
	waitUntil(t, within, func() bool { return ta.a.bridge.Status().Links[0].State == bridge.LinkConnected },
		func() string { return fmt.Sprintf("bridge link %+v", ta.a.bridge.Status().Links[0]) })

	setPhases(t, ta.admin(), "carol", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	url := "ws://" + ta.a.cloudLn.Addr().String() + "/v1/ws"
	cl, err := cloud.Dial(context.Background(), cloud.ClientConfig{URL: url, Token: user, Hello: cloudwire.Hello{Device: "d"}})
	if err != nil {
		t.Fatalf("the agent's own user token: %v", err)
	}
	cl.Close()
	for name, aud := range map[string][2]string{
		"default issuer":   {cloudwire.DefaultIssuer, "chat-eu"},
		"default audience": {"ops-eu", cloudwire.DefaultAudience},
	} {
		tok, err := cloudwire.SignToken(ta.a.tokenKey, cloudwire.Claims{Issuer: aud[0], Audience: cloudwire.Audience{aud[1]}, Subject: "carol", Role: cloudwire.RoleUser, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cloud.Dial(context.Background(), cloud.ClientConfig{URL: url, Token: tok, Hello: cloudwire.Hello{Device: "d"}})
		var de *cloud.DialError
		if !errors.As(err, &de) || de.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, want HTTP 401", name, err)
		}
	}
	tally("attacks_refused", 2)
}
