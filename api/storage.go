package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// fal's storage upload flows, stored in the file store (a local directory or an S3 bucket) and served
// from /cdn/files/<id>/<name>:
//
//	JS @fal-ai/client: POST /rest/storage/upload/initiate → PUT upload_url;
//	  POST /rest/storage/upload/initiate-multipart → PUT upload_url/<n>…,
//	  POST upload_url/complete. Upload URLs are capabilities (no auth).
//	Python fal-client: POST /rest/storage/auth/token → a Bearer token for
//	  POST /cdn/files/upload, or POST /cdn/files/upload/multipart →
//	  PUT <access_url>/multipart/<uploadId>/<n>…, POST …/complete;
//	  fallback POST /rest/storage/upload/initiate?storage_type=gcs → PUT.
//	Realtime: POST /rest/tokens/ → a JSON string token.
//
// A file's URL is handed out before its bytes arrive and answers 404 until
// the upload completes.
//
// Servers of a fleet share the file store, and a client's calls may reach
// any of them. Tokens and upload keys are therefore signed, not
// remembered (tokenKey: every server with the same webhook key accepts
// them), and with Config.SharedFiles (or a SharedQueue) a session is also
// kept in the store beside its parts (uploadRecord): a server that does not
// know an upload key reads its session there, takes the parts that other
// servers received from the store's list, and sees an upload completed
// elsewhere by its file. Sessions stay in memory too, the fast path.

const (
	// uploadTTL: upload sessions idle this long go, with their parts.
	uploadTTL = 24 * time.Hour
	// cdnTokenTTL is the lifetime of a /storage/auth/token token.
	cdnTokenTTL = time.Hour
	// defaultMaxUpload is Config.MaxUploadBytes when unset.
	defaultMaxUpload = 1 << 30
	// maxJSONBody caps the small JSON bodies of this API (a complete
	// request lists at most files.MaxParts parts).
	maxJSONBody = 1 << 20
	// pruneEvery throttles the sweep of expired sessions and tokens;
	// sweepPartsEvery that of orphaned parts (left by a restart).
	pruneEvery      = time.Minute
	sweepPartsEvery = time.Hour
)

// storageClock is the storage flows' clock (tests move it).
var storageClock = time.Now

var (
	validUploadKey = regexp.MustCompile(`^[0-9a-f]{64}$`)
	validPartNum   = regexp.MustCompile(`^[1-9][0-9]{0,4}$`)
)

type uploadKind int

const (
	uploadSingle    uploadKind = iota // initiate: one PUT to the upload URL
	uploadMultipart                   // initiate-multipart: PUT <url>/<n>, POST <url>/complete
	uploadV3                          // /files/upload/multipart: parts under the file URL
)

// uploadSession is one upload session, keyed by its capability token (JS and
// GCS-style) or its uploadId (v3 multipart): both are upload keys
// (uploadKey).
type uploadSession struct {
	kind        uploadKind
	id, name    string // files.Store id and cleaned name
	contentType string // "" = take the PUT's
	fileURL     string
	touched     time.Time
	busy        bool // a single PUT or a complete is running
	// done: the file is stored (meta); the session stays until it expires
	// so that a client's retry of the last call gets the same answer.
	done     bool
	meta     files.Meta
	inflight int // part PUTs running
	parts    map[int]files.Part
}

// storage holds the sessions in memory; the bytes are in the file store.
type storage struct {
	s     *Server
	limit int64
	key   []byte // signs tokens and upload keys (tokenKey)
	// shared: other servers share the file store, so sessions are kept in
	// it too.
	shared bool

	mu         sync.Mutex
	uploads    map[string]*uploadSession
	lastPrune  time.Time
	lastSweep  time.Time
	sweepingUp bool
}

