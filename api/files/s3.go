package files

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates a bucket on an S3-compatible service.
type S3Config struct {
	Endpoint string // host[:port]; "" = s3.amazonaws.com
	Region   string // "" = the service's default
	Secure   bool   // HTTPS
	Bucket   string
	Prefix   string // key prefix of everything stored ("" or ending in "/")

	AccessKey, SecretKey, SessionToken string
}

// ParseS3URL reads s3://bucket/prefix?endpoint=host:port&region=…&secure=false
// (credentials are not part of it).
func ParseS3URL(raw string) (S3Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return S3Config{}, fmt.Errorf("storage %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return S3Config{}, fmt.Errorf("storage %q: want s3://bucket/prefix?endpoint=host:port&region=…&secure=false", raw)
	}
	c := S3Config{Bucket: u.Host, Endpoint: "s3.amazonaws.com", Secure: true}
	if p := strings.Trim(u.Path, "/"); p != "" {
		c.Prefix = p + "/"
	}
	for k, v := range u.Query() {
		val := v[len(v)-1]
		switch k {
		case "endpoint":
			c.Endpoint = val
		case "region":
			c.Region = val
		case "secure":
			if c.Secure, err = strconv.ParseBool(val); err != nil {
				return S3Config{}, fmt.Errorf("storage %q: secure=%q is not true or false", raw, val)
			}
		default:
			return S3Config{}, fmt.Errorf("storage %q: unknown parameter %q (endpoint, region, secure)", raw, k)
		}
	}
	if c.Endpoint == "" {
		return S3Config{}, fmt.Errorf("storage %q: empty endpoint", raw)
	}
	return c, nil
}

// String is the bucket's URL, without credentials.
func (c S3Config) String() string {
	scheme := "https"
	if !c.Secure {
		scheme = "http"
	}
	return scheme + "://" + c.Endpoint + "/" + c.Bucket + "/" + c.Prefix
}

// S3 keeps files in a bucket, where several servers can share them: the
// file id as <prefix>files/<id> (its content type, and its name and time in
// the object's metadata), and the parts of multipart uploads as
// <prefix>multipart/<id>/<n>.<etag> until they are assembled (an upload's
// record as <prefix>multipart/<id>/upload.json).
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
}

// s3PartSize is the size of the parts in which a stream of unknown length
// goes up (each one is held in memory while it is sent); 10,000 of them
// make 160 GiB, the largest file.
const s3PartSize = 16 << 20

// OpenS3 connects to the bucket of c, which must exist.
func OpenS3(ctx context.Context, c S3Config) (*S3, error) {
	if c.AccessKey == "" || c.SecretKey == "" {
		return nil, fmt.Errorf("storage %s: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", c)
	}
	cl, err := minio.New(c.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken),
		Secure: c.Secure,
		Region: c.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", c, err)
	}
	ok, err := cl.BucketExists(ctx, c.Bucket)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", c, err)
	}
	if !ok {
		return nil, fmt.Errorf("storage %s: bucket %q does not exist", c, c.Bucket)
	}
	return &S3{c: cl, bucket: c.Bucket, prefix: c.Prefix}, nil
}

