// Package upscale serves fal-ai/esrgan with the Real-ESRGAN models of the
// weights store (manifests with pipeline "upscale" serving
// "esrgan:<fal model name>"): the model runs at its native scale over
// padded tiles, and the result is resampled (Catmull-Rom bicubic) to the
// requested scale, as Real-ESRGAN's inference script does with outscale.
package upscale

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

func init() { pipelines.Register("upscale", New) }

// EndpointID is the fal endpoint this package serves.
const EndpointID = "fal-ai/esrgan"

// DefaultMaxPixels is the output budget when the config sets none: 8192².
const DefaultMaxPixels = 1 << 26

// Models are fal's model names for fal-ai/esrgan.
var Models = []string{"RealESRGAN_x4plus", "RealESRGAN_x2plus", "RealESRGAN_x4plus_anime_6B",
	"RealESRGAN_x4_v3", "RealESRGAN_x4_wdn_v3", "RealESRGAN_x4_anime_v3"}

var formats = []string{"png", "jpeg"}

// Pipeline owns the loaded upscaling models.
type Pipeline struct {
	deps pipelines.Deps

	models *pipelines.Models
}

// New builds the fal-ai/esrgan endpoint.
func New(d pipelines.Deps) ([]pipelines.Endpoint, error) {
	return []pipelines.Endpoint{&Pipeline{deps: d, models: pipelines.NewModels(d)}}, nil
}

// ID is fal's endpoint id.
func (p *Pipeline) ID() string { return EndpointID }

// Close releases every loaded model.
func (p *Pipeline) Close() error { return p.models.Close() }

// Warm loads the default model, when installed.
func (p *Pipeline) Warm(ctx context.Context) error {
	md, _, err := p.resolve("RealESRGAN_x4plus", 4)
	if err != nil {
		return err
	}
	if md == nil {
		return pipelines.ErrNoModel
	}
	pl, err := p.pool(md)
	if err != nil {
		return err
	}
	return pl.Warm(ctx)
}

// model is a resolved upscaling model.
type model struct {
	m      weights.Manifest
	in     string
	out    string
	scale  int // native
	pad    int // tile_pad
	window int // automatic tiling: largest model input side
}

// resolve finds the installed model for fal's name at the wanted scale; nil
// with the installed fal names when there is none.
func (p *Pipeline) resolve(name string, scale float64) (*model, []string, error) {
	all, err := p.deps.Store.List()
	if err != nil {
		return nil, nil, err
	}
	byKey := map[string]weights.Manifest{}
	seen := map[string]bool{}
	var installed []string
	for _, m := range all {
		if m.Pipeline != "upscale" {
			continue
		}
		for _, s := range m.Serves {
			k, ok := strings.CutPrefix(s, "esrgan:")
			if !ok {
				continue
			}
			if _, dup := byKey[k]; !dup {
				byKey[k] = m
			}
			base, _, _ := strings.Cut(k, "@")
			if !seen[base] {
				seen[base] = true
				installed = append(installed, base)
			}
		}
	}
	sort.Strings(installed)
	// The anime video models have ×2 and ×3 builds of the same network.
	for _, v := range []struct {
		max float64
		key string
	}{{2, name + "@2"}, {3, name + "@3"}} {
		if scale <= v.max {
			if m, ok := byKey[v.key]; ok {
				md, err := parseModel(m)
				return md, installed, err
			}
		}
	}
	m, ok := byKey[name]
	if !ok {
		return nil, installed, nil
	}
	md, err := parseModel(m)
	return md, installed, err
}

func parseModel(m weights.Manifest) (*model, error) {
	md := &model{m: m, in: m.Params["input"], out: m.Params["output"], pad: 10, window: 512}
	if md.in == "" || md.out == "" {
		return nil, fmt.Errorf("model %s: manifest lacks input/output names", m.Name)
	}
	var err error
	if md.scale, err = strconv.Atoi(m.Params["scale"]); err != nil || md.scale < 1 || md.scale > 8 {
		return nil, fmt.Errorf("model %s: bad scale param %q", m.Name, m.Params["scale"])
	}
	if s := m.Params["tile_pad"]; s != "" {
		if md.pad, err = strconv.Atoi(s); err != nil || md.pad < 0 {
			return nil, fmt.Errorf("model %s: bad tile_pad param %q", m.Name, s)
		}
	}
	// RRDBNet (x4plus) needs ~1.4 GB for one 256² tile; the compact
	// models a fraction of that.
	if m.Params["arch"] == "RRDBNet" {
		md.window = 256
	}
	return md, nil
}

func (p *Pipeline) pool(md *model) (*engine.Pool, error) { return p.models.Pool(md.m, md.in, md.out) }