func (s *Server) storageRoutes(e *echo.Echo) {
	if s.cfg.MaxUploadBytes <= 0 {
		s.cfg.MaxUploadBytes = defaultMaxUpload
	}
	st := &storage{s: s, limit: s.cfg.MaxUploadBytes, uploads: map[string]*uploadSession{},
		key: s.tokenKey(), shared: s.cfg.SharedFiles || s.cfg.SharedQueue != ""}
	// Writes are refused with a 507 while the data directory is short of
	// space (roomy, after the caller's credentials are checked).
	e.Use(s.diskSpace)
	e.POST("/rest/storage/upload/initiate", st.initiate, s.requireKey, st.roomy(""))
	e.POST("/rest/storage/upload/initiate-multipart", st.initiateMultipart, s.requireKey, st.roomy(""))
	e.POST("/rest/storage/auth/token", st.cdnToken, s.requireKey)
	e.POST("/rest/tokens/", st.realtimeToken, s.requireKey)
	e.POST("/rest/tokens", st.realtimeToken, s.requireKey)
	// Capability URLs: whoever holds one may upload, nobody else can guess it.
	e.PUT("/cdn/uploads/:token", st.putSingle, st.roomy("token"))
	e.PUT("/cdn/uploads/:token/:part", st.putPart, st.roomy("token"))
	e.POST("/cdn/uploads/:token/complete", st.complete, st.roomy("token"))
	e.POST("/cdn/files/upload", st.v3Upload, st.requireToken, st.roomy(""))
	e.POST("/cdn/files/upload/multipart", st.v3Multipart, st.requireToken, st.roomy(""))
	e.PUT("/cdn/files/:id/:name/multipart/:upload/:part", st.v3Part, st.requireToken, st.roomy("upload"))
	e.POST("/cdn/files/:id/:name/multipart/:upload/complete", st.v3Complete, st.requireToken, st.roomy("upload"))
}

// SweepInterval is how often RunSweeps looks for what has expired: a tenth
// of the retention, at least a second and at most ten minutes, so nothing
// stays fetchable much past its retention (10% past it, for retentions up
// to 100 minutes).
func SweepInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), 10*time.Minute)
}

// RunSweeps removes requests and files older than keep, at once and then
// every SweepInterval(keep), until ctx ends. Its caller owns it: the server
// must not be closed before it has returned.
func (s *Server) RunSweeps(ctx context.Context, keep time.Duration) {
	t := time.NewTicker(SweepInterval(keep))
	defer t.Stop()
	for {
		if r, f, err := s.Sweep(time.Now().Add(-keep)); err != nil {
			s.log.Warn("sweep", "err", err)
		} else if r+f > 0 {
			s.log.Info("expired requests and files removed", "requests", r, "files", f)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// insufficientStorage is the 507 of a write refused for want of space.
func insufficientStorage(err error) error {
	return &pipelines.HTTPError{Status: http.StatusInsufficientStorage, Msg: err.Error(), Err: err}
}

// spaceErr is the data directory's shortage of space, if any.
func (s *Server) spaceErr() error {
	if s.cfg.Files == nil {
		return nil
	}
	return s.cfg.Files.Space.Check()
}

// diskSpace refuses new runs and queue submissions (POST /run/…, POST to
// a queue endpoint) with a 507 while the data directory is short of space,
// to callers whose key is good (the answer names the directory), and
// answers a 507 too for any write that ran out of space on the way.
func (s *Server) diskSpace(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := c.Path(); c.Request().Method == http.MethodPost && (p == "/run/*" || p == "/*") {
			if err := s.spaceErr(); err != nil {
				return s.requireKey(func(echo.Context) error { return insufficientStorage(err) })(c)
			}
		}
		err := next(c)
		if errors.Is(err, syscall.ENOSPC) {
			dir := "the data directory"
			if s.cfg.Files != nil && s.cfg.Files.Space != nil {
				dir += " " + s.cfg.Files.Space.Dir
			}
			return insufficientStorage(fmt.Errorf("the disk is full: %s has no space left (%v)", dir, err))
		}
		return err
	}
}

// roomy refuses an upload with a 507 while the data directory is short of
// space. On a capability route (param names its token) only a known upload
// is refused: an unknown URL gets its 404 from the handler and learns
// nothing about the disk.
func (st *storage) roomy(param string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := st.s.spaceErr()
			if err == nil {
				return next(c)
			}
			if param != "" {
				key := c.Param(param)
				st.mu.Lock()
				_, known := st.uploads[key]
				st.mu.Unlock()
				// Shared: another server's upload is known by its key.
				for _, k := range []uploadKind{uploadSingle, uploadMultipart, uploadV3} {
					if !known && st.shared {
						_, known = st.keyID(key, k)
					}
				}
				if !known {
					return next(c)
				}
			}
			return insufficientStorage(err)
		}
	}
}

