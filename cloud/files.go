package cloud

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Files: attachments of file messages (PROTOCOL.md, v9). The bytes live in
// a JetStream object store bucket, one object per file named by its id,
// whose metadata says who uploaded it to which conversation; a message
// names the file (cloudwire.File) and the service checks, when it is sent,
// that the sender uploaded it to that conversation. Clients upload with
// PUT cloudwire.FilesPath and download with GET cloudwire.FilesPath/ID,
// both with their session token; only the conversation's members may
// download. The bridge writes and reads the same bucket through
// BridgeLive (PutFile, OpenFile).

// filesBucket is the object store bucket of attachments.
const filesBucket = "ferry_files"

// DefaultMaxFileSize is FileConfig.MaxSize when zero: as large as the
// largest file a legacy device takes by default.
const DefaultMaxFileSize = 64 << 20

const (
	// fileChunk is the object store's chunk size for attachments.
	fileChunk = 128 << 10
	// fileRequestTimeout bounds one upload or download, including the
	// transfer of the bytes.
	fileRequestTimeout = 10 * time.Minute
	// metaMaxSize is the bucket metadata key that tells the bridge the
	// service's FileConfig.MaxSize.
	metaMaxSize = "ferry.max_file_size"
	// contentTypeDefault is the MIME type of an upload that names none.
	contentTypeDefault = "application/octet-stream"
)

// Errors of the file store. They sit next to the code that returns them
// because errors.go is shared; match them with errors.Is.
var (
	// ErrFileTooLarge is returned by BridgeLive.PutFile (and answered 413
	// to an upload) for a file over FileConfig.MaxSize; nothing is stored.
	ErrFileTooLarge = errors.New("cloud: file too large")
	// ErrFileHash is returned by BridgeLive.PutFile (and answered 422 to
	// an upload) when the bytes do not hash to the SHA-256 given, or do
	// not have the size given; nothing is stored.
	ErrFileHash = errors.New("cloud: file hash or size mismatch")
	// ErrUnknownFile is returned by BridgeLive.OpenFile (and answered 404)
	// for a file id the service does not hold.
	ErrUnknownFile = errors.New("cloud: unknown file")
	// errFilesFull: the bucket is at FileConfig.MaxBytes (507).
	errFilesFull = errors.New("cloud: file storage full")
)

// FileConfig bounds the attachments the service keeps.
type FileConfig struct {
	// MaxSize is the largest file accepted, in bytes; 0 means
	// DefaultMaxFileSize.
	MaxSize int64
	// MaxBytes bounds the whole bucket; when it is reached uploads are
	// refused (507) rather than older files dropped. 0 means no bound.
	MaxBytes int64
	// MaxAge is how long a file is kept; 0 means for ever (as long as the
	// conversation log, which has no age bound by default).
	MaxAge time.Duration
}

// Validate reports bounds New cannot use.
func (c FileConfig) Validate() error {
	if c.MaxSize < 0 || c.MaxBytes < 0 || c.MaxAge < 0 {
		return errors.New("cloud: config: negative Files.MaxSize, MaxBytes or MaxAge")
	}
	return nil
}

func (c FileConfig) maxSize() int64 {
	if c.MaxSize > 0 {
		return c.MaxSize
	}
	return DefaultMaxFileSize
}

// fileStore is the attachments bucket, opened by the service (create) or
// bound on first use by the bridge, whose settings are the service's.
type fileStore struct {
	js       jetstream.JetStream
	cfg      FileConfig
	replicas int
	create   bool
	m        *fileMetrics

	mu  sync.Mutex
	obj jetstream.ObjectStore
	max int64
}

// openFileStore creates or updates the service's attachments bucket.
func openFileStore(ctx context.Context, js jetstream.JetStream, replicas int, cfg FileConfig, reg prometheus.Registerer) (*fileStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newFileMetrics(reg)
	if err != nil {
		return nil, err
	}
	fs := &fileStore{js: js, cfg: cfg, replicas: max(replicas, 1), create: true, m: m}
	if _, err := fs.bucket(ctx); err != nil {
		return nil, err
	}
	return fs, nil
}

