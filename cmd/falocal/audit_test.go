package main

// The outside audit's scenario classes, rerun black-box against the real
// binary (make audit): a systematic corpus of malformed and hostile
// requests, kill -9 and SIGTERM under a queue of requests, and a flood of
// slow and idle connections. Each test fails on a violation and logs its
// figures. make test runs them at a smaller size; FALOCAL_AUDIT_FULL=1 (set
// by make audit) runs the audit's own sizes.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// auditSize is small under make test and the audit's size under make audit.
func auditSize(small, full int) int {
	if os.Getenv("FALOCAL_AUDIT_FULL") == "1" {
		return full
	}
	return small
}

// auditPNG is a small real image: an input the models run on in well under
// a second, so a case the server accepts costs little.
func auditPNG(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, checkerboard(n)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// auditWAV is half a second of 16 kHz mono 16-bit silence.
func auditWAV() []byte {
	const rate, n = 16000, 8000
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+2*n))
	b.WriteString("WAVEfmt ")
	binary.Write(&b, binary.LittleEndian, []any{uint32(16), uint16(1), uint16(1), uint32(rate), uint32(2 * rate), uint16(2), uint16(16)})
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(2*n))
	b.Write(make([]byte, 2*n))
	return b.Bytes()
}

// auditCase is one request of the corpus. ok lists the statuses it may get
// besides a fal-shaped 4xx (a request the schema accepts is served).
type auditCase struct {
	name, method, path, ctype string
	hdr                       []string
	body                      []byte
	ok                        []int
	// raw, when set, is sent as is on a connection of its own: requests
	// that an HTTP client will not write.
	raw string
}

// auditField is one field of an endpoint's schema and the JSON kind it takes.
type auditField struct{ name, kind string }

// auditEndpoint is an endpoint with a body the schema accepts, so that a
// case changes one thing at a time.
type auditEndpoint struct {
	id     string
	valid  map[string]any
	fields []auditField
}

// wrongValues are JSON values of every kind but the field's own.
var wrongValues = map[string][]string{
	"string": {`5`, `-1.5`, `true`, `[]`, `["a"]`, `{}`, `{"url":"x"}`},
	"bool":   {`"yes"`, `"true"`, `2`, `[]`, `{}`, `[true]`},
	"int":    {`"5"`, `1.5`, `true`, `[]`, `{}`, `-1`, `0`, `1e308`, `99999999999999999999999`, `-9223372036854775809`, `1e400`, `NaN`, `Infinity`},
	"number": {`"5"`, `true`, `[]`, `{}`, `-1e308`, `1e308`, `1e400`, `NaN`, `-Infinity`},
	"enum":   {`5`, `true`, `[]`, `""`, `"no-such-value"`, `"` + strings.Repeat("x", 10000) + `"`, `"\u0000"`, `"☃️"`},
	"array":  {`"x"`, `5`, `{}`, `[{"path":"file:///etc/passwd","scale":1}]`},
	"size":   {`"huge"`, `5`, `[]`, `{"width":-1,"height":512}`, `{"width":1e9,"height":1e9}`, `{"width":"a","height":1}`, `{"width":0,"height":0}`},
}

// withField returns e's valid body with field set to raw JSON.
func (e auditEndpoint) withField(field, raw string) []byte {
	m := map[string]json.RawMessage{}
	for k, v := range e.valid {
		m[k] = mustJSON(v)
	}
	m[field] = json.RawMessage(raw)
	b, err := json.Marshal(m)
	if err != nil {
		// NaN and Infinity are not JSON, so json.Marshal refuses them: splice.
		delete(m, field)
		rest, _ := json.Marshal(m)
		return []byte(`{"` + field + `":` + raw + `,` + string(rest[1:]))
	}
	return b
}