func uploadErr(status int, format string, args ...any) error {
	return &pipelines.HTTPError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

var errNoUpload = &pipelines.HTTPError{Status: http.StatusNotFound,
	Msg: "Upload not found: the upload URL is unknown, expired or already used"}

// cdnRoot is the base of this server's CDN as the client reached us:
// http://<host>/cdn, or https://v3.fal.media through fal's host names.
func (st *storage) cdnRoot(r *http.Request) string {
	return strings.TrimSuffix(st.s.requestFiles(r).cdnBase, "/files")
}

func (st *storage) tooLarge() error {
	return uploadErr(http.StatusRequestEntityTooLarge, "Upload is larger than this server's limit of %d bytes", st.limit)
}

// readUploadJSON decodes a small JSON body into dst; an empty body leaves dst alone.
func readUploadJSON(c echo.Context, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody))
	if err != nil {
		return bodyError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return uploadErr(http.StatusBadRequest, "Invalid JSON body: %v", err)
	}
	return nil
}

// uploadName names an upload that came without a name, from its type as
// fal's clients do ("upload.png").
func uploadName(contentType string) string {
	ct, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	_, sub, _ := strings.Cut(strings.TrimSpace(ct), "/")
	sub, _, _ = strings.Cut(sub, "+")
	switch sub {
	case "jpeg":
		sub = "jpg"
	case "plain":
		sub = "txt"
	case "mpeg":
		if strings.HasPrefix(ct, "audio/") {
			sub = "mp3"
		}
	case "x-wav", "wave":
		sub = "wav"
	}
	if sub == "" || len(sub) > 8 || strings.ContainsAny(sub, "-.") {
		sub = "bin"
	}
	return files.CleanName("upload." + sub)
}

// prune drops expired sessions (and their parts) and tokens; at most once a
// minute, piggybacking on storage requests. Part directories that no live
// session owns (left by a restart) go once they are idle for uploadTTL.
func (st *storage) prune() {
	now := storageClock()
	st.mu.Lock()
	if now.Sub(st.lastPrune) < pruneEvery && !st.lastPrune.IsZero() {
		st.mu.Unlock()
		return
	}
	st.lastPrune = now
	var drop []string
	for key, u := range st.uploads {
		if now.Sub(u.touched) > uploadTTL && !u.busy && u.inflight == 0 {
			delete(st.uploads, key)
			// A shared session may have been kept alive on other servers:
			// its parts go by the store's times (SweepParts).
			if !st.shared {
				drop = append(drop, u.id)
			}
		}
	}
	sweep := now.Sub(st.lastSweep) >= sweepPartsEvery && !st.sweepingUp
	if sweep {
		st.lastSweep, st.sweepingUp = now, true
	}
	st.mu.Unlock()
	for _, id := range drop {
		st.s.cfg.Files.DropParts(id)
	}
	if sweep {
		// Real file times: the directory's mtime is set by the filesystem.
		st.s.cfg.Files.SweepParts(time.Now().Add(-uploadTTL), st.liveID)
		st.mu.Lock()
		st.sweepingUp = false
		st.mu.Unlock()
	}
}

// liveID reports whether a live session owns file id.
func (st *storage) liveID(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, u := range st.uploads {
		if u.id == id {
			return true
		}
	}
	return false
}

// newUpload registers a session under a fresh key and returns the key.
func (st *storage) newUpload(r *http.Request, kind uploadKind, contentType, name string) (string, *uploadSession, error) {
	st.prune()
	id, err := files.NewID()
	if err != nil {
		return "", nil, err
	}
	u := &uploadSession{kind: kind, id: id, name: files.CleanName(name), contentType: contentType,
		touched: storageClock(), parts: map[int]files.Part{}}
	u.fileURL = st.cdnRoot(r) + "/files/" + u.id + "/" + u.name
	key := st.uploadKey(kind, id)
	if st.shared {
		if err := st.save(u, u.touched); err != nil {
			return "", nil, err
		}
	}
	st.mu.Lock()
	st.uploads[key] = u
	st.mu.Unlock()
	return key, u, nil
}

// session finds a live session of kind (under st.mu).
func (st *storage) session(key string, kind uploadKind) (*uploadSession, error) {
	if !validUploadKey.MatchString(key) {
		return nil, errNoUpload
	}
	u, ok := st.uploads[key]
	if !ok || u.kind != kind || storageClock().Sub(u.touched) > uploadTTL {
		return nil, errNoUpload
	}
	return u, nil
}

// --- REST: initiate, tokens -------------------------------------------------

type initiateBody struct {
	ContentType string `json:"content_type"`
	FileName    string `json:"file_name"`
}

func (st *storage) initiate(c echo.Context) error { return st.start(c, uploadSingle) }

func (st *storage) initiateMultipart(c echo.Context) error { return st.start(c, uploadMultipart) }

