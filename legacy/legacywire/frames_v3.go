package legacywire

import (
	"encoding/hex"
	"time"
)

// Chat v3 frame types (ChatFrame.Type). Chat v3 is chat v2 plus file
// offers; every v2 frame keeps its bytes.
const (
	// FrameFileOffer offers a file (FileOffer) to its recipient's device;
	// its ID is the file's ID. The ack says the device has the offer, not
	// that the user took it.
	FrameFileOffer = "file_offer"
	// FrameFileAccept asks the offering device for the file's bytes from
	// FileAnswer.Offset (0 for a new transfer, the bytes already held to
	// resume one). It is answered by its ack and then, when the ack is
	// delivered, by FrameFileChunk frames carrying the bytes from Offset to
	// the end of the file, in order and unacknowledged.
	FrameFileAccept = "file_accept"
	// FrameFileDecline tells the offering device that the recipient will
	// not take the file; the offer is forgotten.
	FrameFileDecline = "file_decline"
	// FrameFileChunk carries bytes of an accepted file (FileChunk), written
	// by the offering device after its ack of a FrameFileAccept. It has no
	// ID and is never acked.
	FrameFileChunk = "file_chunk"
)

// File size bounds. A device may accept less (its own maximum file size);
// it refuses a bigger offer with CodeFileTooLarge.
const (
	// MaxFileSize is the largest FileOffer.Size the wire allows: 4 GiB.
	MaxFileSize = 4 << 30
	// MaxFileChunk is the largest FileOffer.ChunkSize and FileChunk.Data:
	// base64 in JSON, a full chunk still fits a frame (MaxFrameSize).
	MaxFileChunk = 32 << 10
	// MaxFileNameLen bounds FileOffer.Name, in bytes.
	MaxFileNameLen = 255
)

// FileOffer is one file a user offers to another. ID is a UUIDv7 assigned
// by the offering device, like a message ID; SHA256 is the lowercase hex
// SHA-256 of the whole file, which the receiver checks at the end of the
// transfer.
type FileOffer struct {
	ID        string    `json:"id"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ChunkSize int       `json:"chunk_size"`
	SentAt    time.Time `json:"sent_at"`
}

// Valid reports whether the offer is within the wire's bounds: an ID, both
// users, a name of at most MaxFileNameLen bytes, a size in [0,
// MaxFileSize], a chunk size in [1, MaxFileChunk] and a 64-digit lowercase
// hex SHA-256.
func (o FileOffer) Valid() bool {
	if o.ID == "" || o.From == "" || o.To == "" || o.Name == "" || len(o.Name) > MaxFileNameLen {
		return false
	}
	if o.Size < 0 || o.Size > MaxFileSize || o.ChunkSize < 1 || o.ChunkSize > MaxFileChunk {
		return false
	}
	if len(o.SHA256) != 64 {
		return false
	}
	b, err := hex.DecodeString(o.SHA256)
	return err == nil && hex.EncodeToString(b) == o.SHA256
}

// FileAnswer is the recipient's answer to a FileOffer: From is the
// answering user (the offer's To), To the offering user. Offset, on
// FrameFileAccept, is where the transfer starts; Reason, on
// FrameFileDecline, optionally says why to a human.
type FileAnswer struct {
	FileID string `json:"file_id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Offset int64  `json:"offset,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// FileChunk is Data, the file's bytes at Offset.
type FileChunk struct {
	FileID string `json:"file_id"`
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`
}

// validFileFrame reports whether a chat v3 frame's payload is usable; the
// caller checked that exactly that payload is set.
func validFileFrame(f ChatFrame) bool {
	switch f.Type {
	case FrameFileOffer:
		return f.FileOffer != nil && f.ID == f.FileOffer.ID && f.FileOffer.Valid()
	case FrameFileAccept, FrameFileDecline:
		a := f.FileAnswer
		return a != nil && f.ID != "" && a.FileID != "" && a.From != "" && a.To != "" &&
			a.Offset >= 0 && a.Offset <= MaxFileSize
	case FrameFileChunk:
		c := f.FileChunk
		return c != nil && c.FileID != "" && c.Offset >= 0 && c.Offset <= MaxFileSize &&
			len(c.Data) > 0 && len(c.Data) <= MaxFileChunk
	}
	return false
}

// V3Only reports whether frames of type typ exist only from chat v3 on:
// a v2 stream refuses them (CodeUnsupported).
func V3Only(typ string) bool {
	switch typ {
	case FrameFileOffer, FrameFileAccept, FrameFileDecline, FrameFileChunk:
		return true
	}
	return false
}
