// Package files stores the files the server hands out (outputs and uploads)
// and finds them again by id: in a local directory (Local, the default) or in
// an S3-compatible bucket (S3), behind the same Backend. Multipart uploads
// keep their parts apart until they are assembled.
package files

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound reports an unknown or expired file.
var ErrNotFound = errors.New("file not found")

// ErrTooLarge is wrapped by Read when a file is over the caller's limit, and
// by PutReader, PutPart and AssembleParts when a stream is.
var ErrTooLarge = errors.New("file too large")

// ErrExists is wrapped by PutReader when the id already holds a file.
var ErrExists = errors.New("file exists")

// ErrPartNotFound is wrapped by AssembleParts when a part (with that etag)
// was never stored.
var ErrPartNotFound = errors.New("part not found")

// Meta describes a stored file.
type Meta struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	Created     time.Time `json:"created"`
}

// Local keeps each file as <dir>/<id>.bin with <dir>/<id>.json beside it,
// and the parts of multipart uploads (and an upload's record) under
// <dir>/multipart/<id>/.
type Local struct {
	dir string
}

// OpenLocal opens (creating) a local store in dir.
func OpenLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Local{dir: dir}, nil
}

// Open opens (creating) a store of files in the local directory dir.
func Open(dir string) (*Store, error) {
	l, err := OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	return &Store{Backend: l}, nil
}

var (
	validID   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	nameClean = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
)

// CleanName makes a file name safe to put in a URL path and on disk.
func CleanName(name string) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = nameClean.ReplaceAllString(name, "_")
	// Shorten before trimming, so that the result is already clean (a cut
	// that exposes a leading '.' or '_' must not survive: serveFile compares
	// names exactly).
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	name = strings.Trim(name, "._")
	if name == "" {
		name = "file"
	}
	return name
}

// NewID returns a fresh random file id: a file's URL can be handed out
// before its bytes arrive (PutReader with that id).
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidID reports whether id has the form NewID returns.
func ValidID(id string) bool { return validID.MatchString(id) }

// PutReader streams r into the store under id (from NewID; "" makes a new
// one) and returns the file's metadata. The file becomes visible only once
// all of it is on disk. With limit > 0, a stream of more than limit bytes
// fails with ErrTooLarge and stores nothing. An id that already holds a file
// (or is being written) fails with ErrExists; callers must not write one id
// from two places.
func (s *Local) PutReader(id string, r io.Reader, contentType, name string, limit int64) (Meta, error) {
	if id == "" {
		var err error
		if id, err = NewID(); err != nil {
			return Meta{}, err
		}
	} else if !validID.MatchString(id) {
		return Meta{}, fmt.Errorf("invalid file id %q", id)
	}
	meta := filepath.Join(s.dir, id+".json")
	if _, err := os.Stat(meta); err == nil {
		return Meta{}, fmt.Errorf("file %s: %w", id, ErrExists)
	}
	bin := filepath.Join(s.dir, id+".bin")
	f, err := os.OpenFile(bin+".partial", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return Meta{}, fmt.Errorf("file %s is being written: %w", id, ErrExists)
	}
	if err != nil {
		return Meta{}, err
	}
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && limit > 0 && n > limit {
		err = fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)
	}
	if err == nil {
		if _, serr := os.Stat(meta); serr == nil {
			err = fmt.Errorf("file %s: %w", id, ErrExists)
		}
	}
	if err != nil {
		os.Remove(bin + ".partial")
		return Meta{}, err
	}
	if err := os.Rename(bin+".partial", bin); err != nil {
		os.Remove(bin + ".partial")
		return Meta{}, err
	}
	m := Meta{ID: id, Name: CleanName(name), ContentType: contentType, Size: n, Created: time.Now().UTC()}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	js, _ := json.Marshal(m)
	if err := writeAtomic(meta, js); err != nil {
		os.Remove(bin)
		return Meta{}, err
	}
	return m, nil
}

// Get returns a file's metadata and the path of its bytes.
func (s *Local) Get(id string) (Meta, string, error) {
	var m Meta
	if !validID.MatchString(id) {
		return m, "", ErrNotFound
	}
	js, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if err != nil {
		return m, "", ErrNotFound
	}
	if err := json.Unmarshal(js, &m); err != nil {
		return m, "", fmt.Errorf("file %s: %w", id, err)
	}
	return m, filepath.Join(s.dir, id+".bin"), nil
}