func auditCorpus(t *testing.T, base string) []auditCase {
	small := auditPNG(t, 32)
	endpoints := []auditEndpoint{
		{"fal-ai/imageutils/rembg", map[string]any{"image_url": dataURI("image/png", small)},
			[]auditField{{"image_url", "string"}, {"sync_mode", "bool"}, {"crop_to_bbox", "bool"}}},
		{"fal-ai/esrgan", map[string]any{"image_url": dataURI("image/png", small), "model": "RealESRGAN_x4_v3", "scale": 1},
			[]auditField{{"image_url", "string"}, {"model", "enum"}, {"scale", "number"}, {"tile", "int"}, {"face", "bool"},
				{"output_format", "enum"}, {"sync_mode", "bool"}}},
		{"fal-ai/whisper", map[string]any{"audio_url": dataURI("audio/wav", auditWAV())},
			[]auditField{{"audio_url", "string"}, {"task", "enum"}, {"language", "enum"}, {"chunk_level", "enum"},
				{"version", "enum"}, {"batch_size", "int"}, {"prompt", "string"}, {"diarize", "bool"}}},
		// The schema is checked before the model is looked up; where one is
		// installed, an accepted case is a one-step 64² image.
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "a red bicycle", "image_size": map[string]int{"width": 64, "height": 64}, "num_inference_steps": 1},
			[]auditField{{"prompt", "string"}, {"negative_prompt", "string"}, {"image_size", "size"},
				{"num_inference_steps", "int"}, {"seed", "int"}, {"guidance_scale", "number"}, {"num_images", "int"},
				{"format", "enum"}, {"scheduler", "enum"}, {"sync_mode", "bool"}, {"enable_safety_checker", "bool"},
				{"expand_prompt", "bool"}, {"loras", "array"}, {"embeddings", "array"}}},
	}
	var cases []auditCase
	add := func(c auditCase) {
		if c.method == "" {
			c.method = "POST"
		}
		cases = append(cases, c)
	}
	served := []int{200}
	// What a valid fast-sdxl request gets without a diffusion model: the
	// documented 503 for a model that is not installed (checked by its detail).
	notInstalled := []int{200, 503}

	// Wrong types and out-of-range values for every field. A value the
	// schema may take (an int for a number, a seed of -1) may be served.
	for _, e := range endpoints {
		for _, f := range e.fields {
			for _, v := range wrongValues[f.kind] {
				c := auditCase{name: "field " + e.id + " " + f.name + "=" + trimName(v), path: "/run/" + e.id, body: e.withField(f.name, v)}
				if f.kind == "int" || f.kind == "number" {
					c.ok = served
					if e.id == "fal-ai/fast-sdxl" {
						c.ok = notInstalled
					}
				}
				add(c)
			}
		}
	}

	// Bodies that are not the JSON object a schema wants, sync and queue.
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	deepObj := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	badJSON := map[string]string{
		"empty": ``, "open brace": `{`, "cut value": `{"image_url": `, "array": `[1,2]`, "string": `"x"`,
		"number": `5`, "null": `null`, "trailing comma": `{"a":1,}`, "single quotes": `{'a':1}`,
		"trailing garbage": `{} x`, "NaN": `{"scale": NaN}`, "Infinity": `{"scale": Infinity}`,
		"-Infinity": `{"seed": -Infinity}`, "comment": `{/* c */}`, "invalid utf-8": "{\"prompt\":\"\xff\xfe\"}",
		"bom": "\xef\xbb\xbf{}", "nul": "\x00", "deep array": deep, "deep object": deepObj,
		"deep in field": `{"image_url":` + deepObj + `}`,
	}
	names := make([]string, 0, len(badJSON))
	for n := range badJSON {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, e := range endpoints {
		for _, n := range names {
			c := auditCase{name: "json " + e.id + " " + n, path: "/run/" + e.id, body: []byte(badJSON[n])}
			if n == "invalid utf-8" && e.id == "fal-ai/fast-sdxl" {
				// encoding/json reads invalid UTF-8 as U+FFFD: a valid prompt.
				c.ok = notInstalled
			}
			add(c)
		}
	}
	for _, n := range names {
		// JSON that is not an object may be queued: its result must be the 422.
		add(auditCase{name: "json queue " + n, path: "/fal-ai/esrgan", body: []byte(badJSON[n]), ok: served})
	}

	// Media URLs: schemes, hosts and ports that must not be fetched, and
	// data: URIs that are not what they say.
	pngTrunc := small[:len(small)/2]
	host := strings.TrimPrefix(base, "http://")
	mediaURLs := map[string]string{
		"file":            "file:///etc/passwd",
		"gopher":          "gopher://127.0.0.1:70/_GET",
		"ftp":             "ftp://127.0.0.1/x.png",
		"javascript":      "javascript:alert(1)",
		"metadata":        "http://169.254.169.254/latest/meta-data/",
		"ipv6 loopback":   "http://[::1]:8080/x.png",
		"loopback ssh":    "http://127.0.0.1:22/",
		"redis":           "http://localhost:6379/",
		"decimal ip":      "http://2130706433/x.png",
		"userinfo":        "http://fal.media@169.254.169.254/x.png",
		"crlf":            "http://example.com/x.png\r\nHost: evil",
		"unicode host":    "http://exämple.com/ü.png",
		"empty":           "",
		"space":           " ",
		"long":            "http://example.com/" + strings.Repeat("a", 100000),
		"own traversal":   base + "/cdn/files/../../queue.db",
		"own encoded":     base + "/cdn/files/%2e%2e%2f%2e%2e%2fqueue.db",
		"own missing":     base + "/cdn/files/00000000-0000-0000-0000-000000000000/x.png",
		"own other port":  "http://" + strings.Split(host, ":")[0] + ":1/x.png",
		"data empty":      "data:image/png;base64,",
		"data bad b64":    "data:image/png;base64,@@@",
		"data cut b64":    "data:image/png;base64,iVBORw0KGgoAAAANSUhE",
		"data no b64":     "data:,hello",
		"data text":       dataURI("text/plain", []byte("hello, not a picture")),
		"data pdf":        dataURI("image/png", []byte("%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF")),
		"data truncated":  dataURI("image/png", pngTrunc),
		"data zero size":  dataURI("image/png", pngHeader(0, 0)),
		"data bomb":       dataURI("image/png", pngHeader(100000, 100000)),
		"data wav as png": dataURI("image/png", auditWAV()),
		"data png as wav": dataURI("audio/wav", small),
		"data bad mime":   "data:;;;base64,AAAA",
	}
	mnames := make([]string, 0, len(mediaURLs))
	for n := range mediaURLs {
		mnames = append(mnames, n)
	}
	sort.Strings(mnames)
	for _, e := range endpoints[:3] {
		field := e.fields[0].name
		for _, n := range mnames {
			c := auditCase{name: "media " + e.id + " " + n, path: "/run/" + e.id, body: e.withField(field, string(mustJSON(mediaURLs[n])))}
			if n == "data png as wav" && field == "image_url" {
				// Images are known by their bytes, not the URI's type.
				c.ok = served
			}
			add(c)
		}
	}

	// Request ids and storage paths: traversal, junk and ids that do not exist.
	ids := []string{"%2e%2e%2f%2e%2e%2fqueue.db", "..%2f..%2fetc%2fpasswd", "%00", strings.Repeat("a", 10000),
		"'%3B%20DROP%20TABLE%20requests%3B--", "%E2%98%83", "00000000-0000-0000-0000-000000000000", "%ff%fe"}
	for _, id := range ids {
		short := trimName(id)
		add(auditCase{name: "id status " + short, method: "GET", path: "/fal-ai/esrgan/requests/" + id + "/status"})
		add(auditCase{name: "id result " + short, method: "GET", path: "/fal-ai/esrgan/requests/" + id})
		add(auditCase{name: "id cancel " + short, method: "PUT", path: "/fal-ai/esrgan/requests/" + id + "/cancel"})
		add(auditCase{name: "id stream " + short, method: "GET", path: "/fal-ai/esrgan/requests/" + id + "/status/stream"})
	}
	for _, p := range []string{"/cdn/files/../queue.db", "/cdn/files/%2e%2e/queue.db", "/cdn/files/..%2f..%2fqueue.db",
		"/cdn/files/x/../../queue.db", "/cdn/files/%00/x", "/cdn/files/" + strings.Repeat("a", 5000),
		"/cdn/files/../tls/ca-key.pem", "/cdn/files/..%5c..%5cqueue.db"} {
		add(auditCase{name: "storage " + trimName(p), method: "GET", path: p})
	}

	// Methods a route does not take.
	for _, m := range []string{"GET", "PUT", "DELETE", "PATCH", "TRACE", "FOO"} {
		add(auditCase{name: "method " + m + " run", method: m, path: "/run/fal-ai/esrgan", body: []byte(`{}`)})
	}
	add(auditCase{name: "method DELETE status", method: "DELETE", path: "/fal-ai/esrgan/requests/00000000-0000-0000-0000-000000000000/status"})
	add(auditCase{name: "method POST upload get", method: "GET", path: "/cdn/files/upload"})

	// Content types: the body is what counts; one the schema refuses is refused.
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
		"application/xml", "image/png", "application/json; charset=utf-16", "application/json\t;;;"} {
		add(auditCase{name: "ctype " + trimName(ct), path: "/run/fal-ai/esrgan", ctype: ct, body: []byte(`{"image_url":"x"}`)})
	}
	add(auditCase{name: "ctype form body", path: "/run/fal-ai/esrgan", ctype: "application/x-www-form-urlencoded", body: []byte("image_url=x&scale=2")})

	// Bodies over -max-body-bytes.
	add(auditCase{name: "oversized data uri", path: "/run/fal-ai/esrgan", body: []byte(`{"image_url":"data:image/png;base64,` + strings.Repeat("A", 1_500_000) + `"}`)})
	add(auditCase{name: "oversized queue", path: "/fal-ai/esrgan", body: []byte(`{"prompt":"` + strings.Repeat("x", 1_500_000) + `"}`)})
	// Uploads are files, not request bodies: -max-body-bytes does not hold them.
	add(auditCase{name: "upload over the body limit", path: "/cdn/files/upload", ctype: "application/octet-stream", body: bytes.Repeat([]byte{1}, 1_500_000), ok: served})

	// Headers: junk values, targets outside fal, webhooks to hosts that are not allowed.
	bad := []byte(`{"image_url":"x"}`)
	for _, h := range [][]string{
		{"X-Fal-Request-Timeout", "-5"}, {"X-Fal-Request-Timeout", "abc"}, {"X-Fal-Request-Timeout", "1e400"},
		{"Authorization", "Key " + strings.Repeat("k", 8000)}, {"Authorization", "Bearer"},
		{"X-Fal-Runner-Hint", strings.Repeat("h", 8000)}, {"Host", "169.254.169.254"}, {"Host", strings.Repeat("h", 4000)},
		{"X-Forwarded-For", "169.254.169.254"}, {"X-Fal-Store-Io", "1"}, {"Content-Encoding", "gzip"},
		{"Transfer-Encoding", "chunked"}, {"Expect", "100-continue"},
	} {
		add(auditCase{name: "header " + h[0] + " " + trimName(h[1]), path: "/run/fal-ai/esrgan", hdr: h, body: bad})
	}
	// On the wire: what net/http refuses before a handler runs is answered
	// in its own plain text; the rest reaches the server's handlers.
	chunkedBody := "Transfer-Encoding: chunked\r\n\r\n"
	for name, raw := range map[string]string{
		"no colon":             "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nBadHeader\r\nContent-Length: 2\r\n\r\n{}",
		"control char":         "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: \x01\x02\r\nContent-Length: 2\r\n\r\n{}",
		"2 MB header":          "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + strings.Repeat("b", 2<<20) + "\r\n\r\n",
		"100 KB path":          "GET /" + strings.Repeat("p", 100000) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		"two lengths":          "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}",
		"negative length":      "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n{}",
		"length not a number":  "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}",
		"huge length":          "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999\r\n\r\n{}",
		"chunked and length":   "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n" + chunkedBody + "11\r\n{\"image_url\":\"x\"}\r\n0\r\n\r\n",
		"unknown encoding":     "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"no host":              "POST /run/fal-ai/esrgan HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
		"http/0.9":             "GET /healthz\r\n\r\n",
		"http/3.0":             "GET /healthz HTTP/3.0\r\nHost: 127.0.0.1\r\n\r\n",
		"garbage request line": "\x00\x01\x02 / HTTP/1.1\r\n\r\n",
		"space in path":        "GET /heal thz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		"absolute other host":  "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
		"connect elsewhere":    "CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
		"connect own port 22":  "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
	} {
		c := auditCase{name: "wire " + name, raw: raw}
		switch name {
		case "unknown encoding":
			c.ok = []int{http.StatusNotImplemented} // RFC 9112 6.1: a coding the server does not know
		case "http/3.0":
			c.ok = []int{http.StatusHTTPVersionNotSupported}
		}
		add(c)
	}
	for _, p := range []string{"/run/fal-ai/esrgan", "/fal-ai/esrgan", "/cdn/files/upload"} {
		add(auditCase{name: "wire bad chunk size " + p, raw: "POST " + p + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + chunkedBody + "zz\r\n{}\r\n0\r\n\r\n"})
	}
	for _, target := range []string{"http://169.254.169.254/", "file:///etc/passwd", "https://evil.example/fal-ai/esrgan", "https://fal.run@evil.example/"} {
		add(auditCase{name: "proxy target " + trimName(target), path: "/fal/proxy", hdr: []string{"x-fal-target-url", target}, body: bad})
	}
	for _, hook := range []string{"http://169.254.169.254/hook", "file:///tmp/hook", "gopher://127.0.0.1:70/", "http://example.com/hook", "not a url"} {
		add(auditCase{name: "webhook " + trimName(hook), path: "/fal-ai/esrgan?fal_webhook=" + queryEscape(hook), body: mustJSON(endpoints[1].valid)})
	}
	return cases
}

