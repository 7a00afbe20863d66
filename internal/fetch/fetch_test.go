package fetch

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/gzip"
)

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestGet(t *testing.T) {
	content := []byte("pinned package bytes")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/good", "/mirror/pkg/-/x.tgz":
			w.Write(content)
		case "/bad":
			w.Write([]byte("tampered"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	t.Run("download, verify, cache", func(t *testing.T) {
		c := &Client{Dir: t.TempDir()}
		a := Artifact{Name: "good.tgz", URL: srv.URL + "/good", SHA256: sum(content)}
		p, err := c.Get(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, content) {
			t.Fatal("wrong content")
		}
		before := hits.Load()
		if _, err := c.Get(ctx, a); err != nil || hits.Load() != before {
			t.Fatalf("cached file downloaded again (err %v)", err)
		}
		// A corrupted cache entry is replaced, not used.
		os.WriteFile(p, []byte("rot"), 0o644)
		if _, err := c.Get(ctx, a); err != nil || hits.Load() != before+1 {
			t.Fatalf("corrupt cache not refetched (err %v)", err)
		}
	})
	t.Run("checksum mismatch leaves nothing", func(t *testing.T) {
		dir := t.TempDir()
		c := &Client{Dir: dir}
		_, err := c.Get(ctx, Artifact{Name: "bad.tgz", URL: srv.URL + "/bad", SHA256: sum(content)})
		if !errors.Is(err, ErrChecksum) {
			t.Fatalf("err = %v, want ErrChecksum", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("left %v behind", ents)
		}
	})
	t.Run("http error", func(t *testing.T) {
		c := &Client{Dir: t.TempDir()}
		if _, err := c.Get(ctx, Artifact{Name: "x", URL: srv.URL + "/missing", SHA256: sum(content)}); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("npm mirror rewrite", func(t *testing.T) {
		c := &Client{Dir: t.TempDir(), NPMRegistry: srv.URL + "/mirror"}
		if _, err := c.Get(ctx, Artifact{Name: "x.tgz", URL: DefaultNPMRegistry + "/pkg/-/x.tgz", SHA256: sum(content)}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExtractTarGz(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"package/a.txt": "A", "package/lib/b.so": "BB"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	arc := filepath.Join(dir, "p.tgz")
	os.WriteFile(arc, buf.Bytes(), 0o644)

	out := filepath.Join(dir, "out", "b.so")
	if err := ExtractTarGz(arc, map[string]string{"package/lib/b.so": out}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "BB" {
		t.Fatalf("extracted %q", b)
	}
	err := ExtractTarGz(arc, map[string]string{"package/missing": filepath.Join(dir, "m")})
	if err == nil || !strings.Contains(err.Error(), "package/missing") {
		t.Fatalf("missing member: err = %v", err)
	}
}

type trackerLog struct {
	total int64
	got   bytes.Buffer
	done  []error
}

func (l *trackerLog) Write(p []byte) (int, error) { return l.got.Write(p) }
func (l *trackerLog) Done(err error)              { l.done = append(l.done, err) }

// Progress sees every downloaded byte and each attempt's outcome, with the
// size the server declared; a cached artifact is no download.
func TestGetProgress(t *testing.T) {
	content := []byte("pinned package bytes")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			w.Write([]byte("tampered"))
			return
		}
		w.Write(content)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name, path string
		wantErr    bool
	}{
		{"verified", "/good", false},
		{"checksum mismatch", "/bad", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs []*trackerLog
			c := &Client{Dir: t.TempDir(), Progress: func(a Artifact, total int64) Tracker {
				l := &trackerLog{total: total}
				logs = append(logs, l)
				return l
			}}
			a := Artifact{Name: "x.tgz", URL: srv.URL + tc.path, SHA256: sum(content)}
			_, err := c.Get(context.Background(), a)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if len(logs) != 1 {
				t.Fatalf("%d attempts tracked, want 1", len(logs))
			}
			l := logs[0]
			if l.total != int64(l.got.Len()) || len(l.done) != 1 || (l.done[0] != nil) != tc.wantErr {
				t.Errorf("tracked total %d, %d bytes, done %v", l.total, l.got.Len(), l.done)
			}
			if !tc.wantErr && !bytes.Equal(l.got.Bytes(), content) {
				t.Errorf("tracked bytes %q", l.got.Bytes())
			}
			if tc.wantErr {
				return
			}
			if _, err := c.Get(context.Background(), a); err != nil || len(logs) != 1 {
				t.Errorf("cached artifact tracked again (err %v)", err)
			}
		})
	}
}
