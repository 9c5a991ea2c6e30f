package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// groupsBucket keeps every group's current state: key the group's subject
// token, value a groupState.
const groupsBucket = "cloud_groups"

// groupState is a group as of its last change (stored JSON).
type groupState struct {
	Name    string   `json:"name,omitempty"`
	Members []string `json:"members"` // sorted
	// Seq is the conversation sequence of the change it reflects.
	Seq uint64 `json:"seq"`
}

// loadGroup reads a group's state and its revision; an unknown group is
// errNotFound.
func (st *store) loadGroup(ctx context.Context, conv string) (groupState, uint64, error) {
	entry, err := st.groups.Get(ctx, subjectToken(conv))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return groupState{}, 0, fmt.Errorf("%w: group %s", errNotFound, conv)
	}
	if err != nil {
		return groupState{}, 0, fmt.Errorf("cloud: read group: %w", err)
	}
	var g groupState
	if err := json.Unmarshal(entry.Value(), &g); err != nil {
		return groupState{}, 0, fmt.Errorf("cloud: corrupt group %s: %w", conv, err)
	}
	return g, entry.Revision(), nil
}

// group creates a group or changes its members on behalf of actor, who
// must be a member (for add and remove). The change is appended to the
// group's log like a message, under the conversation's lock, and written
// to the inboxes of the members before and after it (so removed members
// learn of it); then the group's state is raised to it and the
// idempotency record stored. A resend of g.MsgID returns the original ack.
//
// A crash after the append is repaired by the client's resend (as for
// sends): the append finds the change, and the inbox and state writes are
// redone idempotently (the state only moves to a later sequence).
func (st *store) group(ctx context.Context, actor, device string, g cloudwire.Group, now time.Time) (sendRecord, bool, error) {
	if prior, ok, err := st.lookup(ctx, g.MsgID); err != nil {
		return sendRecord{}, false, err
	} else if ok {
		return sameSender(prior, actor)
	}
	conv := g.Conv
	if g.Op == cloudwire.GroupCreate {
		conv = cloudwire.GroupConversationID(actor, g.MsgID)
	}
	lr, dup, err := st.changeGroup(ctx, logRecord{
		MsgID: g.MsgID, Conv: conv, From: actor, FromDevice: device,
		Kind: cloudwire.KindGroup, Op: g.Op, Name: g.Name,
		At: now.UTC().Truncate(time.Millisecond),
	}, g.Members)
	if err != nil {
		return sendRecord{}, false, err
	}
	rec := sendRecord{MsgID: lr.MsgID, Conv: lr.Conv, Seq: lr.Seq, At: lr.At, From: lr.From}
	if err := st.remember(ctx, rec); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return sendRecord{}, false, err
		}
		prior, ok, err := st.lookup(ctx, g.MsgID)
		if err != nil || !ok {
			return sendRecord{}, false, fmt.Errorf("cloud: send record vanished: %v", err)
		}
		return sameSender(prior, actor)
	}
	return rec, dup, nil
}

