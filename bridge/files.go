package bridge

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// Files across the boundary.
//
// Legacy to cloud: a chat v3 file offer from a legacy user to a cloud-home
// user is checked against the cloud's file size bound (refused with
// legacywire.CodeFileTooLarge above it), recorded in the files bucket and
// only then acknowledged: from there on the transfer survives a bridge
// restart. A worker accepts the offer from the offering device
// (file_accept, acting for the recipient), streams the chunks into the
// cloud's object store (cloud.BridgeLive.PutFile, which checks size and
// SHA-256) and sends the cloud file message as the legacy sender. The
// offer's id is the object's name and the message id, so a resent offer,
// a retried transfer or a restart mid-transfer stores one object and one
// message.
//
// Cloud to legacy: a cloud file message to a legacy-home user becomes a
// chat v3 file offer from the bridge (its id the message id) on a v3
// device, which fetches the bytes from the bridge (serveFile reads them from
// the object store); a v1 or v2 device gets a text notice with the file's
// name, size and download link instead. Either counts as delivered.

// filesKV is the bridge's file ledger: "in.<offer id>" for each legacy
// offer being carried (fileJob; deleted once done, so that the workers
// look only at pending ones), "failed.<offer id>" for those given up,
// "out.<message id>.<recipient hash>" for each cloud file offered to a
// legacy user (fileOut: a group's file is offered to each legacy member). An offer resent after its job is done makes a new job that
// finds the object stored and the message sent (the cloud answers the
// send as a duplicate): nothing is pulled or written twice.
const filesKV = "ferry_bridge_files"

const (
	// fileJobTTL is how long the ledger keeps a record: longer than a
	// legacy device keeps serving an offer.
	fileJobTTL = 2 * legacy.FileOfferTTL
	// fileRetryEvery is how often pending transfers are looked at again.
	fileRetryEvery = 2 * time.Second
	// fileBackoffMax caps the wait between two attempts of one transfer.
	fileBackoffMax = time.Minute
	// maxFileAttempts is how many times a transfer is tried before it is
	// given up (counted failed).
	maxFileAttempts = 8
	// maxFileTransfers bounds the transfers running at once.
	maxFileTransfers = 4
	// fileTransferTimeout bounds one attempt of one transfer.
	fileTransferTimeout = 10 * time.Minute
)

// kindFile is the kind label of files in gateway_bridge_items_total and
// gateway_bridge_route_decisions_total.
const kindFile = "file"

// File job states.
const (
	filePending = "pending"
	fileDone    = "done"
	fileFailed  = "failed"
)

// Results of gateway_bridge_files_total.
const (
	fileResultOK       = "ok"
	fileResultNotice   = "notice" // a v1/v2 device got a text notice with a link
	fileResultTooLarge = "too_large"
	fileResultRefused  = "refused"
	fileResultRetry    = "retry"
	fileResultFailed   = "failed"
)

// fileJob is a legacy offer the bridge took (stored JSON).
type fileJob struct {
	Offer    legacywire.FileOffer `json:"offer"`
	Peer     string               `json:"peer"` // the offering device
	State    string               `json:"state"`
	Attempts int                  `json:"attempts,omitempty"`
	NextAt   time.Time            `json:"next_at,omitzero"`
	Error    string               `json:"error,omitempty"`
}

// fileOut is a cloud file the bridge offered to a legacy user (stored JSON).
type fileOut struct {
	File cloudwire.File `json:"file"`
	To   string         `json:"to"`
}

// fileRelay carries files across the boundary.
type fileRelay struct {
	b    *Bridge
	kv   jetstream.KeyValue
	keys migratestore.KeyIndex // lists kv's jobs
	m    *fileMetrics

	kick chan struct{}
	sem  chan struct{}
	mu   sync.Mutex
	busy map[string]bool
	// pendingBy holds, per legacy sender, the keys of their offers not yet
	// carried (as this bridge knows them: taken here, or found pending by
	// startDue); changed is closed and replaced whenever one is done.
	// A text from the sender waits for them (waitSender).
	pendingBy map[string]map[string]bool
	changed   chan struct{}
}

type fileMetrics struct {
	files *prometheus.CounterVec
	bytes *prometheus.CounterVec
}

