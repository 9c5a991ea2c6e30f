package legacy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// File transfer bounds of a device (chat v3).
const (
	// DefaultMaxFileSize is DeviceConfig.MaxFileSize when zero: the largest
	// offer a device takes.
	DefaultMaxFileSize = 64 << 20
	// FileChunkSize is the chunk size a device offers its files in.
	FileChunkSize = legacywire.MaxFileChunk
	// MaxFileOffers bounds the offers a device keeps, in each direction;
	// beyond it the oldest expired ones go first, then new ones are refused.
	MaxFileOffers = 256
	// FileOfferTTL is how long an offer stays servable (outgoing) and
	// acceptable (incoming).
	FileOfferTTL = 24 * time.Hour
)

// FileSource is what ChatConfig.ServeFile hands the chat handler for an
// accepted file: R holds the file's bytes from Offset to Size, which the
// handler writes as file_chunk frames of at most ChunkSize bytes, then
// closes R.
type FileSource struct {
	FileID    string
	Offset    int64
	Size      int64
	ChunkSize int
	R         io.ReadCloser
}

// close closes src's reader; nil-safe.
func (src *FileSource) close() {
	if src != nil && src.R != nil {
		_ = src.R.Close()
	}
}

// writeChunks writes src's bytes on s as file_chunk frames, each under its
// own write deadline, and closes src.
func (src *FileSource) writeChunks(s network.Stream) error {
	defer src.close()
	buf := make([]byte, min(max(src.ChunkSize, 1), legacywire.MaxFileChunk))
	for off := src.Offset; off < src.Size; {
		n := int(min(int64(len(buf)), src.Size-off))
		if _, err := io.ReadFull(src.R, buf[:n]); err != nil {
			return fmt.Errorf("read file %s at %d: %w", src.FileID, off, err)
		}
		_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
		f := legacywire.ChatFrame{Type: legacywire.FrameFileChunk, FileChunk: &legacywire.FileChunk{FileID: src.FileID, Offset: off, Data: buf[:n]}}
		if err := legacywire.WriteFrame(s, f); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// FileNoticeFrame is what a file offer becomes for a peer that cannot take
// files (chat v1 or v2, or a v3 peer that refuses it as unsupported, such as
// the bridge): a message with the offer's ID telling the user, in words,
// who offered which file and how big it is.
func FileNoticeFrame(o legacywire.FileOffer) legacywire.ChatFrame {
	msg := legacywire.ChatMessage{
		ID:   o.ID,
		From: o.From,
		To:   o.To,
		Text: fmt.Sprintf("%s offered you a file: %q (%s). This app version cannot receive files; update it to get them.",
			o.From, o.Name, humanSize(o.Size)),
		SentAt: o.SentAt,
	}
	return legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg}
}

// humanSize writes n bytes for a person: "512 bytes", "68.4 KiB", "3.0 MiB".
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

// outgoingFile is a file this device offered.
type outgoingFile struct {
	offer   legacywire.FileOffer
	path    string
	expires time.Time
}

// incomingFile is an offer this device received, from the device peer.
type incomingFile struct {
	offer   legacywire.FileOffer
	peer    peer.ID
	expires time.Time
}

// fileTable holds a device's offers in both directions, bounded.
type fileTable struct {
	mu  sync.Mutex
	out map[string]outgoingFile
	in  map[string]incomingFile
}

func newFileTable() *fileTable {
	return &fileTable{out: make(map[string]outgoingFile), in: make(map[string]incomingFile)}
}

// room drops m's expired entries when it is full and reports whether there
// is room for one more.
func room[V any](m map[string]V, expires func(V) time.Time, now time.Time) bool {
	if len(m) < MaxFileOffers {
		return true
	}
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
	return len(m) < MaxFileOffers
}

// addOut records an outgoing offer; false when the table is full.
func (t *fileTable) addOut(f outgoingFile) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.out[f.offer.ID]; !ok && !room(t.out, func(o outgoingFile) time.Time { return o.expires }, time.Now()) {
		return false
	}
	t.out[f.offer.ID] = f
	return true
}

// addIn records an incoming offer: added reports whether it was new, full
// whether there was no room.
func (t *fileTable) addIn(f incomingFile) (added, full bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.in[f.offer.ID]; ok {
		return false, false
	}
	if !room(t.in, func(i incomingFile) time.Time { return i.expires }, time.Now()) {
		return false, true
	}
	t.in[f.offer.ID] = f
	return true, false
}

// getOut returns the live outgoing offer id.
func (t *fileTable) getOut(id string) (outgoingFile, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.out[id]
	return f, ok && time.Now().Before(f.expires)
}

