//go:build cgo

package diffusion

import (
	"context"
	"fmt"
	_ "image/png"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion/diffusiontest"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// importExport copies an export into st as `weights import -dir` does
// (float16 graph edges cast to float32) and checks it with
// Check; it returns the manifest to record, or Check's error.
func importExport(t *testing.T, d pipelines.Deps, dir, name string, params map[string]string) (weights.Manifest, error) {
	t.Helper()
	st := d.Store
	files, err := st.AddDirWith(pipelinetest.ExpandDir(t, dir), "fp32", func(n, p string) error {
		if filepath.Ext(n) != ".onnx" {
			return nil
		}
		_, err := weights.Float32IO(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if params == nil {
		params = map[string]string{}
	}
	man := weights.Manifest{Name: name, Pipeline: "diffusion", Files: files, Params: params}
	limits, err := Check(t.Context(), d, man)
	if err != nil {
		return man, err
	}
	for k, v := range limits {
		man.Params[k] = v
	}
	if err := st.Put(man); err != nil {
		t.Fatal(err)
	}
	return man, nil
}

func stubDeps(t *testing.T) pipelines.Deps {
	t.Helper()
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	return pipelines.Deps{Store: pipelinetest.Store(t), Runtime: rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 8 << 20, MaxPixels: 1 << 24}}
}

func with(o diffusiontest.Options, f func(*diffusiontest.Options)) diffusiontest.Options {
	f(&o)
	return o
}

// Every variation real exports have imports (Check: components load, roles,
// a one-step generation under guidance and an image-to-image step at two
// sizes) and is fed what its graphs declare; what cannot be served is
// refused at import with the reason.
func TestImportExportVariants(t *testing.T) {
	sd := diffusiontest.Options{Family: diffusiontest.SD}
	sdxl := diffusiontest.Options{Family: diffusiontest.SDXL}
	schnell := diffusiontest.Options{Family: diffusiontest.Flux}
	dev := diffusiontest.Options{Family: diffusiontest.Flux, Guidance: true}
	for _, c := range []struct {
		name   string
		o      diffusiontest.Options
		params map[string]string
		sizes  string // recorded "sizes"
		err    []string
	}{
		{name: "sd", o: sd},
		{name: "sdxl", o: sdxl},
		{name: "flux-schnell", o: schnell},
		{name: "flux-dev", o: dev},
		// optimum's stock UNet: a scalar timestep, under guidance (two rows)
		{name: "sd-timestep-scalar", o: with(sd, func(o *diffusiontest.Options) { o.TimestepScalar = true })},
		{name: "sd-timestep-int64", o: with(sd, func(o *diffusiontest.Options) { o.TimestepInt64 = true })},
		{name: "sdxl-timestep-scalar-int64", o: with(sdxl, func(o *diffusiontest.Options) { o.TimestepScalar, o.TimestepInt64 = true, true })},
		{name: "sd-lcm", o: with(sd, func(o *diffusiontest.Options) { o.TimestepCond = 8 })},
		{name: "sdxl-lcm", o: with(sdxl, func(o *diffusiontest.Options) { o.TimestepCond = 16 })},
		// optimum's FLUX: int64 ids; older diffusers: ids with a batch dimension
		{name: "flux-ids-int64", o: with(dev, func(o *diffusiontest.Options) { o.IDsInt64 = true })},
		{name: "flux-ids-batched", o: with(schnell, func(o *diffusiontest.Options) { o.IDsBatched = true })},
		{name: "flux-ids-int64-batched-scalar-t", o: with(dev, func(o *diffusiontest.Options) { o.IDsInt64, o.IDsBatched, o.TimestepScalar = true, true, true })},
		{name: "flux-timestep-int64", o: with(schnell, func(o *diffusiontest.Options) { o.TimestepInt64 = true })},
		// static spatial dimensions: recorded, and served at that size
		{name: "sd-fixed", o: with(sd, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 128} }), sizes: "64x128"},
		{name: "sdxl-fixed", o: with(sdxl, func(o *diffusiontest.Options) { o.FixedSize = [2]int{128, 64} }), sizes: "128x64"},
		{name: "flux-fixed-square", o: with(dev, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 64} }), sizes: "64x64"},
		// a token count alone cannot tell 64×32 from 32×64: the VAE's static latent does
		{name: "flux-fixed-not-square", o: with(dev, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 32} }), sizes: "64x32"},
		// declared dynamic, runs at one size (a traced rotary embedding)
		{name: "sd-runs-only-at", o: with(sd, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 64} }),
			err: []string{"runs at 64×64 but not at 128×64", "-param sizes=WIDTHxHEIGHT", "unet failed on sample float32[2 4 8 16]"}},
		{name: "flux-runs-only-at", o: with(schnell, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 64} }),
			err: []string{"runs at 64×64 but not at 80×64", "tools/flux-export", "transformer failed on hidden_states float32[1 20 64]"}},
		{name: "sd-sizes-off-grid", o: sd, params: map[string]string{"sizes": "100x100"}, err: []string{"sides multiples of 8"}},
		{name: "flux-runs-only-at-named", o: with(schnell, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 32} }),
			params: map[string]string{"sizes": "64x32"}, sizes: "64x32"},
		// ONNX Runtime contrib operators: FastGelu has a CPU kernel, GroupNorm and BiasSplitGelu only CUDA ones
		{name: "sd-fastgelu", o: with(sd, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.FastGelu })},
		{name: "flux-fastgelu", o: with(dev, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.FastGelu })},
		{name: "sdxl-groupnorm", o: with(sdxl, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.GroupNorm }),
			err: []string{"unet/model.onnx does not load", "operator GroupNorm", "-providers cuda"}},
		{name: "flux-biassplitgelu", o: with(schnell, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.BiasSplitGelu }),
			err: []string{"transformer/model.onnx does not load", "operator BiasSplitGelu", "-providers cuda"}},
		// diffusers' own ONNX folders have no VAE config
		{name: "sd-no-vae-config", o: with(sd, func(o *diffusiontest.Options) { o.NoVAEConfig = true })},
		{name: "flux-no-vae-config", o: with(schnell, func(o *diffusiontest.Options) { o.NoVAEConfig = true }),
			err: []string{"vae_decoder/config.json lacks scaling_factor"}},
		{name: "sd-external", o: with(sd, func(o *diffusiontest.Options) { o.ExternalData = true })},
		// diffusers' own ONNX folders: weights.pb beside each model.onnx, no VAE config, int64 timestep
		{name: "sd-diffusers-onnx-folder", o: with(sd, func(o *diffusiontest.Options) {
			o.ExternalData, o.ExternalDataName, o.NoVAEConfig, o.TimestepInt64 = true, "weights.pb", true, true
		})},
		{name: "flux-external", o: with(dev, func(o *diffusiontest.Options) { o.ExternalData = true })},
		{name: "sd-fp16", o: with(sd, func(o *diffusiontest.Options) { o.FP16 = true })},
		{name: "sd-fp16-scalar", o: with(sd, func(o *diffusiontest.Options) { o.FP16, o.TimestepScalar = true, true })},
		{name: "sdxl-fp16-external", o: with(sdxl, func(o *diffusiontest.Options) { o.FP16, o.ExternalData = true, true })},
		{name: "flux-fp16", o: with(dev, func(o *diffusiontest.Options) { o.FP16 = true })},
		{name: "flux-fp16-ids-int64-fixed", o: with(dev, func(o *diffusiontest.Options) { o.FP16, o.IDsInt64, o.FixedSize = true, true, [2]int{64, 64} }), sizes: "64x64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := diffusiontest.Write(dir, c.o); err != nil {
				t.Fatal(err)
			}
			d := stubDeps(t)
			man, err := importExport(t, d, dir, "m", c.params)
			if len(c.err) > 0 {
				if err == nil {
					t.Fatalf("imported; want an error with %q", c.err)
				}
				for _, want := range c.err {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q\nlacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if man.Params["sizes"] != c.sizes {
				t.Errorf("sizes %q, want %q", man.Params["sizes"], c.sizes)
			}
		})
	}
}

