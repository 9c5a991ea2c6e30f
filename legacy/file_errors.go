package legacy

import "errors"

// Errors of the chat v3 file transfer (file.go). They sit next to the code
// that returns them rather than in errors.go only because that file is
// shared; they are sentinels like the others, matched with errors.Is.
var (
	// ErrFileTooLarge is returned by Device.OfferFile when the file exceeds
	// legacywire.MaxFileSize. A receiving device that takes less refuses the
	// offer with legacywire.CodeFileTooLarge (a *RefusedError).
	ErrFileTooLarge = errors.New("legacy: file too large")

	// ErrFileHash is returned by Device.AcceptFile when the received bytes
	// do not hash to the offer's SHA-256: the partial file is discarded.
	ErrFileHash = errors.New("legacy: file hash mismatch")

	// ErrUnknownFile is returned by Device.AcceptFile and DeclineFile for a
	// file ID this device holds no offer for.
	ErrUnknownFile = errors.New("legacy: no such file offer")
)