// bindFileStore binds to the service's bucket on first use.
func bindFileStore(js jetstream.JetStream) *fileStore {
	m, _ := newFileMetrics(nil)
	return &fileStore{js: js, m: m}
}

func (fs *fileStore) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	if fs == nil {
		return nil, fmt.Errorf("%w: files are not served here", errBadRequest)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.obj != nil {
		return fs.obj, nil
	}
	var (
		obj jetstream.ObjectStore
		err error
	)
	if fs.create {
		obj, err = fs.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      filesBucket,
			Description: "Ferry cloud attachments: one object per file, named by its id.",
			TTL:         fs.cfg.MaxAge,
			MaxBytes:    orUnlimited(fs.cfg.MaxBytes),
			Storage:     jetstream.FileStorage,
			Replicas:    fs.replicas,
			Metadata:    map[string]string{metaMaxSize: strconv.FormatInt(fs.cfg.maxSize(), 10)},
		})
		fs.max = fs.cfg.maxSize()
	} else {
		obj, err = fs.js.ObjectStore(ctx, filesBucket)
		if err == nil {
			fs.max = DefaultMaxFileSize
			if st, serr := obj.Status(ctx); serr == nil {
				if n, perr := strconv.ParseInt(st.Metadata()[metaMaxSize], 10, 64); perr == nil && n > 0 {
					fs.max = n
				}
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cloud: bucket %s: %w", filesBucket, err)
	}
	fs.obj = obj
	return obj, nil
}

// maxSize is the largest file the bucket takes.
func (fs *fileStore) maxSize(ctx context.Context) (int64, error) {
	if _, err := fs.bucket(ctx); err != nil {
		return 0, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.max, nil
}

// fileUpload is what is known of a file before its bytes: everything but
// the bytes, which must hash to SHA256 (and have Size bytes when Size is
// at least 0).
type fileUpload struct {
	ID, Name, MIME, SHA256 string
	Size                   int64 // -1: not announced
	From, Conv             string
	// Members are the users who may read the file; nil for a group, whose
	// current members may.
	Members []string
}

// fileInfo is a stored file and its access metadata.
type fileInfo struct {
	cloudwire.File
	From, Conv string
	Members    []string
}

// Object metadata keys.
const (
	metaName    = "name"
	metaMIME    = "mime"
	metaSHA256  = "sha256"
	metaFrom    = "from"
	metaConv    = "conv"
	metaMembers = "members"
)

// put stores r's bytes as up. A file with up.ID already stored is kept
// and returned when it is the same upload (same hash, conversation and
// sender): the bridge's retries store one object. Nothing is stored when
// the bytes are over the size bound, do not hash to up.SHA256, or do not
// have up.Size bytes.
func (fs *fileStore) put(ctx context.Context, up fileUpload, r io.Reader) (cloudwire.File, error) {
	obj, err := fs.bucket(ctx)
	if err != nil {
		return cloudwire.File{}, err
	}
	limit, err := fs.maxSize(ctx)
	if err != nil {
		return cloudwire.File{}, err
	}
	if up.Size > limit {
		return cloudwire.File{}, tooLarge(up.Size, limit)
	}
	if prior, err := fs.info(ctx, up.ID); err == nil {
		if prior.SHA256 != up.SHA256 || prior.Conv != up.Conv || prior.From != up.From {
			return cloudwire.File{}, fmt.Errorf("%w: file id %s is taken", errConflict, up.ID)
		}
		return prior.File, nil
	} else if !errors.Is(err, ErrUnknownFile) {
		return cloudwire.File{}, err
	}
	members, err := json.Marshal(up.Members)
	if err != nil {
		return cloudwire.File{}, err
	}
	vr := &verifyReader{r: r, limit: limit, size: up.Size, want: up.SHA256, h: sha256.New()}
	info, err := obj.Put(ctx, jetstream.ObjectMeta{
		Name: up.ID,
		Metadata: map[string]string{
			metaName: up.Name, metaMIME: up.MIME, metaSHA256: up.SHA256,
			metaFrom: up.From, metaConv: up.Conv, metaMembers: string(members),
		},
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: fileChunk},
	}, vr)
	if err != nil {
		if errors.Is(err, ErrFileTooLarge) || errors.Is(err, ErrFileHash) {
			return cloudwire.File{}, err
		}
		if strings.Contains(err.Error(), "maximum bytes") || strings.Contains(err.Error(), "insufficient resources") {
			return cloudwire.File{}, fmt.Errorf("%w: %w", errFilesFull, err)
		}
		return cloudwire.File{}, fmt.Errorf("cloud: store file %s: %w", up.ID, err)
	}
	return cloudwire.File{ID: up.ID, Name: up.Name, Size: int64(info.Size), MIME: up.MIME, SHA256: up.SHA256}, nil // #nosec G115 -- the upload was cut at Files.MaxSize
}

func tooLarge(size, limit int64) error {
	return fmt.Errorf("%w: a file of %d bytes or more is over the limit of %d bytes", ErrFileTooLarge, size, limit)
}

// verifyReader passes r's bytes on, failing the read that passes limit or
// size, and at the end failing unless they hash to want. The object
// store purges what it wrote when a read fails.
type verifyReader struct {
	r     io.Reader
	limit int64
	size  int64 // -1: not announced
	want  string
	h     hash.Hash
	n     int64
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	switch {
	case v.n > v.limit:
		return n, tooLarge(v.n, v.limit)
	case v.size >= 0 && v.n > v.size:
		return n, fmt.Errorf("%w: more than the %d bytes announced", ErrFileHash, v.size)
	case err == io.EOF && v.size >= 0 && v.n != v.size:
		return n, fmt.Errorf("%w: %d bytes, %d announced", ErrFileHash, v.n, v.size)
	case err == io.EOF:
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("%w: the bytes hash to %s, %s was given", ErrFileHash, got, v.want)
		}
	}
	return n, err
}

