//go:build cgo

package diffusion

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/png" // decodeURI reads PNG outputs
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
	dto "github.com/prometheus/client_model/go"
)

type noFiles struct{}

func (noFiles) Open(ctx context.Context, url string, limit int64) (pipelines.Blob, error) {
	return pipelines.Blob{}, fmt.Errorf("no such file %s", url)
}
func (noFiles) Save(ctx context.Context, data []byte, ct, name string) (string, error) {
	return "", errors.New("no storage in this test: use sync_mode")
}

// endpointsWith installs the named test models (with what they serve) and
// builds the diffusion endpoints over them.
func endpointsWith(t *testing.T, models map[string][]string) map[string]pipelines.Endpoint {
	t.Helper()
	return endpointsUnder(t, models, nil)
}

// endpointsUnder is endpointsWith with a residency scheduler (nil: none).
func endpointsUnder(t *testing.T, models map[string][]string, res *engine.Residency) map[string]pipelines.Endpoint {
	_, eps := pipelineUnder(t, models, res)
	return eps
}

// pipelineUnder is endpointsUnder with the pipeline.
func pipelineUnder(t *testing.T, models map[string][]string, res *engine.Residency) (pipelines.Pipeline, map[string]pipelines.Endpoint) {
	t.Helper()
	st := pipelinetest.Store(t)
	for name, serves := range models {
		pipelinetest.InstallDir(t, st, filepath.Join("testdata", "models", name), weights.Manifest{Name: name, Pipeline: "diffusion", Serves: serves})
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	return pipelinetest.Build(t, New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1, MaxInputBytes: 8 << 20, MaxPixels: 1 << 24},
		Residency: res})
}

type result struct {
	out  Output
	logs []string
	err  error
}

func call(t *testing.T, ep pipelines.Endpoint, in map[string]any) result {
	t.Helper()
	b, _ := json.Marshal(in)
	var mu sync.Mutex
	var logs []string
	req := &pipelines.Request{ID: "req", Endpoint: ep.ID(), Input: b, Files: noFiles{},
		Log: func(l pipelines.Level, m string) { mu.Lock(); logs = append(logs, m); mu.Unlock() }}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := ep.Run(ctx, req)
	if err != nil {
		return result{err: err, logs: logs}
	}
	return result{out: o.(Output), logs: logs}
}

func pngURI(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

func decodeURI(t *testing.T, uri string) image.Image {
	t.Helper()
	_, b64, ok := strings.Cut(uri, ";base64,")
	if !ok {
		t.Fatalf("not a data URI: %.40s", uri)
	}
	b, _ := base64.StdEncoding.DecodeString(b64)
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Text-to-image through the endpoint: fal's output shape, num_images as one
// batch, and the same seed giving the same bytes.
func TestEndpointSeedsAndBatch(t *testing.T) {
	eps := endpointsWith(t, map[string][]string{"sd15-tiny": nil, "sdxl-tiny": {"fast-sdxl"}})
	for _, id := range []string{"fal-ai/stable-diffusion-v15", "fal-ai/fast-sdxl", "fal-ai/fast-turbo-diffusion"} {
		in := map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 150}, "num_inference_steps": 3,
			"seed": 1234, "sync_mode": true, "num_images": 2, "format": "png"}
		if id == "fal-ai/fast-turbo-diffusion" {
			in["model_name"] = "stabilityai/sd-turbo"
		}
		a, b := call(t, eps[id], in), call(t, eps[id], in)
		if a.err != nil || b.err != nil {
			t.Fatalf("%s: %v %v", id, a.err, b.err)
		}
		if len(a.out.Images) != 2 || a.out.Seed != 1234 || len(a.out.HasNSFWConcepts) != 2 || a.out.Prompt != "a red cube" || a.out.Timings["inference"] <= 0 {
			t.Fatalf("%s: output %+v", id, a.out)
		}
		for i := range a.out.Images {
			if a.out.Images[i].URL != b.out.Images[i].URL {
				t.Errorf("%s: same seed, different bytes for image %d", id, i)
			}
			img := decodeURI(t, a.out.Images[i].URL)
			// 150 is off the UNet's 64 px grid: generated at 64×192, the centre returned
			if img.Bounds().Dx() != 64 || img.Bounds().Dy() != 150 || a.out.Images[i].ContentType != "image/png" ||
				a.out.Images[i].Width != 64 || a.out.Images[i].Height != 150 {
				t.Errorf("%s: image %v %s", id, img.Bounds(), a.out.Images[i].ContentType)
			}
		}
		if a.out.Images[0].URL == a.out.Images[1].URL {
			t.Errorf("%s: the two images of a batch are identical", id)
		}
		in["seed"] = 1235
		if c := call(t, eps[id], in); c.err != nil || c.out.Images[0].URL == a.out.Images[0].URL {
			t.Errorf("%s: another seed gave the same image (%v)", id, c.err)
		}
		steps := 0
		for _, l := range a.logs {
			if strings.HasPrefix(l, "step ") {
				steps++
			}
		}
		if steps != 3 {
			t.Errorf("%s: %d step log lines: %q", id, steps, a.logs)
		}
	}
	// img2img and inpainting keep the input's size
	init := pngURI(t, filepath.Join("testdata", "ref", "inputs", "init_64.png"))
	mask := pngURI(t, filepath.Join("testdata", "ref", "inputs", "mask_64.png"))
	for _, c := range []struct {
		id string
		in map[string]any
	}{
		{"fal-ai/fast-sdxl/image-to-image", map[string]any{"prompt": "x", "image_url": init, "strength": 0.6, "num_inference_steps": 4, "sync_mode": true}},
		{"fal-ai/fast-sdxl/inpainting", map[string]any{"prompt": "x", "image_url": init, "mask_url": mask, "strength": 0.99, "num_inference_steps": 3, "sync_mode": true}},
	} {
		r := call(t, eps[c.id], c.in)
		if r.err != nil {
			t.Fatalf("%s: %v", c.id, r.err)
		}
		if img := decodeURI(t, r.out.Images[0].URL); img.Bounds().Dx() != 64 || img.Bounds().Dy() != 64 {
			t.Errorf("%s: %v", c.id, img.Bounds())
		}
	}
}

