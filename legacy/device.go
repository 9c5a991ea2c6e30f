package legacy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// DedupCapacity is how many recent message IDs a device remembers to filter
// duplicates.
const DedupCapacity = 4096

// DeviceConfig configures a legacy device (client).
type DeviceConfig struct {
	// Host is the device's libp2p host.
	Host host.Host
	// Cert is the device's certificate; it must name Host.ID().
	Cert legacywire.Certificate
	// Authority is the key peers' certificates must be signed by.
	Authority ed25519.PublicKey
	// Supernode is the directory server.
	Supernode peer.AddrInfo
	// Fallbacks are further supernodes the directory client fails over to
	// (NewDirectory).
	Fallbacks []peer.AddrInfo
	// Logger receives the device's logs, tagged component=legacy.device; nil
	// discards them.
	Logger *slog.Logger
	// OnMessage, when set, is called once per message ID received (repeats
	// are acked without calling it again), on the stream's goroutine.
	OnMessage func(msg legacywire.ChatMessage)
	// MaxChatVersion is the highest chat version the device speaks: 1 makes
	// an old client (chat v1 only, one device tried at a time), 2 a client
	// without file transfer, 0 means LatestChatVersion.
	MaxChatVersion int
	// Revocations is the device's revocation list, refreshed by
	// SyncRevocations; nil makes a fresh one.
	Revocations *Revocations
	// OnReceipt, OnTyping and OnPresence, when set, receive the chat v2
	// signals addressed to this device's user, on the stream's goroutine.
	OnReceipt  func(r legacywire.Receipt)
	OnTyping   func(t legacywire.Typing)
	OnPresence func(p legacywire.Presence)
	// ChatLimiter, when set, rate-limits what each peer sends to this
	// device's chat handlers (ChatConfig.Limiter).
	ChatLimiter *PeerLimiter
	// OnFileOffer, when set, receives each chat v3 file offer addressed to
	// this device's user, once per file ID; the user answers with
	// AcceptFile or DeclineFile. OnFileDeclined receives the recipient's
	// decline of an offer this device made. OnFileProgress is called after
	// each chunk AcceptFile writes. All run on a stream's goroutine.
	OnFileOffer    func(o legacywire.FileOffer)
	OnFileDeclined func(a legacywire.FileAnswer)
	OnFileProgress func(fileID string, have, size int64)
	// MaxFileSize is the largest file offer the device takes: bigger ones
	// are refused with legacywire.CodeFileTooLarge. Default
	// DefaultMaxFileSize; at most legacywire.MaxFileSize counts.
	MaxFileSize int64
	// OnUndeliverable, when set, receives the supernode's reports of
	// messages this device's user sent that were dropped unread from the
	// offline store (expired), fetched at every Register.
	OnUndeliverable func(u legacywire.Undeliverable)
	// OnCall, when set, receives each incoming call (chat v2 and v3) once,
	// ringing, on the stream's goroutine: hand it off and answer with
	// Call.Accept, Reject or HangUp, without blocking here. A device
	// without OnCall refuses invites as unsupported (it takes no calls).
	OnCall func(c *Call)
	// RingTimeout is how long this device's outgoing calls ring before
	// they end as CallTimeout; default DefaultRingTimeout, at most
	// legacywire.MaxCallRing.
	RingTimeout time.Duration
	// Media, when set, gives the device a call media endpoint (NewMedia)
	// with this config: relays, timeouts, stats and limiter come from it;
	// the device fills in its certificate, the authority, its revocations
	// and which streams to accept (the caller's device of a call this
	// device answered). The caller opens the stream once a call is
	// accepted; both ends find it in Call.Media.
	Media *MediaConfig
	// History is what the device remembers of its user's messages, sent
	// and received, served to the bridge's backfill (ServeHistory); nil
	// makes one of DefaultHistoryCapacity on a chat v2+ device. A v1-only
	// device keeps none.
	History *History
}

