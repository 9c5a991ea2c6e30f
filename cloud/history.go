package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// members returns the users of a conversation: a group's current members,
// or for a one-to-one conversation those of its messages (its id is a hash
// of them; one with no message yet is unknown).
func (st *store) members(ctx context.Context, conv string) ([]string, error) {
	if cloudwire.IsGroupID(conv) {
		g, _, err := st.loadGroup(ctx, conv)
		return g.Members, err
	}
	raw, err := st.conv.GetLastMsgForSubject(ctx, convPrefix+conv)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: conversation %s", errNotFound, conv)
	}
	if err != nil {
		return nil, fmt.Errorf("cloud: read conversation: %w", err)
	}
	lr, err := decodeLog(raw.Data)
	if err != nil {
		return nil, err
	}
	return participants(lr.From, lr.To), nil
}

// convHead returns the last sequence of conv and the log position (stream
// sequence) of that message; both are 0 for a conversation without
// messages.
func (st *store) convHead(ctx context.Context, conv string) (seq, pos uint64, err error) {
	raw, err := st.conv.GetLastMsgForSubject(ctx, convPrefix+conv)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("cloud: read conversation head: %w", err)
	}
	lr, err := decodeLog(raw.Data)
	if err != nil {
		return 0, 0, err
	}
	return lr.Seq, raw.Sequence, nil
}

// nextInConv returns the first message of conv at log position pos or
// later.
func (st *store) nextInConv(ctx context.Context, conv string, pos uint64) (logRecord, uint64, error) {
	raw, err := st.conv.GetMsg(ctx, pos, jetstream.WithGetMsgSubject(convPrefix+conv))
	if err != nil {
		return logRecord{}, 0, fmt.Errorf("cloud: read conversation log: %w", err)
	}
	lr, err := decodeLog(raw.Data)
	return lr, raw.Sequence, err
}

// findSeq returns the log position of conv's message with sequence seq
// (1 <= seq <= the head's, whose position is headPos). Conversation
// sequences grow with log positions, so a binary search over positions
// finds it in O(log n) direct reads, without an index.
func (st *store) findSeq(ctx context.Context, conv string, seq, headPos uint64) (uint64, error) {
	lo, hi := uint64(1), headPos // invariant: the message is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		lr, pos, err := st.nextInConv(ctx, conv, mid)
		if err != nil {
			return 0, err
		}
		switch {
		case lr.Seq == seq:
			return pos, nil
		case lr.Seq < seq:
			lo = pos + 1
		default:
			hi = mid
		}
	}
	lr, pos, err := st.nextInConv(ctx, conv, lo)
	if err != nil {
		return 0, err
	}
	if lr.Seq != seq {
		return 0, fmt.Errorf("cloud: conversation %s has no sequence %d (found %d)", conv, seq, lr.Seq)
	}
	return pos, nil
}

// history reads the page of conv that h asks for, on behalf of user, who
// must be a member.
func (st *store) history(ctx context.Context, user string, h cloudwire.History) (cloudwire.Page, error) {
	members, err := st.members(ctx, h.Conv)
	if err != nil {
		return cloudwire.Page{}, err
	}
	if !slices.Contains(members, user) {
		return cloudwire.Page{}, fmt.Errorf("%w: %s is not a member of %s", errForbidden, user, h.Conv)
	}
	head, headPos, err := st.convHead(ctx, h.Conv)
	if err != nil {
		return cloudwire.Page{}, err
	}
	limit := uint64(h.Limit) // #nosec G115 -- 0 to MaxHistoryLimit: History.Validate refuses the rest
	if limit == 0 {
		limit = cloudwire.DefaultHistoryLimit
	}
	// The page is [first, last].
	var first, last uint64
	page := cloudwire.Page{Conv: h.Conv, Head: head, Msgs: []cloudwire.Message{}}
	switch {
	case h.After > 0:
		first, last = h.After+1, min(head, h.After+limit)
		page.More = last < head
	default:
		end := head
		if h.Before > 0 {
			end = min(head, h.Before-1)
		}
		last = end
		first = 1
		if end > limit {
			first = end - limit + 1
		}
		page.More = first > 1
	}
	if first <= last && last > 0 {
		pos, err := st.findSeq(ctx, h.Conv, first, headPos)
		if err != nil {
			return cloudwire.Page{}, err
		}
		for seq := first; seq <= last; seq++ {
			lr, p, err := st.nextInConv(ctx, h.Conv, pos)
			if err != nil {
				return cloudwire.Page{}, err
			}
			page.Msgs = append(page.Msgs, lr.message())
			pos = p + 1
		}
	}
	page.Receipts, err = st.receiptStates(ctx, h.Conv, members)
	if err != nil {
		return cloudwire.Page{}, err
	}
	return page, nil
}

func (lr logRecord) message() cloudwire.Message {
	kind := lr.Kind
	if kind == "" {
		kind = cloudwire.KindMsg
	}
	return cloudwire.Message{
		Seq: lr.Seq, Kind: kind, MsgID: lr.MsgID, From: lr.From,
		FromDevice: lr.FromDevice, To: lr.To, Text: lr.Text,
		Op: lr.Op, Members: lr.Members, Name: lr.Name, At: lr.At, File: lr.File,
	}
}