func newFileRelay(ctx context.Context, b *Bridge) (*fileRelay, error) {
	kv, err := b.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      filesKV,
		Description: "Ferry bridge: file transfers across the boundary (legacy offers taken, cloud files offered)",
		History:     1,
		TTL:         fileJobTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: files bucket: %w", err)
	}
	m := &fileMetrics{
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_files_total",
			Help: "Files the bridge carried between the overlay and the cloud, by direction and result (ok, notice: a text notice with a link for a device without files, too_large, refused, retry: an attempt failed and will be retried, failed: given up).",
		}, []string{"direction", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_file_bytes_total",
			Help: "Bytes of files the bridge carried between the overlay and the cloud, by direction.",
		}, []string{"direction"}),
	}
	for _, dir := range []string{dirLegacyToCloud, dirCloudToLegacy} {
		m.bytes.WithLabelValues(dir)
		for _, res := range []string{fileResultOK, fileResultRefused, fileResultFailed} {
			m.files.WithLabelValues(dir, res)
		}
	}
	if err := register(b.cfg.Registerer, "file ", m.files, m.bytes); err != nil {
		return nil, err
	}
	keys, err := migratestore.OpenKeyIndex(ctx, b.cfg.JS, filesKV)
	if err != nil {
		return nil, err
	}
	return &fileRelay{
		b: b, kv: kv, keys: keys, m: m,
		kick: make(chan struct{}, 1),
		sem:  make(chan struct{}, maxFileTransfers),
		busy: map[string]bool{},

		pendingBy: map[string]map[string]bool{},
		changed:   make(chan struct{}),
	}, nil
}

func (r *fileRelay) count(dir, result string) { r.m.files.WithLabelValues(dir, result).Inc() }

// run carries the pending transfers, the ones left by an earlier run
// first, until ctx ends; it returns once its transfers have stopped.
func (r *fileRelay) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(fileRetryEvery)
	defer tick.Stop()
	for {
		r.startDue(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.kick:
		}
	}
}

// startDue starts a transfer for every pending job whose time has come.
func (r *fileRelay) startDue(ctx context.Context, wg *sync.WaitGroup) {
	tracked := r.trackedKeys()
	keys, err := r.keys.Keys(ctx, "in.")
	if err != nil {
		r.b.log.Warn("file jobs", "err", err)
		return
	}
	// Tracked before the listing, so after its Create: a tracked key the
	// listing lacks has left the bucket (its job expired).
	listed := make(map[string]bool, len(tracked))
	for _, key := range keys {
		if _, ok := tracked[key]; ok {
			listed[key] = true
		}
	}
	for key, sender := range tracked {
		if !listed[key] {
			r.untrack(sender, key)
		}
	}
	for _, key := range keys {
		job, _, err := r.load(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && job.State != filePending) {
			// Carried or given up (by another node too), or expired: a
			// text of its sender no longer waits for it.
			if sender, ok := tracked[key]; ok {
				r.untrack(sender, key)
			}
			continue
		}
		if err != nil {
			continue
		}
		r.track(job.Offer.From, key)
		if r.b.now().Before(job.NextAt) {
			continue
		}
		r.mu.Lock()
		busy := r.busy[key]
		r.busy[key] = true
		r.mu.Unlock()
		if busy {
			continue
		}
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				<-r.sem
				r.mu.Lock()
				delete(r.busy, key)
				r.mu.Unlock()
			}()
			r.attempt(ctx, key)
		}()
	}
}

func (r *fileRelay) load(ctx context.Context, key string) (fileJob, uint64, error) {
	e, err := r.kv.Get(ctx, key)
	if err != nil {
		return fileJob{}, 0, err
	}
	var job fileJob
	if err := json.Unmarshal(e.Value(), &job); err != nil {
		return fileJob{}, 0, fmt.Errorf("bridge: corrupt file job %s: %w", key, err)
	}
	return job, e.Revision(), nil
}

func (r *fileRelay) save(ctx context.Context, key string, job fileJob, rev uint64) error {
	data, err := json.Marshal(job)
	if err != nil {
		return err
	}
	_, err = r.kv.Update(ctx, key, data, rev)
	return err
}