// sendRaw writes raw on a new connection and reads one answer: its status,
// or -1 when none came within connWait, or 0 when the server closed the
// connection without one.
func sendRaw(t *testing.T, base, raw string) (int, []byte, http.Header) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(connWait))
	// The server may answer and close before it has read everything.
	go io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return -1, nil, nil
		}
		return 0, []byte(err.Error()), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func queryEscape(s string) string {
	r := strings.NewReplacer("%", "%25", " ", "%20", "&", "%26", "?", "%3F", "#", "%23", ":", "%3A", "/", "%2F")
	return r.Replace(s)
}

func trimName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// checkFalError reports what is wrong with a 4xx body, "" if it is fal's:
// {"detail": "…"}, 422 {"detail": [{"loc", "msg", "type"}]}, or for cancel
// fal's {"status": "NOT_FOUND"}.
func checkFalError(status int, body []byte, cancel bool) string {
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		return "not JSON"
	}
	if cancel {
		if _, ok := v["status"]; ok {
			return ""
		}
	}
	d, ok := v["detail"]
	if !ok {
		return "no detail"
	}
	var s string
	if json.Unmarshal(d, &s) == nil {
		if s == "" {
			return "empty detail"
		}
		return ""
	}
	var items []struct {
		Loc  []any   `json:"loc"`
		Msg  *string `json:"msg"`
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(d, &items); err != nil || len(items) == 0 {
		return "detail neither a string nor a list of errors"
	}
	if status != 422 {
		return "a list of validation errors with status " + strconv.Itoa(status)
	}
	for _, it := range items {
		if len(it.Loc) == 0 || it.Msg == nil || *it.Msg == "" || it.Type == nil || *it.Type == "" {
			return "a validation error without loc, msg or type"
		}
	}
	return ""
}