// Validate reports whether the config can build a device.
func (c DeviceConfig) Validate() error {
	switch {
	case c.Host == nil:
		return fmt.Errorf("%w: device needs a host", ErrInvalidConfig)
	case c.Cert.PeerID != c.Host.ID().String():
		return fmt.Errorf("%w: certificate names %q, host is %s", ErrInvalidConfig, c.Cert.PeerID, c.Host.ID())
	case c.Cert.User == "":
		return fmt.Errorf("%w: certificate without a user", ErrInvalidConfig)
	case len(c.Authority) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: device needs an ed25519 authority key", ErrInvalidConfig)
	case c.Supernode.ID == "":
		return fmt.Errorf("%w: device needs a supernode", ErrInvalidConfig)
	}
	return nil
}

// Device is a legacy client: it registers with a supernode, sends chat v1
// messages to other users' devices (or to the bridge that routes for them),
// and receives messages addressed to its user.
type Device struct {
	cfg     DeviceConfig
	log     *slog.Logger
	dir     *Directory
	dedup   *dedup
	revoked *Revocations
	files   *fileTable
	calls   *callTable
	media   *Media      // nil without DeviceConfig.Media
	history *History    // nil on a v1-only device
	routes  routeCache  // lookups of users behind a live route (chat_reuse.go)
	chats   chatStreams // idle chat v2+ streams per peer (chat_reuse.go)

	mu          sync.Mutex
	subscribers map[peer.ID]string // presence subscribers: device → its user
}

// MaxPresenceSubscribers bounds the devices one device publishes its
// presence to.
const MaxPresenceSubscribers = 1024

// NewDevice registers the chat v1 handler on cfg.Host and returns the device.
func NewDevice(cfg DeviceConfig) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Device{
		cfg:         cfg,
		log:         componentLogger(cfg.Logger, "legacy.device").With("user", cfg.Cert.User),
		dir:         NewDirectory(cfg.Host, cfg.Cert, cfg.Supernode, cfg.Fallbacks...),
		dedup:       newDedup(DedupCapacity),
		files:       newFileTable(),
		calls:       newCallTable(),
		revoked:     cfg.Revocations,
		subscribers: make(map[peer.ID]string),
	}
	if d.revoked == nil {
		d.revoked = NewRevocations(cfg.Authority)
	}
	if cfg.Media != nil {
		mc := *cfg.Media
		mc.Cert, mc.Authority, mc.Revocations = &d.cfg.Cert, cfg.Authority, d.revoked
		mc.Accept, mc.OnStream = d.acceptMedia, d.onMediaStream
		if mc.Logger == nil {
			mc.Logger = cfg.Logger
		}
		m, err := NewMedia(cfg.Host, mc)
		if err != nil {
			return nil, err
		}
		d.media = m
	}
	if cfg.MaxChatVersion != 1 {
		d.history = cfg.History
		if d.history == nil {
			d.history = NewHistory(0)
		}
		ServeHistory(cfg.Host, HistoryConfig{
			Authority: cfg.Authority, User: cfg.Cert.User, History: d.history,
			Logger: cfg.Logger, Revocations: d.revoked, Limiter: cfg.ChatLimiter,
		})
	}
	HandleChat(cfg.Host, ChatConfig{
		Authority:   cfg.Authority,
		Logger:      cfg.Logger,
		Deliver:     d.deliver,
		OnFrame:     d.onFrame,
		ServeFile:   d.serveFile,
		Revocations: d.revoked,
		MaxVersion:  cfg.MaxChatVersion,
		Limiter:     cfg.ChatLimiter,
	})
	return d, nil
}

// User returns the device's user.
func (d *Device) User() string { return d.cfg.Cert.User }

// Notice is what the supernode told the device at its last registration,
// admitting it (the version policy's warning: show it to the user), ""
// when nothing. The same text arrives once per stage as a message from
// legacywire.NoticesUser.
func (d *Device) Notice() string { return d.dir.Notice() }

// Directory returns the device's directory client.
func (d *Device) Directory() *Directory { return d.dir }

