package cloud

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// BridgeCallDevice is the one device a legacy-home callee has in a cloud
// call: the bridge, which rings the callee's legacy devices and answers
// for them. It is what CallState.Ringing lists for such a callee.
const BridgeCallDevice = "legacy"

// calleeDevices returns the devices an invite to user rings, the most
// recently active first: the bridge when ActFor says the bridge speaks
// for user (the user's home is the overlay), else the user's online
// cloud devices.
func (s *Service) calleeDevices(ctx context.Context, user string) ([]string, error) {
	if fn := s.cfg.ActFor; fn != nil && fn(ctx, user) == nil {
		return []string{BridgeCallDevice}, nil
	}
	return s.store.onlineDevices(ctx, user)
}

// BridgeCallsConfig configures BridgeCalls.
type BridgeCallsConfig struct {
	// JS is the JetStream context of the cloud service's NATS.
	JS jetstream.JetStream
	// RingDelay and RingTimeout time the calls the bridge places, as
	// Config's do for a session's (zero means the defaults).
	RingDelay, RingTimeout time.Duration
	Now                    func() time.Time
	Logger                 *slog.Logger
}

// BridgeCalls is the bridge's way into cloud calls, on core NATS like
// BridgeLive: bridge sessions take no call frames (a bridge acts for many
// users at once). A call a legacy-home user places (Invite) is owned by
// the bridge's process, with the very state machine, ring order and
// timers of a session's call (calls.go); every other request (Request)
// goes to the call's owner on whatever node it runs. Deciding for whom the
// bridge may act is the bridge's job, as for BridgeLive.
type BridgeCalls struct {
	cfg BridgeCallsConfig

	mu  sync.Mutex
	svc *Service // owns the bridge's calls; opened on first use
}

// NewBridgeCalls returns a BridgeCalls for cfg.
func NewBridgeCalls(cfg BridgeCallsConfig) *BridgeCalls {
	cfg.RingDelay = cmp.Or(cfg.RingDelay, DefaultRingDelay)
	cfg.RingTimeout = cmp.Or(cfg.RingTimeout, DefaultRingTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BridgeCalls{cfg: cfg}
}

// RingTimeout is how long the cloud lets a call the bridge places ring.
func (bc *BridgeCalls) RingTimeout() time.Duration { return bc.cfg.RingTimeout }

// owner binds to the service's device bucket (never creating it: its
// settings are the service's) and returns the call owner.
func (bc *BridgeCalls) owner(ctx context.Context) (*Service, error) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.svc != nil {
		return bc.svc, nil
	}
	devices, err := bc.cfg.JS.KeyValue(ctx, devicesBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge calls: bucket %s: %w", devicesBucket, err)
	}
	keys, err := bc.cfg.JS.Stream(ctx, kvStreamPrefix+devicesBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge calls: bucket %s stream: %w", devicesBucket, err)
	}
	log := bc.cfg.Logger.With("component", "bridge-calls")
	bc.svc = &Service{
		cfg:   Config{JS: bc.cfg.JS, RingDelay: bc.cfg.RingDelay, RingTimeout: bc.cfg.RingTimeout, Now: bc.cfg.Now},
		log:   log,
		store: &store{js: bc.cfg.JS, devices: devices, deviceKeys: keys, log: log},
		calls: calls{m: make(map[string]*call)},
	}
	return bc.svc, nil
}

// Invite places call id from the legacy-home user from (on device, as it
// appears in the cloud) to the cloud user to: it rings to's most recently
// active device first, the others after the ring delay. A repeated id is
// not an error. A callee with no online device gets a call that ends at
// once as unavailable (the states say so, as for a session's call).
func (bc *BridgeCalls) Invite(ctx context.Context, id, from, device, to, media string) error {
	if from == "" || to == "" || from == to {
		return fmt.Errorf("%w: a call needs two different users", errBadRequest)
	}
	if err := (cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: to, Media: media}).Validate(); err != nil {
		return err
	}
	svc, err := bc.owner(ctx)
	if err != nil {
		return err
	}
	devices, err := svc.store.onlineDevices(ctx, to)
	if err != nil {
		return err
	}
	_, err = svc.startCall(cloudwire.CallState{CallID: id, From: from, FromDevice: device, To: to, Media: media}, devices)
	return err
}

// Request sends op (answer, reject, cancel or hangup) on call id, from
// user on device, to the call's owner. Reason, when not empty, replaces
// the reason a reject or cancel ends the call with (ReasonUnavailable: the
// callee's devices cannot take calls; ReasonTimeout: the legacy caller's
// device stopped ringing).
func (bc *BridgeCalls) Request(ctx context.Context, id, op, user, device, reason string) error {
	b, err := json.Marshal(callOp{Op: op, User: user, Device: device, Session: "bridge-" + device, Reason: reason})
	if err != nil {
		return err
	}
	return callRequestBytes(ctx, bc.cfg.JS.Conn(), id, b)
}

// callStateTag is in every encoded call state: other live frames (most
// of them) are skipped without decoding.
var callStateTag = []byte(`"` + cloudwire.TypeCallState + `"`)

// SubscribeCalls calls fn with every state of every call, once per
// change: the copy the owner sends to the caller, which every change
// reaches. fn runs on NATS's delivery goroutine and must not block.
// Unsubscribe the result when done.
func (bc *BridgeCalls) SubscribeCalls(fn func(cloudwire.CallState)) (*nats.Subscription, error) {
	sub, err := bc.cfg.JS.Conn().Subscribe(liveAll, func(m *nats.Msg) {
		if m.Header.Get(onlyHeader) != "" || !bytes.Contains(m.Data, callStateTag) {
			return
		}
		f, err := cloudwire.Decode(m.Data)
		if err != nil {
			return
		}
		st, ok := f.(cloudwire.CallState)
		if ok && untoken(strings.TrimPrefix(m.Subject, livePrefix)) == st.From {
			fn(st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge calls: subscribe: %w", err)
	}
	return sub, nil
}

// Close ends the calls the bridge owns as unavailable, as a stopping
// service does.
func (bc *BridgeCalls) Close() {
	bc.mu.Lock()
	svc := bc.svc
	bc.mu.Unlock()
	if svc != nil {
		svc.endAllCalls(cloudwire.ReasonUnavailable)
	}
}
