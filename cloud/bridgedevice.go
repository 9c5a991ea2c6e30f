package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// A cloud-home user who still runs a legacy client reaches the cloud
// through the bridge, and appears there as one more device of theirs
// (DESIGN.md, phase cloud). The bridge names that device in its send
// (Send.Device, v11); the service asks Config.ActForDevice, which the
// gateway answers from the migration record (the user's home is the
// cloud, not for good, and the device is one of the user's legacy devices
// on record), and stores the message as sent by the user from that
// device: it reaches the recipient and, as the user's own sent message,
// every other device of the user. ActFor is not asked: it refuses
// cloud-home users, for whom a bridge may act only through a named
// device.

// sender returns the user and device a send is stored as: the session's
// own (for a bridge session, the user in as, from the bridge's device),
// or, for a bridge send naming a device, that user's device if
// ActForDevice allows it.
func (s *session) sender(ctx context.Context, f cloudwire.Send) (user, device string, err error) {
	return s.actorDevice(ctx, f.As, f.Device)
}

// actorDevice returns the user and device a request naming as and device
// acts as (sends and receipts, Send.Device and Receipt.Device): the
// session's own device when device is empty, else as's device if
// ActForDevice allows it.
func (s *session) actorDevice(ctx context.Context, as, device string) (string, string, error) {
	if device == "" {
		user, err := s.actor(ctx, as)
		return user, s.device, err
	}
	if !s.bridge {
		return "", "", fmt.Errorf("%w: only bridge sessions may name another device", errForbidden)
	}
	fn := s.svc.cfg.ActForDevice
	if fn == nil {
		return "", "", fmt.Errorf("%w: this service takes nothing from bridged devices", errForbidden)
	}
	if err := fn(ctx, as, device); err != nil {
		return "", "", fmt.Errorf("%w: may not act as %s from device %s: %w", errForbidden, as, device, err)
	}
	return as, device, nil
}

// BridgedPlatform is the platform of the device records of bridged
// legacy devices.
const BridgedPlatform = "legacy"

// BridgedDevice is what the cloud shows of a legacy device the bridge
// carries for a cloud-home user.
type BridgedDevice struct {
	// ClientVersion is the one the device's certificate carries.
	ClientVersion string
	// State is active, idle or offline (cloudwire.Presence*), since At.
	State string
	At    time.Time
}

// BridgeDevices shows the legacy devices of cloud-home users, which the
// bridge carries (v11), among their cloud devices: in the device records
// (bucket cloud_devices) that presence snapshots and contacts read, and
// as live presence to the user's other devices and contacts, exactly as
// a session's device. Its records name a node of their own, the bridge's,
// which heartbeats in cloud_nodes like a cloud node: if the bridge dies,
// the cloud nodes reap its devices (offline, one event each) once its
// lease expires (presence.go).
type BridgeDevices struct {
	live *BridgeLive
	node string

	mu      sync.Mutex
	devices jetstream.KeyValue
	nodes   jetstream.KeyValue
	ttl     time.Duration
}

// bridgeNodePrefix starts the node ids of bridges in cloud_nodes, which
// the service does not count as its nodes (gateway_cloud_nodes).
const bridgeNodePrefix = "bridge-"

// NewBridgeDevices returns the bridge's way to show devices, on js (the
// cloud service's JetStream), recording them under a node lease of the
// bridge's own, named after bridge (unique per bridge: its peer id).
func NewBridgeDevices(js jetstream.JetStream, bridge string) *BridgeDevices {
	return &BridgeDevices{live: NewBridgeLive(js), node: bridgeNodePrefix + bridge}
}

// bind opens the service's device and node buckets (never creates them:
// the service may start after the bridge, and their settings are its).
func (d *BridgeDevices) bind(ctx context.Context) (jetstream.KeyValue, jetstream.KeyValue, time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.devices != nil {
		return d.devices, d.nodes, d.ttl, nil
	}
	js := d.live.js
	devices, err := js.KeyValue(ctx, devicesBucket)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("cloud: bridge devices: bucket %s: %w", devicesBucket, err)
	}
	nodes, err := js.KeyValue(ctx, nodesBucket)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("cloud: bridge devices: bucket %s: %w", nodesBucket, err)
	}
	st, err := nodes.Status(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("cloud: bridge devices: bucket %s: %w", nodesBucket, err)
	}
	d.devices, d.nodes, d.ttl = devices, nodes, max(st.TTL(), minNodeLease)
	return devices, nodes, d.ttl, nil
}

// Heartbeat renews the bridge's node lease and returns how long until it
// must be renewed again (a third of the lease).
func (d *BridgeDevices) Heartbeat(ctx context.Context) (time.Duration, error) {
	_, nodes, ttl, err := d.bind(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := nodes.Put(ctx, d.node, nil); err != nil {
		return 0, fmt.Errorf("cloud: bridge devices: heartbeat: %w", err)
	}
	return ttl / 3, nil
}

// Set records dev as user's device and tells the user's other devices
// and contacts its presence.
func (d *BridgeDevices) Set(ctx context.Context, user, device string, dev BridgedDevice) error {
	p := cloudwire.Presence{User: user, Device: device, State: dev.State, At: dev.At.UTC()}
	if err := p.Validate(); err != nil || user == "" || device == "" {
		return fmt.Errorf("%w: bridged device presence %v", errBadRequest, err)
	}
	devices, _, _, err := d.bind(ctx)
	if err != nil {
		return err
	}
	// At (the last activity) stays zero: it orders ringing, and a legacy
	// device takes no cloud call, so it rings last.
	r := deviceRecord{Online: dev.State != cloudwire.PresenceOffline, State: dev.State, Since: p.At, Node: d.node,
		Platform: BridgedPlatform, ClientVersion: dev.ClientVersion}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := devices.Put(ctx, subjectToken(user)+"."+subjectToken(device), data); err != nil {
		return fmt.Errorf("cloud: bridge devices: record: %w", err)
	}
	st, err := d.live.store(ctx)
	if err != nil {
		return err
	}
	contacts, err := st.contacts(ctx, user)
	if err != nil {
		return err
	}
	return d.live.publish(p, append([]string{user}, contacts...))
}

// Shown reports whether the cloud shows user's device online as this
// bridge's: false once the device was marked offline, by this bridge or by
// a cloud node that found the bridge's lease expired, or recorded by
// another bridge or a session since.
func (d *BridgeDevices) Shown(ctx context.Context, user, device string) (bool, error) {
	devices, _, _, err := d.bind(ctx)
	if err != nil {
		return false, err
	}
	e, err := devices.Get(ctx, subjectToken(user)+"."+subjectToken(device))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cloud: bridge devices: read: %w", err)
	}
	var r deviceRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return false, nil // unreadable: write it again
	}
	return r.Online && r.Node == d.node, nil
}
