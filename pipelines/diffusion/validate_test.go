package diffusion

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// Input validation runs on the fake engine, without ONNX Runtime: every bad
// input is answered before a model runs.
func TestEndpointsBadInput(t *testing.T) {
	st := pipelinetest.Store(t)
	pipelinetest.InstallDir(t, st, filepath.Join("testdata", "models", "sd15-tiny"), weights.Manifest{Name: "sd15-tiny", Pipeline: "diffusion"})
	rt := enginetest.New()
	_, eps := pipelinetest.Build(t, New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 8 << 20, MaxPixels: 1 << 24}})
	b, err := os.ReadFile(filepath.Join("testdata", "ref", "inputs", "init_64.png"))
	if err != nil {
		t.Fatal(err)
	}
	init := "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
	call := func(ep pipelines.Endpoint, in map[string]any) (error, int) {
		r := pipelinetest.Call(context.Background(), ep, in, nil)
		status, _ := pipelinetest.Status(r.Err)
		return r.Err, status
	}
	cases := []struct {
		ep  string
		in  map[string]any
		loc string
	}{
		{"fal-ai/flux/dev", map[string]any{}, "prompt"},
		{"fal-ai/flux/dev", map[string]any{"prompt": 3}, "prompt"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "image_size": "huge"}, "image_size"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "image_size": map[string]any{"width": 8, "height": 64}}, "image_size"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "image_size": map[string]any{"width": 20000, "height": 64}}, "image_size"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "image_size": map[string]any{"width": "wide"}}, "image_size"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"},
		{"fal-ai/flux/schnell", map[string]any{"prompt": "x", "num_inference_steps": 13}, "num_inference_steps"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "guidance_scale": 21}, "guidance_scale"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "num_images": 5}, "num_images"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "output_format": "gif"}, "output_format"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "acceleration": "max"}, "acceleration"},
		{"fal-ai/flux/dev", map[string]any{"prompt": "x", "seed": "one"}, "seed"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "format": "webp"}, "format"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "loras": []any{map[string]any{"path": "a"}}}, "loras"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "embeddings": []any{map[string]any{"path": "a"}}}, "embeddings"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "expand_prompt": true}, "expand_prompt"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "safety_checker_version": "v9"}, "safety_checker_version"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "x", "scheduler": "Heun"}, "scheduler"},
		{"fal-ai/fast-turbo-diffusion", map[string]any{"prompt": "x", "model_name": "other"}, "model_name"},
		{"fal-ai/flux/dev/image-to-image", map[string]any{"prompt": "x"}, "image_url"},
		{"fal-ai/flux/dev/image-to-image", map[string]any{"prompt": "x", "image_url": init, "strength": 0}, "strength"},
		{"fal-ai/flux/dev/image-to-image", map[string]any{"prompt": "x", "image_url": init, "strength": 1.5}, "strength"},
		{"fal-ai/fast-sdxl/inpainting", map[string]any{"prompt": "x", "image_url": init}, "mask_url"},
		{"fal-ai/stable-diffusion-v15", map[string]any{"prompt": "x", "num_images": 9}, "num_images"},
	}
	for _, c := range cases {
		err, status := call(eps[c.ep], c.in)
		if status != 422 {
			t.Errorf("%s %v: %v", c.ep, c.in, err)
			continue
		}
		if b, _ := json.Marshal(err); !strings.Contains(string(b), `"`+c.loc+`"`) {
			t.Errorf("%s %v: error %s does not name %s", c.ep, c.in, b, c.loc)
		}
	}
	// no model for an endpoint
	if err, status := call(eps["fal-ai/flux/dev"], map[string]any{"prompt": "x"}); status != 503 || !strings.Contains(err.Error(), "weights import") {
		t.Errorf("flux without a model: %v", err)
	}
	// nothing ran: every answer came before a model was needed
	if _, _, runs, _ := rt.Stats(); runs != 0 {
		t.Errorf("%d model runs", runs)
	}
}
