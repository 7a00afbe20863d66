package files_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/internal/testenv"
)

// backendCases are what every backend must do alike.
var backendCases = []struct {
	name string
	run  func(t *testing.T, s *files.Store)
}{
	{"put, stat, open, read", func(t *testing.T, s *files.Store) {
		data := []byte("\x89PNG\r\n\x1a\n binary \x00 data")
		m, err := s.Put(data, "image/png", "out put.png")
		if err != nil {
			t.Fatal(err)
		}
		if !files.ValidID(m.ID) || m.Name != "out_put.png" || m.ContentType != "image/png" || m.Size != int64(len(data)) {
			t.Errorf("Put meta %+v", m)
		}
		if d := time.Since(m.Created); d < 0 || d > time.Minute || m.Created.Location() != time.UTC {
			t.Errorf("created %v", m.Created)
		}
		sm, err := s.Stat(m.ID)
		if err != nil || sm != m {
			t.Errorf("Stat = %+v, %v; want %+v", sm, err, m)
		}
		om, f, err := s.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if om != m {
			t.Errorf("Open meta %+v, want %+v", om, m)
		}
		// A range read, as serving a Range request does.
		if _, err := f.Seek(4, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(b, data[4:]) {
			t.Errorf("bytes from 4 = %q, %v", b, err)
		}
		rm, b, err := s.Read(m.ID, 0)
		if err != nil || rm != m || !bytes.Equal(b, data) {
			t.Errorf("Read = %+v %q %v", rm, b, err)
		}
		// No content type: a generic one.
		m2, err := s.Put([]byte("x"), "", "")
		if err != nil || m2.ContentType != "application/octet-stream" || m2.Name != "file" {
			t.Errorf("Put without type and name = %+v, %v", m2, err)
		}
		if sm, err := s.Stat(m2.ID); err != nil || sm != m2 {
			t.Errorf("Stat = %+v, %v; want %+v", sm, err, m2)
		}
	}},
	{"read with limit", func(t *testing.T, s *files.Store) {
		m, err := s.Put([]byte("0123456789"), "text/plain", "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Read(m.ID, 9); !errors.Is(err, files.ErrTooLarge) {
			t.Errorf("Read over the limit: %v, want ErrTooLarge", err)
		}
		if _, b, err := s.Read(m.ID, 10); err != nil || string(b) != "0123456789" {
			t.Errorf("Read at the limit = %q, %v", b, err)
		}
	}},
	{"too large stores nothing", func(t *testing.T, s *files.Store) {
		for _, size := range []int{11, 20 << 20} { // one request; a multipart upload
			id, _ := files.NewID()
			limit := int64(size - 1)
			_, err := s.PutReader(id, bytes.NewReader(make([]byte, size)), "", "big", limit)
			if !errors.Is(err, files.ErrTooLarge) {
				t.Errorf("PutReader of %d bytes over a %d byte limit: %v, want ErrTooLarge", size, limit, err)
			}
			if _, err := s.Stat(id); !errors.Is(err, files.ErrNotFound) {
				t.Errorf("after a refused upload of %d bytes, Stat: %v, want ErrNotFound", size, err)
			}
		}
	}},
	{"large stream, id given, exists", func(t *testing.T, s *files.Store) {
		data := bytes.Repeat([]byte("0123456789abcdef"), (20<<20)/16+3)
		id, _ := files.NewID()
		m, err := s.PutReader(id, io.MultiReader(bytes.NewReader(data)), "application/x-big", "big.bin", int64(len(data)))
		if err != nil || m.ID != id || m.Size != int64(len(data)) {
			t.Fatalf("PutReader = %+v, %v", m, err)
		}
		if _, b, err := s.Read(id, 0); err != nil || !bytes.Equal(b, data) {
			t.Errorf("Read: %d bytes, %v; want %d", len(b), err, len(data))
		}
		if _, err := s.PutReader(id, strings.NewReader("again"), "", "x", 0); !errors.Is(err, files.ErrExists) {
			t.Errorf("second PutReader: %v, want ErrExists", err)
		}
		if _, err := s.PutReader("../x", strings.NewReader("x"), "", "x", 0); err == nil {
			t.Error("PutReader with an invalid id succeeded")
		}
	}},
	{"not found", func(t *testing.T, s *files.Store) {
		for _, id := range []string{strings.Repeat("0", 32), "", "../x", strings.Repeat("A", 32)} {
			if _, err := s.Stat(id); !errors.Is(err, files.ErrNotFound) {
				t.Errorf("Stat(%q): %v", id, err)
			}
			if _, _, err := s.Open(id); !errors.Is(err, files.ErrNotFound) {
				t.Errorf("Open(%q): %v", id, err)
			}
			if _, _, err := s.Read(id, 0); !errors.Is(err, files.ErrNotFound) {
				t.Errorf("Read(%q): %v", id, err)
			}
		}
	}},
	{"delete", func(t *testing.T, s *files.Store) {
		m, err := s.Put([]byte("bye"), "text/plain", "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(m.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(m.ID); !errors.Is(err, files.ErrNotFound) {
			t.Errorf("Stat after Delete: %v", err)
		}
		if err := s.Delete(m.ID); err != nil {
			t.Errorf("second Delete: %v", err)
		}
	}},
	{"multipart assemble", func(t *testing.T, s *files.Store) {
		id, _ := files.NewID()
		put := func(n int, data string, limit int64) files.Part {
			t.Helper()
			p, err := s.PutPart(id, n, strings.NewReader(data), limit)
			if err != nil {
				t.Fatalf("PutPart %d: %v", n, err)
			}
			sum := md5.Sum([]byte(data))
			if p.Number != n || p.ETag != hex.EncodeToString(sum[:]) || p.Size != int64(len(data)) {
				t.Errorf("part %+v", p)
			}
			return p
		}
		p2 := put(2, "second,", 0)
		p1 := put(1, "first,", 0)
		p2b := put(2, "SECOND,", 0) // a retry with other bytes: both versions kept
		p3 := put(3, "third", 100)
		if _, err := s.PutPart(id, 4, strings.NewReader("12345"), 4); !errors.Is(err, files.ErrTooLarge) {
			t.Errorf("part over its limit: %v", err)
		}
		if _, err := s.PutPart(id, files.MaxParts+1, strings.NewReader("x"), 0); err == nil {
			t.Error("part number over MaxParts accepted")
		}
		bad := p3
		bad.ETag = strings.Repeat("0", 32)
		if _, err := s.AssembleParts(id, []files.Part{p1, p2, bad}, "text/plain", "t.txt", 0); !errors.Is(err, files.ErrPartNotFound) {
			t.Errorf("assemble with an unknown etag: %v", err)
		}
		if _, err := s.AssembleParts(id, []files.Part{p1, p2, p3}, "text/plain", "t.txt", 10); !errors.Is(err, files.ErrTooLarge) {
			t.Errorf("assemble over the limit: %v", err)
		}
		if err := s.RemovePart(id, p2b); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AssembleParts(id, []files.Part{p1, p2b, p3}, "text/plain", "t.txt", 0); !errors.Is(err, files.ErrPartNotFound) {
			t.Errorf("assemble with a removed part: %v", err)
		}
		m, err := s.AssembleParts(id, []files.Part{p1, p2, p3}, "text/plain", "t.txt", 0)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != id || m.Name != "t.txt" || m.ContentType != "text/plain" || m.Size != 18 {
			t.Errorf("meta %+v", m)
		}
		if _, b, err := s.Read(id, 0); err != nil || string(b) != "first,second,third" {
			t.Errorf("assembled %q, %v", b, err)
		}
		// The parts are gone.
		other, _ := files.NewID()
		if _, err := s.AssembleParts(other, []files.Part{p1}, "", "x", 0); !errors.Is(err, files.ErrPartNotFound) {
			t.Errorf("a part of another upload: %v", err)
		}
		if n, err := s.SweepParts(time.Now().Add(time.Hour), nil); err != nil || n != 0 {
			t.Errorf("SweepParts after assembly = %d, %v; want no upload left", n, err)
		}
	}},
	{"upload records and part lists", func(t *testing.T, s *files.Store) {
		id, _ := files.NewID()
		if _, err := s.UploadInfo(id); !errors.Is(err, files.ErrNotFound) {
			t.Errorf("UploadInfo before any: %v, want ErrNotFound", err)
		}
		if ps, err := s.ListParts(id); err != nil || len(ps) != 0 {
			t.Errorf("ListParts before any = %v, %v", ps, err)
		}
		for _, rec := range []string{`{"v":1}`, `{"v":2}`} {
			if err := s.PutUploadInfo(id, []byte(rec)); err != nil {
				t.Fatal(err)
			}
			if b, err := s.UploadInfo(id); err != nil || string(b) != rec {
				t.Errorf("UploadInfo = %q, %v; want %q", b, err, rec)
			}
		}
		// Every stored version of a part is listed, the record is not.
		var want []files.Part
		for _, p := range []struct {
			n    int
			data string
		}{{1, "first"}, {2, "second"}, {2, "second, again"}} {
			part, err := s.PutPart(id, p.n, strings.NewReader(p.data), 0)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, part)
		}
		got, err := s.ListParts(id)
		if err != nil || len(got) != len(want) {
			t.Fatalf("ListParts = %v, %v; want %v", got, err, want)
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("ListParts = %v, missing %v", got, w)
			}
		}
		// The record keeps an upload alive, and goes with its parts.
		if n, err := s.SweepParts(time.Now().Add(-time.Hour), nil); err != nil || n != 0 {
			t.Errorf("SweepParts of a fresh upload = %d, %v", n, err)
		}
		if err := s.DropParts(id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UploadInfo(id); !errors.Is(err, files.ErrNotFound) {
			t.Errorf("UploadInfo after DropParts: %v, want ErrNotFound", err)
		}
		other, _ := files.NewID()
		if err := s.PutUploadInfo(other, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if n, err := s.SweepParts(time.Now().Add(time.Hour), nil); err != nil || n != 1 {
			t.Errorf("SweepParts of an idle record = %d, %v; want 1", n, err)
		}
		if _, err := s.UploadInfo(other); !errors.Is(err, files.ErrNotFound) {
			t.Errorf("UploadInfo after SweepParts: %v, want ErrNotFound", err)
		}
		if err := s.PutUploadInfo("../x", []byte("{}")); err == nil {
			t.Errorf("PutUploadInfo took an invalid id")
		}
	}},
	{"sweep cutoff", func(t *testing.T, s *files.Store) {
		m, err := s.Put([]byte("old"), "text/plain", "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		up, _ := files.NewID()
		if _, err := s.PutPart(up, 1, strings.NewReader("part"), 0); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Sweep(time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Errorf("Sweep of an hour ago = %d, %v", n, err)
		}
		if _, err := s.Stat(m.ID); err != nil {
			t.Errorf("a new file was swept: %v", err)
		}
		if n, err := s.SweepParts(time.Now().Add(time.Hour), func(id string) bool { return id == up }); err != nil || n != 0 {
			t.Errorf("SweepParts of a live upload = %d, %v", n, err)
		}
		if n, err := s.Sweep(time.Now().Add(time.Minute)); err != nil || n != 1 {
			t.Errorf("Sweep after the file = %d, %v; want 1", n, err)
		}
		if _, err := s.Stat(m.ID); !errors.Is(err, files.ErrNotFound) {
			t.Errorf("Stat of a swept file: %v", err)
		}
		// Sweep took the idle upload's parts too.
		if n, err := s.SweepParts(time.Now().Add(time.Hour), nil); err != nil || n != 0 {
			t.Errorf("SweepParts after Sweep = %d, %v; want none left", n, err)
		}
	}},
}

// TestBackends runs backendCases on a local directory and on a bucket of a
// real S3-compatible service (versitygw), each case in a store of its own.
func TestBackends(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		for _, tc := range backendCases {
			t.Run(tc.name, func(t *testing.T) {
				s, err := files.Open(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				tc.run(t, s)
			})
		}
	})
	t.Run("s3", func(t *testing.T) {
		srv := testenv.S3(t)
		for i, tc := range backendCases {
			t.Run(tc.name, func(t *testing.T) {
				c, err := files.ParseS3URL(srv.URL(fmt.Sprintf("case%d/", i)))
				if err != nil {
					t.Fatal(err)
				}
				c.AccessKey, c.SecretKey = srv.AccessKey, srv.SecretKey
				s, err := files.OpenS3Store(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				tc.run(t, s)
			})
		}
	})
}

// TestS3SweepIncompleteUploads: a multipart upload left open (a server
// stopped while it streamed a file) is aborted by the sweep once it is
// older than the cutoff.
func TestS3SweepIncompleteUploads(t *testing.T) {
	srv := testenv.S3(t)
	c, err := files.ParseS3URL(srv.URL("inc/"))
	if err != nil {
		t.Fatal(err)
	}
	c.AccessKey, c.SecretKey = srv.AccessKey, srv.SecretKey
	s, err := files.OpenS3Store(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, _ := files.NewID()
	core := minio.Core{Client: srv.Client}
	if _, err := core.NewMultipartUpload(ctx, srv.Bucket, "inc/files/"+id, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	open := func() int {
		n := 0
		for u := range srv.Client.ListIncompleteUploads(ctx, srv.Bucket, "inc/", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			n++
		}
		return n
	}
	if n := open(); n != 1 {
		t.Fatalf("%d open uploads, want 1", n)
	}
	if _, err := s.Sweep(time.Now().Add(-time.Hour)); err != nil || open() != 1 {
		t.Errorf("Sweep of an hour ago: %v, %d open uploads; want the new one kept", err, open())
	}
	if _, err := s.Sweep(time.Now().Add(time.Minute)); err != nil || open() != 0 {
		t.Errorf("Sweep after it: %v, %d open uploads; want none", err, open())
	}
}