// A model recorded with fixed sizes is served at them: another image_size
// is a 422 naming them, no image_size gets the model's size. An export
// with a scalar timestep answers a guided request with a negative prompt
// (the request that used to fail with a bare 500).
func TestServeExportVariants(t *testing.T) {
	d := stubDeps(t)
	for name, o := range map[string]diffusiontest.Options{
		"fixed":  {Family: diffusiontest.SD, FixedSize: [2]int{64, 128}},
		"scalar": {Family: diffusiontest.SDXL, TimestepScalar: true, TimestepInt64: true},
		"ids":    {Family: diffusiontest.Flux, Guidance: true, IDsInt64: true, TimestepScalar: true},
	} {
		dir := t.TempDir()
		if err := diffusiontest.Write(dir, o); err != nil {
			t.Fatal(err)
		}
		man, err := importExport(t, d, dir, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		serves := map[string]string{"fixed": "stable-diffusion-v15", "scalar": "fast-sdxl", "ids": "flux/dev"}[name]
		man.Serves = []string{serves}
		if err := d.Store.Put(man); err != nil {
			t.Fatal(err)
		}
	}
	_, eps := pipelinetest.Build(t, New, d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []struct {
		id     string
		in     map[string]any
		status int
		w, h   int
		detail string
	}{
		{"fal-ai/stable-diffusion-v15", map[string]any{"prompt": "a cat", "num_inference_steps": 2}, 200, 64, 128, ""},
		{"fal-ai/stable-diffusion-v15", map[string]any{"prompt": "a cat", "num_inference_steps": 2, "image_size": map[string]int{"width": 64, "height": 128}}, 200, 64, 128, ""},
		{"fal-ai/stable-diffusion-v15", map[string]any{"prompt": "a cat", "image_size": "square"}, 422, 0, 0, "runs only at 64×128"},
		{"fal-ai/fast-sdxl", map[string]any{"prompt": "a cat", "negative_prompt": "blurry", "guidance_scale": 7.5, "num_inference_steps": 2,
			"num_images": 2, "image_size": map[string]int{"width": 100, "height": 70}}, 200, 100, 70, ""},
		{"fal-ai/flux/dev", map[string]any{"prompt": "a cat", "num_inference_steps": 2, "image_size": map[string]int{"width": 72, "height": 100}}, 200, 72, 100, ""},
	} {
		t.Run(fmt.Sprint(c.id, c.in["image_size"]), func(t *testing.T) {
			c.in["sync_mode"] = true
			c.in["format"], c.in["output_format"] = "png", "png"
			if c.id == "fal-ai/flux/dev" {
				delete(c.in, "format")
			} else {
				delete(c.in, "output_format")
			}
			r := pipelinetest.Call(ctx, eps[c.id], c.in, nil)
			status, body := pipelinetest.Status(r.Err)
			if status != c.status {
				t.Fatalf("status %d (%v), want %d", status, body, c.status)
			}
			if c.status != http.StatusOK {
				if !strings.Contains(fmt.Sprint(body), c.detail) || !strings.Contains(fmt.Sprint(body), "image_size") {
					t.Errorf("body %v lacks %q on image_size", body, c.detail)
				}
				return
			}
			for _, im := range r.Out["images"].([]any) {
				f := im.(map[string]any)
				img := decodeURI(t, f["url"].(string))
				if img.Bounds().Dx() != c.w || img.Bounds().Dy() != c.h || int(f["width"].(float64)) != c.w || int(f["height"].(float64)) != c.h {
					t.Errorf("image %v, file %v×%v; want %d×%d", img.Bounds(), f["width"], f["height"], c.w, c.h)
				}
			}
		})
	}
}