// FLUX dev and schnell through their endpoints, text-to-image and
// image-to-image; a schnell export cannot serve dev (no guidance input).
func TestEndpointFlux(t *testing.T) {
	eps := endpointsWith(t, map[string][]string{"flux-dev-tiny": nil, "flux-schnell-tiny": nil})
	for _, id := range []string{"fal-ai/flux/dev", "fal-ai/flux/schnell"} {
		in := map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 96},
			"num_inference_steps": 2, "seed": 7, "sync_mode": true, "num_images": 2}
		a, b := call(t, eps[id], in), call(t, eps[id], in)
		if a.err != nil || b.err != nil {
			t.Fatalf("%s: %v %v", id, a.err, b.err)
		}
		if len(a.out.Images) != 2 || a.out.Images[0].URL != b.out.Images[0].URL || a.out.Images[0].ContentType != "image/jpeg" {
			t.Fatalf("%s: %d images, deterministic %v, %s", id, len(a.out.Images), a.out.Images[0].URL == b.out.Images[0].URL, a.out.Images[0].ContentType)
		}
		if img := decodeURI(t, a.out.Images[1].URL); img.Bounds().Dx() != 64 || img.Bounds().Dy() != 96 {
			t.Errorf("%s: %v", id, img.Bounds())
		}
	}
	init := pngURI(t, filepath.Join("testdata", "ref", "inputs", "init_128.png"))
	r := call(t, eps["fal-ai/flux/dev/image-to-image"], map[string]any{"prompt": "x", "image_url": init, "strength": 0.6, "num_inference_steps": 4, "sync_mode": true})
	if r.err != nil {
		t.Fatal(r.err)
	}
	if img := decodeURI(t, r.out.Images[0].URL); img.Bounds().Dx() != 128 {
		t.Errorf("img2img: %v", img.Bounds())
	}
}