// changeGroup computes, appends and fans out one change, and raises the
// group's state, all under the conversation's lock.
func (st *store) changeGroup(ctx context.Context, lr logRecord, names []string) (logRecord, bool, error) {
	e := st.locks.acquire(lr.Conv)
	defer st.locks.release(lr.Conv, e)
	cur, rev, err := st.loadGroup(ctx, lr.Conv)
	exists := err == nil
	if err != nil && !errors.Is(err, errNotFound) {
		return logRecord{}, false, err
	}
	switch lr.Op {
	case cloudwire.GroupCreate:
		all := sortedSet(append([]string{lr.From}, names...))
		lr.Members, lr.All = all, all
	case cloudwire.GroupAdd, cloudwire.GroupRemove:
		if !exists {
			return logRecord{}, false, err
		}
		if !slices.Contains(cur.Members, lr.From) {
			return logRecord{}, false, fmt.Errorf("%w: %s is not a member of %s", errForbidden, lr.From, lr.Conv)
		}
		lr.Name = cur.Name
		lr.Members, lr.All = applyChange(cur.Members, lr.Op, names)
	}
	if len(lr.All) > cloudwire.MaxGroupMembers {
		return logRecord{}, false, fmt.Errorf("%w: a group has at most %d members", errBadRequest, cloudwire.MaxGroupMembers)
	}
	dup := false
	if len(lr.Members) == 0 || (lr.Op == cloudwire.GroupCreate && exists) {
		// Nothing to change, or a create whose group exists: a redo
		// after a crash if the change is the log's last entry.
		prev, ok := st.lastIfSame(ctx, lr)
		switch {
		case ok:
			lr, dup = prev, true
		case lr.Op == cloudwire.GroupCreate:
			return logRecord{}, false, fmt.Errorf("%w: group %s exists", errConflict, lr.Conv)
		default:
			return logRecord{}, false, fmt.Errorf("%w: the change leaves %s as it is", errBadRequest, lr.Conv)
		}
	}
	if !dup {
		from := lr.From
		if lr, dup, err = st.append(ctx, e, lr); err != nil {
			return logRecord{}, false, err
		}
		if dup && lr.From != from {
			return logRecord{}, false, fmt.Errorf("%w: %s", errConflict, lr.MsgID)
		}
	}
	// Everyone before and after the change hears of it.
	if err := st.fanOut(ctx, lr.events(sortedSet(append(slices.Clone(lr.All), lr.Members...))), cloudwire.KindGroup); err != nil {
		return logRecord{}, false, err
	}
	if err := st.raiseGroup(ctx, lr, cur, rev); err != nil {
		return logRecord{}, false, err
	}
	if lr.Op == cloudwire.GroupRemove {
		err = st.unindexMembers(ctx, lr.Conv, lr.Members)
	} else {
		err = st.indexMembers(ctx, lr.Conv, lr.Members)
	}
	if err != nil {
		return logRecord{}, false, err
	}
	return lr, dup, nil
}

// lastIfSame returns the conversation's last log entry when it is lr's
// message id (a change already appended).
func (st *store) lastIfSame(ctx context.Context, lr logRecord) (logRecord, bool) {
	raw, err := st.conv.GetLastMsgForSubject(ctx, convPrefix+lr.Conv)
	if err != nil {
		return logRecord{}, false
	}
	prev, err := decodeLog(raw.Data)
	if err != nil || prev.MsgID != lr.MsgID {
		return logRecord{}, false
	}
	return prev, true
}

// raiseGroup stores the group's state after change lr unless the stored
// state is already at or past it, with compare-and-set against other
// nodes.
func (st *store) raiseGroup(ctx context.Context, lr logRecord, cur groupState, rev uint64) error {
	key := subjectToken(lr.Conv)
	for range maxStateAttempts {
		if rev != 0 && cur.Seq >= lr.Seq {
			return nil
		}
		data, err := json.Marshal(groupState{Name: lr.Name, Members: lr.All, Seq: lr.Seq})
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = st.groups.Create(ctx, key, data)
		} else {
			_, err = st.groups.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongRevision(err) {
			return fmt.Errorf("cloud: write group: %w", err)
		}
		if cur, rev, err = st.loadGroup(ctx, lr.Conv); err != nil {
			return err
		}
	}
	return fmt.Errorf("cloud: group %s still conflicting after %d attempts", lr.Conv, maxStateAttempts)
}

// applyChange returns the users an add or remove actually changes and the
// members after it.
func applyChange(members []string, op string, names []string) (changed, after []string) {
	for _, n := range sortedSet(names) {
		if slices.Contains(members, n) == (op == cloudwire.GroupRemove) {
			changed = append(changed, n)
		}
	}
	if op == cloudwire.GroupAdd {
		return changed, sortedSet(append(slices.Clone(members), changed...))
	}
	for _, m := range members {
		if !slices.Contains(changed, m) {
			after = append(after, m)
		}
	}
	return changed, after
}

// sortedSet returns the distinct values of list, sorted.
func sortedSet(list []string) []string {
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}