// fromLegacy takes a file offer from a legacy device: it is acknowledged
// once the job is in the ledger (or was already).
func (r *fileRelay) fromLegacy(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	b := r.b
	o := *f.FileOffer
	refuse := func(code, text, result string) legacywire.ChatAck {
		r.count(dirLegacyToCloud, result)
		return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: code, Error: text}
	}
	if u, ok := b.cfg.State.Get(o.To); !ok || !u.CloudHome() {
		b.decide(kindFile, pathEscalation)
		return refuse(CodeNotHere, "recipient is not served by the bridge; look the user up again", fileResultRefused)
	}
	if !cloudwire.ValidMsgID(o.ID) || !cloudwire.ValidFileName(o.Name) {
		return refuse(legacywire.CodeBadFrame, "file id or name the cloud cannot take", fileResultRefused)
	}
	if no := b.sendAs(from, &cloudwire.Send{MsgID: o.ID}, kindFile); no != nil {
		return refuse(no.Code, no.Error, fileResultRefused)
	}
	limit, err := b.live.cloud.MaxFileSize(ctx)
	if err != nil {
		b.log.Warn("file offer: cloud file store", "err", err)
		return refuse(CodeUnavailable, "cloud file store unavailable", resultError)
	}
	if o.Size > limit {
		return refuse(legacywire.CodeFileTooLarge,
			fmt.Sprintf("%s can receive files of at most %d bytes; this one has %d", o.To, limit, o.Size), fileResultTooLarge)
	}
	data, err := json.Marshal(fileJob{Offer: o, Peer: from.PeerID, State: filePending})
	if err != nil {
		return refuse(CodeUnavailable, "cannot record the offer", resultError)
	}
	key := "in." + o.ID
	if _, err := r.kv.Create(ctx, key, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		b.log.Warn("file offer: record", "file", o.ID, "err", err)
		return refuse(CodeUnavailable, "cannot record the offer", resultError)
	}
	// A resent offer (ErrKeyExists) is acknowledged again and changes
	// nothing: its job is pending.
	r.track(o.From, key)
	b.decide(kindFile, pathInterop)
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

// attempt makes one attempt at the job under key and records its outcome.
func (r *fileRelay) attempt(ctx context.Context, key string) {
	b := r.b
	job, rev, err := r.load(ctx, key)
	if err != nil || job.State != filePending {
		return
	}
	start := b.now()
	actx, cancel := context.WithTimeout(ctx, fileTransferTimeout)
	n, err := r.transfer(actx, job)
	cancel()
	if ctx.Err() != nil {
		return // stopping: the job stays pending for the next run
	}
	job.Attempts++
	switch {
	case err == nil:
		job.State, job.Error = fileDone, ""
		r.count(dirLegacyToCloud, fileResultOK)
		r.m.bytes.WithLabelValues(dirLegacyToCloud).Add(float64(n))
		b.countItem(dirLegacyToCloud, kindFile, resultOK)
		b.metrics.latency.WithLabelValues(dirLegacyToCloud).Observe(b.now().Sub(start).Seconds())
	case permanent(err) || job.Attempts >= maxFileAttempts:
		job.State, job.Error = fileFailed, err.Error()
		r.count(dirLegacyToCloud, fileResultFailed)
		b.countItem(dirLegacyToCloud, kindFile, resultError)
		b.log.Warn("file transfer given up", "file", job.Offer.ID, "attempts", job.Attempts, "err", err)
		r.tellSender(ctx, job.Offer, err)
	default:
		job.Error = err.Error()
		job.NextAt = b.now().Add(min(fileBackoffMax, time.Duration(1<<min(job.Attempts, 10))*time.Second/2))
		r.count(dirLegacyToCloud, fileResultRetry)
		b.log.Info("file transfer will be retried", "file", job.Offer.ID, "attempt", job.Attempts, "err", err)
	}
	var serr error
	switch job.State {
	case filePending:
		serr = r.save(ctx, key, job, rev)
	case fileFailed:
		var data []byte
		if data, serr = json.Marshal(job); serr == nil {
			if _, serr = r.kv.Put(ctx, "failed."+job.Offer.ID, data); serr == nil {
				serr = r.kv.Delete(ctx, key, jetstream.LastRevision(rev))
			}
		}
	default:
		serr = r.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	}
	if serr != nil {
		b.log.Warn("file job", "file", job.Offer.ID, "state", job.State, "err", serr)
	}
	if job.State != filePending {
		r.untrack(job.Offer.From, key)
	}
}