// info returns file id's metadata, or ErrUnknownFile.
func (fs *fileStore) info(ctx context.Context, id string) (fileInfo, error) {
	obj, err := fs.bucket(ctx)
	if err != nil {
		return fileInfo{}, err
	}
	oi, err := obj.GetInfo(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fileInfo{}, fmt.Errorf("%w: %s", ErrUnknownFile, id)
	}
	if err != nil {
		return fileInfo{}, fmt.Errorf("cloud: file %s: %w", id, err)
	}
	return infoOf(oi)
}

func infoOf(oi *jetstream.ObjectInfo) (fileInfo, error) {
	md := oi.Metadata
	fi := fileInfo{
		File: cloudwire.File{ID: oi.Name, Name: md[metaName], Size: int64(oi.Size), MIME: md[metaMIME], SHA256: md[metaSHA256]}, // #nosec G115 -- stored objects were cut at Files.MaxSize on upload
		From: md[metaFrom], Conv: md[metaConv],
	}
	if err := json.Unmarshal([]byte(md[metaMembers]), &fi.Members); err != nil {
		return fileInfo{}, fmt.Errorf("cloud: file %s: corrupt metadata: %w", oi.Name, err)
	}
	return fi, nil
}

// attach checks that from uploaded file f to conv and returns the stored
// copy of its fields, which is what the message carries.
func (fs *fileStore) attach(ctx context.Context, from, conv string, f cloudwire.File) (*cloudwire.File, error) {
	fi, err := fs.info(ctx, f.ID)
	switch {
	case errors.Is(err, ErrUnknownFile):
		return nil, fmt.Errorf("%w: %w", errNotFound, err)
	case err != nil:
		return nil, err
	case fi.Conv != conv:
		return nil, fmt.Errorf("%w: file %s was uploaded to another conversation", errForbidden, f.ID)
	case fi.From != from:
		return nil, fmt.Errorf("%w: file %s was uploaded by someone else", errForbidden, f.ID)
	}
	return &fi.File, nil
}

// mayRead reports whether user may download fi: a participant of its
// one-to-one conversation, or a current member of its group.
func (st *store) mayRead(ctx context.Context, user string, fi fileInfo) (bool, error) {
	if !cloudwire.IsGroupID(fi.Conv) {
		return slices.Contains(fi.Members, user), nil
	}
	g, _, err := st.loadGroup(ctx, fi.Conv)
	if err != nil {
		return false, err
	}
	return slices.Contains(g.Members, user), nil
}

