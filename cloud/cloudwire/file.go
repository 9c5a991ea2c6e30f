package cloudwire

import (
	"encoding/hex"
	"strings"
)

// Files (v9). A file message is an ordinary message (Send, Event, Message)
// whose File names an attachment the service holds: the client first
// uploads the bytes over HTTP (PUT FilesPath, see PROTOCOL.md), gets a File
// back, and sends it with a caption in Text. The bytes never travel in a
// frame.
const (
	// FilesPath is the HTTP path of uploads (PUT FilesPath?to=USER or
	// ?conv=CONV&name=NAME) and, followed by "/" and a File.ID, of
	// downloads (GET).
	FilesPath = "/v1/files"
	// HeaderSHA256 carries the lowercase hex SHA-256 an upload must hash
	// to, and the hash of a download.
	HeaderSHA256 = "X-Ferry-Sha256"
	// MaxFileNameSize bounds File.Name in bytes (as legacy chat v3 does).
	MaxFileNameSize = 255
	// maxMIMESize bounds File.MIME in bytes.
	maxMIMESize = 127
)

// File is an attachment the service stores: ID is assigned by the service
// at upload (the bridge uses the legacy offer's id), Size is in bytes and
// SHA256 is the lowercase hex SHA-256 of the bytes.
type File struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	MIME   string `json:"mime,omitempty"`
	SHA256 string `json:"sha256"`
}

// Validate checks a File's fields: an id like a message id, a printable
// name of 1 to MaxFileNameSize bytes without a path, a size of at least
// 0, a short printable MIME type and a 64-digit lowercase hex SHA-256.
func (f File) Validate() error {
	switch {
	case !ValidMsgID(f.ID):
		return invalid("file.id", "must be 1-64 of [A-Za-z0-9_-]")
	case !ValidFileName(f.Name):
		return invalid("file.name", "must be 1-255 printable bytes without / or \\")
	case f.Size < 0:
		return invalid("file.size", "is negative")
	case len(f.MIME) > maxMIMESize || !printable(f.MIME):
		return invalid("file.mime", "too long or not printable")
	case !ValidSHA256(f.SHA256):
		return invalid("file.sha256", "must be 64 lowercase hex digits")
	}
	return nil
}

// ValidFileName reports whether s can be a File.Name: 1 to
// MaxFileNameSize printable bytes, no path separator, not "." or "..".
func ValidFileName(s string) bool {
	return s != "" && len(s) <= MaxFileNameSize && printable(s) &&
		!strings.ContainsAny(s, `/\`) && s != "." && s != ".."
}

// ValidSHA256 reports whether s is a lowercase hex SHA-256 (64 digits).
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	b, err := hex.DecodeString(s)
	return err == nil && hex.EncodeToString(b) == s
}