// input is fal's ESRGAN input; pointer fields tell absent from zero.
type input struct {
	ImageURL     *string  `json:"image_url"`
	Scale        *float64 `json:"scale"`
	Tile         *int     `json:"tile"`
	Face         *bool    `json:"face"`
	Model        *string  `json:"model"`
	OutputFormat *string  `json:"output_format"`
	SyncMode     *bool    `json:"sync_mode"`
}

// Output is fal's ESRGAN output.
type Output struct {
	Image pipelines.ImageFile `json:"image"`
}

// Run validates the input, upscales and stores the result.
func (p *Pipeline) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	if err := pipelines.DecodeInput(req.Input, &in); err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	url := pipelines.Required(v, "image_url", in.ImageURL)
	scale := 2.0
	if in.Scale != nil {
		scale = *in.Scale
		switch {
		case math.IsNaN(scale) || scale < 1:
			v.Add("scale", "greater_than_equal", "Input should be greater than or equal to 1")
		case scale > 8:
			v.Add("scale", "less_than_equal", "Input should be less than or equal to 8")
		}
	}
	tile := 0
	if in.Tile != nil {
		if tile = *in.Tile; tile < 0 {
			v.Add("tile", "greater_than_equal", "Input should be greater than or equal to 0")
		}
	}
	if pipelines.Bool(in.Face, false) {
		v.Add("face", "value_error", "face enhancement is not available on this server: no face-restoration model (GFPGAN) is installed; send face: false")
	}
	name := pipelines.Literal(v, "model", in.Model, "RealESRGAN_x4plus", Models...)
	format := pipelines.Literal(v, "output_format", in.OutputFormat, "png", formats...)
	if err := v.Err(); err != nil {
		return nil, err
	}
	md, installed, err := p.resolve(name, scale)
	if err != nil {
		return nil, err
	}
	if md == nil {
		have := "none; run 'falocal setup'"
		if len(installed) > 0 {
			have = "'" + strings.Join(installed, "', '") + "'"
		}
		return nil, pipelines.Invalid("model", fmt.Sprintf("model '%s' is not installed on this server (installed: %s)", name, have))
	}

	t0 := time.Now()
	img, info, err := pipelines.LoadImage(ctx, req, p.deps.Config, "image_url", url)
	if err != nil {
		return nil, err
	}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	ow, oh := outSize(w, h, scale)
	budget := p.deps.Config.MaxUpscalePixels
	if budget <= 0 {
		budget = DefaultMaxPixels
	}
	if int64(ow)*int64(oh) > budget {
		return nil, pipelines.Errorf(http.StatusRequestEntityTooLarge,
			"image_url: a %dx%d image at scale %g would be %dx%d = %d pixels, over this server's upscale limit of %d pixels; use a smaller scale or image",
			w, h, scale, ow, oh, int64(ow)*int64(oh), budget)
	}
	req.Logf(pipelines.Info, "decoded %s image %dx%d; %s (×%d) to %dx%d", info.Format, w, h, md.m.Name, md.scale, ow, oh)
	pl, err := p.pool(md)
	if err != nil {
		return nil, err
	}
	// One residency admission for all the tile runs: the model is not
	// evicted between them.
	hctx, release, err := p.models.Hold(ctx, md.m)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, pipelines.Unavailable("upscaling model "+md.m.Name+" unavailable", err)
	}
	defer release()
	out, err := Upscale(hctx, req, pl, md.scale, md.pad, tileSize(tile, md, img.Bounds().Dx(), img.Bounds().Dy()), img, ow, oh)
	if err != nil {
		return nil, err
	}
	res := Output{}
	if res.Image, err = pipelines.SaveImage(ctx, req, out, format, pipelines.Bool(in.SyncMode, false), req.ID); err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "done in %.2fs", time.Since(t0).Seconds())
	return res, nil
}

// outSize is Real-ESRGAN's outscale size: round(w·s)×round(h·s).
func outSize(w, h int, s float64) (int, int) {
	return max(1, int(math.Round(float64(w)*s))), max(1, int(math.Round(float64(h)*s)))
}

// tileSize is the tile side: the request's, or (0) automatic: an image
// that fits the model's window runs whole; a larger one is cut into as few
// tiles as fit the window, of equal size, so that padded windows overlap as
// little as possible (recomputed pixels are wasted work).
func tileSize(req int, md *model, w, h int) int {
	if req > 0 {
		return req
	}
	side := max(w, h)
	if side <= md.window {
		return side
	}
	most := max(16, md.window-2*md.pad)
	n := (side + most - 1) / most
	return max(16, (side+n-1)/n)
}