func (st *storage) start(c echo.Context, kind uploadKind) error {
	var in initiateBody
	if err := readUploadJSON(c, &in); err != nil {
		return err
	}
	name := in.FileName
	if strings.TrimSpace(name) == "" {
		name = uploadName(in.ContentType)
	}
	key, u, err := st.newUpload(c.Request(), kind, in.ContentType, name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{
		"upload_url": st.cdnRoot(c.Request()) + "/uploads/" + key,
		"file_url":   u.fileURL,
	})
}

// cdnToken issues the Bearer token of the v3 CDN calls.
func (st *storage) cdnToken(c echo.Context) error {
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody)); err != nil {
		return bodyError(err)
	}
	st.prune()
	// Whole seconds and an explicit +00:00: what Python's
	// datetime.fromisoformat reads on every version.
	exp := storageClock().UTC().Add(cdnTokenTTL).Truncate(time.Second)
	var nonce [10]byte
	rand.Read(nonce[:])
	tok := signToken(st.key, tokenCDN, exp, nonce)
	return c.JSON(http.StatusOK, map[string]string{
		"token":      tok,
		"token_type": "Bearer",
		"base_url":   st.cdnRoot(c.Request()),
		"expires_at": exp.Format("2006-01-02T15:04:05") + "+00:00",
	})
}

// realtimeToken issues the short-lived token of fal's realtime
// connections (signed, with its apps); the answer is a bare JSON string.
func (st *storage) realtimeToken(c echo.Context) error {
	var in struct {
		AllowedApps     []string `json:"allowed_apps"`
		TokenExpiration int      `json:"token_expiration"`
	}
	if err := readUploadJSON(c, &in); err != nil {
		return err
	}
	ttl := in.TokenExpiration
	switch {
	case ttl < 0:
		return uploadErr(http.StatusBadRequest, "token_expiration must be a positive number of seconds")
	case ttl == 0:
		ttl = 120
	case ttl > 86400:
		ttl = 86400
	}
	st.prune()
	return c.JSON(http.StatusOK, signRealtimeToken(st.key, storageClock().Add(time.Duration(ttl)*time.Second), in.AllowedApps))
}

// requireToken checks the Bearer token of the v3 CDN calls (a valid
// `Key` is accepted too); without configured keys everything passes.
func (st *storage) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(st.s.keys) == 0 {
			return next(c)
		}
		h := c.Request().Header.Get("Authorization")
		scheme, cred, _ := strings.Cut(h, " ")
		cred = strings.TrimSpace(cred)
		if h == "" || cred == "" {
			return uploadErr(http.StatusUnauthorized,
				"Missing credentials: send 'Authorization: Bearer <token>' with a token from /storage/auth/token")
		}
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			if _, _, ok := openToken(st.key, tokenCDN, cred); ok {
				return next(c)
			}
		case strings.EqualFold(scheme, "Key"):
			if st.s.validKey(cred) {
				return next(c)
			}
		}
		return uploadErr(http.StatusUnauthorized, "Invalid or expired upload token")
	}
}

// --- uploads -----------------------------------------------------------------

// readTracker remembers a failure of the client's body, to tell it apart
// from a failure of the disk.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// storeErr maps a store error to the client's answer.
func (st *storage) storeErr(err error, body *readTracker) error {
	var mb *http.MaxBytesError
	switch {
	case errors.Is(err, files.ErrTooLarge) || errors.As(err, &mb):
		return st.tooLarge()
	case body != nil && body.err != nil:
		return uploadErr(http.StatusBadRequest, "Reading the upload failed: %v", body.err)
	case errors.Is(err, files.ErrExists):
		return uploadErr(http.StatusConflict, "This upload has already completed")
	}
	return err
}

func (st *storage) answerFile(c echo.Context, m files.Meta, url string) error {
	return c.JSON(http.StatusOK, map[string]any{
		"access_url": url, "file_url": url,
		"content_type": m.ContentType, "file_name": m.Name, "file_size": m.Size,
	})
}