// openFile returns file id's bytes from offset, for user, who must be
// allowed to read it (mayRead).
func (st *store) openFile(ctx context.Context, id, user string, offset int64) (fileInfo, io.ReadCloser, error) {
	fi, err := st.files.info(ctx, id)
	if err != nil {
		return fileInfo{}, nil, err
	}
	ok, err := st.mayRead(ctx, user, fi)
	if err != nil {
		return fileInfo{}, nil, err
	}
	if !ok {
		return fileInfo{}, nil, fmt.Errorf("%w: %s is not a member of the file's conversation", errForbidden, user)
	}
	if offset < 0 || offset > fi.Size {
		return fileInfo{}, nil, fmt.Errorf("%w: offset %d outside the file's %d bytes", errBadRequest, offset, fi.Size)
	}
	obj, err := st.files.bucket(ctx)
	if err != nil {
		return fileInfo{}, nil, err
	}
	r, err := obj.Get(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fileInfo{}, nil, fmt.Errorf("%w: %s", ErrUnknownFile, id)
	}
	if err != nil {
		return fileInfo{}, nil, fmt.Errorf("cloud: read file %s: %w", id, err)
	}
	if _, err := io.CopyN(io.Discard, r, offset); err != nil {
		_ = r.Close()
		return fileInfo{}, nil, fmt.Errorf("cloud: read file %s: %w", id, err)
	}
	return fi, r, nil
}

// uploadParams is an upload request, as parsed from its query and headers.
type uploadParams struct {
	To, Conv, Name, MIME, SHA256 string
	Size                         int64 // -1 when no Content-Length
}

// parseUpload reads an upload's query (to or conv, name) and headers
// (HeaderSHA256, Content-Type, Content-Length), checking each; it reads
// no body.
func parseUpload(q url.Values, h http.Header, contentLength int64) (uploadParams, error) {
	p := uploadParams{To: q.Get("to"), Conv: q.Get("conv"), Name: q.Get("name"), SHA256: h.Get(cloudwire.HeaderSHA256), Size: contentLength}
	switch {
	case (p.To == "") == (p.Conv == ""):
		return p, errors.New("give exactly one of to (a user) and conv (a group)")
	case p.To != "" && !cloudwire.ValidID(p.To):
		return p, errors.New("to is not a valid user id")
	case p.Conv != "" && !cloudwire.IsGroupID(p.Conv):
		return p, errors.New("conv must be a group; give to for a one-to-one conversation")
	case !cloudwire.ValidFileName(p.Name):
		return p, errors.New("name must be 1-255 printable bytes without / or \\")
	case !cloudwire.ValidSHA256(p.SHA256):
		return p, fmt.Errorf("header %s must be the lowercase hex SHA-256 of the bytes", cloudwire.HeaderSHA256)
	case p.Size < -1:
		return p, errors.New("bad Content-Length")
	}
	p.MIME = contentTypeDefault
	if ct := h.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return p, fmt.Errorf("bad Content-Type: %v", err)
		}
		p.MIME = mt
	}
	f := cloudwire.File{ID: "x", Name: p.Name, MIME: p.MIME, SHA256: p.SHA256}
	if err := f.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// mountFiles adds the file endpoints to mux.
func (s *Service) mountFiles(mux *http.ServeMux) {
	mux.HandleFunc("PUT "+cloudwire.FilesPath, s.serveUpload)
	mux.HandleFunc("POST "+cloudwire.FilesPath, s.serveUpload)
	mux.HandleFunc("GET "+cloudwire.FilesPath+"/{id}", s.serveDownload)
}

