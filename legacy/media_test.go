package legacy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// newNetHost returns a real host on 127.0.0.1 built from cfg, closed at
// cleanup.
func newNetHost(tb testing.TB, cfg HostConfig) host.Host {
	tb.Helper()
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 128
	}
	h, err := NewHost(cfg)
	if err != nil {
		tb.Fatalf("NewHost: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("close host: %v", err)
		}
	})
	return h
}

var _ connmgr.ConnectionGater = blockDirect{}

// blockDirect refuses every direct connection to or from one peer, in
// both directions, as a NAT between the two would; relayed connections
// pass.
type blockDirect struct{ peer peer.ID }

func (g blockDirect) InterceptPeerDial(peer.ID) bool { return true }

func (g blockDirect) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return p != g.peer || isRelayedAddr(a)
}

func (g blockDirect) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g blockDirect) InterceptSecured(_ network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return p != g.peer || isRelayedAddr(c.RemoteMultiaddr())
}

func (g blockDirect) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// callNet is a relay and two devices: alice calls bob, who holds a
// reservation at the relay.
type callNet struct {
	auth                   *Authority
	relay, alice, bob      host.Host
	relayStats, aliceStats *NetStats
	bobStats               *NetStats
	aliceMedia, bobMedia   *Media
	aliceCert              legacywire.Certificate
}