// Register registers the device with its supernode and takes delivery of
// the messages held there for its user while no device was live, in order,
// each once (the duplicate filter drops repeats). With OnUndeliverable set,
// it then fetches the supernode's reports of messages its user sent that
// expired unread (op reports; a supernode too old to know the op is no
// error) and hands them to OnUndeliverable.
func (d *Device) Register(ctx context.Context) error {
	held, err := d.dir.RegisterFetch(ctx)
	if err != nil {
		return err
	}
	for _, m := range held {
		d.deliver(ctx, legacywire.Certificate{}, m)
	}
	if d.cfg.OnUndeliverable == nil {
		return nil
	}
	cert := d.cfg.Cert
	resp, err := d.dir.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpReports, Cert: &cert})
	if err != nil && !isRefusal(err, legacywire.CodeUnknownOp) {
		return fmt.Errorf("fetch undeliverable reports: %w", err)
	}
	for _, u := range resp.Undeliverable {
		d.cfg.OnUndeliverable(u)
	}
	return nil
}

// Send sends text to user to as a new message: a fresh UUIDv7 ID, From the
// device's user, SentAt now (UTC, milliseconds). See SendMessage.
func (d *Device) Send(ctx context.Context, to, text string) (legacywire.ChatMessage, legacywire.ChatAck, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return legacywire.ChatMessage{}, legacywire.ChatAck{}, fmt.Errorf("message id: %w", err)
	}
	msg := legacywire.ChatMessage{
		ID:     id.String(),
		From:   d.User(),
		To:     to,
		Text:   text,
		SentAt: time.Now().UTC().Truncate(time.Millisecond),
	}
	ack, err := d.SendMessage(ctx, msg)
	return msg, ack, err
}

// isRefusal reports whether err is a refusal with code.
func isRefusal(err error, code string) bool {
	var r *RefusedError
	return errors.As(err, &r) && r.Code == code
}

// SendMessage delivers a caller-made message, keeping its ID, so that a
// retry is recognized as a duplicate by the receiver. It looks the recipient
// up; the targets are the route's bridge alone when a route is live,
// otherwise each of the user's devices but this one. A chat v2 device fans
// the message out to every target (every device of the recipient gets it)
// and returns the first delivered ack; a v1-only device (MaxChatVersion 1)
// tries the targets in order until one acks delivery. When no device is live
// (none registered, or every attempt failed in transport) and no route
// exists, the supernode holds the message and the ack has Status
// legacywire.StatusStored. When none of that works, it returns the last refusal as a *RefusedError
// (with its ack), ErrUndeliverable when every attempt failed in transport,
// or ErrNoRoute when there was nobody to try.
//
// A lookup that resolved to a live route is remembered for RouteCacheTTL,
// and chat v2+ streams are kept open for the next message to the same peer
// (chat_reuse.go): a device sending to a user behind the bridge then makes
// no directory round trip and opens no stream per message.
func (d *Device) SendMessage(ctx context.Context, msg legacywire.ChatMessage) (legacywire.ChatAck, error) {
	if msg.ID == "" || msg.To == "" {
		return legacywire.ChatAck{}, errors.New("legacy: message needs an ID and a recipient")
	}
	look, cached, err := d.lookup(ctx, msg.To)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	ack, err := d.sendTo(ctx, look, msg)
	if cached && ctx.Err() == nil && (isRefusal(err, CodeNotHere) || (err != nil && !errors.Is(err, ErrRefused))) {
		// The remembered route moved or its peer went away: look again.
		d.routes.forget(msg.To)
		if look, _, err = d.lookup(ctx, msg.To); err != nil {
			return legacywire.ChatAck{}, err
		}
		return d.sendTo(ctx, look, msg)
	}
	return ack, err
}