// putSingle receives the bytes of an initiate upload (JS, and the
// GCS-style fallback, which may carry a Key header: it is not needed).
func (st *storage) putSingle(c echo.Context) error {
	st.prune()
	key := c.Param("token")
	st.load(c.Request(), key, uploadSingle)
	st.mu.Lock()
	u, err := st.session(key, uploadSingle)
	if err == nil && u.done {
		st.mu.Unlock()
		return st.answerFile(c, u.meta, u.fileURL)
	}
	if err == nil && u.busy {
		err = uploadErr(http.StatusConflict, "This upload is already in progress")
	}
	if err != nil {
		st.mu.Unlock()
		return err
	}
	u.busy, u.touched = true, storageClock()
	st.mu.Unlock()
	release := func() {
		st.mu.Lock()
		u.busy = false
		st.mu.Unlock()
	}

	r := c.Request()
	if r.ContentLength > st.limit {
		release()
		return st.tooLarge()
	}
	ct := u.contentType
	if ct == "" {
		ct = r.Header.Get("Content-Type")
	}
	body := &readTracker{r: r.Body}
	m, err := st.s.cfg.Files.PutReader(u.id, body, ct, u.name, st.limit)
	if err != nil && st.shared && errors.Is(err, files.ErrExists) {
		// Another server stored it: a retry of a PUT that succeeded there.
		if sm, serr := st.s.cfg.Files.Stat(u.id); serr == nil {
			m, err = sm, nil
		}
	}
	if err != nil {
		release()
		return st.storeErr(err, body)
	}
	st.finish(u, m)
	if st.shared {
		st.s.cfg.Files.DropParts(u.id) // the session's record
	}
	return st.answerFile(c, m, u.fileURL)
}

// finish marks a session done with its stored file.
func (st *storage) finish(u *uploadSession, m files.Meta) {
	st.mu.Lock()
	u.done, u.busy, u.meta, u.parts = true, false, m, nil
	st.mu.Unlock()
}

// v3Upload is the v3 CDN's one-shot upload: raw bytes in, access_url out.
func (st *storage) v3Upload(c echo.Context) error {
	st.prune()
	r := c.Request()
	if r.ContentLength > st.limit {
		return st.tooLarge()
	}
	ct := r.Header.Get("Content-Type")
	name := r.Header.Get("X-Fal-File-Name")
	if strings.TrimSpace(name) == "" {
		name = uploadName(ct)
	}
	body := &readTracker{r: r.Body}
	m, err := st.s.cfg.Files.PutReader("", body, ct, name, st.limit)
	if err != nil {
		return st.storeErr(err, body)
	}
	return st.answerFile(c, m, st.cdnRoot(r)+"/files/"+m.ID+"/"+m.Name)
}

// v3Multipart starts a v3 multipart upload: its parts hang under the
// file's own URL.
func (st *storage) v3Multipart(c echo.Context) error {
	r := c.Request()
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(c.Response(), r.Body, maxJSONBody)); err != nil {
		return bodyError(err)
	}
	ct := r.Header.Get("Content-Type")
	name := r.Header.Get("X-Fal-File-Name")
	if strings.TrimSpace(name) == "" {
		name = uploadName(ct)
	}
	key, u, err := st.newUpload(r, uploadV3, ct, name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"access_url": u.fileURL, "uploadId": key})
}

func (st *storage) putPart(c echo.Context) error {
	return st.receivePart(c, c.Param("token"), uploadMultipart)
}

func (st *storage) complete(c echo.Context) error {
	return st.completeUpload(c, c.Param("token"), uploadMultipart)
}

func (st *storage) v3Part(c echo.Context) error {
	return st.receivePart(c, c.Param("upload"), uploadV3)
}

func (st *storage) v3Complete(c echo.Context) error {
	return st.completeUpload(c, c.Param("upload"), uploadV3)
}

// claim finds the session for a part or a complete request: a v3 session
// must also be addressed under its own file URL.
func (st *storage) claim(c echo.Context, key string, kind uploadKind) (*uploadSession, error) {
	u, err := st.session(key, kind)
	if err != nil {
		return nil, err
	}
	if kind == uploadV3 && (c.Param("id") != u.id || c.Param("name") != u.name) {
		return nil, errNoUpload
	}
	if u.done {
		return u, nil
	}
	if u.busy {
		return nil, uploadErr(http.StatusConflict, "This upload is being completed")
	}
	return u, nil
}

