package api

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
)

// A multipart upload whose parts lost data is refused at complete, as S3
// refuses it (EntityTooSmall), instead of being stored truncated: an empty
// part, or a part before the last smaller than 5 MiB (or than the first
// part, if that is smaller). The file URL stays a 404; the parts can be
// sent again and the upload completed.
func TestStorageRefusesSmallParts(t *testing.T) {
	const mib = 1 << 20
	e := newStEnv(t, nil)
	key := []string{"Authorization", "Key " + stKey}
	fill := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

	for _, tc := range []struct {
		name   string
		chunks [][]byte
		ok     bool
	}{
		// fal-client ≤ 1.0.2's upload(bytes) over 100 MiB, scaled down:
		// the first part, then empty ones.
		{"empty parts after the first", [][]byte{fill(1000, 'a'), {}, {}, {}}, false},
		{"empty last part", [][]byte{fill(1000, 'a'), fill(1000, 'b'), {}}, false},
		{"empty first part", [][]byte{{}, fill(10, 'b')}, false},
		{"a middle part shorter than the first", [][]byte{fill(1000, 'a'), fill(999, 'b'), fill(1000, 'c'), fill(5, 'd')}, false},
		{"a part under 5 MiB after a larger first", [][]byte{fill(6*mib, 'a'), fill(5*mib-1, 'b'), fill(1, 'c')}, false},
		{"S3-sized parts", [][]byte{fill(6*mib, 'a'), fill(5*mib, 'b'), fill(1, 'c')}, true},
		{"equal small parts, a shorter last", [][]byte{fill(1000, 'a'), fill(1000, 'b'), fill(4, 'c')}, true},
		{"one part", [][]byte{fill(3, 'a')}, true},
		{"one empty part (an empty file)", [][]byte{{}}, true},
	} {
		init := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{"file_name": "f.bin"}, key...), "initiate")
		up, fileURL := init.str("upload_url"), init.str("file_url")
		parts := make([]map[string]any, len(tc.chunks))
		put := func(n int, c []byte) {
			r := e.ok(e.call(http.MethodPut, fmt.Sprintf("%s/%d", up, n), bytes.NewReader(c)), tc.name+": part")
			parts[n-1] = map[string]any{"partNumber": n, "etag": r.str("etag")}
		}
		for i, c := range tc.chunks {
			put(i+1, c)
		}
		r := e.postJSON(up+"/complete", map[string]any{"parts": parts})
		if tc.ok {
			e.ok(r, tc.name)
			e.expectFile(fileURL, bytes.Join(tc.chunks, nil), "application/octet-stream")
			continue
		}
		e.fail(r, http.StatusBadRequest, "EntityTooSmall", tc.name)
		e.expect404(fileURL)
		if tc.name == "empty parts after the first" {
			// The upload stays open after the refusal: the parts sent
			// again, it completes whole.
			whole := [][]byte{tc.chunks[0], fill(1000, 'b'), fill(1000, 'c'), fill(7, 'd')}
			for i := 1; i < len(whole); i++ {
				put(i+1, whole[i])
			}
			e.ok(e.postJSON(up+"/complete", map[string]any{"parts": parts}), "complete after resending")
			e.expectFile(fileURL, bytes.Join(whole, nil), "application/octet-stream")
		}
	}
}

// The Python client's flow (v3 multipart under the file URL) is held to the
// same rule: fal-client 1.0.1's upload(bytes) of more than 100 MiB, scaled
// down, is refused rather than stored as its first part.
func TestStorageRefusesSmallPartsPython(t *testing.T) {
	e := newStEnv(t, nil)
	tok := e.pyToken("https://rest.fal.ai")
	bearer := "Bearer " + tok.str("token")
	cr := e.ok(e.call(http.MethodPost, tok.str("base_url")+"/files/upload/multipart", nil,
		"Authorization", bearer, "Content-Type", "application/octet-stream", "X-Fal-File-Name", "big.bin"), "multipart create")
	access, uploadID := cr.str("access_url"), cr.str("uploadId")
	var parts []map[string]any
	for i, c := range [][]byte{bytes.Repeat([]byte("x"), 4096), {}, {}} {
		r := e.ok(e.call(http.MethodPut, fmt.Sprintf("%s/multipart/%s/%d", access, uploadID, i+1), bytes.NewReader(c),
			"Authorization", bearer), "part")
		parts = append(parts, map[string]any{"partNumber": i + 1, "etag": r.hdr.Get("etag")})
	}
	r := e.postJSON(access+"/multipart/"+uploadID+"/complete", map[string]any{"parts": parts}, "Authorization", bearer)
	e.fail(r, http.StatusBadRequest, "EntityTooSmall", "fal-client 1.0.1's parts")
	e.expect404(access)
}
