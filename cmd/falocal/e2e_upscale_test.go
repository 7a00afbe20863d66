package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/falocal/falocal/internal/testenv"
)

// psnr compares the RGB of two same-sized images.
func psnr(a, b image.Image) float64 {
	r := a.Bounds()
	var se float64
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			for _, d := range []float64{float64(ar>>8) - float64(br>>8), float64(ag>>8) - float64(bg>>8), float64(ab>>8) - float64(bb>>8)} {
				se += d * d
			}
		}
	}
	mse := se / float64(3*r.Dx()*r.Dy())
	return 10 * math.Log10(255*255/mse)
}

// TestE2EUpscale upscales a 96×64 crop of chelsea.png with the real
// RealESRGAN_x4_v3 model through the real server.
func TestE2EUpscale(t *testing.T) {
	s := startServer(t)
	f, err := os.Open(testenv.Asset(t, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	photo, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	crop := image.NewNRGBA(image.Rect(0, 0, 96, 64))
	draw.Draw(crop, crop.Bounds(), photo, image.Pt(120, 70), draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, crop); err != nil {
		t.Fatal(err)
	}
	uri := dataURI("image/png", buf.Bytes())

	for _, c := range []struct {
		scale float64
		w, h  int
	}{{4, 384, 256}, {2, 192, 128}} {
		t0 := time.Now()
		r := s.post(t, "/run/fal-ai/esrgan", mustJSON(map[string]any{"image_url": uri, "model": "RealESRGAN_x4_v3", "scale": c.scale}))
		if r.status != 200 {
			t.Fatalf("scale %g: status %d: %s", c.scale, r.status, r.body)
		}
		t.Logf("scale %g: %v", c.scale, time.Since(t0))
		var out struct{ Image imageOut }
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		if out.Image.ContentType != "image/png" || out.Image.Width != c.w || out.Image.Height != c.h ||
			!strings.HasPrefix(out.Image.URL, s.base+"/cdn/files/") || !strings.HasSuffix(out.Image.FileName, ".png") {
			t.Errorf("scale %g: image %+v", c.scale, out.Image)
		}
		img := fetchImage(t, out.Image)
		ref := image.NewNRGBA(image.Rect(0, 0, c.w, c.h))
		draw.CatmullRom.Scale(ref, ref.Bounds(), crop, crop.Bounds(), draw.Src, nil)
		p := psnr(img, ref)
		t.Logf("scale %g: PSNR against a bicubic upscale %.1f dB", c.scale, p)
		if p <= 25 {
			t.Errorf("scale %g: PSNR against a bicubic upscale %.1f dB, want > 25", c.scale, p)
		}
	}

	for _, c := range []struct {
		name   string
		input  map[string]any
		status int
		want   string
	}{
		{"face", map[string]any{"image_url": uri, "face": true}, 422, `"loc":["body","face"]`},
		{"x2plus", map[string]any{"image_url": uri, "model": "RealESRGAN_x2plus"}, 503, `model 'RealESRGAN_x2plus' is not installed on this server`},
		{"scale", map[string]any{"image_url": uri, "scale": 9}, 422, `"loc":["body","scale"]`},
	} {
		r := s.post(t, "/run/fal-ai/esrgan", mustJSON(c.input))
		if r.status != c.status || !strings.Contains(string(r.body), c.want) {
			t.Errorf("%s: %d %s, want %d with %s", c.name, r.status, r.body, c.status, c.want)
		}
	}
}
