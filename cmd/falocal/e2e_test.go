package main

// End-to-end tests: build or take the real falocal binary, start it on a free
// loopback port over a data directory that shares the real model store, and
// drive it through HTTP with real photographs.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/HugoSmits86/nativewebp"

	"github.com/falocal/falocal/internal/testenv"
)

type server struct {
	*testenv.Server
	base    string
	dataDir string
	cmd     *exec.Cmd
}

func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	ts := testenv.StartServer(t, args...)
	return &server{Server: ts, base: ts.Base, dataDir: ts.DataDir, cmd: ts.Cmd}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (s *server) post(t *testing.T, path string, body []byte) reply {
	t.Helper()
	resp, err := http.Post(s.base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func dataURI(ct string, b []byte) string {
	return "data:" + ct + ";base64," + base64.StdEncoding.EncodeToString(b)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

type imageOut struct {
	URL         string `json:"url"`
	ContentType string `json:"content_type"`
	FileName    string `json:"file_name"`
	FileSize    int    `json:"file_size"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
}

func fetchImage(t *testing.T, f imageOut) image.Image {
	t.Helper()
	var data []byte
	if strings.HasPrefix(f.URL, "data:") {
		_, b64, _ := strings.Cut(f.URL, ";base64,")
		var err error
		if data, err = base64.StdEncoding.DecodeString(b64); err != nil {
			t.Fatal(err)
		}
	} else {
		resp, err := http.Get(f.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != f.ContentType {
			t.Fatalf("GET %s: %d %q, want 200 %q", f.URL, resp.StatusCode, resp.Header.Get("Content-Type"), f.ContentType)
		}
		data, _ = io.ReadAll(resp.Body)
	}
	if len(data) != f.FileSize {
		t.Errorf("file_size %d, got %d bytes", f.FileSize, len(data))
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode %s: %v", f.FileName, err)
	}
	if b := img.Bounds(); b.Dx() != f.Width || b.Dy() != f.Height {
		t.Errorf("image is %v, output says %dx%d", b, f.Width, f.Height)
	}
	return img
}

func alphaAt(img image.Image, x, y int) uint8 {
	_, _, _, a := img.At(x, y).RGBA()
	return uint8(a >> 8)
}

// patchAlpha is the mean alpha of a size×size patch.
func patchAlpha(img image.Image, x0, y0, size int) float64 {
	var sum float64
	for y := y0; y < y0+size; y++ {
		for x := x0; x < x0+size; x++ {
			sum += float64(alphaAt(img, x, y))
		}
	}
	return sum / float64(size*size)
}

func coverage(img image.Image) float64 {
	b := img.Bounds()
	on := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if alphaAt(img, x, y) >= 128 {
				on++
			}
		}
	}
	return float64(on) / float64(b.Dx()*b.Dy())
}

// checkAstronaut asserts what a correct person cut-out of skimage's
// astronaut.png looks like: the background at the top corners is gone, the
// face and the suit are kept, and the subject covers about half the frame.
func checkAstronaut(t *testing.T, img image.Image) {
	t.Helper()
	if b := img.Bounds(); b.Dx() != 512 || b.Dy() != 512 {
		t.Fatalf("size %v, want 512x512", b)
	}
	for _, c := range [][2]int{{0, 0}, {496, 0}} {
		if a := patchAlpha(img, c[0], c[1], 16); a > 5 {
			t.Errorf("background corner at %v has mean alpha %.1f, want transparent", c, a)
		}
	}
	for name, p := range map[string][2]int{"face": {210, 110}, "suit": {140, 300}} {
		if a := patchAlpha(img, p[0], p[1], 20); a < 245 {
			t.Errorf("%s at %v has mean alpha %.1f, want opaque", name, p, a)
		}
	}
	if c := coverage(img); c < 0.45 || c > 0.62 {
		t.Errorf("subject covers %.3f of the image, want 0.45..0.62", c)
	}
}

func TestE2EBackgroundRemoval(t *testing.T) {
	s := startServer(t)
	photo, err := os.ReadFile(testenv.Asset(t, "astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	uri := dataURI("image/png", photo)

	t.Run("rembg", func(t *testing.T) {
		r := s.post(t, "/run/fal-ai/imageutils/rembg", mustJSON(map[string]any{"image_url": uri}))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if r.header.Get("x-fal-request-id") == "" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("headers %v", r.header)
		}
		var out struct{ Image imageOut }
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		if out.Image.ContentType != "image/png" || !strings.HasPrefix(out.Image.URL, s.base+"/cdn/files/") {
			t.Errorf("image %+v", out.Image)
		}
		checkAstronaut(t, fetchImage(t, out.Image))
	})

	t.Run("birefnet-v2 with mask, webp, via fal host name", func(t *testing.T) {
		req, _ := http.NewRequest("POST", s.base+"/fal-ai/birefnet/v2", bytes.NewReader(mustJSON(map[string]any{
			"image_url": uri, "output_mask": true, "output_format": "webp"})))
		req.Host = "fal.run"
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var out struct {
			Image     imageOut
			MaskImage *imageOut `json:"mask_image"`
		}
		json.Unmarshal(body, &out)
		if out.MaskImage == nil || out.Image.ContentType != "image/webp" {
			t.Fatalf("output %s", body)
		}
		// Reached as fal.run, the file URLs use fal's CDN name; fetch them here
		// by sending that Host to our address.
		for _, f := range []*imageOut{&out.Image, out.MaskImage} {
			if !strings.HasPrefix(f.URL, "https://v3.fal.media/files/") {
				t.Fatalf("url %s, want fal CDN name", f.URL)
			}
			f.URL = s.base + "/cdn" + strings.TrimPrefix(f.URL, "https://v3.fal.media")
		}
		img := fetchImage(t, out.Image)
		checkAstronaut(t, img)
		mask := fetchImage(t, *out.MaskImage)
		// The mask is the alpha channel.
		for _, p := range [][2]int{{5, 5}, {210, 110}, {300, 400}, {505, 505}} {
			r, _, _, _ := mask.At(p[0], p[1]).RGBA()
			if d := int(r>>8) - int(alphaAt(img, p[0], p[1])); d < -2 || d > 2 {
				t.Errorf("mask %d vs alpha %d at %v", r>>8, alphaAt(img, p[0], p[1]), p)
			}
		}
	})

	t.Run("jpeg input, sync_mode data URI", func(t *testing.T) {
		src, _ := png.Decode(bytes.NewReader(photo))
		var jb bytes.Buffer
		jpeg.Encode(&jb, src, &jpeg.Options{Quality: 92})
		r := s.post(t, "/run/fal-ai/birefnet", mustJSON(map[string]any{
			"image_url": dataURI("image/jpeg", jb.Bytes()), "sync_mode": true}))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var out struct{ Image imageOut }
		json.Unmarshal(r.body, &out)
		if !strings.HasPrefix(out.Image.URL, "data:image/png;base64,") {
			t.Fatalf("sync_mode url %.60s", out.Image.URL)
		}
		checkAstronaut(t, fetchImage(t, out.Image))
	})

	t.Run("webp input uploaded file URL", func(t *testing.T) {
		// A result URL of this server is a valid input: run rembg on the
		// output of a previous call, given as a WebP.
		src, _ := png.Decode(bytes.NewReader(photo))
		var wb bytes.Buffer
		if err := nativewebp.Encode(&wb, src, nil); err != nil {
			t.Fatal(err)
		}
		r := s.post(t, "/run/fal-ai/imageutils/rembg", mustJSON(map[string]any{
			"image_url": dataURI("image/webp", wb.Bytes()), "crop_to_bbox": true}))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var out struct{ Image imageOut }
		json.Unmarshal(r.body, &out)
		if out.Image.Width >= 512 && out.Image.Height >= 512 {
			t.Errorf("crop_to_bbox kept %dx%d", out.Image.Width, out.Image.Height)
		}
		again := s.post(t, "/run/fal-ai/imageutils/rembg", mustJSON(map[string]any{"image_url": out.Image.URL}))
		if again.status != 200 {
			t.Fatalf("own URL as input: %d %s", again.status, again.body)
		}
	})
}

// pngHeader builds a PNG with a valid IHDR claiming w×h and no pixel data.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.Write([]byte("\x89PNG\r\n\x1a\n"))
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

func TestE2EBadInput(t *testing.T) {
	s := startServer(t, "--max-body-bytes", "3000000", "--max-pixels", "40000000")
	small := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for i := range small.Pix {
		small.Pix[i] = uint8(i * 7)
	}
	small.Set(1, 1, color.NRGBA{1, 2, 3, 255})
	var pb bytes.Buffer
	png.Encode(&pb, small)
	good := pb.Bytes()

	huge := strings.Repeat("A", 4_000_000)
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		want   string // substring of the body
	}{
		{"not an image", "/run/fal-ai/imageutils/rembg", `{"image_url":"` + dataURI("text/plain", []byte("hello, not a picture")) + `"}`, 422, `"image_url"`},
		{"truncated png", "/run/fal-ai/birefnet", `{"image_url":"` + dataURI("image/png", good[:len(good)/2]) + `"}`, 422, `"image_url"`},
		{"zero size png", "/run/fal-ai/birefnet", `{"image_url":"` + dataURI("image/png", pngHeader(0, 0)) + `"}`, 422, `"image_url"`},
		{"decompression bomb", "/run/fal-ai/birefnet", `{"image_url":"` + dataURI("image/png", pngHeader(100000, 100000)) + `"}`, 413, `pixels`},
		{"empty data uri", "/run/fal-ai/birefnet", `{"image_url":"data:image/png;base64,"}`, 422, `"image_url"`},
		{"bad data uri", "/run/fal-ai/birefnet", `{"image_url":"data:image/png;base64,@@@"}`, 422, `"image_url"`},
		{"oversized body", "/run/fal-ai/birefnet", `{"image_url":"data:image/png;base64,` + huge + `"}`, 413, `limit`},
		{"malformed json", "/run/fal-ai/birefnet", `{"image_url": `, 422, `json_invalid`},
		{"array body", "/run/fal-ai/birefnet", `[1,2]`, 422, `"loc":["body"]`},
		{"wrong type", "/run/fal-ai/birefnet", `{"image_url": 5}`, 422, `string_type`},
		{"wrong bool", "/run/fal-ai/birefnet", `{"image_url":"x","output_mask":"yes"}`, 422, `bool_type`},
		{"missing field", "/run/fal-ai/birefnet/v2", `{}`, 422, `"missing"`},
		{"bad enum", "/run/fal-ai/birefnet", `{"image_url":"x","output_format":"bmp"}`, 422, `literal_error`},
		{"variant without weights", "/run/fal-ai/birefnet/v2", `{"image_url":"` + dataURI("image/png", good) + `","model":"Matting"}`, 503, `serves rembg, birefnet:General Use (Light)`},
		{"resolution not available", "/run/fal-ai/birefnet", `{"image_url":"` + dataURI("image/png", good) + `","operating_resolution":"2048x2048"}`, 422, `1024x1024 only`},
		{"remote url refused", "/run/fal-ai/birefnet", `{"image_url":"http://example.com/cat.png"}`, 422, `does not fetch`},
		{"not a url", "/run/fal-ai/birefnet", `{"image_url":"file:///etc/passwd"}`, 422, `valid URL`},
		{"unknown endpoint", "/run/fal-ai/no-such-model", `{}`, 404, `not served`},
		{"proprietary endpoint", "/run/fal-ai/kling-video/v2/master/text-to-video", `{"prompt":"x"}`, 404, `proprietary`},
		{"unknown path", "/nope", `{}`, 404, `not served`},
	}
	filesBefore := countFiles(t, s)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.post(t, c.path, []byte(c.body))
			if r.status != c.status || !strings.Contains(string(r.body), c.want) {
				t.Fatalf("got %d %s, want %d containing %q", r.status, r.body, c.status, c.want)
			}
			if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || r.header.Get("x-fal-request-id") == "" {
				t.Errorf("headers %v", r.header)
			}
			var body struct {
				Detail json.RawMessage `json:"detail"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil || len(body.Detail) == 0 {
				t.Errorf("body is not fal's {detail}: %s", r.body)
			}
		})
	}
	if n := countFiles(t, s); n != filesBefore {
		t.Errorf("failed requests left %d files behind", n-filesBefore)
	}

	// Memory must not grow with repeated bad input.
	rss0 := rssBytes(t, s.cmd.Process.Pid)
	for i := 0; i < 30; i++ {
		for _, c := range cases[:7] {
			s.post(t, c.path, []byte(c.body))
		}
	}
	if rss1 := rssBytes(t, s.cmd.Process.Pid); rss1-rss0 > 150<<20 {
		t.Errorf("RSS grew from %d MB to %d MB over 210 bad requests", rss0>>20, rss1>>20)
	}
	if r, err := http.Get(s.base + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("server not healthy after bad input: %v", err)
	}
}

func countFiles(t *testing.T, s *server) int {
	ents, err := os.ReadDir(filepath.Join(s.dataDir, "files"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func rssBytes(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestE2ETimeout: a run past -request-timeout is interrupted and answered
// with fal's 504, and the server keeps serving.
func TestE2ETimeout(t *testing.T) {
	s := startServer(t, "--request-timeout", "300ms")
	photo, err := os.ReadFile(testenv.Asset(t, "astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	r := s.post(t, "/run/fal-ai/birefnet", mustJSON(map[string]any{"image_url": dataURI("image/png", photo)}))
	if r.status != 504 || !strings.Contains(string(r.body), `"request_timeout"`) ||
		r.header.Get("X-Fal-Error-Type") != "request_timeout" || r.header.Get("X-Fal-Request-Timeout-Type") != "user" {
		t.Fatalf("got %d %v %s", r.status, r.header, r.body)
	}
	if resp, err := http.Get(s.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("not healthy after a timeout: %v", err)
	}
}