// OpenS3Store opens a Store of files in the bucket of c.
func OpenS3Store(ctx context.Context, c S3Config) (*Store, error) {
	b, err := OpenS3(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Store{Backend: b}, nil
}

func (s *S3) fileKey(id string) string  { return s.prefix + "files/" + id }
func (s *S3) partsKey(id string) string { return s.prefix + "multipart/" + id + "/" }
func (s *S3) partKey(id string, p Part) string {
	return fmt.Sprintf("%s%d.%s", s.partsKey(id), p.Number, p.ETag)
}

func notFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

// limitErr reads r and fails with ErrTooLarge past limit bytes (limit <= 0:
// no limit), so that an upload of the stream is aborted, never completed.
type limitErr struct {
	r     io.Reader
	n     int64
	limit int64
}

func (l *limitErr) Read(b []byte) (int, error) {
	n, err := l.r.Read(b)
	l.n += int64(n)
	if l.limit > 0 && l.n > l.limit {
		return 0, fmt.Errorf("more than %d bytes: %w", l.limit, ErrTooLarge)
	}
	return n, err
}

// metadata keys (sent as x-amz-meta-*).
const (
	metaName    = "Name"
	metaCreated = "Created"
)

func (s *S3) PutReader(id string, r io.Reader, contentType, name string, limit int64) (Meta, error) {
	if id == "" {
		var err error
		if id, err = NewID(); err != nil {
			return Meta{}, err
		}
	} else if !validID.MatchString(id) {
		return Meta{}, fmt.Errorf("invalid file id %q", id)
	}
	ctx := context.Background()
	key := s.fileKey(id)
	if _, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{}); err == nil {
		return Meta{}, fmt.Errorf("file %s: %w", id, ErrExists)
	} else if !notFound(err) {
		return Meta{}, err
	}
	m := Meta{ID: id, Name: CleanName(name), ContentType: contentType, Created: time.Now().UTC()}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	opts := minio.PutObjectOptions{
		ContentType:  m.ContentType,
		UserMetadata: map[string]string{metaName: m.Name, metaCreated: m.Created.Format(time.RFC3339Nano)},
		PartSize:     s3PartSize,
	}
	src := &limitErr{r: r, limit: limit}
	// A stream that fits one part goes up in one PUT; a longer one as a
	// multipart upload, which S3 shows only once it is complete (and
	// which is aborted if the stream fails).
	head, err := io.ReadAll(io.LimitReader(src, s3PartSize))
	if err == nil && len(head) < s3PartSize {
		_, err = s.c.PutObject(ctx, s.bucket, key, bytes.NewReader(head), int64(len(head)), opts)
	} else if err == nil {
		_, err = s.c.PutObject(ctx, s.bucket, key, io.MultiReader(bytes.NewReader(head), src), -1, opts)
	}
	if err != nil {
		// The error of the stream itself, not the client's wrapping of it.
		if errors.Is(err, ErrTooLarge) {
			return Meta{}, fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)
		}
		return Meta{}, err
	}
	m.Size = src.n
	return m, nil
}

// meta reads a file's metadata from its object's.
func (s *S3) meta(id string, info minio.ObjectInfo) Meta {
	m := Meta{ID: id, ContentType: info.ContentType, Size: info.Size, Created: info.LastModified.UTC(), Name: "file"}
	for k, v := range info.UserMetadata {
		switch {
		case strings.EqualFold(k, metaName):
			m.Name = v
		case strings.EqualFold(k, metaCreated):
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				m.Created = t.UTC()
			}
		}
	}
	return m
}

func (s *S3) Stat(id string) (Meta, error) {
	if !validID.MatchString(id) {
		return Meta{}, ErrNotFound
	}
	info, err := s.c.StatObject(context.Background(), s.bucket, s.fileKey(id), minio.StatObjectOptions{})
	if notFound(err) {
		return Meta{}, ErrNotFound
	}
	if err != nil {
		return Meta{}, fmt.Errorf("file %s: %w", id, err)
	}
	return s.meta(id, info), nil
}

// Open returns the object as a reader that fetches what is read (a Seek
// starts a ranged GET), so serving a Range reads only that range.
func (s *S3) Open(id string) (Meta, io.ReadSeekCloser, error) {
	if !validID.MatchString(id) {
		return Meta{}, nil, ErrNotFound
	}
	obj, err := s.c.GetObject(context.Background(), s.bucket, s.fileKey(id), minio.GetObjectOptions{})
	if err != nil {
		return Meta{}, nil, fmt.Errorf("file %s: %w", id, err)
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		if notFound(err) {
			return Meta{}, nil, ErrNotFound
		}
		return Meta{}, nil, fmt.Errorf("file %s: %w", id, err)
	}
	return s.meta(id, info), obj, nil
}