// sendTo is SendMessage to the targets of look.
func (d *Device) sendTo(ctx context.Context, look Lookup, msg legacywire.ChatMessage) (legacywire.ChatAck, error) {
	targets, err := look.Targets()
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	var (
		refused legacywire.ChatAck
		errs    []error
	)
	var delivered *legacywire.ChatAck
	fanOut := d.cfg.MaxChatVersion != 1
	frame := legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg}
	for _, t := range targets {
		if t.ID == d.cfg.Host.ID() {
			continue
		}
		ack, err := d.sendFrame(ctx, t, frame)
		switch {
		case err != nil:
			d.log.Debug("chat attempt failed", "to", msg.To, "peer", t.ID, "err", err)
			errs = append(errs, err)
		case ack.Delivered():
			if !fanOut {
				return ack, nil
			}
			if delivered == nil {
				delivered = &ack
			}
		default:
			d.log.Debug("chat refused", "to", msg.To, "peer", t.ID, "code", ack.Code)
			refused = ack
		}
		if ctx.Err() != nil {
			break
		}
	}
	switch {
	case delivered != nil:
		d.sent(ctx, look, msg)
		return *delivered, nil
	case refused.Status == "" && (len(errs) > 0 || len(targets) == 0 || (len(targets) == 1 && targets[0].ID == d.cfg.Host.ID())) && look.Route == nil:
		// Nobody live to take it: have the supernode hold it.
		err := d.dir.Store(ctx, msg)
		if err == nil {
			d.sent(ctx, look, msg)
			return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusStored}, nil
		}
		if isRefusal(err, legacywire.CodeUnknownUser) && len(errs) == 0 {
			return legacywire.ChatAck{}, fmt.Errorf("%w: %s", ErrNoRoute, msg.To)
		}
		errs = append(errs, err)
	}
	switch {
	case refused.Status != "":
		return refused, &RefusedError{Code: refused.Code, Message: refused.Error}
	case len(errs) > 0:
		return legacywire.ChatAck{}, fmt.Errorf("%w: message %s to %s: %w", ErrUndeliverable, msg.ID, msg.To, errors.Join(errs...))
	default:
		return legacywire.ChatAck{}, fmt.Errorf("%w: %s", ErrNoRoute, msg.To)
	}
}

// sent is what a chat v2+ device does once a message of its user was
// delivered or stored: remember it for the bridge's backfill, and send the
// recipient's shadow mirror (if the lookup names one: the recipient is in
// shadow or ready) a copy. A mirror that fails never fails the send: the
// backfill finds what it missed.
func (d *Device) sent(ctx context.Context, look Lookup, msg legacywire.ChatMessage) {
	if d.history == nil {
		return
	}
	d.history.Add(msg)
	if _, err := MirrorMessage(ctx, d.cfg.Host, d.cfg.Cert, look, msg); err != nil {
		d.log.Debug("shadow copy not taken", "to", msg.To, "err", err)
	}
}

// deliver is the device's ChatConfig.Deliver: it accepts messages for its
// own user, once per ID.
func (d *Device) deliver(_ context.Context, _ legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck {
	if msg.To != d.User() {
		return refusedAck(msg.ID, legacywire.CodeWrongRecipient, fmt.Sprintf("this device serves %q", d.User()))
	}
	if d.dedup.add(msg.ID) {
		if d.history != nil {
			d.history.Add(msg)
		}
		if d.cfg.OnMessage != nil {
			d.cfg.OnMessage(msg)
		}
	}
	return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusDelivered}
}

// dedup remembers the last max message IDs, forgetting the oldest first.
// It grows with what it is given instead of reserving max entries up front:
// a device that receives little (most of a population) holds little.
type dedup struct {
	mu   sync.Mutex
	seen map[string]struct{}
	ring []string // arrival order; once full, next is the oldest
	max  int
	next int
}

func newDedup(capacity int) *dedup {
	return &dedup{seen: make(map[string]struct{}), max: capacity}
}

// add records id and reports whether it was new.
func (f *dedup) add(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.seen[id]; ok {
		return false
	}
	if len(f.ring) < f.max {
		f.ring = append(f.ring, id)
	} else {
		delete(f.seen, f.ring[f.next])
		f.ring[f.next] = id
		f.next = (f.next + 1) % f.max
	}
	f.seen[id] = struct{}{}
	return true
}
