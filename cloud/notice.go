package cloud

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// ClientVerdict is the client-version policy's answer to a native hello
// (ClientPolicy).
type ClientVerdict struct {
	// Refuse, when set, closes the socket with
	// cloudwire.CloseUpgradeRequired (4426) and this reason; the client
	// stops reconnecting.
	Refuse *cloudwire.UpgradeRequired
	// Notice, for an admitted client, is what the policy tells it (in the
	// warning stage, for example): it goes in Welcome.Notice.
	Notice string
}

// ClientPolicy applies the client-version policy to a native user's hello
// (token removed), once per hello: it decides, and may deliver the notice
// as history (Service.PostNotice) before the session's initial sync,
// which then carries it. It runs on the session's goroutine with a bounded
// ctx.
type ClientPolicy func(ctx context.Context, user string, h cloudwire.Hello) ClientVerdict

// SetClientPolicy installs f, which supersedes Config.CheckClient: a
// verdict can admit a client and tell it something. Call it before the
// service serves; nil goes back to Config.CheckClient.
func (s *Service) SetClientPolicy(f ClientPolicy) {
	if f == nil {
		s.clientPolicy.Store(nil)
		return
	}
	s.clientPolicy.Store(&f)
}

// clientVerdict applies the installed ClientPolicy, or Config.CheckClient
// (which can only refuse), to a hello.
func (s *Service) clientVerdict(ctx context.Context, user string, h cloudwire.Hello) ClientVerdict {
	h.Token = ""
	if f := s.clientPolicy.Load(); f != nil {
		return (*f)(ctx, user, h)
	}
	if check := s.cfg.CheckClient; check != nil {
		return ClientVerdict{Refuse: check(ctx, user, h)}
	}
	return ClientVerdict{}
}

// PostNotice writes text into user's history as a notice from
// cloudwire.SystemContact (event kind cloudwire.KindSystem, in the
// conversation of the contact and the user, read by the user only), once
// per device and stage: the message id is derived from the three, so a
// client reconnecting in a loop, on any node, gets it once. dup reports
// that it had been written before (nothing new was written).
func (s *Service) PostNotice(ctx context.Context, user, device, stage, text string) (dup bool, err error) {
	if !cloudwire.ValidID(user) || user == cloudwire.SystemContact || text == "" || len(text) > cloudwire.MaxTextSize {
		return false, fmt.Errorf("%w: a notice needs a user and a text of at most %d bytes", errBadRequest, cloudwire.MaxTextSize)
	}
	lr := logRecord{
		MsgID: systemMsgID("ntc", user, device, stage), Conv: cloudwire.DirectConversationID(cloudwire.SystemContact, user),
		Kind: cloudwire.KindSystem, From: cloudwire.SystemContact, To: user, Text: text,
		At: s.cfg.Now().UTC().Truncate(time.Millisecond),
	}
	_, dup, err = s.store.postSystem(ctx, lr, func() ([]string, error) { return []string{user}, nil })
	return dup, err
}