// fileUser authenticates a file request: a user token in the
// Authorization header, an allowed Origin if any, a user Admit lets in.
// On failure it has answered.
func (s *Service) fileUser(w http.ResponseWriter, r *http.Request, op string) (string, bool) {
	fail := func(status int, result, msg string) (string, bool) {
		s.store.files.m.requests.WithLabelValues(op, result).Inc()
		http.Error(w, msg, status)
		return "", false
	}
	if origin := r.Header.Get("Origin"); origin != "" && !s.origins[strings.ToLower(origin)] {
		return fail(http.StatusForbidden, "forbidden", "origin not allowed")
	}
	if s.isShuttingDown() {
		return fail(http.StatusServiceUnavailable, "unavailable", "shutting down")
	}
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return fail(http.StatusUnauthorized, "unauthorized", "Authorization must be Bearer <token>")
	}
	c, err := s.cfg.verifyToken(tok)
	if err != nil {
		return fail(http.StatusUnauthorized, "unauthorized", err.Error())
	}
	if c.Role != cloudwire.RoleUser {
		return fail(http.StatusForbidden, "forbidden", "role "+c.Role+" cannot use files")
	}
	if admit := s.cfg.Admit; admit != nil {
		if err := admit(r.Context(), c.Subject); err != nil {
			return fail(http.StatusForbidden, "forbidden", err.Error())
		}
	}
	return c.Subject, true
}

// serveUpload stores one file: PUT (or POST) cloudwire.FilesPath with
// ?to=USER or ?conv=GROUP and &name=NAME, the SHA-256 in HeaderSHA256,
// the bytes as the body. It answers 201 with the cloudwire.File to send.
func (s *Service) serveUpload(w http.ResponseWriter, r *http.Request) {
	user, ok := s.fileUser(w, r, "upload")
	if !ok {
		return
	}
	// Not r.Context(): a client that goes away fails the body's read, and
	// the object store then purges what it wrote, which it cannot do
	// under a cancelled context.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), fileRequestTimeout)
	defer cancel()
	f, err := s.upload(ctx, user, r)
	if err != nil {
		s.fileError(w, "upload", err)
		return
	}
	s.store.files.m.requests.WithLabelValues("upload", "ok").Inc()
	s.store.files.m.bytes.WithLabelValues("upload").Add(float64(f.Size))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(f)
}

func (s *Service) upload(ctx context.Context, user string, r *http.Request) (cloudwire.File, error) {
	p, err := parseUpload(r.URL.Query(), r.Header, r.ContentLength)
	if err != nil {
		return cloudwire.File{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	limit, err := s.store.files.maxSize(ctx)
	if err != nil {
		return cloudwire.File{}, err
	}
	if p.Size > limit {
		return cloudwire.File{}, tooLarge(p.Size, limit)
	}
	up := fileUpload{Name: p.Name, MIME: p.MIME, SHA256: p.SHA256, Size: p.Size, From: user}
	if p.To != "" {
		up.Conv, up.Members = cloudwire.DirectConversationID(user, p.To), participants(user, p.To)
	} else {
		g, _, err := s.store.loadGroup(ctx, p.Conv)
		if err != nil {
			return cloudwire.File{}, err
		}
		if !slices.Contains(g.Members, user) {
			return cloudwire.File{}, fmt.Errorf("%w: %s is not a member of %s", errForbidden, user, p.Conv)
		}
		up.Conv = p.Conv
	}
	id, err := uuid.NewV7()
	if err != nil {
		return cloudwire.File{}, err
	}
	up.ID = id.String()
	return s.store.files.put(ctx, up, r.Body)
}

// serveDownload sends one file to a member of its conversation: GET
// cloudwire.FilesPath/ID.
func (s *Service) serveDownload(w http.ResponseWriter, r *http.Request) {
	user, ok := s.fileUser(w, r, "download")
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !cloudwire.ValidMsgID(id) {
		s.fileError(w, "download", fmt.Errorf("%w: %s", ErrUnknownFile, "bad file id"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileRequestTimeout)
	defer cancel()
	fi, body, err := s.store.openFile(ctx, id, user, 0)
	if err != nil {
		s.fileError(w, "download", err)
		return
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", cmp.Or(fi.MIME, contentTypeDefault))
	h.Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fi.Name}))
	h.Set(cloudwire.HeaderSHA256, fi.SHA256)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "private, no-store")
	n, err := io.Copy(w, body)
	s.store.files.m.bytes.WithLabelValues("download").Add(float64(n))
	result := "ok"
	if err != nil {
		result = "error"
		s.log.Debug("file download cut", "file", id, "err", err)
	}
	s.store.files.m.requests.WithLabelValues("download", result).Inc()
}

// fileError answers a failed file request with its HTTP status.
func (s *Service) fileError(w http.ResponseWriter, op string, err error) {
	status, result := http.StatusInternalServerError, "error"
	switch {
	case errors.Is(err, ErrFileTooLarge):
		status, result = http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrFileHash):
		status, result = http.StatusUnprocessableEntity, "bad_hash"
	case errors.Is(err, ErrUnknownFile), errors.Is(err, errNotFound):
		status, result = http.StatusNotFound, "not_found"
	case errors.Is(err, errForbidden):
		status, result = http.StatusForbidden, "forbidden"
	case errors.Is(err, errBadRequest):
		status, result = http.StatusBadRequest, "bad_request"
	case errors.Is(err, errConflict):
		status, result = http.StatusConflict, "conflict"
	case errors.Is(err, errFilesFull):
		status, result = http.StatusInsufficientStorage, "full"
	}
	s.store.files.m.requests.WithLabelValues(op, result).Inc()
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Warn("file request failed", "op", op, "err", err)
		msg = "internal error"
	}
	http.Error(w, msg, status)
}

