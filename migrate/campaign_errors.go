package migrate

import "errors"

var (
	// ErrInvalidCampaign is returned by Campaign.Validate and
	// CheckCampaignName, and by the campaign stores and the admin API that
	// call them, for a definition that cannot run.
	ErrInvalidCampaign = errors.New("migrate: invalid campaign")

	// ErrCampaignState is returned by Campaign.Lifecycle when a command is
	// not allowed in the campaign's state (resuming a running campaign).
	ErrCampaignState = errors.New("migrate: command not allowed in this campaign state")

	// ErrCampaignNotFound is returned by campaign stores
	// (migratestore.Campaigns.Get) when no campaign has the name.
	ErrCampaignNotFound = errors.New("migrate: campaign not found")

	// ErrCampaignExists is returned by campaign stores
	// (migratestore.Campaigns.Create) when the name is taken.
	ErrCampaignExists = errors.New("migrate: campaign already exists")
)