func (s *S3) Delete(id string) error {
	if !validID.MatchString(id) {
		return ErrNotFound
	}
	err := s.c.RemoveObject(context.Background(), s.bucket, s.fileKey(id), minio.RemoveObjectOptions{})
	if err != nil && !notFound(err) {
		return err
	}
	return nil
}

// Sweep deletes the files whose objects were written before cutoff.
func (s *S3) Sweep(cutoff time.Time) (int, error) {
	ctx := context.Background()
	n := 0
	var firstErr error
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "files/", Recursive: true}) {
		if o.Err != nil {
			return n, o.Err
		}
		id := strings.TrimPrefix(o.Key, s.prefix+"files/")
		if !validID.MatchString(id) || !o.LastModified.Before(cutoff) {
			continue
		}
		if err := s.c.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		n++
	}
	if _, err := s.SweepParts(cutoff, nil); firstErr == nil {
		firstErr = err
	}
	// Multipart uploads of files that were never completed (a server
	// stopped while it streamed one) hold storage until aborted.
	for u := range s.c.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if u.Err != nil {
			if firstErr == nil {
				firstErr = u.Err
			}
			break
		}
		if u.Initiated.Before(cutoff) {
			if err := s.c.RemoveIncompleteUpload(ctx, s.bucket, u.Key); err != nil && !notFound(err) && firstErr == nil {
				firstErr = err
			}
		}
	}
	return n, firstErr
}

// PutPart stores the part under a temporary name while its MD5 is
// computed, then copies it (inside the service) to its name with the etag.
func (s *S3) PutPart(id string, n int, r io.Reader, limit int64) (Part, error) {
	if !validID.MatchString(id) || n < 1 || n > MaxParts {
		return Part{}, fmt.Errorf("invalid part %d of file %q", n, id)
	}
	tmpID, err := NewID()
	if err != nil {
		return Part{}, err
	}
	ctx := context.Background()
	tmp := fmt.Sprintf("%s%d.%s.tmp", s.partsKey(id), n, tmpID)
	h := md5.New()
	src := &limitErr{r: io.TeeReader(r, h), limit: limit}
	if _, err := s.c.PutObject(ctx, s.bucket, tmp, src, -1, minio.PutObjectOptions{PartSize: s3PartSize}); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return Part{}, fmt.Errorf("part %d has more than %d bytes: %w", n, limit, ErrTooLarge)
		}
		return Part{}, err
	}
	defer s.c.RemoveObject(ctx, s.bucket, tmp, minio.RemoveObjectOptions{})
	p := Part{Number: n, ETag: hex.EncodeToString(h.Sum(nil)), Size: src.n}
	_, err = s.c.ComposeObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.partKey(id, p)},
		minio.CopySrcOptions{Bucket: s.bucket, Object: tmp})
	if err != nil {
		return Part{}, err
	}
	return p, nil
}

func (s *S3) RemovePart(id string, p Part) error {
	if !validID.MatchString(id) || !validETag.MatchString(p.ETag) {
		return ErrPartNotFound
	}
	return s.c.RemoveObject(context.Background(), s.bucket, s.partKey(id, p), minio.RemoveObjectOptions{})
}

// AssembleParts streams the parts through this server into the file (S3
// cannot concatenate parts smaller than 5 MiB, which fal's clients may send).
func (s *S3) AssembleParts(id string, parts []Part, contentType, name string, limit int64) (Meta, error) {
	if !validID.MatchString(id) {
		return Meta{}, fmt.Errorf("invalid file id %q", id)
	}
	if len(parts) == 0 {
		return Meta{}, fmt.Errorf("no parts: %w", ErrPartNotFound)
	}
	ctx := context.Background()
	keys := make([]string, len(parts))
	var total int64
	for i, p := range parts {
		if !validETag.MatchString(p.ETag) || p.Number < 1 || p.Number > MaxParts {
			return Meta{}, fmt.Errorf("part %d: %w", p.Number, ErrPartNotFound)
		}
		keys[i] = s.partKey(id, p)
		info, err := s.c.StatObject(ctx, s.bucket, keys[i], minio.StatObjectOptions{})
		if notFound(err) {
			return Meta{}, fmt.Errorf("part %d: %w", p.Number, ErrPartNotFound)
		}
		if err != nil {
			return Meta{}, err
		}
		total += info.Size
	}
	if limit > 0 && total > limit {
		return Meta{}, fmt.Errorf("parts have %d bytes, more than %d: %w", total, limit, ErrTooLarge)
	}
	r := &seqObjects{s: s, keys: keys}
	m, err := s.PutReader(id, r, contentType, name, limit)
	r.close()
	if err != nil {
		return Meta{}, err
	}
	s.DropParts(id)
	return m, nil
}