// newCallNet builds the three hosts; with blocked, alice's host refuses
// every direct connection with bob's.
func newCallNet(tb testing.TB, blocked bool) *callNet {
	tb.Helper()
	n := &callNet{auth: newTestAuthority(tb), relayStats: NewNetStats(), aliceStats: NewNetStats(), bobStats: NewNetStats()}
	n.relay = newNetHost(tb, HostConfig{Relay: &RelayConfig{}, Stats: n.relayStats})
	n.bob = newNetHost(tb, HostConfig{RelayClient: true, Stats: n.bobStats})
	aliceCfg := HostConfig{RelayClient: true, Stats: n.aliceStats}
	if blocked {
		aliceCfg.testOptions = []libp2p.Option{libp2p.ConnectionGater(blockDirect{peer: n.bob.ID()})}
	}
	n.alice = newNetHost(tb, aliceCfg)
	if _, err := Reserve(testCtx(tb), n.bob, addrInfoOf(n.relay)); err != nil {
		tb.Fatalf("Reserve: %v", err)
	}
	var err error
	n.bobMedia, err = NewMedia(n.bob, MediaConfig{
		Authority: n.auth.PublicKey(),
		Accept: func(from legacywire.Certificate, call string) bool {
			return from.User == "alice" && call == "call-1"
		},
		OnStream: echoMedia,
		Stats:    n.bobStats,
	})
	if err != nil {
		tb.Fatal(err)
	}
	n.aliceCert = certify(tb, n.auth, n.alice, "alice")
	n.aliceMedia, err = NewMedia(n.alice, MediaConfig{
		Cert:          &n.aliceCert,
		Relays:        []peer.AddrInfo{addrInfoOf(n.relay)},
		HolePunchWait: 100 * time.Millisecond,
		Stats:         n.aliceStats,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// echoMedia sends every frame back until the stream ends.
func echoMedia(ms *MediaStream) {
	var buf []byte
	for {
		f, err := ms.ReadFrame(buf)
		if err != nil {
			_ = ms.Close()
			return
		}
		buf = f
		if err := ms.WriteFrame(f); err != nil {
			_ = ms.Reset()
			return
		}
	}
}

// exchange sends frames of growing sizes (up to MaxMediaFrameSize) over ms
// and checks that each comes back unchanged.
func exchange(tb testing.TB, ms *MediaStream) {
	tb.Helper()
	var buf []byte
	for i, size := range []int{0, 1, 20, 160, 1200, 4096, MaxMediaFrameSize} {
		want := bytes.Repeat([]byte{byte(i + 1)}, size)
		if err := ms.WriteFrame(want); err != nil {
			tb.Fatalf("WriteFrame(%d bytes): %v", size, err)
		}
		got, err := ms.ReadFrame(buf)
		if err != nil {
			tb.Fatalf("ReadFrame after %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, want) {
			tb.Fatalf("frame %d: got %d bytes, want %d bytes of %d", i, len(got), size, i+1)
		}
		buf = got
	}
	if err := ms.WriteFrame(make([]byte, MaxMediaFrameSize+1)); !errors.Is(err, legacywire.ErrFrameTooLarge) {
		tb.Errorf("WriteFrame over the limit = %v, want ErrFrameTooLarge", err)
	}
}

// eventually polls cond until it holds or testTimeout passes (a bound, not
// a timing assertion).
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for end := time.Now().Add(testTimeout); !cond(); {
		if time.Now().After(end) {
			tb.Fatalf("%s: not after %v", what, testTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMediaFallsBackToRelay(t *testing.T) {
	n := newCallNet(t, true)
	ms, err := n.aliceMedia.Dial(testCtx(t), addrInfoOf(n.bob), "call-1")
	if err != nil {
		t.Fatalf("Dial with the direct path blocked: %v", err)
	}
	defer ms.Close()
	if ms.Path() != PathRelayed {
		t.Errorf("path = %s, want %s", ms.Path(), PathRelayed)
	}
	exchange(t, ms)

	if got := n.aliceStats.Snapshot().MediaStreams; got[PathRelayed] != 1 || got[PathDirect] != 0 {
		t.Errorf("alice's media streams by path = %v, want one relayed", got)
	}
	eventually(t, "bob counts the relayed media stream", func() bool {
		return n.bobStats.Snapshot().MediaStreams[PathRelayed] == 1
	})
	for _, c := range n.alice.Network().ConnsToPeer(n.bob.ID()) {
		if !isRelayed(c) {
			t.Errorf("direct connection %s despite the gater", c.RemoteMultiaddr())
		}
	}
	if got := n.aliceStats.Snapshot().Open[PathRelayed]; got != 1 {
		t.Errorf("alice's open relayed connections = %d, want 1", got)
	}
	rs := n.relayStats.Snapshot()
	if rs.CircuitsOpened != 1 || rs.CircuitsActive != 1 || rs.Reservations != 1 {
		t.Errorf("relay: circuits opened %d, active %d, reservations %d; want 1, 1, 1", rs.CircuitsOpened, rs.CircuitsActive, rs.Reservations)
	}

	// The circuit ends with the call: the relay counts it closed.
	_ = ms.Close()
	for _, c := range n.alice.Network().ConnsToPeer(n.bob.ID()) {
		_ = c.Close()
	}
	eventually(t, "relay counts the circuit closed", func() bool {
		return n.relayStats.Snapshot().CircuitsActive == 0
	})
}

func TestMediaDirect(t *testing.T) {
	n := newCallNet(t, false)
	ms, err := n.aliceMedia.Dial(testCtx(t), addrInfoOf(n.bob), "call-1")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer ms.Close()
	if ms.Path() != PathDirect {
		t.Errorf("path = %s, want %s", ms.Path(), PathDirect)
	}
	exchange(t, ms)
	if got := n.aliceStats.Snapshot().MediaStreams; got[PathDirect] != 1 || got[PathRelayed] != 0 {
		t.Errorf("alice's media streams by path = %v, want one direct", got)
	}
	if got := n.relayStats.Snapshot().CircuitsOpened; got != 0 {
		t.Errorf("relay circuits opened = %d, want 0 when the direct dial works", got)
	}
}

// TestDirectAfterRelayIsHolePunched checks the classification DCUtR's
// result gets: a direct connection made while a relayed one to the same
// peer is open. (DCUtR itself does not run on loopback: it only punches
// from public addresses.)
func TestDirectAfterRelayIsHolePunched(t *testing.T) {
	n := newCallNet(t, false)
	ctx := testCtx(t)
	circuits, err := CircuitAddrs([]peer.AddrInfo{addrInfoOf(n.relay)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.alice.Connect(network.WithAllowLimitedConn(ctx, "test"), peer.AddrInfo{ID: n.bob.ID(), Addrs: circuits}); err != nil {
		t.Fatalf("relayed connect: %v", err)
	}
	if err := n.alice.Connect(network.WithForceDirectDial(ctx, "test"), addrInfoOf(n.bob)); err != nil {
		t.Fatalf("direct connect: %v", err)
	}
	s := n.aliceStats.Snapshot()
	if s.OpenedTotal[PathRelayed] != 1 || s.OpenedTotal[PathHolePunched] != 1 {
		t.Errorf("alice's connections opened by path = %v, want one relayed and one hole_punched", s.OpenedTotal)
	}
	ms, err := n.aliceMedia.Dial(ctx, addrInfoOf(n.bob), "call-1")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer ms.Close()
	if ms.Path() != PathHolePunched {
		t.Errorf("media path = %s, want %s", ms.Path(), PathHolePunched)
	}
	exchange(t, ms)
}

func TestMediaRefusals(t *testing.T) {
	n := newCallNet(t, false)
	foreign := newTestAuthority(t)
	foreignCert := certify(t, foreign, n.alice, "alice")
	tests := []struct {
		name     string
		cert     legacywire.Certificate
		call     string
		wantCode string
	}{
		{name: "unknown call", cert: n.aliceCert, call: "call-2", wantCode: legacywire.CodeUnavailable},
		{name: "foreign authority", cert: foreignCert, call: "call-1", wantCode: legacywire.CodeBadCertificate},
		{name: "no call id", cert: n.aliceCert, call: "", wantCode: legacywire.CodeBadMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMedia(n.alice, MediaConfig{Cert: &tt.cert})
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Dial(testCtx(t), addrInfoOf(n.bob), tt.call)
			var re *RefusedError
			if !errors.As(err, &re) || re.Code != tt.wantCode {
				t.Fatalf("Dial = %v, want a refusal with code %s", err, tt.wantCode)
			}
		})
	}
	if got := n.bobStats.Snapshot().MediaStreams; got[PathDirect]+got[PathRelayed] != 0 {
		t.Errorf("refused streams counted as media: %v", got)
	}
}

// TestRelayRefusesWithoutReservation: a circuit to a peer that holds no
// slot at the relay is refused, and counted by reason.
func TestRelayRefusesWithoutReservation(t *testing.T) {
	n := newCallNet(t, false)
	carol := newNetHost(t, HostConfig{RelayClient: true})
	circuits, err := CircuitAddrs([]peer.AddrInfo{addrInfoOf(n.relay)})
	if err != nil {
		t.Fatal(err)
	}
	err = n.alice.Connect(network.WithAllowLimitedConn(testCtx(t), "test"), peer.AddrInfo{ID: carol.ID(), Addrs: circuits})
	if err == nil {
		t.Fatal("relayed connect to a peer without a reservation succeeded")
	}
	eventually(t, "relay counts the refusal", func() bool {
		return n.relayStats.Snapshot().CircuitsRefused[RefusedNoReservation] == 1
	})
	if got := n.relayStats.Snapshot().CircuitsOpened; got != 0 {
		t.Errorf("circuits opened = %d, want 0", got)
	}
}

func TestMediaConfigValidate(t *testing.T) {
	accept := func(legacywire.Certificate, string) bool { return true }
	tests := []struct {
		name string
		cfg  MediaConfig
		ok   bool
	}{
		{name: "dial only", cfg: MediaConfig{}, ok: true},
		{name: "accept without authority", cfg: MediaConfig{Accept: accept}},
		{name: "negative wait", cfg: MediaConfig{HolePunchWait: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestReadMediaFrame(t *testing.T) {
	frame := func(b []byte) []byte {
		out, err := appendMediaFrame(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{name: "empty stream", in: nil, wantErr: io.EOF},
		{name: "empty frame", in: frame(nil), want: []byte{}},
		{name: "frame", in: frame([]byte("opus")), want: []byte("opus")},
		{name: "half a header", in: []byte{0}, wantErr: legacywire.ErrMalformedFrame},
		{name: "short body", in: []byte{0, 5, 'a'}, wantErr: io.ErrUnexpectedEOF},
		{name: "too large", in: []byte{0xff, 0xff}, wantErr: legacywire.ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readMediaFrame(bytes.NewReader(tt.in), nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("readMediaFrame = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzReadMediaFrame: any input either parses into frames that encode back
// to exactly the bytes consumed, or fails with one of the documented
// errors; it never panics and never returns a frame over the limit.
func FuzzReadMediaFrame(f *testing.F) {
	for _, seed := range [][]byte{nil, {0, 0}, {0, 4, 'o', 'p', 'u', 's'}, {0xff, 0xff}, {0, 9, 1}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var again []byte
		for {
			fr, err := readMediaFrame(r, nil)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, legacywire.ErrMalformedFrame) && !errors.Is(err, legacywire.ErrFrameTooLarge) {
					t.Fatalf("undocumented error %v", err)
				}
				if errors.Is(err, io.EOF) && !bytes.Equal(again, in) {
					t.Fatalf("frames re-encode to %x, input was %x", again, in)
				}
				return
			}
			if len(fr) > MaxMediaFrameSize {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			if again, err = appendMediaFrame(again, fr); err != nil {
				t.Fatal(fmt.Errorf("re-encode: %w", err))
			}
		}
	})
}

// BenchmarkMediaEcho measures one 160-byte media frame (an audio packet)
// sent and echoed back, over a direct connection and through the relay, in
// the same run: compare the two sub-benchmarks' ns/op.
func BenchmarkMediaEcho(b *testing.B) {
	for _, tc := range []struct {
		name    string
		blocked bool
		want    Path
	}{{"direct", false, PathDirect}, {"relayed", true, PathRelayed}} {
		b.Run(tc.name, func(b *testing.B) {
			n := newCallNet(b, tc.blocked)
			ms, err := n.aliceMedia.Dial(testCtx(b), addrInfoOf(n.bob), "call-1")
			if err != nil {
				b.Fatal(err)
			}
			defer ms.Close()
			if ms.Path() != tc.want {
				b.Fatalf("path %s, want %s", ms.Path(), tc.want)
			}
			frame := make([]byte, 160)
			var buf []byte
			b.SetBytes(int64(2 * len(frame)))
			for b.Loop() {
				if err := ms.WriteFrame(frame); err != nil {
					b.Fatal(err)
				}
				if buf, err = ms.ReadFrame(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMediaWireBytes pins the bytes of the media protocol's frames: a
// change here breaks every deployed client.
func TestMediaWireBytes(t *testing.T) {
	var b bytes.Buffer
	for _, v := range []any{mediaAnswer{OK: true}, mediaAnswer{Code: legacywire.CodeUnavailable, Error: "no call"}, mediaHello{Call: "c1"}} {
		if err := legacywire.WriteFrame(&b, v); err != nil {
			t.Fatal(err)
		}
	}
	f, err := appendMediaFrame(nil, []byte("opus"))
	if err != nil {
		t.Fatal(err)
	}
	b.Write(f)
	got := b.String()
	answers := "\x0b" + `{"ok":true}` + "\x33" + `{"ok":false,"code":"unavailable","error":"no call"}`
	if !strings.HasPrefix(got, answers) {
		t.Fatalf("answers encode as %q, want %q", got, answers)
	}
	// The hello's certificate bytes are pinned by legacywire's golden files.
	if !strings.Contains(got, `,"call":"c1"}`) || !strings.HasSuffix(got, "\x00\x04opus") {
		t.Fatalf("hello or media frame encode as %q", got)
	}
}
