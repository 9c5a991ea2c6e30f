package legacy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Directory is the client side of the directory protocol, speaking as the
// device whose certificate is self to one supernode at a time, failing over
// to the next one it knows when a supernode cannot be reached.
type Directory struct {
	h          host.Host
	self       legacywire.Certificate
	supernodes []peer.AddrInfo
	preferred  atomic.Int64           // index of the supernode that last answered
	notice     atomic.Pointer[string] // the last registration's notice
}

// Notice is what the supernode told the device at its last registration
// (legacywire.DirResponse.Notice: the version policy's warning), "" when
// nothing.
func (d *Directory) Notice() string {
	if p := d.notice.Load(); p != nil {
		return *p
	}
	return ""
}

// NewDirectory returns a client of supernode for the device h, certified by
// self. Fallbacks are further supernodes of the same directory, tried in
// order when the current one fails in transport (a refusal is an answer and
// does not fail over); the client sticks to the last one that answered.
func NewDirectory(h host.Host, self legacywire.Certificate, supernode peer.AddrInfo, fallbacks ...peer.AddrInfo) *Directory {
	return &Directory{h: h, self: self, supernodes: append([]peer.AddrInfo{supernode}, fallbacks...)}
}

// Supernode returns the supernode the client currently talks to.
func (d *Directory) Supernode() peer.AddrInfo {
	return d.supernodes[int(d.preferred.Load())%len(d.supernodes)]
}

// Register registers the device with the host's listen addresses. The record
// expires after the supernode's RecordTTL unless registered again. A refusal
// is a *RefusedError, except a retired client version: that is an
// *UpgradeRequiredError carrying the notice, and the caller must stop
// registering.
func (d *Directory) Register(ctx context.Context) error {
	_, err := d.register(ctx, false)
	return err
}

// RegisterFetch registers like Register and takes the messages the
// supernode held for the user while no device was live, oldest first. The
// supernode forgets them once its answer is written: the caller must keep
// them (Device.Register hands them to OnMessage).
func (d *Directory) RegisterFetch(ctx context.Context) ([]legacywire.ChatMessage, error) {
	return d.register(ctx, true)
}

func (d *Directory) register(ctx context.Context, fetch bool) ([]legacywire.ChatMessage, error) {
	addrs := make([]string, 0, len(d.h.Addrs()))
	for _, a := range d.h.Addrs() {
		addrs = append(addrs, a.String())
	}
	cert := d.self
	resp, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpRegister, Cert: &cert, Addrs: addrs, Fetch: fetch})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", d.self.User, err)
	}
	d.notice.Store(&resp.Notice)
	return resp.Messages, nil
}

// Store asks the supernode to hold msg until a device of msg.To registers.
func (d *Directory) Store(ctx context.Context, msg legacywire.ChatMessage) error {
	cert := d.self
	if _, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpStore, Cert: &cert, Message: &msg}); err != nil {
		return fmt.Errorf("store message %s for %s: %w", msg.ID, msg.To, err)
	}
	return nil
}

// Lookup is what the directory knows about a user.
type Lookup struct {
	// Devices are the user's live device records.
	Devices []legacywire.DeviceRecord
	// Route is the user's live route record, if any.
	Route *legacywire.RouteRecord
	// Mirror is the user's live shadow route (legacywire.RouteMirror), if
	// any: where a chat v2+ sender mirrors its messages to the user
	// (MirrorMessage). Targets never includes it.
	Mirror *legacywire.RouteRecord
}

// Lookup asks the supernode for user's devices and route.
func (d *Directory) Lookup(ctx context.Context, user string) (Lookup, error) {
	cert := d.self
	resp, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpLookup, Cert: &cert, User: user})
	if err != nil {
		return Lookup{}, fmt.Errorf("lookup %s: %w", user, err)
	}
	return Lookup{Devices: resp.Devices, Route: resp.Route, Mirror: resp.Mirror}, nil
}

// PublishRoute submits an authority-signed route record, of either kind
// (home route or shadow mirror). A record whose Seq is not above the stored
// one of its kind is refused with legacywire.CodeStaleRoute.
func (d *Directory) PublishRoute(ctx context.Context, r legacywire.RouteRecord) error {
	cert := d.self
	if _, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpRoute, Cert: &cert, Route: &r}); err != nil {
		return fmt.Errorf("publish route for %s: %w", r.User, err)
	}
	return nil
}

// Revoke submits an authority-signed revocation to the supernode.
func (d *Directory) Revoke(ctx context.Context, r legacywire.Revocation) error {
	cert := d.self
	if _, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpRevoke, Cert: &cert, Revocation: &r}); err != nil {
		return fmt.Errorf("revoke %s: %w", r.PeerID, err)
	}
	return nil
}

