package legacy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// simSlot is one simulated device across its comings and goings: the key
// and certificate it keeps, and the host and Device of its current
// session (nil while it is away).
type simSlot struct {
	run         *simRun
	idx         int
	user        string
	key         crypto.PrivKey
	id          peer.ID
	chatVersion int
	cert        legacywire.Certificate // set once, before the first up
	// stopped is set once the device was told to upgrade: it no longer
	// registers nor sends.
	stopped atomic.Bool

	mu   sync.Mutex
	h    host.Host
	dev  *Device
	away bool // left by churn, not back yet
}

func (s *simRun) newSlot(i, chatVersion int) (*simSlot, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("legacy: sim key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("legacy: sim peer id: %w", err)
	}
	return &simSlot{run: s, idx: i, user: fmt.Sprintf("%s%d", s.cfg.UserPrefix, i/s.cfg.DevicesPerUser),
		key: key, id: id, chatVersion: chatVersion}, nil
}

// device returns the device of the current session, nil while away.
func (sl *simSlot) device() *Device {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.dev
}

// online reports whether the device runs now.
func (sl *simSlot) online() bool { return !sl.stopped.Load() && sl.device() != nil }

// supernodes returns the slot's supernode and its fallbacks.
func (sl *simSlot) supernodes() (peer.AddrInfo, []peer.AddrInfo) {
	sns := sl.run.cfg.Supernodes
	first := sl.idx % len(sns)
	var rest []peer.AddrInfo
	for k := 1; k < len(sns); k++ {
		rest = append(rest, sns[(first+k)%len(sns)])
	}
	return sns[first], append(rest, sl.run.cfg.Fallbacks...)
}

// up starts a session: a host with the slot's key on a fresh port, a
// Device, and a registration that takes delivery of what the supernode
// held meanwhile.
func (sl *simSlot) up(ctx context.Context) error {
	s := sl.run
	h, err := NewHost(HostConfig{PrivKey: sl.key, MaxConns: simHostMaxConns})
	if err != nil {
		return err
	}
	sn, fallbacks := sl.supernodes()
	var self atomic.Pointer[Device]
	d, err := NewDevice(DeviceConfig{
		Host:            h,
		Cert:            sl.cert,
		Authority:       s.cfg.Authority,
		Supernode:       sn,
		Fallbacks:       fallbacks,
		Logger:          s.cfg.Logger,
		MaxChatVersion:  sl.chatVersion,
		OnMessage:       func(m legacywire.ChatMessage) { s.stats.onMessage(s.log, m) },
		OnFileOffer:     func(o legacywire.FileOffer) { s.files.accept(self.Load(), o) },
		OnUndeliverable: func(legacywire.Undeliverable) { s.stats.expired.Add(1) },
		OnCall:          s.answer,
		RingTimeout:     simRingTimeout,
	})
	if err != nil {
		_ = h.Close()
		return fmt.Errorf("device %s: %w", sl.user, err)
	}
	self.Store(d)
	sl.mu.Lock()
	sl.h = h
	sl.mu.Unlock()
	if err := d.Register(ctx); err != nil {
		return err // the host is closed by down
	}
	sl.mu.Lock()
	sl.dev, sl.away = d, false
	sl.mu.Unlock()
	return nil
}

// down ends the current session: the device stops and its host closes.
func (sl *simSlot) down() error {
	sl.mu.Lock()
	h := sl.h
	sl.h, sl.dev = nil, nil
	sl.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.Close()
}

// churn takes random running devices away at ChurnRate (a Poisson
// process) until ctx ends; each comes back after an exponentially
// distributed downtime of mean ChurnDowntime, unless ctx ended by then.
func (s *simRun) churn(ctx context.Context) {
	var back sync.WaitGroup
	defer back.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		timer.Reset(time.Duration(rand.ExpFloat64() / s.cfg.ChurnRate * float64(time.Second)))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		sl := s.slots[rand.IntN(len(s.slots))]
		sl.mu.Lock()
		leave := sl.dev != nil && !sl.away && !sl.stopped.Load()
		sl.away = sl.away || leave
		sl.mu.Unlock()
		if !leave {
			continue
		}
		if err := sl.down(); err != nil {
			s.log.Debug("simulated device left uncleanly", "user", sl.user, "err", err)
		}
		s.stats.churnLeft.Add(1)
		downtime := time.Duration(rand.ExpFloat64() * float64(s.cfg.ChurnDowntime))
		back.Go(func() { s.comeBack(ctx, sl, downtime) })
	}
}

// comeBack brings sl back after downtime, unless ctx ends first.
func (s *simRun) comeBack(ctx context.Context, sl *simSlot, downtime time.Duration) {
	t := time.NewTimer(downtime)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	err := sl.up(ctx)
	switch {
	case err == nil:
		s.stats.churnReturned.Add(1)
	case s.stats.toldToUpgrade(s.log, sl.user, err):
		sl.stopped.Store(true)
	case ctx.Err() == nil:
		s.log.Warn("simulated device could not come back", "user", sl.user, "err", err)
	}
	if err != nil {
		_ = sl.down()
	}
}