// getIn returns the live incoming offer id.
func (t *fileTable) getIn(id string) (incomingFile, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.in[id]
	return f, ok && time.Now().Before(f.expires)
}

func (t *fileTable) dropOut(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.out, id)
}

func (t *fileTable) dropIn(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.in, id)
}

// OfferResult says which devices of the recipient a file offer reached.
type OfferResult struct {
	// Offered counts devices that took the offer itself (chat v3).
	Offered int
	// Notified counts devices that got the offer as a text notice
	// (FileNoticeFrame): chat v1 and v2 clients, and v3 peers that do not
	// take files (the bridge).
	Notified int
}

// OfferFile offers the file at path to every device of user to, as a
// chat v3 offer: a fresh UUIDv7 file ID, the file's base name, size and
// SHA-256, chunks of FileChunkSize. The device keeps serving it to the
// recipient's devices (AcceptFile on their side) for FileOfferTTL; the
// file must not change meanwhile (a receiver would refuse it: ErrFileHash).
//
// Devices that cannot take files get a text notice instead, never an error
// (OfferResult.Notified). The error is nil when at least one device got the
// offer or the notice; otherwise it is the last refusal as a *RefusedError
// (legacywire.CodeFileTooLarge when the recipient takes smaller files),
// ErrUndeliverable, or ErrNoRoute. It is ErrNotSupported on a device that
// speaks chat v2 or less and ErrFileTooLarge beyond legacywire.MaxFileSize.
func (d *Device) OfferFile(ctx context.Context, to, path string) (legacywire.FileOffer, OfferResult, error) {
	if v := d.cfg.MaxChatVersion; v != 0 && v < 3 {
		return legacywire.FileOffer{}, OfferResult{}, fmt.Errorf("%w: this device speaks chat v%d, files need v3", ErrNotSupported, v)
	}
	offer, err := d.newOffer(to, path)
	if err != nil {
		return legacywire.FileOffer{}, OfferResult{}, err
	}
	if !d.files.addOut(outgoingFile{offer: offer, path: path, expires: time.Now().Add(FileOfferTTL)}) {
		return offer, OfferResult{}, fmt.Errorf("legacy: %d files already on offer", MaxFileOffers)
	}
	targets, err := d.targetsOf(ctx, to)
	if err != nil {
		return offer, OfferResult{}, err
	}
	var (
		res     OfferResult
		refused *RefusedError
		errs    []error
	)
	frame := legacywire.ChatFrame{Type: legacywire.FrameFileOffer, ID: offer.ID, FileOffer: &offer}
	for _, t := range targets {
		ack, v, err := SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, t, d.cfg.MaxChatVersion, frame)
		if err == nil && v == 3 && ack.Code == legacywire.CodeUnsupported {
			// A v3 peer that takes no files (the bridge): tell the user.
			ack, _, err = SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, t, d.cfg.MaxChatVersion, FileNoticeFrame(offer))
			v = 0
		}
		switch {
		case err != nil:
			errs = append(errs, err)
		case ack.Delivered() && v == 3:
			res.Offered++
		case ack.Delivered():
			res.Notified++
		default:
			refused = &RefusedError{Code: ack.Code, Message: ack.Error}
		}
	}
	switch {
	case res.Offered+res.Notified > 0:
		return offer, res, nil
	case refused != nil:
		return offer, res, refused
	case len(errs) > 0:
		return offer, res, fmt.Errorf("%w: file %s to %s: %w", ErrUndeliverable, offer.ID, to, errors.Join(errs...))
	}
	return offer, res, fmt.Errorf("%w: %s", ErrNoRoute, to)
}

