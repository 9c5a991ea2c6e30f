package legacy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Replication tuning.
const (
	// ReplicationQueue bounds the changes waiting for one peer supernode;
	// beyond it the oldest is dropped (and counted): devices re-register
	// and the bridge republishes routes well within a record's life, so a
	// long outage heals by itself.
	ReplicationQueue = 4096
	// replicationAttempts is how often one change is tried at a peer
	// before it is dropped.
	replicationAttempts = 5
	// replicationBackoff is the wait after the first failed attempt; it
	// doubles after each.
	replicationBackoff = 200 * time.Millisecond
)

// replicator pushes each accepted change (device registration, route,
// revocation) to every peer supernode, one queue and one goroutine per peer,
// in order. The receiver stores a change only when it is newer than what it
// holds (route Seq, device record Expires, a revocation it lacks) and then
// pushes it on, so a change floods the supernode mesh once per link and
// survives the loss of the supernode it entered through.
type replicator struct {
	s     *Supernode
	peers []*replicaPeer

	dropped atomic.Int64 // changes dropped (queue full or attempts exhausted)
	pushed  atomic.Int64 // changes a peer accepted
}

type replicaPeer struct {
	info peer.AddrInfo
	dir  *Directory

	mu    sync.Mutex
	queue []legacywire.DirRequest
	wake  chan struct{} // capacity 1
}

func newReplicator(s *Supernode) *replicator {
	r := &replicator{s: s}
	for _, p := range s.cfg.Peers {
		if p.ID == s.h.ID() {
			continue
		}
		r.peers = append(r.peers, &replicaPeer{
			info: p,
			dir:  NewDirectory(s.h, *s.cfg.Cert, p),
			wake: make(chan struct{}, 1),
		})
	}
	return r
}

// push queues req for every peer without blocking.
func (r *replicator) push(req legacywire.DirRequest) {
	if r == nil {
		return
	}
	cert := *r.s.cfg.Cert
	req.Op, req.Cert = legacywire.OpReplicate, &cert
	for _, p := range r.peers {
		p.mu.Lock()
		if len(p.queue) >= ReplicationQueue {
			p.queue = p.queue[1:]
			r.dropped.Add(1)
		}
		p.queue = append(p.queue, req)
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// run sends each peer's queue until ctx is done, and returns after its
// goroutines have exited.
func (r *replicator) run(ctx context.Context) {
	if r == nil {
		return
	}
	var wg sync.WaitGroup
	for _, p := range r.peers {
		wg.Go(func() { r.serve(ctx, p) })
	}
	wg.Wait()
}

func (r *replicator) serve(ctx context.Context, p *replicaPeer) {
	for {
		p.mu.Lock()
		var req legacywire.DirRequest
		ok := len(p.queue) > 0
		if ok {
			// Taken off under the lock: an overflow in push while this
			// one is in flight drops (and counts) the next oldest, not
			// this one.
			req = p.queue[0]
			p.queue = p.queue[1:]
		}
		p.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		err := r.send(ctx, p, req)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.dropped.Add(1)
			r.s.log.Info("replication dropped a change", "supernode", p.info.ID, "err", err)
		} else {
			r.pushed.Add(1)
		}
	}
}

// send delivers one change, retrying transport failures with backoff. A
// refusal is final: the peer judged the change and will not change its mind.
func (r *replicator) send(ctx context.Context, p *replicaPeer, req legacywire.DirRequest) error {
	wait := replicationBackoff
	var err error
	for range replicationAttempts {
		_, err = p.dir.roundTrip(ctx, req)
		if err == nil || errors.Is(err, ErrRefused) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
	return err
}

// ReplicationStats reports the changes peer supernodes accepted and those
// dropped (queue overflow, attempts exhausted, or refused).
func (s *Supernode) ReplicationStats() (pushed, dropped int64) {
	if s.repl == nil {
		return 0, 0
	}
	return s.repl.pushed.Load(), s.repl.dropped.Load()
}

// acceptReplica serves OpReplicate from a peer supernode.
func (s *Supernode) acceptReplica(remote peer.ID, req legacywire.DirRequest) legacywire.DirResponse {
	if resp, ok := s.checkCert(remote, req.Cert); !ok {
		return resp
	}
	if !req.Cert.Has(legacywire.CapSupernode) {
		return refusal(legacywire.CodeNotSupernode, "only a supernode may replicate")
	}
	switch {
	case req.Record != nil:
		return s.acceptRecord(*req.Record)
	case req.Route != nil:
		resp := s.storeRoute(req.Route)
		if resp.Code == legacywire.CodeStaleRoute {
			return legacywire.DirResponse{OK: true} // we already hold a newer one
		}
		return resp
	case req.Revocation != nil:
		if err := s.Revoke(*req.Revocation); err != nil {
			return refusal(legacywire.CodeBadRevocation, err.Error())
		}
		return legacywire.DirResponse{OK: true}
	}
	return refusal(legacywire.CodeBadRequest, "replicate op without a record, route or revocation")
}

// acceptRecord stores a device record registered at a peer supernode when
// it is newer (later Expires) than the one held. The device's certificate is
// checked again against the authority; the addresses and expiry are taken on
// the peer's word, the expiry capped at this supernode's RecordTTL.
func (s *Supernode) acceptRecord(rec legacywire.DeviceRecord) legacywire.DirResponse {
	now := s.cfg.Now()
	if code, err := verifyPeerCert(s.certs, rec.Cert, s.cfg.Authority, rec.Cert.PeerID, now, s.revoked); err != nil {
		return refusal(code, err.Error())
	}
	if len(rec.Addrs) > MaxRecordAddrs {
		return refusal(legacywire.CodeBadRequest, fmt.Sprintf("%d addresses, at most %d", len(rec.Addrs), MaxRecordAddrs))
	}
	for _, a := range rec.Addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return refusal(legacywire.CodeBadRequest, fmt.Sprintf("address %q: %v", a, err))
		}
	}
	if !now.Before(rec.Expires) {
		return legacywire.DirResponse{OK: true} // already dead: nothing to keep
	}
	if limit := now.Add(s.cfg.RecordTTL).UTC().Truncate(time.Millisecond); limit.Before(rec.Expires) {
		rec.Expires = limit
	}
	rec.Addrs = slices.Clone(rec.Addrs)
	s.mu.Lock()
	devs := s.devices[rec.Cert.User]
	if devs == nil {
		devs = make(map[string]legacywire.DeviceRecord)
		s.devices[rec.Cert.User] = devs
	}
	old, had := devs[rec.Cert.PeerID]
	newer := !had || rec.Expires.After(old.Expires)
	if newer {
		devs[rec.Cert.PeerID] = rec
	}
	s.known[rec.Cert.User] = struct{}{}
	s.mu.Unlock()
	if newer {
		s.repl.push(legacywire.DirRequest{Record: &rec})
	}
	return legacywire.DirResponse{OK: true}
}