// Stat returns a file's metadata.
func (s *Local) Stat(id string) (Meta, error) {
	m, _, err := s.Get(id)
	return m, err
}

// Open returns a file's metadata and its bytes, to be closed.
func (s *Local) Open(id string) (Meta, io.ReadSeekCloser, error) {
	m, p, err := s.Get(id)
	if err != nil {
		return m, nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return m, nil, ErrNotFound
	}
	return m, f, nil
}

// Sweep deletes files created before cutoff and returns how many went.
func (s *Local) Sweep(cutoff time.Time) (int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			// A .bin or .partial without metadata is a leftover of a crash;
			// anything else in the directory is not ours to delete.
			if !strings.HasSuffix(name, ".bin") && !strings.HasSuffix(name, ".partial") {
				continue
			}
			if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
				base := strings.TrimSuffix(strings.TrimSuffix(name, ".partial"), ".bin")
				if _, err := os.Stat(filepath.Join(s.dir, base+".json")); err != nil {
					os.Remove(filepath.Join(s.dir, name))
				}
			}
			continue
		}
		m, _, err := s.Get(id)
		if err != nil || m.Created.Before(cutoff) {
			os.Remove(filepath.Join(s.dir, id+".bin"))
			os.Remove(filepath.Join(s.dir, id+".json"))
			n++
		}
	}
	// Parts of multipart uploads idle since before cutoff go too (they are
	// not counted: n counts files).
	s.SweepParts(cutoff, nil)
	return n, nil
}

func writeAtomic(p string, data []byte) error {
	tmp := p + ".partial"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}

