package legacy

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Simulated calls: signalling only (DeviceConfig.Media is not set, so no
// media stream opens).
const (
	// simRingTimeout is how long a simulated call rings unanswered.
	simRingTimeout = 5 * time.Second
	// simAnswerDelay bounds how long a simulated callee lets a call ring
	// before accepting (uniform in [0, simAnswerDelay)).
	simAnswerDelay = 500 * time.Millisecond
	// simCallHold is how long a connected simulated call lasts before the
	// caller hangs up.
	simCallHold = time.Second
)

// call places an audio call from d to user to, waits until it connects or
// ends, and hangs up a connected call after simCallHold.
func (s *simRun) call(ctx context.Context, d *Device, to string) {
	s.stats.callsPlaced.Add(1)
	c, err := d.Call(ctx, to, legacywire.CallAudio)
	if err != nil {
		s.stats.callsUnanswered.Add(1)
		s.log.Debug("simulated call failed", "from", d.User(), "to", to, "err", err)
		return
	}
	hold := time.NewTimer(simRingTimeout + CallRingGrace)
	defer hold.Stop()
	for connected := false; ; {
		select {
		case ev := <-c.Events():
			if ev.Type != CallEventConnected || connected {
				continue
			}
			connected = true
			s.stats.callsConnected.Add(1)
			hold.Reset(simCallHold)
			continue
		case <-c.Done():
			if !connected {
				s.stats.callsUnanswered.Add(1)
			}
		case <-hold.C:
			if !connected {
				s.stats.callsUnanswered.Add(1)
			}
		case <-ctx.Done():
			if !connected {
				s.stats.callsUnanswered.Add(1)
			}
		}
		break
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), simSendTimeout)
	defer cancel()
	_ = c.HangUp(hctx)
}

// answer is the simulated devices' OnCall: the callee's device accepts
// after a short random delay, in the background; when another device of
// the callee was first, it gets answered-elsewhere, as a real one does.
func (s *simRun) answer(c *Call) {
	s.calls.Go(func() {
		t := time.NewTimer(time.Duration(rand.Int64N(int64(simAnswerDelay))))
		defer t.Stop()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, simSendTimeout)
		defer cancel()
		if err := c.Accept(ctx); err != nil {
			s.log.Debug("simulated callee could not accept", "call", c.ID(), "err", err)
		}
	})
}