// track records that sender's offer under key is pending.
func (r *fileRelay) track(sender, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pendingBy[sender] == nil {
		r.pendingBy[sender] = map[string]bool{}
	}
	r.pendingBy[sender][key] = true
}

// trackedKeys maps the keys of the offers tracked as pending to their
// senders.
func (r *fileRelay) trackedKeys() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := map[string]string{}
	for sender, ks := range r.pendingBy {
		for k := range ks {
			keys[k] = sender
		}
	}
	return keys
}

// untrack records that sender's offer under key is done (carried or given
// up) and wakes the texts waiting for it.
func (r *fileRelay) untrack(sender, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pendingBy[sender], key)
	if len(r.pendingBy[sender]) == 0 {
		delete(r.pendingBy, sender)
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitSender returns once no offer of sender's is pending, so that a text
// they sent after a file reaches the cloud after it: the file message is
// sent when its bytes are stored, after the offer was acknowledged. It
// starts the transfers at once and fails when ctx ends first (a transfer
// that is failing waits for its backoff); the caller then refuses the
// text with unavailable, which the device retries, order kept. An offer
// taken by another bridge node, or left by a run before this one and not
// yet listed, is not waited for; one that left the bucket (carried by
// another node, expired) stops being waited for at the next listing
// (startDue, which the wait kicks).
func (r *fileRelay) waitSender(ctx context.Context, sender string) error {
	for {
		r.mu.Lock()
		n, changed := len(r.pendingBy[sender]), r.changed
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case r.kick <- struct{}{}:
		default:
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("bridge: %d files of the sender still pending: %w", n, ctx.Err())
		}
	}
}

// tellSender tells the legacy sender's devices, in a message from
// cloudwire.SystemContact, that their file did not reach the cloud user:
// best effort, a sender who cannot be reached is only logged.
func (r *fileRelay) tellSender(ctx context.Context, o legacywire.FileOffer, cause error) {
	why := "it could not be fetched from your device"
	switch {
	case errors.Is(cause, cloud.ErrFileTooLarge):
		why = "it is larger than the new app accepts"
	case errors.Is(cause, cloud.ErrFileHash):
		why = "what arrived did not match the file offered"
	}
	msg := legacywire.ChatMessage{
		ID: uuid.Must(uuid.NewV7()).String(), From: cloudwire.SystemContact, To: o.From, SentAt: r.b.now().UTC(),
		Text: fmt.Sprintf("Your file %q could not be delivered to %s: %s. Send it again to retry.", o.Name, o.To, why),
	}
	if _, err := r.b.deliverOnce(ctx, msg); err != nil {
		r.b.log.Info("file failure notice not delivered", "file", o.ID, "err", err)
	}
}

// errPermanent marks a transfer no retry can fix.
var errPermanent = errors.New("bridge: file transfer cannot succeed")

func permanent(err error) bool {
	return errors.Is(err, errPermanent) || errors.Is(err, cloud.ErrFileTooLarge) || errors.Is(err, cloud.ErrFileHash)
}

// transfer stores the offered bytes in the cloud (unless they are there
// already) and sends the file message; it returns the bytes pulled.
func (r *fileRelay) transfer(ctx context.Context, job fileJob) (int64, error) {
	b := r.b
	o := job.Offer
	bf := cloud.BridgeFile{ID: o.ID, From: o.From, To: o.To, Name: o.Name, SHA256: o.SHA256, Size: o.Size}
	file, err := b.live.cloud.StoredFile(ctx, o.ID)
	var pulled int64
	if errors.Is(err, cloud.ErrUnknownFile) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		// The store outlives ctx by a little: a transfer cut by a stop
		// ends with a failed read (pull resets its stream), after which
		// the object store purges what it wrote; a cancelled context
		// would leave the chunks behind.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fileTransferTimeout)
		defer cancel()
		go func() {
			var perr error
			file, perr = b.live.cloud.PutFile(pctx, bf, pr)
			_ = pr.CloseWithError(cmp.Or(perr, io.ErrClosedPipe))
			done <- perr
		}()
		pulled, err = r.pull(ctx, job, pw)
		_ = pw.CloseWithError(err)
		if perr := <-done; perr != nil {
			return pulled, fmt.Errorf("store file %s: %w", o.ID, perr)
		}
	}
	if err != nil {
		return pulled, err
	}
	link, err := b.linkAs(ctx, o.From)
	if err != nil {
		return pulled, err
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	send := cloudwire.Send{To: o.To, MsgID: o.ID, Text: o.Name, File: &file}
	if no := b.sendAs(legacywire.Certificate{User: o.From, PeerID: job.Peer}, &send, kindFile); no != nil {
		return pulled, fmt.Errorf("%w: send file message %s: %s", errPermanent, o.ID, no.Error)
	}
	if _, err := link.Send(sctx, send); err != nil {
		return pulled, fmt.Errorf("send file message %s: %w", o.ID, err)
	}
	if send.Device != "" {
		b.own.items.WithLabelValues(kindFile, resultOK).Inc()
	}
	b.live.watch(o.From)
	return pulled, nil
}

