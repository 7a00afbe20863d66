package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/internal/testenv"
)

// TestStorageS3 runs fal's upload flows on a bucket of a real S3-compatible
// service (versitygw): a multipart upload with parts of the sizes fal's
// clients send, and the upload limit, which must leave nothing behind.
func TestStorageS3(t *testing.T) {
	srv := testenv.S3(t)
	open := func(prefix string) *files.Store {
		c, err := files.ParseS3URL(srv.URL(prefix))
		if err != nil {
			t.Fatal(err)
		}
		c.AccessKey, c.SecretKey = srv.AccessKey, srv.SecretKey
		s, err := files.OpenS3Store(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	key := []string{"Authorization", "Key " + stKey}

	t.Run("multipart", func(t *testing.T) {
		e := newStEnv(t, func(c *Config) { c.Files = open("mp/") })
		for _, rest := range []string{"http://localhost:9/rest", "https://rest.fal.ai"} {
			init := e.ok(e.postJSON(rest+"/storage/upload/initiate-multipart",
				map[string]string{"content_type": "video/mp4", "file_name": "clip.mp4"}, key...), "initiate-multipart")
			up, fileURL := init.str("upload_url"), init.str("file_url")
			chunks := [][]byte{bytes.Repeat([]byte("a"), 5<<20), bytes.Repeat([]byte("b"), 5<<20), []byte("tail")}
			var parts []map[string]any
			for i, c := range chunks {
				r := e.ok(e.call(http.MethodPut, fmt.Sprintf("%s/%d", up, i+1), bytes.NewReader(c)), "PUT part")
				parts = append(parts, map[string]any{"partNumber": r.js["partNumber"], "etag": r.js["etag"]})
			}
			// A retried part with other bytes: the etag listed decides.
			e.ok(e.call(http.MethodPut, up+"/3", strings.NewReader("other")), "PUT part 3 again")
			e.fail(e.postJSON(up+"/complete", map[string]any{"parts": parts}), 400, "etag", "complete with the replaced part's etag")
			parts[2]["etag"] = e.ok(e.call(http.MethodPut, up+"/3", strings.NewReader("tail")), "PUT part 3 back").js["etag"]
			e.expect404(fileURL)
			e.ok(e.postJSON(up+"/complete", map[string]any{"parts": parts}), "complete")
			e.expectFile(fileURL, bytes.Join(chunks, nil), "video/mp4")
		}
		if keys := srv.Keys(t, "mp/multipart/"); len(keys) != 0 {
			t.Errorf("parts left in the bucket: %v", keys)
		}
		if keys := srv.Keys(t, "mp/files/"); len(keys) != 2 {
			t.Errorf("files in the bucket: %v, want 2", keys)
		}
	})

	t.Run("oversize", func(t *testing.T) {
		e := newStEnv(t, func(c *Config) { c.Files = open("big/"); c.MaxUploadBytes = 10 })
		init := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "a.txt", "content_type": "text/plain"}, key...), "initiate")
		up, fileURL := init.str("upload_url"), init.str("file_url")
		e.fail(e.call(http.MethodPut, up, io.MultiReader(strings.NewReader("0123456789"), strings.NewReader("0"))), 413, "larger than", "11 bytes, chunked")
		e.expect404(fileURL)
		if keys := srv.Keys(t, "big/"); len(keys) != 0 {
			t.Errorf("objects after a refused upload: %v", keys)
		}
		e.ok(e.call(http.MethodPut, up, io.MultiReader(strings.NewReader("01234"), strings.NewReader("56789"))), "10 bytes")
		e.expectFile(fileURL, []byte("0123456789"), "text/plain")

		mp := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, key...), "initiate-multipart").str("upload_url")
		p1 := e.ok(e.call(http.MethodPut, mp+"/1", strings.NewReader("123456")), "part 1")
		e.fail(e.call(http.MethodPut, mp+"/2", io.MultiReader(strings.NewReader("123456"))), 413, "larger than", "part 2 over the total, chunked")
		p2 := e.ok(e.call(http.MethodPut, mp+"/2", strings.NewReader("7890")), "part 2 that fits")
		done := e.ok(e.postJSON(mp+"/complete", map[string]any{"parts": []map[string]any{
			{"partNumber": 1, "etag": p1.str("etag")}, {"partNumber": 2, "etag": p2.str("etag")}}}), "complete at the cap")
		e.expectFile(done.str("file_url"), []byte("1234567890"), "application/octet-stream")
		if keys := srv.Keys(t, "big/"); len(keys) != 2 {
			t.Errorf("objects: %v, want the two files", keys)
		}
	})
}