// With a /stream listener, every step but the last sends a preview in the
// output's shape before the result.
func TestEndpointStreamPreviews(t *testing.T) {
	eps := endpointsWith(t, map[string][]string{"flux-schnell-tiny": nil})
	b, _ := json.Marshal(map[string]any{"prompt": "x", "image_size": map[string]any{"width": 64, "height": 64}, "num_inference_steps": 3, "seed": 1, "sync_mode": true})
	var partials []Output
	req := &pipelines.Request{ID: "s", Endpoint: "fal-ai/flux/schnell", Input: b, Files: noFiles{},
		Partial: func(o any) { partials = append(partials, o.(Output)) }}
	if _, err := eps["fal-ai/flux/schnell"].Run(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if len(partials) != 2 || len(partials[0].Images) != 1 || !strings.HasPrefix(partials[0].Images[0].URL, "data:image/jpeg;base64,") {
		t.Fatalf("%d partials: %+v", len(partials), partials)
	}
}

// Warm opens the components an endpoint's default model runs, and reports
// ErrNoModel where no installed model serves the endpoint.
func TestEndpointWarm(t *testing.T) {
	res := engine.NewResidency(0, -1, "cpu", nil)
	met := metrics.New()
	res.UseMetrics(met)
	p, _ := pipelineUnder(t, map[string][]string{"sd15-tiny": {"stable-diffusion-v15"}, "flux-schnell-tiny": {"flux/schnell"}}, res)
	loads := func(model string) float64 {
		var m dto.Metric
		if err := met.ModelLoads.WithLabelValues(model, "ok").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	cases := []struct {
		id, model string
		files     float64 // sessions the warm-up opens
	}{
		{"fal-ai/stable-diffusion-v15", "sd15-tiny", 3}, // text encoder, UNet, VAE decoder
		{"fal-ai/flux/schnell", "flux-schnell-tiny", 4}, // two text encoders, transformer, VAE decoder
		{"fal-ai/flux/schnell", "flux-schnell-tiny", 0}, // open already
	}
	for _, tc := range cases {
		before := loads(tc.model)
		if err := p.Warm(context.Background(), tc.id); err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if got := loads(tc.model) - before; got != tc.files {
			t.Errorf("%s: %v sessions opened, want %v", tc.id, got, tc.files)
		}
	}
	if got := fmt.Sprint(res.Resident()); got != "[flux-schnell-tiny sd15-tiny]" {
		t.Errorf("resident %s", got)
	}
	for _, id := range []string{"fal-ai/flux/dev", "fal-ai/fast-sdxl/inpainting"} {
		if err := p.Warm(context.Background(), id); !errors.Is(err, pipelines.ErrNoModel) {
			t.Errorf("%s with no model: %v", id, err)
		}
	}
}

// fal's negative_prompt defaults to "", which diffusers encodes like any
// string: SDXL's zeroed unconditional embeddings (diffusers' None) never
// apply to a fal request, whether the field is sent empty or left out.
func TestEndpointNegativePromptDefault(t *testing.T) {
	p, eps := pipelineUnder(t, map[string][]string{"sdxl-tiny": {"fast-sdxl"}}, nil)
	in := map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 64}, "num_inference_steps": 2,
		"seed": 7, "sync_mode": true, "format": "png"}
	absent := call(t, eps["fal-ai/fast-sdxl"], in)
	in["negative_prompt"] = ""
	empty := call(t, eps["fal-ai/fast-sdxl"], in)
	in["negative_prompt"] = "blurry"
	blurry := call(t, eps["fal-ai/fast-sdxl"], in)
	if absent.err != nil || empty.err != nil || blurry.err != nil {
		t.Fatal(absent.err, empty.err, blurry.err)
	}
	if absent.out.Images[0].URL != empty.out.Images[0].URL || empty.out.Images[0].URL == blurry.out.Images[0].URL {
		t.Fatal("an absent negative prompt must equal \"\", and differ from another one")
	}
	m, err := p.(*Pipeline).model(specs[3], "")
	if err != nil {
		t.Fatal(err)
	}
	zeroed, err := m.Generate(context.Background(), Job{Prompt: "a red cube", Width: 64, Height: 64, Steps: 2, Guidance: 7.5,
		NumImages: 1, Noise: NewSeededNoise(7)})
	if err != nil {
		t.Fatal(err)
	}
	dec := decodeURI(t, empty.out.Images[0].URL)
	got := image.NewNRGBA(dec.Bounds())
	draw.Draw(got, got.Bounds(), dec, image.Point{}, draw.Src)
	if bytes.Equal(got.Pix, toImage(zeroed.Images[0], 64, 64).Pix) {
		t.Fatal("negative_prompt \"\" gave the zeroed (None) unconditional embeddings")
	}
	empty2, err := m.Generate(context.Background(), Job{Prompt: "a red cube", NegativeSet: true, Width: 64, Height: 64, Steps: 2,
		Guidance: 7.5, NumImages: 1, Noise: NewSeededNoise(7)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Pix, toImage(empty2.Images[0], 64, 64).Pix) {
		t.Fatal("the endpoint's image is not the pipeline's with negative prompt \"\"")
	}
}