// newOffer hashes the file at path into an offer to user to.
func (d *Device) newOffer(to, path string) (legacywire.FileOffer, error) {
	f, err := os.Open(path)
	if err != nil {
		return legacywire.FileOffer{}, fmt.Errorf("legacy: offer file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return legacywire.FileOffer{}, fmt.Errorf("legacy: offer file: %w", err)
	}
	if st.Size() > legacywire.MaxFileSize {
		return legacywire.FileOffer{}, fmt.Errorf("%w: %s is %d bytes, at most %d", ErrFileTooLarge, path, st.Size(), int64(legacywire.MaxFileSize))
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return legacywire.FileOffer{}, fmt.Errorf("legacy: hash %s: %w", path, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return legacywire.FileOffer{}, err
	}
	offer := legacywire.FileOffer{
		ID: id.String(), From: d.User(), To: to, Name: truncateName(st.Name()), Size: st.Size(),
		SHA256: hex.EncodeToString(sum.Sum(nil)), ChunkSize: FileChunkSize, SentAt: nowMilli(),
	}
	if !offer.Valid() {
		return legacywire.FileOffer{}, fmt.Errorf("legacy: cannot offer %s as %+v", path, offer)
	}
	return offer, nil
}

// truncateName cuts a file name to legacywire.MaxFileNameLen bytes on a
// rune boundary.
func truncateName(name string) string {
	if len(name) <= legacywire.MaxFileNameLen {
		return name
	}
	cut := 0
	for i := range name {
		if i > legacywire.MaxFileNameLen {
			break
		}
		cut = i
	}
	return name[:cut]
}

// DeclineFile tells the offering device that this device's user will not
// take the file, and forgets the offer.
func (d *Device) DeclineFile(ctx context.Context, fileID, reason string) error {
	in, ok := d.files.getIn(fileID)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownFile, fileID)
	}
	d.files.dropIn(fileID)
	f := legacywire.ChatFrame{Type: legacywire.FrameFileDecline, ID: uuid.Must(uuid.NewV7()).String(), FileAnswer: &legacywire.FileAnswer{
		FileID: fileID, From: d.User(), To: in.offer.From, Reason: reason,
	}}
	ack, _, err := SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, d.peerAddrs(in.peer), 3, f)
	if err != nil {
		return err
	}
	if !ack.Delivered() {
		return &RefusedError{Code: ack.Code, Message: ack.Error}
	}
	return nil
}