// seqObjects reads objects one after the other.
type seqObjects struct {
	s    *S3
	keys []string
	obj  *minio.Object
}

func (r *seqObjects) Read(b []byte) (int, error) {
	for {
		if r.obj == nil {
			if len(r.keys) == 0 {
				return 0, io.EOF
			}
			obj, err := r.s.c.GetObject(context.Background(), r.s.bucket, r.keys[0], minio.GetObjectOptions{})
			if err != nil {
				return 0, err
			}
			r.obj, r.keys = obj, r.keys[1:]
		}
		n, err := r.obj.Read(b)
		if err == io.EOF {
			r.obj.Close()
			r.obj = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if notFound(err) {
			err = ErrPartNotFound
		}
		return n, err
	}
}

func (r *seqObjects) close() {
	if r.obj != nil {
		r.obj.Close()
		r.obj = nil
	}
}

func (s *S3) DropParts(id string) error {
	if !validID.MatchString(id) {
		return nil
	}
	ctx := context.Background()
	var firstErr error
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.partsKey(id), Recursive: true}) {
		if o.Err != nil {
			return o.Err
		}
		if err := s.c.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// SweepParts deletes the parts of uploads none of whose parts was written
// since cutoff.
func (s *S3) SweepParts(cutoff time.Time, keep func(id string) bool) (int, error) {
	ctx := context.Background()
	root := s.prefix + "multipart/"
	latest := map[string]time.Time{}
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: root, Recursive: true}) {
		if o.Err != nil {
			return 0, o.Err
		}
		id, _, ok := strings.Cut(strings.TrimPrefix(o.Key, root), "/")
		if !ok || !validID.MatchString(id) {
			continue
		}
		if t, seen := latest[id]; !seen || o.LastModified.After(t) {
			latest[id] = o.LastModified
		}
	}
	n := 0
	for id, t := range latest {
		if !t.Before(cutoff) || (keep != nil && keep(id)) {
			continue
		}
		if s.DropParts(id) == nil {
			n++
		}
	}
	return n, nil
}

// ListParts lists the part objects of the upload (not its temporaries).
func (s *S3) ListParts(id string) ([]Part, error) {
	if !validID.MatchString(id) {
		return nil, nil
	}
	var out []Part
	root := s.partsKey(id)
	for o := range s.c.ListObjects(context.Background(), s.bucket, minio.ListObjectsOptions{Prefix: root, Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		p, ok := parsePartName(strings.TrimPrefix(o.Key, root))
		if !ok || s.partKey(id, p) != o.Key {
			continue
		}
		p.Size = o.Size
		out = append(out, p)
	}
	return out, nil
}

func (s *S3) PutUploadInfo(id string, data []byte) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("invalid file id %q", id)
	}
	_, err := s.c.PutObject(context.Background(), s.bucket, s.partsKey(id)+uploadInfoName, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/json"})
	return err
}

func (s *S3) UploadInfo(id string) ([]byte, error) {
	if !validID.MatchString(id) {
		return nil, ErrNotFound
	}
	obj, err := s.c.GetObject(context.Background(), s.bucket, s.partsKey(id)+uploadInfoName, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, 1<<20))
	if notFound(err) {
		return nil, ErrNotFound
	}
	return b, err
}
