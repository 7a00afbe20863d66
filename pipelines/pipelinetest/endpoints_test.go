package pipelinetest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/rembg"
	"github.com/falocal/falocal/pipelines/upscale"
	"github.com/falocal/falocal/pipelines/whisper"
	"github.com/falocal/falocal/weights"
)

var factories = []pipelines.Factory{rembg.New, upscale.New, whisper.New, diffusion.New}

// validInput is a request every endpoint accepts, so that what a case
// changes (no model, no memory, cancel) is what it answers to.
func validInput(t *testing.T, id string) map[string]any {
	img := pngURI(t, 64, 64)
	switch id {
	case "fal-ai/birefnet", "fal-ai/birefnet/v2", "fal-ai/imageutils/rembg", "fal-ai/esrgan":
		return map[string]any{"image_url": img}
	case "fal-ai/whisper", "fal-ai/wizper":
		return map[string]any{"audio_url": wavURI(16000), "language": "en"}
	}
	in := map[string]any{"prompt": "a cat", "num_inference_steps": 1, "image_size": map[string]int{"width": 64, "height": 64}}
	switch {
	case strings.HasSuffix(id, "/image-to-image"):
		in["image_url"] = img
	case strings.HasSuffix(id, "/inpainting"):
		in["image_url"], in["mask_url"] = img, img
	case id == "fal-ai/fast-turbo-diffusion":
		in["model_name"] = "stabilityai/sd-turbo"
	case strings.HasPrefix(id, "fal-ai/flux/"), id == "fal-ai/fast-sdxl", id == "fal-ai/stable-diffusion-v15":
	default:
		t.Fatalf("no valid input known for endpoint %s: add one", id)
	}
	return in
}

// installAll installs a model for every endpoint: fake one-file models for
// rembg and upscale, the pipelines' tiny test exports for Whisper and
// diffusion. Every file runs on the fake engine and blocks until its run
// is cancelled.
func installAll(t *testing.T, st *weights.Store, rt *enginetest.Runtime) {
	add := func(path string, in, out []string) {
		m := enginetest.Model{Delay: time.Hour}
		for _, n := range in {
			dt := engine.Float32
			if strings.Contains(n, "ids") {
				dt = engine.Int64
			}
			m.Inputs = append(m.Inputs, engine.TensorInfo{Name: n, DType: dt, Shape: []int64{-1}})
		}
		for _, n := range out {
			m.Outputs = append(m.Outputs, engine.TensorInfo{Name: n, DType: engine.Float32, Shape: []int64{-1}})
		}
		rt.Add(path, m)
	}
	io := map[string]string{"input": "input", "output": "output"}
	// fake files are tiny: declare real sizes for the memory budget
	_, p := pipelinetest.InstallFake(t, st, weights.Manifest{Name: "seg", Pipeline: "rembg", MemoryBytes: 200 << 20,
		Serves: []string{"rembg", "birefnet:General Use (Light)"},
		Params: merge(io, map[string]string{"size": "32", "mean": "0.5,0.5,0.5", "std": "1,1,1"})})
	add(p, []string{"input"}, []string{"output"})
	_, p = pipelinetest.InstallFake(t, st, weights.Manifest{Name: "x4", Pipeline: "upscale", MemoryBytes: 100 << 20,
		Serves: []string{"esrgan:RealESRGAN_x4plus"}, Params: merge(io, map[string]string{"scale": "4"})})
	add(p, []string{"input"}, []string{"output"})
	exports := []struct {
		dir, name, pipeline string
		serves              []string
	}{
		{"../whisper/testdata/tiny-multi", "whisper-tiny", "whisper", nil},
		{"../diffusion/testdata/models/sd15-tiny", "sd15", "diffusion", []string{"stable-diffusion-v15", "fast-turbo-diffusion:stabilityai/sd-turbo"}},
		{"../diffusion/testdata/models/sdxl-tiny", "sdxl", "diffusion", []string{"fast-sdxl"}},
		{"../diffusion/testdata/models/flux-dev-tiny", "flux-dev", "diffusion", []string{"flux/dev"}},
		{"../diffusion/testdata/models/flux-schnell-tiny", "flux-schnell", "diffusion", []string{"flux/schnell"}},
	}
	for _, e := range exports {
		m := pipelinetest.InstallDir(t, st, e.dir, weights.Manifest{Name: e.name, Pipeline: e.pipeline, Serves: e.serves})
		for _, f := range m.Files {
			if !strings.HasSuffix(f.Name, ".onnx") {
				continue
			}
			path, err := st.Path(m, f.Role)
			if err != nil {
				t.Fatal(err)
			}
			in, out, err := weights.ONNXIO(path)
			if err != nil {
				t.Fatal(err)
			}
			// multi-file models open from their materialised directory
			dir, err := st.Materialize(m)
			if err != nil {
				t.Fatal(err)
			}
			add(filepath.Join(dir, f.Name), in, out)
		}
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// every builds every pipeline over st and rt and returns its endpoints.
func every(t *testing.T, st *weights.Store, rt engine.Runtime, res *engine.Residency) map[string]pipelines.Endpoint {
	all := map[string]pipelines.Endpoint{}
	for _, f := range factories {
		_, eps := pipelinetest.Build(t, f, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Residency: res,
			Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 8 << 20, MaxPixels: 1 << 24}})
		for id, e := range eps {
			all[id] = e
		}
	}
	// every registered endpoint is here
	reg, err := pipelines.Build(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if got, want := sorted(all), reg.IDs(); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v, registered %v", got, want)
	}
	return all
}

