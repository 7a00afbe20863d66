package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// s3Do sends a request and returns the status and body.
func s3Do(t *testing.T, method, u, ct string, body []byte, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp.StatusCode, resp.Header, b
}

// s3FileID is the id in a /cdn/files/<id>/<name> URL.
func s3FileID(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(u.Path, "/cdn/files/")
	id, _, _ := strings.Cut(rest, "/")
	if !ok || len(id) != 32 {
		t.Fatalf("not a file URL of this server: %s", raw)
	}
	return id
}

// TestS3Storage runs the server with -storage on a bucket of a real
// S3-compatible service (versitygw): an upload as fal's JS client makes it,
// background removal on the uploaded file, the output served from the
// bucket — and served too by a second server that shares the bucket.
func TestS3Storage(t *testing.T) {
	photo, err := os.ReadFile(testenv.Asset(t, "astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	s3 := testenv.S3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s3.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.SecretKey)
	storage := s3.URL("site/")
	a := startServer(t, "--storage", storage)

	// fal's JS client: initiate, PUT the bytes, use file_url.
	st, _, body := s3Do(t, "POST", a.base+"/rest/storage/upload/initiate", "application/json",
		mustJSON(map[string]string{"content_type": "image/png", "file_name": "astronaut.png"}))
	var up struct {
		UploadURL string `json:"upload_url"`
		FileURL   string `json:"file_url"`
	}
	if err := json.Unmarshal(body, &up); st != 200 || err != nil {
		t.Fatalf("initiate: %d %s", st, body)
	}
	if st, _, _ := s3Do(t, "GET", up.FileURL, "", nil); st != 404 {
		t.Errorf("file URL before its upload: %d, want 404", st)
	}
	if st, _, body := s3Do(t, "PUT", up.UploadURL, "image/png", photo); st != 200 {
		t.Fatalf("PUT upload: %d %s", st, body)
	}
	st, h, got := s3Do(t, "GET", up.FileURL, "", nil)
	if st != 200 || h.Get("Content-Type") != "image/png" || !bytes.Equal(got, photo) {
		t.Fatalf("GET uploaded file: %d %q, %d bytes (want %d)", st, h.Get("Content-Type"), len(got), len(photo))
	}
	st, h, got = s3Do(t, "GET", up.FileURL, "", nil, "Range", "bytes=1-3")
	if st != http.StatusPartialContent || string(got) != "PNG" || h.Get("Content-Range") != "bytes 1-3/"+strconv.Itoa(len(photo)) {
		t.Errorf("Range bytes=1-3: %d %q %q", st, got, h.Get("Content-Range"))
	}

	// The multipart flow: two parts, completed into one file.
	st, _, body = s3Do(t, "POST", a.base+"/rest/storage/upload/initiate-multipart", "application/json",
		mustJSON(map[string]string{"content_type": "image/png", "file_name": "parts.png"}))
	var mp struct {
		UploadURL string `json:"upload_url"`
		FileURL   string `json:"file_url"`
	}
	if err := json.Unmarshal(body, &mp); st != 200 || err != nil {
		t.Fatalf("initiate-multipart: %d %s", st, body)
	}
	half := (len(photo) + 1) / 2
	var parts []map[string]any
	for i, chunk := range [][]byte{photo[:half], photo[half:]} {
		st, _, body := s3Do(t, "PUT", mp.UploadURL+"/"+strconv.Itoa(i+1), "application/octet-stream", chunk)
		var p struct {
			ETag string `json:"etag"`
		}
		if err := json.Unmarshal(body, &p); st != 200 || err != nil {
			t.Fatalf("PUT part %d: %d %s", i+1, st, body)
		}
		parts = append(parts, map[string]any{"partNumber": i + 1, "etag": p.ETag})
	}
	if st, _, body := s3Do(t, "POST", mp.UploadURL+"/complete", "application/json", mustJSON(map[string]any{"parts": parts})); st != 200 {
		t.Fatalf("complete: %d %s", st, body)
	}
	if st, _, got := s3Do(t, "GET", mp.FileURL, "", nil); st != 200 || !bytes.Equal(got, photo) {
		t.Errorf("GET the multipart file: %d, %d bytes (want %d)", st, len(got), len(photo))
	}

	// Background removal on the uploaded file, read back from the bucket.
	r := a.post(t, "/run/fal-ai/imageutils/rembg", mustJSON(map[string]any{"image_url": up.FileURL}))
	if r.status != 200 {
		t.Fatalf("rembg: %d %s", r.status, r.body)
	}
	var out struct{ Image imageOut }
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Image.ContentType != "image/png" || !strings.HasPrefix(out.Image.URL, a.base+"/cdn/files/") {
		t.Fatalf("output %+v", out.Image)
	}
	checkAstronaut(t, fetchImage(t, out.Image))
	st, _, output := s3Do(t, "GET", out.Image.URL, "", nil)
	if st != 200 || !bytes.HasPrefix(output, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("GET output: %d, %.8q", st, output)
	}

	// The files are objects in the bucket, none on the server's disk; no
	// parts are left.
	keys := s3.Keys(t, "site/")
	for _, u := range []string{up.FileURL, mp.FileURL, out.Image.URL} {
		if k := "site/files/" + s3FileID(t, u); !slices.Contains(keys, k) {
			t.Errorf("no object %s in the bucket: %v", k, keys)
		}
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "site/files/") {
			t.Errorf("object %s left in the bucket", k)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(a.dataDir, "files")); err == nil && len(ents) > 0 {
		t.Errorf("files on the server's disk: %v", ents)
	}

	// A second server on the same bucket serves the first one's output
	// under its own address.
	b := startServer(t, "--storage", storage)
	other := b.base + strings.TrimPrefix(out.Image.URL, a.base)
	st, h, got = s3Do(t, "GET", other, "", nil)
	if st != 200 || h.Get("Content-Type") != "image/png" || !bytes.Equal(got, output) {
		t.Errorf("second server: GET %s: %d %q, %d bytes (want %d)", other, st, h.Get("Content-Type"), len(got), len(output))
	}

	// fal-client's (Python) v3 upload, on the second server.
	st, _, body = s3Do(t, "POST", b.base+"/cdn/files/upload", "text/plain", []byte("hello, bucket"), "X-Fal-File-Name", "hello.txt")
	var v3 struct {
		AccessURL string `json:"access_url"`
	}
	if err := json.Unmarshal(body, &v3); st != 200 || err != nil {
		t.Fatalf("v3 upload: %d %s", st, body)
	}
	if st, h, got := s3Do(t, "GET", v3.AccessURL, "", nil); st != 200 || string(got) != "hello, bucket" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("GET the v3 upload: %d %q %q", st, h.Get("Content-Type"), got)
	}

	// The retention sweep deletes the objects (a prefix of its own: it
	// would sweep the other servers' files too).
	t.Run("retention", func(t *testing.T) {
		c := startServer(t, "--storage", s3.URL("short/"), "--retention", "2s")
		st, _, body := s3Do(t, "POST", c.base+"/cdn/files/upload", "text/plain", []byte("brief"), "X-Fal-File-Name", "brief.txt")
		var v3 struct {
			AccessURL string `json:"access_url"`
		}
		if err := json.Unmarshal(body, &v3); st != 200 || err != nil {
			t.Fatalf("v3 upload: %d %s", st, body)
		}
		if keys := s3.Keys(t, "short/files/"); len(keys) != 1 {
			t.Fatalf("objects after the upload: %v", keys)
		}
		deadline := time.Now().Add(15 * time.Second)
		for len(s3.Keys(t, "short/files/")) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("objects still there after 15 s: %v", s3.Keys(t, "short/files/"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st, _, _ := s3Do(t, "GET", v3.AccessURL, "", nil); st != 404 {
			t.Errorf("GET a swept file: %d, want 404", st)
		}
		if keys := s3.Keys(t, "site/files/"); len(keys) != 4 {
			t.Errorf("the other prefix lost files: %v", keys)
		}
	})

	// A bad -storage stops the server at start with a message.
	t.Run("bad storage", func(t *testing.T) {
		for _, tc := range []struct{ storage, want string }{
			{"s3://", "want s3://bucket"},
			{"s3://b/p?endpoint=" + s3.Endpoint + "&secure=maybe", "secure"},
			{"s3://no-such-bucket/p?endpoint=" + s3.Endpoint + "&secure=false&region=" + s3.Region, "does not exist"},
		} {
			cmd := exec.Command(testenv.Binary(t), "serve", "--listen", testenv.FreeAddr(t), "--data-dir", testenv.NewDataDir(t),
				"--cache-dir", t.TempDir(), "--ort-library", testenv.ORTLibrary(t), "--storage", tc.storage)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
				t.Errorf("-storage %s: %v, output %q; want an error with %q", tc.storage, err, out, tc.want)
			}
		}
	})
}
