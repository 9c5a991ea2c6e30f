package cloud

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Defaults for Config fields left zero.
const (
	DefaultQueueLen        = 512
	DefaultReconnectWindow = 5 * time.Second
	DefaultMaxHandshakes   = 256
	DefaultShedRetry       = 5 * time.Second
)

// DefaultRetention suits a development agent on a laptop: at most 1 GiB
// of conversation log (kept whatever its age: it is the history),
// inboxes of at most 30 days and 1 GiB (devices away longer page the
// history instead of replaying), and send idempotency records for 30
// days (longer than any client keeps a send to resend). Production sizes
// them from the operator's storage and policy.
var DefaultRetention = Retention{
	LogMaxBytes:   1 << 30,
	InboxMaxAge:   30 * 24 * time.Hour,
	InboxMaxBytes: 1 << 30,
	SendsMaxAge:   30 * 24 * time.Hour,
}

// Config configures a Service. The zero value of every field but JS and
// TokenKey is a sane default.
type Config struct {
	// JS is the JetStream context the service keeps its streams in.
	JS jetstream.JetStream
	// TokenKey verifies session tokens.
	TokenKey ed25519.PublicKey
	// TokenIssuer is the iss session tokens must carry; "" means
	// cloudwire.DefaultIssuer.
	TokenIssuer string
	// TokenAudience must be among the aud of session tokens; "" means
	// cloudwire.DefaultAudience.
	TokenAudience string
	// TokenAlgorithms are the token algorithms accepted; nil means only
	// EdDSA (the only one supported).
	TokenAlgorithms []string
	// AllowedOrigins is the Origin allowlist for browsers, as
	// "scheme://host[:port]". A request with an Origin not listed is refused
	// with 403 before the upgrade; a request without Origin (native clients,
	// the bridge) is allowed.
	AllowedOrigins []string
	// Admit decides whether a native user session may open; nil admits all.
	// A refusal closes the socket with 4403 and the error text.
	Admit func(ctx context.Context, user string) error
	// CheckClient, when set, applies the client version policy to a native
	// user's hello (after Admit): a non-nil answer closes the socket with
	// cloudwire.CloseUpgradeRequired (4426) and the answer as JSON, and the
	// client stops reconnecting. It is called on the session's goroutine
	// and must answer quickly (ctx is bounded). nil admits every version.
	CheckClient func(ctx context.Context, user string, h cloudwire.Hello) *cloudwire.UpgradeRequired
	// ActFor decides whether a bridge session may act for user; nil allows.
	// A refusal answers the request with a "forbidden" error frame.
	ActFor func(ctx context.Context, user string) error
	// ActForDevice decides whether a bridge session may send as user from
	// device, a legacy device of a cloud-home user that the bridge
	// carries as one more device of theirs (Send.Device, v11). nil
	// refuses every such send: the bridge never speaks for a cloud user
	// unless the gateway says so. A refusal answers the request with a
	// "forbidden" error frame.
	ActForDevice func(ctx context.Context, user, device string) error
	// OnHello is told about every accepted hello (token removed), so that
	// the gateway can record devices. It must not block; nil is fine.
	OnHello func(user string, h cloudwire.Hello)
	// Registerer receives the service's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger is tagged component=cloud; nil discards.
	Logger *slog.Logger
	// Replicas of the streams and bucket; 0 means 1. Use 3 on a cluster.
	Replicas int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// QueueLen is how many frames may wait for one user session's socket
	// before it is closed as a slow consumer (bridge sessions get 16 times
	// as many); 0 means DefaultQueueLen.
	QueueLen int
	// ReconnectWindow spreads reconnects after Shutdown: every socket gets a
	// random retry delay below it in its close reason; 0 means
	// DefaultReconnectWindow.
	ReconnectWindow time.Duration
	// PresenceRate and PresenceBurst limit the presence and typing frames
	// of one session (a token bucket: PresenceRate per second, bursts of
	// PresenceBurst); frames over the limit are answered with
	// rate_limited and dropped. 0 means DefaultPresenceRate and
	// DefaultPresenceBurst.
	PresenceRate  float64
	PresenceBurst int
	// RingDelay is how long an incoming call rings only the callee's most
	// recently active device before ringing the others; 0 means
	// DefaultRingDelay.
	RingDelay time.Duration
	// RingTimeout ends a call nobody answered; 0 means DefaultRingTimeout.
	RingTimeout time.Duration
	// MaxHandshakes bounds the sessions being set up at once on this node:
	// from the upgrade to the end of the initial sync (hello, admission,
	// head, replay), the part of a session that costs the engine. Above
	// it a handshake waits in line for a slot (admission.go), and beyond
	// the line is answered 503 with Retry-After before the upgrade, so
	// that a reconnect storm is shed without touching the sessions
	// already open. 0 means DefaultMaxHandshakes.
	MaxHandshakes int
	// MaxSessions bounds this node's sessions (open and being set up);
	// at it, handshakes wait in the same line (a session that ends lets
	// the first one in) and are answered 503 the same way. 0 means no
	// bound.
	MaxSessions int
	// ShedRetry bounds the window of the Retry-After sent with a 503: a
	// random whole number of seconds from 1 to the time the line takes to
	// drain at the measured rate, at most ShedRetry, so that shed clients
	// do not come back together. 0 means DefaultShedRetry.
	ShedRetry time.Duration
	// Retention bounds the conversation log and the inboxes; zero fields
	// take DefaultRetention's, negative ones mean no bound.
	Retention Retention
	// NodeLease is how long the devices of a node that stopped without
	// closing its sessions (killed, lost) stay online for everyone else:
	// the node heartbeats every third of it, and once it has been silent
	// for the lease the other nodes mark its devices offline and tell
	// their contacts. 0 means DefaultNodeLease; at least one second.
	NodeLease time.Duration
	// Files bounds the attachments the service keeps (files.go); the zero
	// value takes DefaultMaxFileSize and no bucket bound.
	Files FileConfig
}