// TestAuditMalformed sends the whole corpus (it is fast: every case is
// refused before a model runs, or runs on a 32-pixel image), checking each
// answer, then that the server still serves a valid request.
func TestAuditMalformed(t *testing.T) {
	// A short body timeout bounds the cases that declare more body than
	// they send.
	s := startServer(t, "--max-body-bytes", "1000000", "--body-timeout", "3s")
	cases := auditCorpus(t, s.base)
	if len(cases) < 150 {
		t.Fatalf("the corpus has %d cases, want at least 150", len(cases))
	}
	// A redirect is followed: what counts is where it leads.
	c := &http.Client{Timeout: 30 * time.Second}
	byStatus := map[int]int{}
	start := time.Now()
	var slowest time.Duration
	var slowName string
	// make audit's -v output records every answer.
	record := testing.Verbose() && os.Getenv("FALOCAL_AUDIT_FULL") == "1"
	var queued []struct {
		name string
		sub  submitted
	}
	for _, tc := range cases {
		if tc.raw != "" {
			t0 := time.Now()
			code, body, hdr := sendRaw(t, s.base, tc.raw)
			if d := time.Since(t0); d > slowest {
				slowest, slowName = d, tc.name
			}
			byStatus[code]++
			if record {
				t.Logf("%s -> %d %s", tc.name, code, trimBody(body))
			}
			switch {
			case code == -1:
				t.Errorf("%s: no answer within %s", tc.name, connWait)
			case contains(tc.ok, code):
			case code < 400 || code >= 500:
				t.Errorf("%s: %d %s, want a 4xx", tc.name, code, trimBody(body))
			case strings.HasPrefix(hdr.Get("Content-Type"), "application/json"):
				if why := checkFalError(code, body, false); why != "" {
					t.Errorf("%s: %d %s: %s", tc.name, code, trimBody(body), why)
				}
			}
			continue
		}
		req, err := http.NewRequest(tc.method, s.base+tc.path, bytes.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		req.Header.Set("Content-Type", "application/json")
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			if strings.EqualFold(tc.hdr[i], "Host") {
				req.Host = tc.hdr[i+1]
			} else {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s: no answer within %s", tc.name, c.Timeout)
				byStatus[-1]++
				continue
			}
			t.Errorf("%s: %v", tc.name, err)
			byStatus[-2]++
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s: reading the answer: %v", tc.name, err)
		}
		if d := time.Since(t0); d > slowest {
			slowest, slowName = d, tc.name
		}
		byStatus[resp.StatusCode]++
		if record {
			t.Logf("%s -> %d %s", tc.name, resp.StatusCode, trimBody(body))
		}
		switch code := resp.StatusCode; {
		case code >= 400 && code < 500:
			if why := checkFalError(code, body, strings.HasSuffix(tc.path, "/cancel")); why != "" {
				t.Errorf("%s: %d %s: %s", tc.name, code, trimBody(body), why)
			}
		case code == 503 && contains(tc.ok, code):
			if !strings.Contains(string(body), "is not installed") {
				t.Errorf("%s: %d %s, want the 503 for a model that is not installed", tc.name, code, trimBody(body))
			}
		case code == 200 && tc.method == "POST" && !strings.HasPrefix(tc.path, "/run/") && !strings.HasPrefix(tc.path, "/cdn/"):
			var sub submitted
			if err := json.Unmarshal(body, &sub); err != nil || sub.StatusURL == "" {
				t.Errorf("%s: queue answer %s", tc.name, trimBody(body))
			}
			queued = append(queued, struct {
				name string
				sub  submitted
			}{tc.name, sub})
		case contains(tc.ok, code):
			if !json.Valid(body) {
				t.Errorf("%s: served %d with a body that is not JSON: %s", tc.name, code, trimBody(body))
			}
		default:
			t.Errorf("%s: %d %s, want a 4xx with fal's error body", tc.name, code, trimBody(body))
		}
	}
	// What the queue accepted must complete with a fal-shaped 4xx result.
	queuedBad := 0
	for _, q := range queued {
		st := waitStatus(t, c, q.sub.StatusURL, "COMPLETED", 30*time.Second)
		r := do(t, c, "GET", q.sub.ResponseURL, nil)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%s: queued, then completed %s with result %d %s, want a 4xx", q.name, st.Status, r.status, trimBody(r.body))
		} else if why := checkFalError(r.status, r.body, false); why != "" {
			t.Errorf("%s: queued, then result %d %s: %s", q.name, r.status, trimBody(r.body), why)
		} else {
			queuedBad++
		}
	}
	elapsed := time.Since(start)

	// Alive and serving: a valid upscale of a small image.
	body := mustJSON(map[string]any{"image_url": dataURI("image/png", auditPNG(t, 32)), "model": "RealESRGAN_x4_v3", "scale": 2})
	r := s.post(t, "/run/fal-ai/esrgan", body)
	var out struct{ Image imageOut }
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil || out.Image.Width != 64 {
		t.Fatalf("a valid request after the corpus: %d %s", r.status, trimBody(r.body))
	}
	if strings.Contains(s.Log(), "panic") {
		t.Errorf("the server log has a panic:\n%s", s.Log())
	}

	codes := make([]int, 0, len(byStatus))
	for k := range byStatus {
		codes = append(codes, k)
	}
	sort.Ints(codes)
	var tab strings.Builder
	fmt.Fprintf(&tab, "malformed corpus: %d requests in %s (slowest %s: %s)\n  status  count\n", len(cases), elapsed.Round(time.Millisecond), slowest.Round(time.Millisecond), slowName)
	for _, k := range codes {
		label := strconv.Itoa(k)
		switch k {
		case -1:
			label = "hang"
		case -2:
			label = "error"
		}
		fmt.Fprintf(&tab, "  %6s  %5d\n", label, byStatus[k])
	}
	fmt.Fprintf(&tab, "  queued then completed with a 4xx result: %d of %d\n", queuedBad, len(queued))
	fmt.Fprintf(&tab, "  after: valid esrgan request %d", r.status)
	t.Log(tab.String())
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func trimBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// auditUpscale is a queued request that runs in about half a second here
// (RealESRGAN_x4_v3 on a 128-pixel image), so a queue of them is mid-run
// when the server is stopped.
func auditUpscale(t *testing.T) []byte {
	return mustJSON(map[string]any{"image_url": dataURI("image/png", auditPNG(t, 128)), "model": "RealESRGAN_x4_v3", "scale": 1})
}