func (st *storage) receivePart(c echo.Context, key string, kind uploadKind) error {
	st.prune()
	ps := c.Param("part")
	if !validPartNum.MatchString(ps) {
		return uploadErr(http.StatusBadRequest, "Invalid part number %q: parts are numbered 1 to %d", ps, files.MaxParts)
	}
	n, _ := strconv.Atoi(ps)
	if n > files.MaxParts {
		return uploadErr(http.StatusBadRequest, "Invalid part number %d: parts are numbered 1 to %d", n, files.MaxParts)
	}
	st.load(c.Request(), key, kind)
	st.mu.Lock()
	u, err := st.claim(c, key, kind)
	if err == nil && u.done {
		err = uploadErr(http.StatusBadRequest, "This upload has already completed")
	}
	if err != nil {
		st.mu.Unlock()
		return err
	}
	// The parts must fit the cap together: this one gets what the others
	// leave (and the total is checked again once it is stored, as parts
	// may arrive concurrently).
	budget := st.limit - partsSizeExcept(u, n)
	u.inflight++
	u.touched = storageClock()
	st.mu.Unlock()

	r := c.Request()
	var p files.Part
	body := &readTracker{r: r.Body}
	if budget <= 0 || r.ContentLength > budget {
		err = st.tooLarge()
	} else if p, err = st.s.cfg.Files.PutPart(u.id, n, body, budget); err != nil {
		err = st.storeErr(err, body)
	}

	st.mu.Lock()
	u.inflight--
	u.touched = storageClock()
	touched := u.touched
	if err == nil {
		switch {
		case st.uploads[key] != u || u.done:
			err = errNoUpload
		case partsSizeExcept(u, n)+p.Size > st.limit:
			err = st.tooLarge()
		default:
			u.parts[n] = p
		}
		if err != nil {
			st.s.cfg.Files.RemovePart(u.id, p)
		}
	}
	st.mu.Unlock()
	if err != nil {
		return err
	}
	if st.shared {
		// The session's last activity, for the other servers.
		if serr := st.save(u, touched); serr != nil {
			st.s.log.Warn("upload session not saved", "id", u.id, "err", serr)
		}
	}
	c.Response().Header().Set("ETag", `"`+p.ETag+`"`)
	return c.JSON(http.StatusOK, map[string]any{"partNumber": n, "etag": p.ETag})
}

// partsSizeExcept sums the sizes of the session's parts but n (under st.mu).
func partsSizeExcept(u *uploadSession, n int) int64 {
	var t int64
	for k, p := range u.parts {
		if k != n {
			t += p.Size
		}
	}
	return t
}

// normETag reads an etag as a client may echo it: quoted (from the ETag
// header), weak-prefixed or bare.
func normETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.ToLower(strings.Trim(s, `"`))
}

func (st *storage) completeUpload(c echo.Context, key string, kind uploadKind) error {
	st.prune()
	var in struct {
		Parts []struct {
			PartNumber int    `json:"partNumber"`
			ETag       string `json:"etag"`
		} `json:"parts"`
	}
	if err := readUploadJSON(c, &in); err != nil {
		return err
	}
	st.load(c.Request(), key, kind)
	// Shared: the parts other servers received are known from the store.
	var stored []files.Part
	if id, ok := st.keyID(key, kind); ok && st.shared {
		var err error
		if stored, err = st.s.cfg.Files.ListParts(id); err != nil {
			return err
		}
	}
	st.mu.Lock()
	u, err := st.claim(c, key, kind)
	if err == nil && u.done {
		// A retry of a complete that succeeded.
		st.mu.Unlock()
		return st.answerFile(c, u.meta, u.fileURL)
	}
	if err == nil && u.inflight > 0 {
		err = uploadErr(http.StatusConflict, "Parts of this upload are still being uploaded")
	}
	if err != nil {
		st.mu.Unlock()
		return err
	}
	// Check the list against what was uploaded: parts 1..N, each with the
	// etag its upload answered.
	list := in.Parts
	sort.SliceStable(list, func(i, j int) bool { return list[i].PartNumber < list[j].PartNumber })
	parts := make([]files.Part, 0, len(list))
	if len(list) == 0 {
		err = uploadErr(http.StatusBadRequest, "No parts to complete: send {\"parts\": [{\"partNumber\": 1, \"etag\": ...}, ...]}")
	}
	for i, lp := range list {
		want, ok := u.parts[lp.PartNumber]
		if etag := normETag(lp.ETag); !ok || want.ETag != etag {
			// Another server's part, or another server's retry of it: a
			// stored version with the listed etag holds the listed bytes.
			for _, p := range stored {
				if p.Number == lp.PartNumber && (!ok || p.ETag == etag) {
					want, ok = p, true
					if p.ETag == etag {
						break
					}
				}
			}
		}
		switch {
		case lp.PartNumber < 1 || lp.PartNumber > files.MaxParts:
			err = uploadErr(http.StatusBadRequest, "Invalid partNumber %d", lp.PartNumber)
		case i > 0 && lp.PartNumber == list[i-1].PartNumber:
			err = uploadErr(http.StatusBadRequest, "Part %d is listed twice", lp.PartNumber)
		case lp.PartNumber != i+1:
			err = uploadErr(http.StatusBadRequest, "Part %d is missing", i+1)
		case !ok:
			err = uploadErr(http.StatusBadRequest, "Part %d was not uploaded", lp.PartNumber)
		case normETag(lp.ETag) != want.ETag:
			err = uploadErr(http.StatusBadRequest, "The etag of part %d does not match the uploaded part", lp.PartNumber)
		}
		if err != nil {
			break
		}
		parts = append(parts, want)
	}
	err = refuseSmallParts(err, parts) // parts.go: S3's EntityTooSmall
	if err != nil {
		st.mu.Unlock()
		return err
	}
	u.busy, u.touched = true, storageClock()
	st.mu.Unlock()

	m, err := st.s.cfg.Files.AssembleParts(u.id, parts, u.contentType, u.name, st.limit)
	if err != nil && st.shared && (errors.Is(err, files.ErrExists) || errors.Is(err, files.ErrPartNotFound)) {
		// Another server completed it meanwhile.
		if sm, serr := st.s.cfg.Files.Stat(u.id); serr == nil {
			m, err = sm, nil
		}
	}
	if err == nil {
		st.finish(u, m)
	} else {
		st.mu.Lock()
		u.busy = false
		st.mu.Unlock()
	}
	if errors.Is(err, files.ErrPartNotFound) {
		return uploadErr(http.StatusBadRequest, "A part of this upload is missing on the server; upload it again")
	}
	if err != nil {
		return st.storeErr(err, nil)
	}
	return st.answerFile(c, m, u.fileURL)
}