// Revocations fetches the supernode's revocations still in force. The caller
// verifies them (Revocations.Add does).
func (d *Directory) Revocations(ctx context.Context) ([]legacywire.Revocation, error) {
	cert := d.self
	resp, err := d.roundTrip(ctx, legacywire.DirRequest{Op: legacywire.OpRevocations, Cert: &cert})
	if err != nil {
		return nil, fmt.Errorf("fetch revocations: %w", err)
	}
	return resp.Revocations, nil
}

// roundTrip sends req to the preferred supernode and, when that fails in
// transport, to each other supernode in turn. A request that was written but
// not answered may have taken effect at the failed supernode; every op is
// safe to repeat (register refreshes, store and route are idempotent, the
// rest only read), except a register with Fetch whose answer was lost: the
// held messages are then requeued at that supernode when its write fails.
func (d *Directory) roundTrip(ctx context.Context, req legacywire.DirRequest) (legacywire.DirResponse, error) {
	first := int(d.preferred.Load())
	var errs []error
	for i := range d.supernodes {
		idx := (first + i) % len(d.supernodes)
		resp, err := d.roundTripTo(ctx, d.supernodes[idx], req)
		if err == nil || errors.Is(err, ErrRefused) || ctx.Err() != nil {
			if err == nil || errors.Is(err, ErrRefused) {
				d.preferred.Store(int64(idx))
			}
			return resp, err
		}
		errs = append(errs, err)
	}
	return legacywire.DirResponse{}, errors.Join(errs...)
}

// roundTripTo sends one request to sn on a fresh stream and reads the
// response.
func (d *Directory) roundTripTo(ctx context.Context, sn peer.AddrInfo, req legacywire.DirRequest) (legacywire.DirResponse, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, DirectoryStreamTimeout))
	defer cancel()
	if err := d.h.Connect(ctx, sn); err != nil {
		return legacywire.DirResponse{}, fmt.Errorf("connect to supernode %s: %w", sn.ID, err)
	}
	s, err := d.h.NewStream(ctx, sn.ID, protocol.ID(legacywire.DirectoryProtocolID))
	if err != nil {
		return legacywire.DirResponse{}, fmt.Errorf("open directory stream: %w", err)
	}
	stop := resetOnCancel(ctx, s)
	defer stop()
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)

	if err := legacywire.WriteFrame(s, req); err != nil {
		_ = s.Reset()
		return legacywire.DirResponse{}, err
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return legacywire.DirResponse{}, fmt.Errorf("close directory request: %w", err)
	}
	var resp legacywire.DirResponse
	r := getReader(s)
	defer putReader(r)
	if err := legacywire.ReadFrame(r, &resp); err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			return legacywire.DirResponse{}, fmt.Errorf("read directory response: %w", ctx.Err())
		}
		return legacywire.DirResponse{}, fmt.Errorf("read directory response: %w", err)
	}
	_ = s.Close()
	if !resp.OK {
		if resp.Code == legacywire.CodeUpgradeRequired {
			return resp, &UpgradeRequiredError{Notice: resp.Error}
		}
		return resp, &RefusedError{Code: resp.Code, Message: resp.Error}
	}
	return resp, nil
}

// Targets returns the peers to try for the looked-up user: only the route's
// peer when a route is present and not withdrawn (it wins over the user's
// own devices), otherwise every device. It returns an error matching
// ErrBadRecord when a record holds an unparsable peer ID or address.
func (l Lookup) Targets() ([]peer.AddrInfo, error) {
	if l.Route != nil && !l.Route.Withdrawn {
		ai, err := addrInfo(l.Route.PeerID, l.Route.Addrs)
		if err != nil {
			return nil, fmt.Errorf("route for %s: %w", l.Route.User, err)
		}
		return []peer.AddrInfo{ai}, nil
	}
	out := make([]peer.AddrInfo, 0, len(l.Devices))
	for _, d := range l.Devices {
		ai, err := addrInfo(d.Cert.PeerID, d.Addrs)
		if err != nil {
			return nil, fmt.Errorf("device of %s: %w", d.Cert.User, err)
		}
		out = append(out, ai)
	}
	return out, nil
}

func addrInfo(id string, addrs []string) (peer.AddrInfo, error) {
	pid, err := peer.Decode(id)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: peer id %q: %v", ErrBadRecord, id, err)
	}
	ai := peer.AddrInfo{ID: pid, Addrs: make([]ma.Multiaddr, 0, len(addrs))}
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("%w: address %q: %v", ErrBadRecord, a, err)
		}
		ai.Addrs = append(ai.Addrs, m)
	}
	return ai, nil
}