// TestAuditKill submits a queue of requests to one worker, stops the server
// mid-run with SIGKILL and then with SIGTERM, restarts it over the same data
// directory, and checks that every accepted request reaches a terminal
// state: COMPLETED, or the documented 503 runner_disconnected.
func TestAuditKill(t *testing.T) {
	n := auditSize(6, 20)
	body := auditUpscale(t)
	var tab strings.Builder
	fmt.Fprintf(&tab, "kill and restart, %d queued requests each, 1 worker\n  signal   done-before  in-flight  done-after  disconnected  lost  stop     restart  drain-after\n", n)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM"}[sig]
		t.Run(name, func(t *testing.T) {
			s := startServer(t, "--workers", "1")
			reqs := make([]submitted, n)
			for i := range reqs {
				reqs[i] = submitQueue(t, nil, s.base+"/fal-ai/esrgan", body)
			}
			// Stop once a few have run, with more waiting behind.
			waitStatus(t, nil, reqs[1].StatusURL, "COMPLETED", 60*time.Second)
			var inFlight []int
			before := 0
			for i, r := range reqs {
				switch getStatus(t, nil, r.StatusURL).Status {
				case "COMPLETED":
					before++
				case "IN_PROGRESS":
					inFlight = append(inFlight, i)
				}
			}
			if before == n {
				t.Fatalf("all %d requests ran before the %v; the test needs some still waiting", n, sig)
			}
			t0 := time.Now()
			if sig == syscall.SIGKILL {
				s.Kill(t)
			} else if code := s.Stop(t, sig, 60*time.Second); code != 0 {
				t.Fatalf("exit code %d after SIGTERM, want 0", code)
			}
			stop := time.Since(t0)

			t1 := time.Now()
			s2 := testenv.StartServerAt(t, s.dataDir, hostPort(t, s.base), "--workers", "1")
			restart := time.Since(t1)
			if sig == syscall.SIGTERM {
				// Drained: what ran at the signal finished before the exit.
				for _, i := range inFlight {
					if st := getStatus(t, nil, reqs[i].StatusURL); st.Status != "COMPLETED" || st.Error != "" {
						t.Errorf("request %d, running at SIGTERM, is %s %s after the restart; want it completed by the drain", i, st.Status, st.Error)
					}
				}
			}
			t2 := time.Now()
			after, disconnected, lost := 0, 0, 0
			for i, r := range reqs {
				st := waitStatus(t, nil, r.StatusURL, "COMPLETED", 120*time.Second)
				switch {
				case st.Status != "COMPLETED":
					lost++
					t.Errorf("request %d: %s", i, st.Status)
				case st.ErrorType == "runner_disconnected":
					disconnected++
				case st.Error != "" || st.ErrorType != "":
					lost++
					t.Errorf("request %d failed after the restart: %s (%s)", i, st.Error, st.ErrorType)
				default:
					if res := do(t, nil, "GET", r.ResponseURL, nil); res.status != 200 {
						lost++
						t.Errorf("request %d: result %d %s", i, res.status, trimBody(res.body))
						continue
					}
					after++
				}
			}
			drain := time.Since(t2)
			if sig == syscall.SIGKILL && len(inFlight) > 0 && !strings.Contains(s2.Log(), "re-queued") {
				t.Errorf("a request ran at the kill, and the restarted server did not log its re-queue")
			}
			after -= before
			if strings.Contains(s2.Log(), "panic") {
				t.Errorf("the restarted server log has a panic")
			}
			fmt.Fprintf(&tab, "  %-7s  %11d  %9d  %10d  %12d  %4d  %-7s  %-7s  %s\n", name, before, len(inFlight), after, disconnected, lost,
				stop.Round(time.Millisecond), restart.Round(time.Millisecond), drain.Round(time.Millisecond))
		})
	}
	t.Log(tab.String())
}