// --- signed tokens and upload keys, sessions in the store ------------------

// Tokens are 32 bytes in hex, the form fal's clients have always got from
// us: kind (1 byte), expiry (5, Unix seconds), payload (10) and an
// HMAC-SHA256 of those (16). An upload key is the file id (16 bytes) and an
// HMAC of the id and the session's kind (16).
const (
	tokenCDN      byte = 1
	tokenRealtime byte = 2
	tokenUpload   byte = 16 // + the uploadKind
)

// fallbackTokenKey signs without a webhook key (webhooks off, tests): the
// tokens are then good on this process only.
var fallbackTokenKey = func() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}()

// tokenKey is the key tokens and upload keys are signed with, derived from
// the webhook key that every server of a fleet shares.
func (s *Server) tokenKey() []byte {
	if w := s.cfg.Webhooks; w != nil && w.Signer != nil {
		return w.Signer.DeriveKey("storage tokens")
	}
	return fallbackTokenKey
}

func tokenMAC(key []byte, msg ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	for _, m := range msg {
		h.Write(m)
	}
	return h.Sum(nil)
}

// tokenHead is a token's kind and expiry.
func tokenHead(kind byte, exp time.Time) [6]byte {
	h := [6]byte{kind}
	u := uint64(max(exp.Unix(), 0))
	for i := range 5 {
		h[5-i] = byte(u >> (8 * i))
	}
	return h
}

func signToken(key []byte, kind byte, exp time.Time, payload [10]byte) string {
	var b [32]byte
	head := tokenHead(kind, exp)
	copy(b[:6], head[:])
	copy(b[6:16], payload[:])
	copy(b[16:], tokenMAC(key, b[:16]))
	return hex.EncodeToString(b[:])
}

// openToken checks a token of kind signed with key and not expired, and
// returns its first 6 bytes (kind and expiry) and its payload.
func openToken(key []byte, kind byte, tok string) (head, payload []byte, ok bool) {
	if !validUploadKey.MatchString(tok) {
		return nil, nil, false
	}
	b, _ := hex.DecodeString(tok)
	if b[0] != kind || !hmac.Equal(b[16:], tokenMAC(key, b[:16])[:16]) {
		return nil, nil, false
	}
	var u uint64
	for _, c := range b[1:6] {
		u = u<<8 | uint64(c)
	}
	if !storageClock().Before(time.Unix(int64(u), 0)) {
		return nil, nil, false
	}
	return b[:6], b[6:16], true
}

// A realtime token's payload holds its apps as an 80-bit Bloom filter,
// appBits keyed bits an app, so a list of any length fits; all zero
// allows every app. One app lets another through with a chance of about
// 1e-7, and only a server that knows the key can tell which bits an app sets.
const appBits = 6

