package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/ferrygw/ferry/migrate"
)

// TestExampleCampaign keeps the campaign file the README's tour uses valid.
func TestExampleCampaign(t *testing.T) {
	b, err := os.ReadFile("testdata/campaign-spring.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c migrate.Campaign
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("example campaign: %v", err)
	}
	c.State = migrate.CampaignDraft
	if err := c.Validate(); err != nil {
		t.Fatalf("example campaign: %v", err)
	}
}
