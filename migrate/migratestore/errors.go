package migratestore

import "errors"

// ErrRunning is returned by Store.Run when the store is already running: one
// Store feeds its State through one watch.
var ErrRunning = errors.New("migratestore: already running")

// ErrWatchEnded is returned by Store.Run when the bucket watch stops before
// its context is done (for example, the connection was closed).
var ErrWatchEnded = errors.New("migratestore: bucket watch ended")

// ErrChainTooLong is returned by Audit.Query when telling which changes
// landed would read more than maxChainReads links of their chains; a
// narrower since shortens the walk.
var ErrChainTooLong = errors.New("migratestore: audit chain longer than one query reads")

// The store also returns the domain's sentinels: migrate.ErrNotFound,
// migrate.ErrConflict, migrate.ErrInvalidUserID, migrate.ErrInvalidDevice and
// *migrate.TransitionError.
