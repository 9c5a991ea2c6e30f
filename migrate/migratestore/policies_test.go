package migratestore

import (
	"errors"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

func TestPoliciesStore(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s, err := NewPolicies(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "android"); !errors.Is(err, migrate.ErrPolicyNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	p, err := s.Put(ctx, migrate.VersionPolicy{Platform: "android", Minimum: "5.0"})
	if err != nil || p.Revision == 0 {
		t.Fatalf("create: %+v %v", p, err)
	}
	if _, err := s.Put(ctx, migrate.VersionPolicy{Platform: "android", Minimum: "6.0"}); !errors.Is(err, migrate.ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := s.Put(ctx, migrate.VersionPolicy{Platform: "android", Minimum: "x"}); !errors.Is(err, migrate.ErrInvalidPolicy) {
		t.Fatalf("invalid: %v", err)
	}
	stale := p
	p.Recommended = "5.5"
	if p, err = s.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	stale.Recommended = "5.1"
	if _, err := s.Put(ctx, stale); !errors.Is(err, migrate.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	out, err := s.Modify(ctx, "android", func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) {
		p.Blocked = append(p.Blocked, migrate.BlockedVersion{Version: "4.9.9", Reason: "crash", Since: time.Now()})
		return p, nil
	})
	if err != nil || len(out.Blocked) != 1 || out.Recommended != "5.5" {
		t.Fatalf("modify: %+v %v", out, err)
	}
	if _, err := s.Modify(ctx, "ios", func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) { p.Minimum = "2.0"; return p, nil }); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(ctx)
	if err != nil || len(all) != 2 || all[0].Platform != "android" || all[1].Minimum != "2.0" {
		t.Fatalf("list: %+v %v", all, err)
	}
}