// Delete removes a file (no error when it is already gone).
func (s *Local) Delete(id string) error {
	if !validID.MatchString(id) {
		return ErrNotFound
	}
	os.Remove(filepath.Join(s.dir, id+".json"))
	if err := os.Remove(filepath.Join(s.dir, id+".bin")); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// MaxParts is the highest part number of a multipart upload.
const MaxParts = 10000

var validETag = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Part is one stored part of a multipart upload.
type Part struct {
	Number int
	// ETag is the hex MD5 of the part's bytes (as S3 has it).
	ETag string
	Size int64
}

func (s *Local) partDir(id string) string { return filepath.Join(s.dir, "multipart", id) }

func (s *Local) partPath(id string, p Part) string {
	return filepath.Join(s.partDir(id), fmt.Sprintf("%d.%s.part", p.Number, p.ETag))
}

// PutPart streams part n of the multipart upload of file id to disk. Each
// version of a part is kept under its etag, so a retried or concurrent
// upload of the same part never corrupts the version another caller was
// told about. With limit > 0, more than limit bytes fail with ErrTooLarge.
func (s *Local) PutPart(id string, n int, r io.Reader, limit int64) (Part, error) {
	if !validID.MatchString(id) || n < 1 || n > MaxParts {
		return Part{}, fmt.Errorf("invalid part %d of file %q", n, id)
	}
	dir := s.partDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Part{}, err
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%d.*.tmp", n))
	if err != nil {
		return Part{}, err
	}
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	h := md5.New()
	size, err := io.Copy(io.MultiWriter(f, h), src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && limit > 0 && size > limit {
		err = fmt.Errorf("part %d has more than %d bytes: %w", n, limit, ErrTooLarge)
	}
	p := Part{Number: n, ETag: hex.EncodeToString(h.Sum(nil)), Size: size}
	if err == nil {
		err = os.Rename(f.Name(), s.partPath(id, p))
	}
	if err != nil {
		os.Remove(f.Name())
		return Part{}, err
	}
	return p, nil
}

// RemovePart deletes one stored version of a part.
func (s *Local) RemovePart(id string, p Part) error {
	if !validID.MatchString(id) || !validETag.MatchString(p.ETag) {
		return ErrPartNotFound
	}
	return os.Remove(s.partPath(id, p))
}

// AssembleParts streams the given parts, in the order given, into the file
// id (as PutReader does, limit included) and then drops all of the upload's
// parts. A part never stored with that number and etag fails with
// ErrPartNotFound before anything is written.
func (s *Local) AssembleParts(id string, parts []Part, contentType, name string, limit int64) (Meta, error) {
	if !validID.MatchString(id) {
		return Meta{}, fmt.Errorf("invalid file id %q", id)
	}
	if len(parts) == 0 {
		return Meta{}, fmt.Errorf("no parts: %w", ErrPartNotFound)
	}
	paths := make([]string, len(parts))
	var total int64
	for i, p := range parts {
		if !validETag.MatchString(p.ETag) || p.Number < 1 || p.Number > MaxParts {
			return Meta{}, fmt.Errorf("part %d: %w", p.Number, ErrPartNotFound)
		}
		paths[i] = s.partPath(id, p)
		info, err := os.Stat(paths[i])
		if err != nil || !info.Mode().IsRegular() {
			return Meta{}, fmt.Errorf("part %d: %w", p.Number, ErrPartNotFound)
		}
		total += info.Size()
	}
	if limit > 0 && total > limit {
		return Meta{}, fmt.Errorf("parts have %d bytes, more than %d: %w", total, limit, ErrTooLarge)
	}
	r := &seqFiles{paths: paths}
	m, err := s.PutReader(id, r, contentType, name, limit)
	r.close()
	if err != nil {
		return Meta{}, err
	}
	s.DropParts(id)
	return m, nil
}

// DropParts deletes every stored part of the upload of file id.
func (s *Local) DropParts(id string) error {
	if !validID.MatchString(id) {
		return nil
	}
	return os.RemoveAll(s.partDir(id))
}

// SweepParts deletes the parts of uploads whose directory has not changed
// since cutoff (a part written or replaced touches it), except those keep
// reports as live, and returns how many uploads went.
func (s *Local) SweepParts(cutoff time.Time, keep func(id string) bool) (int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "multipart"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() || !validID.MatchString(id) || (keep != nil && keep(id)) {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			if os.RemoveAll(s.partDir(id)) == nil {
				n++
			}
		}
	}
	return n, nil
}

// seqFiles reads files one after the other, holding one open at a time.
type seqFiles struct {
	paths []string
	f     *os.File
}

func (r *seqFiles) Read(b []byte) (int, error) {
	for {
		if r.f == nil {
			if len(r.paths) == 0 {
				return 0, io.EOF
			}
			f, err := os.Open(r.paths[0])
			if err != nil {
				return 0, fmt.Errorf("%s: %w", filepath.Base(r.paths[0]), ErrPartNotFound)
			}
			r.f, r.paths = f, r.paths[1:]
		}
		n, err := r.f.Read(b)
		if err == io.EOF {
			r.f.Close()
			r.f = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *seqFiles) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// uploadInfoName is the file of an upload's record in its part directory
// (or the key under its part prefix): no part is named so.
const uploadInfoName = "upload.json"

// parsePartName reads "<n>.<etag>" (what follows is the caller's to check).
func parsePartName(name string) (Part, bool) {
	ns, etag, ok := strings.Cut(name, ".")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil || n < 1 || n > MaxParts || strconv.Itoa(n) != ns || !validETag.MatchString(etag) {
		return Part{}, false
	}
	return Part{Number: n, ETag: etag}, true
}

// ListParts lists the stored versions of the upload's parts.
func (s *Local) ListParts(id string) ([]Part, error) {
	if !validID.MatchString(id) {
		return nil, nil
	}
	ents, err := os.ReadDir(s.partDir(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Part
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".part")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		p, ok := parsePartName(base)
		info, err := e.Info()
		if !ok || err != nil {
			continue
		}
		p.Size = info.Size()
		out = append(out, p)
	}
	return out, nil
}

// PutUploadInfo writes the record under a unique temporary name first:
// servers may rewrite it concurrently.
func (s *Local) PutUploadInfo(id string, data []byte) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("invalid file id %q", id)
	}
	dir := s.partDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "upload.*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, uploadInfoName))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// UploadInfo reads the upload's record.
func (s *Local) UploadInfo(id string) ([]byte, error) {
	if !validID.MatchString(id) {
		return nil, ErrNotFound
	}
	b, err := os.ReadFile(filepath.Join(s.partDir(id), uploadInfoName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return b, err
}