func appBitsOf(key, head []byte, app string) [appBits]int {
	sum := tokenMAC(key, []byte("realtime app\x00"), head, []byte(app))
	var out [appBits]int
	for i := range out {
		out[i] = (int(sum[2*i])<<8 | int(sum[2*i+1])) % 80
	}
	return out
}

func signRealtimeToken(key []byte, exp time.Time, apps []string) string {
	head := tokenHead(tokenRealtime, exp)
	var filter [10]byte
	for _, a := range apps {
		for _, bit := range appBitsOf(key, head[:], a) {
			filter[bit/8] |= 1 << (bit % 8)
		}
	}
	return signToken(key, tokenRealtime, exp, filter)
}

// realtimeTokenAllows reports whether tok is a live realtime token signed
// with key that allows an app by one of names (alias or owner/alias).
func realtimeTokenAllows(key []byte, tok string, names ...string) bool {
	head, filter, ok := openToken(key, tokenRealtime, tok)
	if !ok {
		return false
	}
	if bytes.Equal(filter, make([]byte, 10)) {
		return true
	}
names:
	for _, n := range names {
		for _, bit := range appBitsOf(key, head, n) {
			if filter[bit/8]&(1<<(bit%8)) == 0 {
				continue names
			}
		}
		return true
	}
	return false
}

func (st *storage) uploadKey(kind uploadKind, id string) string {
	return id + hex.EncodeToString(tokenMAC(st.key, []byte{tokenUpload + byte(kind)}, []byte(id))[:16])
}

// keyID returns the file id of an upload key this fleet handed out for kind.
func (st *storage) keyID(key string, kind uploadKind) (string, bool) {
	if !validUploadKey.MatchString(key) {
		return "", false
	}
	id := key[:32]
	return id, hmac.Equal([]byte(key), []byte(st.uploadKey(kind, id)))
}

// uploadRecord is a session as kept in the file store (shared mode).
type uploadRecord struct {
	Kind        uploadKind `json:"kind"`
	Name        string     `json:"name"`
	ContentType string     `json:"content_type"`
	FileURL     string     `json:"file_url"`
	Touched     time.Time  `json:"touched"`
}

// save writes the session's record with its last activity.
func (st *storage) save(u *uploadSession, touched time.Time) error {
	b, err := json.Marshal(uploadRecord{Kind: u.kind, Name: u.name, ContentType: u.contentType, FileURL: u.fileURL, Touched: touched})
	if err != nil {
		return err
	}
	return st.s.cfg.Files.PutUploadInfo(u.id, b)
}

// load brings in, in shared mode, what other servers did with an upload
// of kind: a session this server does not know, or knows as idle, is read
// from the store, and one whose file is stored is done (completed here or
// elsewhere). The key's MAC shows that a server of the fleet handed it out.
func (st *storage) load(r *http.Request, key string, kind uploadKind) {
	if !st.shared {
		return
	}
	id, ok := st.keyID(key, kind)
	if !ok {
		return
	}
	st.mu.Lock()
	u := st.uploads[key]
	known := u != nil && storageClock().Sub(u.touched) <= uploadTTL
	done := u != nil && u.done
	st.mu.Unlock()
	if done {
		return
	}
	nu := &uploadSession{kind: kind, id: id, parts: map[int]files.Part{}}
	found := false
	if !known {
		var rec uploadRecord
		if b, err := st.s.cfg.Files.UploadInfo(id); err == nil && json.Unmarshal(b, &rec) == nil && rec.Kind == kind {
			nu.name, nu.contentType, nu.fileURL, nu.touched = rec.Name, rec.ContentType, rec.FileURL, rec.Touched
			found = true
		}
	}
	if m, err := st.s.cfg.Files.Stat(id); err == nil {
		if !found {
			// Its record went with the parts; a retry still gets its answer.
			nu.name, nu.contentType, nu.touched = m.Name, m.ContentType, m.Created
			nu.fileURL = st.cdnRoot(r) + "/files/" + id + "/" + m.Name
		}
		nu.done, nu.meta, nu.parts, found = true, m, nil, true
	}
	if !found {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := st.uploads[key]
	if cur == nil {
		st.uploads[key] = nu
		return
	}
	if nu.touched.After(cur.touched) {
		cur.touched = nu.touched
	}
	if nu.done && !cur.done {
		cur.done, cur.meta, cur.parts = true, nu.meta, nil
	}
}