// pull accepts the offer from the offering device, acting for the
// recipient, and writes its chunks to w in order: each checked against
// the offer (file, offset, chunk size, total size).
func (r *fileRelay) pull(ctx context.Context, job fileJob, w io.Writer) (int64, error) {
	b := r.b
	o := job.Offer
	pid, err := peer.Decode(job.Peer)
	if err != nil {
		return 0, fmt.Errorf("%w: offering device %q: %v", errPermanent, job.Peer, err)
	}
	to := peer.AddrInfo{ID: pid, Addrs: b.cfg.Host.Peerstore().Addrs(pid)}
	if len(to.Addrs) == 0 {
		targets := b.legacyTargets(ctx, o.From)
		for _, t := range targets {
			if t.ID == pid {
				to = t
			}
		}
	}
	if err := b.cfg.Host.Connect(ctx, to); err != nil {
		return 0, fmt.Errorf("connect to the offering device: %w", err)
	}
	s, err := b.cfg.Host.NewStream(ctx, pid, protocol.ID(legacywire.ChatV3ProtocolID))
	if err != nil {
		return 0, fmt.Errorf("open chat v3 stream to the offering device: %w", err)
	}
	defer s.Reset() //nolint:errcheck // a no-op after Close
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(legacy.ChatRoundTripTimeout))
	bw := bufio.NewWriter(s)
	accept := legacywire.ChatFrame{Type: legacywire.FrameFileAccept, ID: o.ID + "-accept", FileAnswer: &legacywire.FileAnswer{
		FileID: o.ID, From: o.To, To: o.From,
	}}
	if len(accept.ID) > legacy.MaxMessageIDLen {
		accept.ID = o.ID
	}
	if err := legacywire.WriteFrame(bw, legacywire.ChatHello{Cert: b.cert}); err != nil {
		return 0, err
	}
	if err := legacywire.WriteFrame(bw, accept); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write accept: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return 0, fmt.Errorf("write accept: %w", err)
	}
	br := bufio.NewReader(s)
	var ack legacywire.ChatFrame
	if err := legacywire.ReadFrame(br, &ack); err != nil {
		return 0, fmt.Errorf("read accept ack: %w", err)
	}
	if ack.Type != legacywire.FrameAck || ack.Ack == nil {
		return 0, fmt.Errorf("%w: answer %q to file_accept", errPermanent, ack.Type)
	}
	if !ack.Ack.Delivered() {
		if ack.Ack.Code == legacywire.CodeUnknownFile {
			return 0, fmt.Errorf("%w: the device no longer offers %s: %s", errPermanent, o.ID, ack.Ack.Error)
		}
		return 0, fmt.Errorf("device refused file_accept: %s: %s", ack.Ack.Code, ack.Ack.Error)
	}
	var off int64
	for off < o.Size {
		_ = s.SetReadDeadline(time.Now().Add(legacy.ChatReadTimeout))
		var fr legacywire.ChatFrame
		if err := legacywire.ReadFrame(br, &fr); err != nil {
			return off, fmt.Errorf("file %s cut at %d of %d bytes: %w", o.ID, off, o.Size, err)
		}
		c := fr.FileChunk
		if fr.Type != legacywire.FrameFileChunk || !fr.Valid() || c.FileID != o.ID || c.Offset != off ||
			len(c.Data) > o.ChunkSize || off+int64(len(c.Data)) > o.Size {
			return off, fmt.Errorf("%w: unexpected frame %q in file %s at %d", errPermanent, fr.Type, o.ID, off)
		}
		if _, err := w.Write(c.Data); err != nil {
			return off, err
		}
		off += int64(len(c.Data))
	}
	_ = s.Close()
	return off, nil
}

