package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// receiptsBucket keeps every user's cumulative receipt state per
// conversation: key "<conv token>.<user token>", value a receiptState.
const receiptsBucket = "cloud_receipts"

// maxStateAttempts bounds compare-and-set retries on one receipt state.
const maxStateAttempts = 16

// watermarks is how far delivered and read reach.
type watermarks struct {
	Delivered uint64 `json:"delivered"`
	Read      uint64 `json:"read"`
}

func (w watermarks) get(status string) uint64 {
	if status == cloudwire.StatusRead {
		return w.Read
	}
	return w.Delivered
}

// raise moves the status's watermark to n (read also raises delivered:
// a message read was delivered) and never lowers anything.
func (w *watermarks) raise(status string, n uint64) {
	w.Delivered = max(w.Delivered, n)
	if status == cloudwire.StatusRead {
		w.Read = max(w.Read, n)
	}
}

// receiptState is one user's cumulative receipts in one conversation
// (stored JSON): the user's watermarks are the maximum over its devices.
type receiptState struct {
	watermarks
	Devices map[string]watermarks `json:"devices,omitempty"`
}

func receiptKey(conv, user string) string {
	return subjectToken(conv) + "." + subjectToken(user)
}

// loadReceipts reads user's receipt state in conv and its revision (0 when
// there is none yet).
func (st *store) loadReceipts(ctx context.Context, conv, user string) (receiptState, uint64, error) {
	entry, err := st.receipts.Get(ctx, receiptKey(conv, user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return receiptState{}, 0, nil
	}
	if err != nil {
		return receiptState{}, 0, fmt.Errorf("cloud: read receipt state: %w", err)
	}
	var rs receiptState
	if err := json.Unmarshal(entry.Value(), &rs); err != nil {
		return receiptState{}, 0, fmt.Errorf("cloud: corrupt receipt state %s: %w", entry.Key(), err)
	}
	return rs, entry.Revision(), nil
}

// receiptUpTo stores the cumulative receipt "by, on device, has delivered
// (or read) conv up to r.UpTo". by must be a member of conv and r.UpTo at
// most the conversation's head. The event goes to the inbox of every
// member, so the reader's other devices and the senders' devices all see
// it in their synced history; then the state is raised.
//
// A receipt below the device's watermark changes nothing (duplicate is
// set); one equal to it is written again, which the inbox's Nats-Msg-Id
// turns into nothing when the first write got through, and repairs a crash
// between the event and the state otherwise.
func (st *store) receiptUpTo(ctx context.Context, by, device string, r cloudwire.Receipt, now time.Time) (ack cloudwire.Ack, err error) {
	members, err := st.members(ctx, r.Conv)
	if err != nil {
		return cloudwire.Ack{}, err
	}
	if !slices.Contains(members, by) {
		return cloudwire.Ack{}, fmt.Errorf("%w: %s is not a member of %s", errForbidden, by, r.Conv)
	}
	head, _, err := st.convHead(ctx, r.Conv)
	if err != nil {
		return cloudwire.Ack{}, err
	}
	if r.UpTo > head {
		return cloudwire.Ack{}, fmt.Errorf("%w: up_to %d is beyond the conversation's last sequence %d", errBadRequest, r.UpTo, head)
	}
	rs, _, err := st.loadReceipts(ctx, r.Conv, by)
	if err != nil {
		return cloudwire.Ack{}, err
	}
	at := now.UTC().Truncate(time.Millisecond)
	if cur := rs.Devices[device].get(r.Status); cur > r.UpTo {
		return cloudwire.Ack{Conv: r.Conv, Seq: cur, At: at, Duplicate: true}, nil
	}
	events := make([]inboxRecord, 0, len(members))
	for _, u := range members {
		events = append(events, inboxRecord{
			User: u, Kind: cloudwire.KindReceiptUpTo, Conv: r.Conv, Seq: r.UpTo, UpTo: r.UpTo,
			FromDevice: device, Status: r.Status, By: by, At: at,
		})
	}
	kind := "upto." + subjectToken(r.Conv) + "." + subjectToken(by) + "." + subjectToken(device) +
		"." + r.Status + "." + strconv.FormatUint(r.UpTo, 10)
	if err := st.fanOut(ctx, events, kind); err != nil {
		return cloudwire.Ack{}, err
	}
	dup, err := st.raiseReceipts(ctx, r.Conv, by, device, r.Status, r.UpTo)
	if err != nil {
		return cloudwire.Ack{}, err
	}
	return cloudwire.Ack{Conv: r.Conv, Seq: r.UpTo, At: at, Duplicate: dup}, nil
}

// raiseReceipts raises by's state in conv with compare-and-set, merging
// with concurrent writers (other devices, other nodes). dup reports that
// the device's watermark was already there.
func (st *store) raiseReceipts(ctx context.Context, conv, by, device, status string, upTo uint64) (dup bool, err error) {
	key := receiptKey(conv, by)
	for range maxStateAttempts {
		rs, rev, err := st.loadReceipts(ctx, conv, by)
		if err != nil {
			return false, err
		}
		dw := rs.Devices[device]
		if dw.get(status) >= upTo {
			return true, nil
		}
		devices := make(map[string]watermarks, len(rs.Devices)+1)
		for d, w := range rs.Devices {
			devices[d] = w
		}
		dw.raise(status, upTo)
		devices[device] = dw
		next := receiptState{watermarks: rs.watermarks, Devices: devices}
		next.raise(status, upTo)
		data, err := json.Marshal(next)
		if err != nil {
			return false, err
		}
		if rev == 0 {
			_, err = st.receipts.Create(ctx, key, data)
		} else {
			_, err = st.receipts.Update(ctx, key, data, rev)
		}
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongRevision(err) {
			return false, fmt.Errorf("cloud: write receipt state: %w", err)
		}
	}
	return false, fmt.Errorf("cloud: receipt state %s still conflicting after %d attempts", key, maxStateAttempts)
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// receiptStates returns the cumulative receipts of conv's members, leaving
// out members who never sent one.
func (st *store) receiptStates(ctx context.Context, conv string, members []string) ([]cloudwire.ReceiptState, error) {
	var out []cloudwire.ReceiptState
	for _, u := range members {
		rs, rev, err := st.loadReceipts(ctx, conv, u)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			continue
		}
		out = append(out, cloudwire.ReceiptState{User: u, Delivered: rs.Delivered, Read: rs.Read})
	}
	return out, nil
}
