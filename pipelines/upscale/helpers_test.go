package upscale_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/internal/imageio"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/upscale"
	"github.com/falocal/falocal/weights"
)

// fakeModel is an installed fake upscaler: what it serves, its native
// scale, and how it computes (nil: boxThenNearest).
type fakeModel struct {
	name   string
	serves []string
	scale  int
	arch   string
	fn     func(x []float32, n, h, w, s int) []float32
}

// boxThenNearest is a model whose output depends on a neighbourhood: a 3×3
// box filter (zero outside the input, as a convolution pads) then nearest
// ×s.
func boxThenNearest(x []float32, n, h, w, s int) []float32 {
	out := make([]float32, n*3*h*s*w*s)
	for p := range n * 3 {
		in := x[p*h*w : (p+1)*h*w]
		o := out[p*h*s*w*s : (p+1)*h*s*w*s]
		for y := range h {
			for xx := range w {
				var sum float32
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						if yy, xc := y+dy, xx+dx; yy >= 0 && yy < h && xc >= 0 && xc < w {
							sum += in[yy*w+xc]
						}
					}
				}
				v := sum / 9
				for sy := range s {
					for sx := range s {
						o[(y*s+sy)*w*s+xx*s+sx] = v
					}
				}
			}
		}
	}
	return out
}

// nearest is the identity model at ×s.
func nearest(x []float32, n, h, w, s int) []float32 {
	out := make([]float32, n*3*h*s*w*s)
	ow := w * s
	for p := range n * 3 {
		in := x[p*h*w : (p+1)*h*w]
		o := out[p*h*s*ow : (p+1)*h*s*ow]
		for y := range h {
			row := o[y*s*ow : (y*s+1)*ow]
			for xx, v := range in[y*w : (y+1)*w] {
				for k := range s {
					row[xx*s+k] = v
				}
			}
			for k := 1; k < s; k++ {
				copy(o[(y*s+k)*ow:(y*s+k+1)*ow], row)
			}
		}
	}
	return out
}

type call struct {
	model string
	shape []int64
}

type env struct {
	files *pipelinetest.Files
	p     pipelines.Pipeline
	ep    pipelines.Endpoint
	rt    *enginetest.Runtime

	mu    sync.Mutex
	calls []call
}

func (e *env) runs() []call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]call(nil), e.calls...)
}

func newEnv(t *testing.T, cfg pipelines.Config, models ...fakeModel) *env {
	t.Helper()
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if models == nil {
		models = []fakeModel{{name: "x4plus", serves: []string{"esrgan:RealESRGAN_x4plus"}, scale: 4, arch: "RRDBNet"}}
	}
	e := &env{files: pipelinetest.NewFiles(), rt: enginetest.New()}
	for _, fm := range models {
		arch := fm.arch
		if arch == "" {
			arch = "SRVGGNetCompact"
		}
		_, path := pipelinetest.InstallFake(t, st, weights.Manifest{Name: fm.name, Pipeline: "upscale", Serves: fm.serves,
			Params: map[string]string{"input": "input", "output": "output", "scale": fmt.Sprint(fm.scale), "tile_pad": "10", "arch": arch}})
		fn := fm.fn
		if fn == nil {
			fn = boxThenNearest
		}
		e.rt.Add(path, enginetest.Model{
			Inputs:  []engine.TensorInfo{{Name: "input", DType: engine.Float32, Shape: []int64{-1, 3, -1, -1}}},
			Outputs: []engine.TensorInfo{{Name: "output", DType: engine.Float32, Shape: []int64{-1, 3, -1, -1}}},
			Fn: func(in []*engine.Tensor) ([]*engine.Tensor, error) {
				x := in[0]
				if x.DType != engine.Float32 || len(x.Shape) != 4 || x.Shape[1] != 3 || int64(len(x.F32)) != engine.Elements(x.Shape) {
					return nil, fmt.Errorf("fake: bad input %s %v", x.DType, x.Shape)
				}
				e.mu.Lock()
				e.calls = append(e.calls, call{fm.name, append([]int64(nil), x.Shape...)})
				e.mu.Unlock()
				n, h, w, s := int(x.Shape[0]), int(x.Shape[2]), int(x.Shape[3]), fm.scale
				return []*engine.Tensor{{DType: engine.Float32, Shape: []int64{int64(n), 3, int64(h * s), int64(w * s)}, F32: fn(x.F32, n, h, w, s)}}, nil
			},
		})
	}
	if cfg.MaxInputBytes == 0 {
		cfg.MaxInputBytes = 16 << 20
	}
	if cfg.MaxPixels == 0 {
		cfg.MaxPixels = 1 << 22
	}
	cfg.SessionsPerModel = 1
	p, eps := pipelinetest.Build(t, upscale.New, pipelines.Deps{Store: st, Runtime: e.rt, Ops: engine.CPUOps(), Config: cfg})
	if len(eps) != 1 || eps["fal-ai/esrgan"] == nil {
		t.Fatalf("endpoints %v", eps)
	}
	e.p, e.ep = p, eps["fal-ai/esrgan"]
	return e
}

// run calls the endpoint and returns the decoded output image, its
// ImageFile and the progress lines.
func (e *env) run(t *testing.T, fields map[string]any) (image.Image, pipelines.ImageFile, []string, error) {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	var logs []string
	req := &pipelines.Request{ID: "req1", Endpoint: "fal-ai/esrgan", Input: b, Files: e.files,
		Log: func(_ pipelines.Level, msg string) { mu.Lock(); logs = append(logs, msg); mu.Unlock() }}
	out, err := e.ep.Run(ctx, req)
	if err != nil {
		return nil, pipelines.ImageFile{}, logs, err
	}
	o, ok := out.(upscale.Output)
	if !ok {
		t.Fatalf("output is %T", out)
	}
	// The JSON shape is fal's.
	j, _ := json.Marshal(out)
	for _, k := range []string{`"image":{"url":`, `"content_type":`, `"file_name":`, `"file_size":`, `"width":`, `"height":`} {
		if !strings.Contains(string(j), k) {
			t.Fatalf("output %s lacks %s", j, k)
		}
	}
	var data []byte
	if strings.HasPrefix(o.Image.URL, "data:") {
		data, _, err = imageio.ParseDataURI(o.Image.URL)
		if err != nil {
			t.Fatal(err)
		}
	} else {
		blob, err := e.files.Open(ctx, o.Image.URL, 0)
		if err != nil {
			t.Fatal(err)
		}
		data = blob.Data
	}
	if len(data) != o.Image.FileSize {
		t.Errorf("file_size %d, file has %d bytes", o.Image.FileSize, len(data))
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode output: %v", err)
	}
	if img.Bounds().Dx() != o.Image.Width || img.Bounds().Dy() != o.Image.Height {
		t.Errorf("output is %v, says %dx%d", img.Bounds(), o.Image.Width, o.Image.Height)
	}
	return img, o.Image, logs, nil
}

func pngURI(t *testing.T, img image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return imageio.DataURI(buf.Bytes(), "image/png")
}

// texture is a w×h image with detail everywhere (so neighbourhoods matter).
func texture(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			i := img.PixOffset(x, y)
			img.Pix[i] = uint8((x*37 + y*11) % 256)
			img.Pix[i+1] = uint8((x*x + 3*y*y) % 251)
			img.Pix[i+2] = uint8((x ^ y) * 5 % 256)
			img.Pix[i+3] = 255
		}
	}
	return img
}