// fileMetrics count file requests on the service.
type fileMetrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newFileMetrics(reg prometheus.Registerer) (*fileMetrics, error) {
	m := &fileMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_file_requests_total",
			Help: "File uploads and downloads on the cloud listener, by op (upload, download) and result (ok, too_large, bad_hash, not_found, forbidden, unauthorized, bad_request, conflict, full, unavailable, error).",
		}, []string{"op", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_file_bytes_total",
			Help: "Bytes of files uploaded to and downloaded from the cloud listener, by op.",
		}, []string{"op"}),
	}
	for _, op := range []string{"upload", "download"} {
		m.requests.WithLabelValues(op, "ok")
		m.bytes.WithLabelValues(op)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cloud: register file metrics: %w", err)
		}
	}
	return m, nil
}

// BridgeFile is a file the bridge stores for a legacy user's offer: ID is
// the offer's id (so that a retried transfer stores one object), From the
// legacy sender and To the recipient (one-to-one: legacy devices have no
// groups). Size is -1 when not known in advance.
type BridgeFile struct {
	ID, From, To, Name, MIME, SHA256 string
	Size                             int64
}

// MaxFileSize is the largest file the service takes.
func (l *BridgeLive) MaxFileSize(ctx context.Context) (int64, error) {
	st, err := l.store(ctx)
	if err != nil {
		return 0, err
	}
	return st.files.maxSize(ctx)
}

// PutFile stores r's bytes as f (idempotent by f.ID) and returns the
// cloudwire.File to send in f.From's message to f.To. It fails with
// ErrFileTooLarge or ErrFileHash, storing nothing, for bytes over the
// service's bound or not matching f.
func (l *BridgeLive) PutFile(ctx context.Context, f BridgeFile, r io.Reader) (cloudwire.File, error) {
	st, err := l.store(ctx)
	if err != nil {
		return cloudwire.File{}, err
	}
	if err := (cloudwire.File{ID: f.ID, Name: f.Name, Size: max(f.Size, 0), MIME: f.MIME, SHA256: f.SHA256}).Validate(); err != nil {
		return cloudwire.File{}, err
	}
	return st.files.put(ctx, fileUpload{
		ID: f.ID, Name: f.Name, MIME: f.MIME, SHA256: f.SHA256, Size: f.Size,
		From: f.From, Conv: cloudwire.DirectConversationID(f.From, f.To), Members: participants(f.From, f.To),
	}, r)
}

// StoredFile returns file id as stored, or ErrUnknownFile.
func (l *BridgeLive) StoredFile(ctx context.Context, id string) (cloudwire.File, error) {
	st, err := l.store(ctx)
	if err != nil {
		return cloudwire.File{}, err
	}
	fi, err := st.files.info(ctx, id)
	return fi.File, err
}