func sorted(eps map[string]pipelines.Endpoint) []string {
	var ids []string
	for id := range eps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Every endpoint answers the same situations with the same status and body
// shape.
func TestEveryEndpoint(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name string
		// setup returns the endpoints and, for the cancel case, the runtime
		// to watch for a started run.
		setup  func(t *testing.T) (map[string]pipelines.Endpoint, *enginetest.Runtime)
		input  func(t *testing.T, id string) any
		cancel bool
		status int
		check  func(t *testing.T, id string, err error, body map[string]any)
	}{{
		name: "not installed",
		setup: func(t *testing.T) (map[string]pipelines.Endpoint, *enginetest.Runtime) {
			return every(t, pipelinetest.Store(t), enginetest.New(), nil), nil
		},
		input:  func(t *testing.T, id string) any { return validInput(t, id) },
		status: http.StatusServiceUnavailable,
		check: func(t *testing.T, id string, err error, body map[string]any) {
			var ni *pipelines.NotInstalledError
			if !errors.Is(err, pipelines.ErrNoModel) || !errors.As(err, &ni) || body["error_type"] != "runner_scheduling_failure" ||
				!strings.Contains(body["detail"].(string), "is not installed on this server") {
				t.Errorf("%s: %v %v", id, err, body)
			}
		},
	}, {
		name: "does not fit",
		setup: func(t *testing.T) (map[string]pipelines.Endpoint, *enginetest.Runtime) {
			st, rt := pipelinetest.Store(t), enginetest.New()
			installAll(t, st, rt)
			res := engine.NewResidency(1024, 0, "cpu", log)
			t.Cleanup(res.Close)
			return every(t, st, rt, res), nil
		},
		input:  func(t *testing.T, id string) any { return validInput(t, id) },
		status: http.StatusServiceUnavailable,
		check: func(t *testing.T, id string, err error, body map[string]any) {
			var nm *engine.NoMemoryError
			d, _ := body["detail"].(string)
			if !errors.As(err, &nm) || body["error_type"] != "runner_scheduling_failure" ||
				!strings.Contains(d, "of memory but the cpu budget is") || !strings.Contains(d, nm.Model) {
				t.Errorf("%s: %v %v", id, err, body)
			}
		},
	}, {
		name: "bad input",
		setup: func(t *testing.T) (map[string]pipelines.Endpoint, *enginetest.Runtime) {
			st, rt := pipelinetest.Store(t), enginetest.New()
			installAll(t, st, rt)
			return every(t, st, rt, nil), nil
		},
		input:  func(t *testing.T, id string) any { return map[string]any{"sync_mode": "yes please"} },
		status: http.StatusUnprocessableEntity,
		check: func(t *testing.T, id string, err error, body map[string]any) {
			fe, ok := body["detail"].([]pipelines.FieldError)
			if !ok || len(fe) == 0 {
				t.Fatalf("%s: %v", id, body)
			}
			for _, f := range fe {
				if len(f.Loc) < 1 || f.Loc[0] != "body" || f.Msg == "" || f.Type == "" {
					t.Errorf("%s: field error %+v", id, f)
				}
			}
		},
	}, {
		name: "cancel",
		setup: func(t *testing.T) (map[string]pipelines.Endpoint, *enginetest.Runtime) {
			st, rt := pipelinetest.Store(t), enginetest.New()
			installAll(t, st, rt)
			return every(t, st, rt, nil), rt
		},
		input:  func(t *testing.T, id string) any { return validInput(t, id) },
		cancel: true,
		status: 499,
		check: func(t *testing.T, id string, err error, body map[string]any) {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", id, err)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eps, rt := tc.setup(t)
			for _, id := range sorted(eps) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if tc.cancel {
					// cancel once the request's first model run has started
					_, _, before, _ := rt.Stats()
					go func() {
						for ctx.Err() == nil {
							if _, _, runs, _ := rt.Stats(); runs > before {
								cancel()
								return
							}
							time.Sleep(time.Millisecond)
						}
					}()
				}
				r := pipelinetest.Call(ctx, eps[id], tc.input(t, id), nil)
				cancel()
				status, body := pipelinetest.Status(r.Err)
				if status != tc.status {
					t.Errorf("%s: status %d (%v), want %d", id, status, r.Err, tc.status)
					continue
				}
				tc.check(t, id, r.Err, body)
			}
		})
	}
}

func pngURI(t *testing.T, w, h int) string {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes())
}

// wavURI is n samples of a quiet tone, 16 kHz mono PCM.
func wavURI(n int) string {
	pcm := make([]float32, n)
	for i := range pcm {
		pcm[i] = float32((i%40-20)*50) / 32768
	}
	return "data:audio/wav;base64," + base64.StdEncoding.EncodeToString(pipelinetest.WAV(pcm, 16000))
}