// Retention bounds what the service keeps. When a bound is reached the
// oldest entries go first. A device whose cursor is older than its
// inbox's oldest event gets what remains and finds the gap by sequence
// (history after); history older than the log's oldest entry is gone for
// everyone.
type Retention struct {
	// LogMaxAge and LogMaxBytes bound the conversation log (CLOUD_CONV).
	LogMaxAge   time.Duration
	LogMaxBytes int64
	// InboxMaxAge and InboxMaxBytes bound the inboxes (CLOUD_INBOX).
	InboxMaxAge   time.Duration
	InboxMaxBytes int64
	// SendsMaxAge is how long a send's idempotency record (bucket
	// cloud_sends) is kept: a resend of the same message id within it
	// returns the original ack; after it the id is unknown, so a resend
	// is stored as a new message and a receipt for it is not_found. It
	// must cover the longest a client keeps an unacknowledged send.
	SendsMaxAge time.Duration
}

// Validate reports a configuration New cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("JS is required"))
	}
	if len(c.TokenKey) != ed25519.PublicKeySize {
		errs = append(errs, fmt.Errorf("TokenKey must be an Ed25519 public key (%d bytes), got %d", ed25519.PublicKeySize, len(c.TokenKey)))
	} else if err := c.tokenPolicy().Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("AllowedOrigins: %q is not scheme://host[:port]", o))
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("Replicas %d out of 0..5", c.Replicas))
	}
	if c.QueueLen < 0 {
		errs = append(errs, errors.New("negative QueueLen"))
	}
	if c.ReconnectWindow < 0 {
		errs = append(errs, errors.New("negative ReconnectWindow"))
	}
	if c.RingDelay < 0 || c.RingTimeout < 0 {
		errs = append(errs, errors.New("negative RingDelay or RingTimeout"))
	}
	if c.PresenceRate < 0 || c.PresenceBurst < 0 {
		errs = append(errs, errors.New("negative PresenceRate or PresenceBurst"))
	}
	if c.NodeLease != 0 && c.NodeLease < minNodeLease {
		errs = append(errs, fmt.Errorf("NodeLease %s under %s", c.NodeLease, minNodeLease))
	}
	if c.MaxHandshakes < 0 || c.MaxSessions < 0 || c.ShedRetry < 0 {
		errs = append(errs, errors.New("negative MaxHandshakes, MaxSessions or ShedRetry"))
	}
	r := c.Retention
	if (r.LogMaxAge > 0 && r.LogMaxAge < dupWindow) || (r.InboxMaxAge > 0 && r.InboxMaxAge < dupWindow) || (r.SendsMaxAge > 0 && r.SendsMaxAge < dupWindow) {
		errs = append(errs, fmt.Errorf("Retention max ages must be 0 or at least the duplicate window (%s)", dupWindow))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cloud: config: %w", errors.Join(errs...))
	}
	return nil
}

// tokenPolicy is what session tokens are checked against.
func (c Config) tokenPolicy() cloudwire.TokenPolicy {
	return cloudwire.TokenPolicy{Key: c.TokenKey, Algorithms: c.TokenAlgorithms, Issuer: c.TokenIssuer, Audience: c.TokenAudience}
}

// verifyToken is the one place the service checks a session token, from
// the Authorization header or from hello.
func (c Config) verifyToken(token string) (cloudwire.Claims, error) {
	return c.tokenPolicy().Verify(token, c.Now())
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("component", "cloud")
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.ReconnectWindow == 0 {
		c.ReconnectWindow = DefaultReconnectWindow
	}
	if c.RingDelay == 0 {
		c.RingDelay = DefaultRingDelay
	}
	if c.RingTimeout == 0 {
		c.RingTimeout = DefaultRingTimeout
	}
	if c.PresenceRate == 0 {
		c.PresenceRate = DefaultPresenceRate
	}
	if c.PresenceBurst == 0 {
		c.PresenceBurst = DefaultPresenceBurst
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.ShedRetry == 0 {
		c.ShedRetry = DefaultShedRetry
	}
	if c.NodeLease == 0 {
		c.NodeLease = DefaultNodeLease
	}
	c.Retention = c.Retention.withDefaults()
	return c
}

// withDefaults fills zero bounds from DefaultRetention and turns negative
// ones into 0, which JetStream reads as "no bound" for ages.
func (r Retention) withDefaults() Retention {
	pick := func(v, def int64) int64 {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 0
		}
		return v
	}
	d := DefaultRetention
	return Retention{
		LogMaxAge:     time.Duration(pick(int64(r.LogMaxAge), int64(d.LogMaxAge))),
		LogMaxBytes:   pick(r.LogMaxBytes, d.LogMaxBytes),
		InboxMaxAge:   time.Duration(pick(int64(r.InboxMaxAge), int64(d.InboxMaxAge))),
		InboxMaxBytes: pick(r.InboxMaxBytes, d.InboxMaxBytes),
		SendsMaxAge:   time.Duration(pick(int64(r.SendsMaxAge), int64(d.SendsMaxAge))),
	}
}