// OpenFile returns file id's bytes from offset for user, who must be a
// member of the file's conversation (errors: ErrUnknownFile, or one
// saying user may not read it). Close the reader.
func (l *BridgeLive) OpenFile(ctx context.Context, id, user string, offset int64) (cloudwire.File, io.ReadCloser, error) {
	st, err := l.store(ctx)
	if err != nil {
		return cloudwire.File{}, nil, err
	}
	fi, r, err := st.openFile(ctx, id, user, offset)
	return fi.File, r, err
}

// FileHTTPError is a file request the service refused: its HTTP status
// and the body, which says why.
type FileHTTPError struct {
	StatusCode int
	Body       string
}

func (e *FileHTTPError) Error() string {
	return fmt.Sprintf("cloud: file request refused: HTTP %d: %s", e.StatusCode, e.Body)
}

// FileUpload is what UploadFile sends: the bytes, their name and MIME type,
// and where they go (To a user, or Conv a group). SHA256 is computed from
// Data when empty.
type FileUpload struct {
	To, Conv, Name, MIME, SHA256 string
	Data                         []byte
}

// UploadFile uploads u to the service whose WebSocket endpoint is wsURL,
// with a user token, and returns the file to send in a message
// (cloudwire.Send.File). A refusal is a *FileHTTPError.
func UploadFile(ctx context.Context, hc *http.Client, wsURL, token string, u FileUpload) (cloudwire.File, error) {
	base := FileURL(wsURL, "")
	if base == "" {
		return cloudwire.File{}, fmt.Errorf("cloud: bad service URL %q", wsURL)
	}
	q := url.Values{"name": {u.Name}}
	if u.To != "" {
		q.Set("to", u.To)
	}
	if u.Conv != "" {
		q.Set("conv", u.Conv)
	}
	if u.SHA256 == "" {
		sum := sha256.Sum256(u.Data)
		u.SHA256 = hex.EncodeToString(sum[:])
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(base, "/")+"?"+q.Encode(), bytes.NewReader(u.Data))
	if err != nil {
		return cloudwire.File{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(cloudwire.HeaderSHA256, u.SHA256)
	if u.MIME != "" {
		req.Header.Set("Content-Type", u.MIME)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return cloudwire.File{}, fmt.Errorf("cloud: upload: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return cloudwire.File{}, fmt.Errorf("cloud: upload: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return cloudwire.File{}, &FileHTTPError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	var f cloudwire.File
	if err := json.Unmarshal(body, &f); err != nil {
		return cloudwire.File{}, fmt.Errorf("%w: upload answer: %v", ErrProtocol, err)
	}
	return f, f.Validate()
}

// DownloadFile fetches file id, with a user token, from the service whose
// WebSocket endpoint is wsURL, and checks its SHA-256 against the one the
// service sends. A refusal is a *FileHTTPError.
func DownloadFile(ctx context.Context, hc *http.Client, wsURL, token, id string) ([]byte, error) {
	u := FileURL(wsURL, id)
	if u == "" {
		return nil, fmt.Errorf("cloud: bad service URL %q", wsURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cloud: download: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cloud: download %s: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &FileHTTPError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	sum := sha256.Sum256(body)
	if got, want := hex.EncodeToString(sum[:]), resp.Header.Get(cloudwire.HeaderSHA256); got != want {
		return nil, fmt.Errorf("%w: file %s hashes to %s, the service says %s", ErrFileHash, id, got, want)
	}
	return body, nil
}

// FileURL is the download URL (it lives here, not in cloudwire, because
// the wire packages do not import net/...) of file id on the service whose WebSocket
// endpoint is wsURL (ws[s]://host/v1/ws): http[s]://host/v1/files/id. It
// returns "" when wsURL does not parse.
func FileURL(wsURL, id string) string {
	u, err := url.Parse(wsURL)
	if err != nil || u.Host == "" {
		return ""
	}
	switch u.Scheme {
	case "wss", "https":
		u.Scheme = "https"
	default:
		u.Scheme = "http"
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment, u.User = cloudwire.FilesPath+"/"+url.PathEscape(id), "", "", "", nil
	return u.String()
}