// deliverFile makes one attempt to hand a cloud file message to one of the
// recipient's legacy devices: a file offer to a chat v3 device, a notice
// with the download link to an older one.
func (r *fileRelay) deliverFile(ctx context.Context, ev cloudwire.Event) (legacywire.ChatAck, error) {
	b := r.b
	f := *ev.File
	data, err := json.Marshal(fileOut{File: f, To: ev.User})
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	if _, err := r.kv.Put(ctx, outKey(ev.MsgID, ev.User), data); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("bridge: record file offer %s: %w", ev.MsgID, err)
	}
	noticeEv := ev
	noticeEv.Text = fileNotice(ev.From, f, cloud.FileURL(b.cfg.CloudURL, f.ID), ev.Text)
	notice, err := b.legacyCopy(ctx, noticeEv)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	offer := legacywire.FileOffer{
		ID: ev.MsgID, From: ev.From, To: ev.User, Name: f.Name, Size: f.Size, SHA256: f.SHA256,
		ChunkSize: legacywire.MaxFileChunk, SentAt: ev.At,
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	targets, err := b.devicesOf(ctx, ev.User)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	var last error
	for _, t := range targets {
		frame, result := legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: notice.ID, Msg: &notice}, fileResultNotice
		maxVersion := 2
		if v, err := r.chatVersion(ctx, t); err == nil && v >= 3 && offer.Valid() {
			frame, result, maxVersion = legacywire.ChatFrame{Type: legacywire.FrameFileOffer, ID: offer.ID, FileOffer: &offer}, fileResultOK, 3
		}
		ack, _, err := legacy.SendChatFrame(ctx, b.cfg.Host, b.cert, t, maxVersion, frame)
		if err == nil && ack.Code == legacywire.CodeRateLimited {
			err = fmt.Errorf("device %s rate-limited the bridge: %s", t.ID, ack.Error)
		}
		if err != nil {
			last = err
			continue
		}
		switch {
		case ack.Delivered():
			r.count(dirCloudToLegacy, result)
		case ack.Code == legacywire.CodeFileTooLarge && frame.Type == legacywire.FrameFileOffer:
			// The device takes smaller files: the notice with the link
			// still reaches it.
			ack, _, err = legacy.SendChatFrame(ctx, b.cfg.Host, b.cert, t, 2, legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: notice.ID, Msg: &notice})
			if err != nil {
				last = err
				continue
			}
			if ack.Delivered() {
				r.count(dirCloudToLegacy, fileResultNotice)
			}
		default:
			r.count(dirCloudToLegacy, fileResultRefused)
		}
		return ack, nil
	}
	return legacywire.ChatAck{}, last
}

// chatVersion is the highest chat version the device t serves: from what
// identify learned, or else by opening (and resetting) a chat stream.
func (r *fileRelay) chatVersion(ctx context.Context, t peer.AddrInfo) (int, error) {
	h := r.b.cfg.Host
	if err := h.Connect(ctx, t); err != nil {
		return 0, err
	}
	ids := legacy.ChatProtocolIDs(legacy.LatestChatVersion)
	if ps, err := h.Peerstore().SupportsProtocols(t.ID, ids...); err == nil && len(ps) > 0 {
		for i, id := range ids { // highest first
			for _, p := range ps {
				if p == id {
					return legacy.LatestChatVersion - i, nil
				}
			}
		}
	}
	s, err := h.NewStream(ctx, t.ID, ids...)
	if err != nil {
		return 0, err
	}
	defer s.Reset() //nolint:errcheck // only the negotiation was wanted
	for i, id := range ids {
		if s.Protocol() == id {
			return legacy.LatestChatVersion - i, nil
		}
	}
	return 0, fmt.Errorf("negotiated unknown protocol %q", s.Protocol())
}