// fdCount is how many files the process has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestAuditFlood opens a flood of connections that send a request head and
// part of a body, or one request and then nothing (idle keep-alive), past
// -max-conns; checks that a normal request is still answered, that every
// flood connection is answered 408 or 503, or closed, within a bound, and
// that the server's open files return to where they were.
func TestAuditFlood(t *testing.T) {
	n := auditSize(600, 2000)
	// Connections that send nothing are cut by the fixed 30s header
	// timeout, so only the audit's run has them.
	kinds := auditSize(2, 3)
	const maxConns = 512
	s := startServer(t, "--body-timeout", "1s", "--idle-timeout", "1s", "--max-conns", strconv.Itoa(maxConns))
	pid := s.cmd.Process.Pid
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	fdBefore := fdCount(t, pid)

	stopSampling := make(chan struct{})
	peak := fdBefore
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil && len(ents) > peak {
				peak = len(ents)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	const bound = 45 * time.Second
	type outcome struct {
		kind, result string
		took         time.Duration
	}
	results := make(chan outcome, n)
	start := time.Now()
	var flood sync.WaitGroup
	for i := range n {
		flood.Add(1)
		go func() {
			defer flood.Done()
			kind := []string{"partial body", "idle keep-alive", "silent"}[i%kinds]
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.base, "http://"), 10*time.Second)
			if err != nil {
				results <- outcome{kind, "dial error", 0}
				return
			}
			defer c.Close()
			t0 := time.Now()
			switch kind {
			case "partial body":
				io.WriteString(c, "POST /run/fal-ai/esrgan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"+
					"Content-Length: 100000\r\n\r\n{\"image_url\": \"data:image/png;base64,")
			case "idle keep-alive":
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			}
			c.SetReadDeadline(time.Now().Add(bound))
			rd := bufio.NewReader(c)
			var codes []string
			for {
				resp, err := http.ReadResponse(rd, nil)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						codes = append(codes, "still open")
					} else {
						codes = append(codes, "closed")
					}
					break
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes = append(codes, strconv.Itoa(resp.StatusCode))
			}
			results <- outcome{kind, strings.Join(codes, " then "), time.Since(t0)}
		}()
	}

	// A normal request while the flood holds the server: retried on the
	// 503 the connection limit answers, as fal's clients retry it.
	time.Sleep(300 * time.Millisecond)
	normal := mustJSON(map[string]any{"image_url": dataURI("image/png", auditPNG(t, 32)), "model": "RealESRGAN_x4_v3", "scale": 2})
	t0 := time.Now()
	var served time.Duration
	refusals := 0
	for {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Post(s.base+"/run/fal-ai/esrgan", "application/json", bytes.NewReader(normal))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				served = time.Since(t0)
				break
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("a normal request during the flood: %d %s", resp.StatusCode, trimBody(b))
			}
		}
		refusals++
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("no normal request served within 10s of the flood (%d refusals, last error %v)", refusals, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	flood.Wait()
	floodTook := time.Since(start)
	close(results)
	counts := map[string]int{}
	var slowest time.Duration
	slowestOf := map[string]time.Duration{}
	for o := range results {
		counts[o.kind+": "+o.result]++
		if o.took > slowest {
			slowest = o.took
		}
		if o.took > slowestOf[o.kind] {
			slowestOf[o.kind] = o.took
		}
		switch o.result {
		case "408 then closed", "503 then closed", "closed", "200 then closed":
		default:
			t.Errorf("%s connection: %s, want 408, 503, or closed after its answer", o.kind, o.result)
		}
		// The body and idle timeouts are 1s; a silent one waits for the
		// 30s header timeout.
		if limit := 10 * time.Second; o.kind != "silent" && o.took > limit {
			t.Errorf("%s connection ended after %s, want within %s", o.kind, o.took.Round(time.Millisecond), limit)
		}
	}

	// Within the limit, the timeouts themselves cut the connections.
	if counts["partial body: 408 then closed"] == 0 || counts["idle keep-alive: 200 then closed"] == 0 {
		t.Errorf("no connection was cut by the body or idle timeout: %v", counts)
	}

	// The server's files return to where they were.
	var fdAfter int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		fdAfter = fdCount(t, pid)
		if fdAfter <= fdBefore+8 || time.Now().After(deadline) {
			break
		}
	}
	close(stopSampling)
	sampler.Wait()
	if fdAfter > fdBefore+8 {
		t.Errorf("the server has %d files open after the flood, %d before", fdAfter, fdBefore)
	}
	if peak > maxConns+fdBefore+80 {
		t.Errorf("the server held %d files at the peak with -max-conns %d", peak, maxConns)
	}
	if resp, err := http.Get(s.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("not healthy after the flood: %v", err)
	}

	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var tab strings.Builder
	fmt.Fprintf(&tab, "slow-connection flood: %d connections, -max-conns %d, -body-timeout 1s, -idle-timeout 1s\n", n, maxConns)
	fmt.Fprintf(&tab, "  all connections ended within %s (slowest %s)\n", floodTook.Round(time.Millisecond), slowest.Round(time.Millisecond))
	for _, k := range keys {
		fmt.Fprintf(&tab, "  %-40s %5d\n", k, counts[k])
	}
	for _, k := range []string{"partial body", "idle keep-alive", "silent"} {
		if d, ok := slowestOf[k]; ok {
			fmt.Fprintf(&tab, "  %s connections all ended within %s\n", k, d.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(&tab, "  normal esrgan request served after %s (%d refusals first)\n", served.Round(time.Millisecond), refusals)
	fmt.Fprintf(&tab, "  server fds: before %d, peak %d, after %d", fdBefore, peak, fdAfter)
	t.Log(tab.String())
}