// AcceptFile takes the offered file fileID from the offering device and
// writes it to path. The bytes go to path+".part" first; when a transfer
// is cut (the stream fails, ctx ends), what arrived stays there, and the
// next AcceptFile of the same file resumes from its end: the accept tells
// the offering device that offset. At the end the whole file is checked
// against the offer's SHA-256: on a match it is renamed to path, otherwise
// the partial file is removed and the error matches ErrFileHash.
func (d *Device) AcceptFile(ctx context.Context, fileID, path string) error {
	in, ok := d.files.getIn(fileID)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownFile, fileID)
	}
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("legacy: accept file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("legacy: accept file: %w", err)
	}
	offset := st.Size()
	if offset > in.offer.Size {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("legacy: accept file: %w", err)
		}
		offset = 0
	}
	if offset < in.offer.Size {
		if err := d.fetchFile(ctx, in, f, offset); err != nil {
			return err // the partial file stays for a resume
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("legacy: accept file: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("legacy: accept file: %w", err)
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return fmt.Errorf("legacy: hash received file: %w", err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != in.offer.SHA256 {
		_ = f.Close()
		_ = os.Remove(part)
		return fmt.Errorf("%w: file %s (%q) hashes to %s, the offer says %s; the partial file was discarded",
			ErrFileHash, fileID, in.offer.Name, got, in.offer.SHA256)
	}
	if err := os.Rename(part, path); err != nil {
		return fmt.Errorf("legacy: accept file: %w", err)
	}
	d.files.dropIn(fileID)
	return nil
}

// fetchFile asks the offering device for in's bytes from offset and writes
// them to f at their offsets.
func (d *Device) fetchFile(ctx context.Context, in incomingFile, f *os.File, offset int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, v, err := openChat(ctx, d.cfg.Host, d.peerAddrs(in.peer), 3)
	if err != nil {
		return err
	}
	stop := resetOnCancel(ctx, s)
	defer stop()
	if v != 3 {
		_ = s.Reset()
		return fmt.Errorf("%w: the offering device now speaks chat v%d", ErrProtocol, v)
	}
	_ = s.SetDeadline(time.Now().Add(ChatRoundTripTimeout))
	accept := legacywire.ChatFrame{Type: legacywire.FrameFileAccept, ID: uuid.Must(uuid.NewV7()).String(), FileAnswer: &legacywire.FileAnswer{
		FileID: in.offer.ID, From: d.User(), To: in.offer.From, Offset: offset,
	}}
	r := bufio.NewReader(s)
	ack, err := chatExchangeV2(s, r, d.cfg.Cert, accept)
	if err != nil {
		_ = s.Reset()
		return fmt.Errorf("accept file %s: %w", in.offer.ID, err)
	}
	if !ack.Delivered() {
		_ = s.Reset()
		return &RefusedError{Code: ack.Code, Message: ack.Error}
	}
	for offset < in.offer.Size {
		_ = s.SetReadDeadline(time.Now().Add(ChatReadTimeout))
		var fr legacywire.ChatFrame
		err := ctx.Err() // chunks already buffered must not outlive a cancel
		if err == nil {
			err = legacywire.ReadFrame(r, &fr)
		}
		if err != nil {
			_ = s.Reset()
			if ctx.Err() != nil && err != ctx.Err() {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			return fmt.Errorf("file %s cut at %d of %d bytes: %w", in.offer.ID, offset, in.offer.Size, err)
		}
		c := fr.FileChunk
		if fr.Type != legacywire.FrameFileChunk || !fr.Valid() || c.FileID != in.offer.ID || c.Offset != offset ||
			len(c.Data) > in.offer.ChunkSize || offset+int64(len(c.Data)) > in.offer.Size {
			_ = s.Reset()
			return fmt.Errorf("%w: unexpected frame %q in file %s at %d", ErrProtocol, fr.Type, in.offer.ID, offset)
		}
		if _, err := f.WriteAt(c.Data, offset); err != nil {
			_ = s.Reset()
			return fmt.Errorf("legacy: write received file: %w", err)
		}
		offset += int64(len(c.Data))
		if d.cfg.OnFileProgress != nil {
			d.cfg.OnFileProgress(in.offer.ID, offset, in.offer.Size)
		}
	}
	_ = s.Close()
	return nil
}

// peerAddrs is what the device's host knows of p's addresses.
func (d *Device) peerAddrs(p peer.ID) peer.AddrInfo {
	return peer.AddrInfo{ID: p, Addrs: d.cfg.Host.Peerstore().Addrs(p)}
}

// serveFile is the device's ChatConfig.ServeFile: it serves its own
// outgoing offers to their recipient's devices, from the asked offset.
func (d *Device) serveFile(_ context.Context, _ legacywire.Certificate, a legacywire.FileAnswer) (legacywire.ChatAck, *FileSource) {
	out, ok := d.files.getOut(a.FileID)
	if !ok || out.offer.To != a.From {
		return refusedAck("", legacywire.CodeUnknownFile, fmt.Sprintf("no file %s offered to %q", a.FileID, a.From)), nil
	}
	if a.Offset > out.offer.Size {
		return refusedAck("", legacywire.CodeUnknownFile, fmt.Sprintf("offset %d is beyond the file's %d bytes", a.Offset, out.offer.Size)), nil
	}
	f, err := os.Open(out.path)
	if err == nil {
		_, err = f.Seek(a.Offset, io.SeekStart)
		if err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		d.log.Warn("offered file unreadable", "file", a.FileID, "err", err)
		return refusedAck("", legacywire.CodeUnavailable, "the offered file cannot be read any more"), nil
	}
	return legacywire.ChatAck{Status: legacywire.StatusDelivered}, &FileSource{
		FileID: a.FileID, Offset: a.Offset, Size: out.offer.Size, ChunkSize: out.offer.ChunkSize, R: f,
	}
}

// onFileFrame takes a file_offer or file_decline addressed to this device.
func (d *Device) onFileFrame(from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	switch f.Type {
	case legacywire.FrameFileOffer:
		o := *f.FileOffer
		if o.To != d.User() {
			return refusedAck(f.ID, legacywire.CodeWrongRecipient, fmt.Sprintf("this device serves %q, not %q", d.User(), o.To))
		}
		if o.Size > d.maxFileSize() {
			return refusedAck(f.ID, legacywire.CodeFileTooLarge, fmt.Sprintf("file of %d bytes, this device takes at most %d", o.Size, d.maxFileSize()))
		}
		pid, err := peer.Decode(from.PeerID)
		if err != nil {
			return refusedAck(f.ID, legacywire.CodeBadCertificate, "certificate peer id does not parse")
		}
		added, full := d.files.addIn(incomingFile{offer: o, peer: pid, expires: time.Now().Add(FileOfferTTL)})
		if full {
			return refusedAck(f.ID, legacywire.CodeUnavailable, "too many file offers pending")
		}
		if added && d.cfg.OnFileOffer != nil {
			d.cfg.OnFileOffer(o)
		}
	case legacywire.FrameFileDecline:
		a := *f.FileAnswer
		out, ok := d.files.getOut(a.FileID)
		if !ok || out.offer.To != a.From {
			return refusedAck(f.ID, legacywire.CodeUnknownFile, fmt.Sprintf("no file %s offered to %q", a.FileID, a.From))
		}
		d.files.dropOut(a.FileID)
		if d.cfg.OnFileDeclined != nil {
			d.cfg.OnFileDeclined(a)
		}
	}
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

func (d *Device) maxFileSize() int64 {
	if d.cfg.MaxFileSize > 0 {
		return d.cfg.MaxFileSize
	}
	return DefaultMaxFileSize
}