// fileNotice is how a cloud file reads on a device that cannot take files:
// who sent which file, how big, and where to get it.
func fileNotice(from string, f cloudwire.File, link, caption string) string {
	text := fmt.Sprintf("%s sent you a file: %q (%d bytes). This app version cannot receive files; open %s in a browser signed in to the new app to get it.",
		from, f.Name, f.Size, link)
	if caption != "" && caption != f.Name {
		text += "\n" + caption
	}
	return text
}

// serveFile is the bridge's ChatConfig.ServeFile: a legacy device that
// took a cloud file's offer fetches the bytes, read from the cloud's
// object store.
func (r *fileRelay) serveFile(ctx context.Context, from legacywire.Certificate, a legacywire.FileAnswer) (legacywire.ChatAck, *legacy.FileSource) {
	b := r.b
	refuse := func(code, text string) (legacywire.ChatAck, *legacy.FileSource) {
		r.count(dirCloudToLegacy, fileResultRefused)
		return legacywire.ChatAck{Status: legacywire.StatusRefused, Code: code, Error: text}, nil
	}
	if b.cfg.Admit != nil {
		if code, notice := b.cfg.Admit(ctx, from); code != "" {
			return refuse(code, notice)
		}
	}
	if !cloudwire.ValidMsgID(a.FileID) {
		return refuse(legacywire.CodeUnknownFile, "no file "+a.FileID+" offered here")
	}
	e, err := r.kv.Get(ctx, outKey(a.FileID, a.From))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return refuse(legacywire.CodeUnknownFile, "no file "+a.FileID+" offered here")
	}
	if err != nil {
		return refuse(CodeUnavailable, "file ledger unavailable")
	}
	var out fileOut
	if err := json.Unmarshal(e.Value(), &out); err != nil || out.To != a.From {
		return refuse(legacywire.CodeUnknownFile, fmt.Sprintf("no file %s offered to %q", a.FileID, a.From))
	}
	// The reader outlives this call (the chat handler writes the chunks
	// after it returns): it gets a context of its own, ended by Close.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fileTransferTimeout)
	f, rc, err := b.live.cloud.OpenFile(rctx, out.File.ID, a.From, a.Offset)
	if err != nil {
		cancel()
		if errors.Is(err, cloud.ErrUnknownFile) {
			return refuse(legacywire.CodeUnknownFile, "the file is no longer stored")
		}
		b.log.Warn("serve file", "file", a.FileID, "err", err)
		return refuse(CodeUnavailable, "the file cannot be read now")
	}
	return legacywire.ChatAck{Status: legacywire.StatusDelivered}, &legacy.FileSource{
		FileID: a.FileID, Offset: a.Offset, Size: f.Size, ChunkSize: legacywire.MaxFileChunk,
		R: &countingReader{rc: rc, cancel: cancel, n: r.m.bytes.WithLabelValues(dirCloudToLegacy)},
	}
}

// countingReader counts the bytes read through it and ends its context on
// Close.
type countingReader struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
	n      prometheus.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(float64(n))
	return n, err
}

func (c *countingReader) Close() error {
	defer c.cancel()
	return c.rc.Close()
}

// fileFrame takes the chat v3 file frames of legacy devices: offers to
// cloud-home users, and declines of the bridge's own offers (nothing to
// undo: the file stays in the cloud).
func (r *fileRelay) fileFrame(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	if f.Type == legacywire.FrameFileOffer {
		return r.fromLegacy(ctx, from, f)
	}
	r.count(dirCloudToLegacy, fileResultRefused)
	if err := r.kv.Delete(ctx, outKey(f.FileAnswer.FileID, f.FileAnswer.From)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		r.b.log.Debug("file declined", "err", err)
	}
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

// outKey is the ledger key of the offer of message msgID to user. Message
// ids are [A-Za-z0-9_-] and fit a key as they are; user ids need not.
func outKey(msgID, user string) string {
	h := sha256.Sum256([]byte(user))
	return "out." + msgID + "." + hex.EncodeToString(h[:12])
}

// isFileFrame reports the frames fileFrame takes.
func isFileFrame(typ string) bool {
	return typ == legacywire.FrameFileOffer || typ == legacywire.FrameFileDecline
}
