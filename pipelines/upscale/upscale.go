// Package upscale serves fal-ai/esrgan with the Real-ESRGAN models of the
// weights store (manifests with pipeline "upscale" serving
// "esrgan:<fal model name>"): the model runs at its native scale over
// padded tiles, and the result is resampled (Catmull-Rom bicubic) to the
// requested scale, as Real-ESRGAN's inference script does with outscale.
package upscale

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
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
	deps   pipelines.Deps
	models *pipelines.Models
}

// New builds the fal-ai/esrgan pipeline.
func New(d pipelines.Deps) (pipelines.Pipeline, error) {
	return &Pipeline{deps: d, models: pipelines.NewModels(d)}, nil
}

// Endpoints is fal-ai/esrgan.
func (p *Pipeline) Endpoints() []pipelines.Endpoint { return []pipelines.Endpoint{endpoint{p}} }

// Close releases every loaded model.
func (p *Pipeline) Close() error { return p.models.Close() }

type endpoint struct{ p *Pipeline }

func (e endpoint) ID() string { return EndpointID }
func (e endpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	return e.p.Run(ctx, req)
}

// Warm loads the default model.
func (p *Pipeline) Warm(ctx context.Context, _ string) error {
	md, err := p.resolve("RealESRGAN_x4plus", 4)
	if err != nil {
		return err
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

// resolve finds the installed model for fal's name at the wanted scale.
// The anime video models have ×2 and ×3 builds of the same network
// ("esrgan:<name>@2"), preferred when the scale is at most theirs.
func (p *Pipeline) resolve(name string, scale float64) (*model, error) {
	w := pipelines.Want{Pipeline: "upscale", Key: "esrgan:" + name, What: fmt.Sprintf("model '%s'", name),
		Install: "run 'falocal setup' for the default models, or add one with 'falocal weights import'"}
	for _, v := range []struct {
		max    float64
		suffix string
	}{{2, "@2"}, {3, "@3"}} {
		if scale > v.max {
			continue
		}
		alt := w
		alt.Key += v.suffix
		man, err := p.deps.Resolve(alt)
		if err == nil {
			return p.load(man)
		}
		if !errors.Is(err, pipelines.ErrNoModel) {
			return nil, err
		}
	}
	man, err := p.deps.Resolve(w)
	if err != nil {
		return nil, err
	}
	return p.load(man)
}

func (p *Pipeline) load(man weights.Manifest) (*model, error) {
	return pipelines.Loaded(p.models, man, func() (*model, error) { return parseModel(man) })
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

func (p *Pipeline) pool(md *model) (*pipelines.Net, error) { return p.models.Pool(md.m, md.in, md.out) }

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

// Describe documents fal-ai/esrgan.
func (e endpoint) Describe() pipelines.Description {
	return pipelines.Description{Title: "Upscaling (Real-ESRGAN)", Category: "image-to-image",
		Summary: "Upscales an image with the Real-ESRGAN family, by any factor from 1 to 8 (the network's own factor, then resized).",
		Input: pipelines.Schema{Fields: []pipelines.Field{
			{Name: "image_url", Type: pipelines.String, Title: "Image", Required: true, Media: "image",
				Description: "The image to upscale: an http(s) URL this server may read (its own file URLs, allow-listed hosts) or a data: URI.",
				Examples:    []any{"https://storage.googleapis.com/falserverless/model_tests/upscale/owl.png"}},
			{Name: "scale", Type: pipelines.Number, Default: 2.0, Min: pipelines.Num(1), Max: pipelines.Num(8),
				Description: "How many times larger the output is on each side."},
			{Name: "model", Type: pipelines.String, Enum: Models, Default: "RealESRGAN_x4plus",
				Description: "Which Real-ESRGAN network; each needs its model installed on this server."},
			{Name: "output_format", Type: pipelines.String, Enum: formats, Default: "png", Description: "The format of the output image."},
			{Name: "tile", Type: pipelines.Integer, Default: 0, Min: pipelines.Num(0), Advanced: true,
				Description: "Tile size in input pixels for large images (0: the server's choice)."},
			{Name: "face", Type: pipelines.Boolean, Default: false, Advanced: true,
				Description: "Face enhancement (GFPGAN); needs a face-restoration model, which this server does not have."},
			{Name: "sync_mode", Type: pipelines.Boolean, Default: false, Advanced: true,
				Description: "Return the output image as a data URI in the response instead of a file URL on this server."},
		}},
		Output: Output{}}
}

// Run validates the input, upscales and stores the result.
func (p *Pipeline) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	if _, err := (endpoint{p}).Describe().Input.Decode(req.Input, &in); err != nil {
		return nil, err
	}
	url, scale, tile, name, format := *in.ImageURL, *in.Scale, *in.Tile, *in.Model, *in.OutputFormat
	if *in.Face {
		return nil, pipelines.Invalid("face", "face enhancement is not available on this server: no face-restoration model (GFPGAN) is installed; send face: false")
	}
	md, err := p.resolve(name, scale)
	if err != nil {
		return nil, err
	}

	t0 := time.Now()
	// What the request costs is known from the image's header: refuse it
	// before decoding a pixel.
	enc, err := pipelines.PeekImage(ctx, req, p.deps.Config, "image_url", url)
	if err != nil {
		return nil, err
	}
	w, h := enc.Info.Width, enc.Info.Height
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
	tile = tileSize(tile, md, w, h)
	if work, limit := Work(w, h, md.scale, md.pad, tile), pipelines.Budget(p.deps.Config.MaxUpscaleWork, pipelines.DefaultMaxUpscaleWork); limit > 0 && work > limit {
		return nil, pipelines.Errorf(http.StatusRequestEntityTooLarge,
			"image_url: a %dx%d image at scale %g runs %s at its native ×%d in tiles of %d: %d model pixels, over this server's upscale budget of %d (input pixels × %d², tile overlaps included); use a smaller image",
			w, h, scale, md.m.Name, md.scale, tile, work, limit, md.scale)
	}
	img, info, err := enc.Decode(p.deps.Config)
	if err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "decoded %s image %dx%d; %s (×%d) to %dx%d", info.Format, w, h, md.m.Name, md.scale, ow, oh)
	pl, err := p.pool(md)
	if err != nil {
		return nil, err
	}
	// One residency admission for all the tile runs: the model is not
	// evicted between them.
	hold, err := p.models.Hold(ctx, md.m)
	if err != nil {
		return nil, err
	}
	defer hold.Release()
	out, err := Upscale(ctx, req, held{pl, hold}, md.scale, md.pad, tile, img, ow, oh)
	if err != nil {
		return nil, err
	}
	res := Output{}
	if res.Image, err = pipelines.SaveImage(ctx, req, out, format, *in.SyncMode, req.ID); err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "done in %.2fs", time.Since(t0).Seconds())
	return res, nil
}

// held runs a network under a request's hold on its model.
type held struct {
	n *pipelines.Net
	h *engine.Hold
}

func (r held) Do(ctx context.Context, run engine.Run) ([]*engine.Tensor, error) {
	run.Hold = r.h
	return r.n.Do(ctx, run)
}

// Work is what an upscale computes, in model-native pixels: the model
// input windows that Upscale runs (each tile with its padding, as many as
// tile cuts a w×h image into) times the native scale².
func Work(w, h, ns, pad, tile int) int64 {
	pad = max(pad, minPad)
	sx, sy := min(tile+2*pad, w), min(tile+2*pad, h)
	n := int64((w+tile-1)/tile) * int64((h+tile-1)/tile)
	return n * int64(sx) * int64(sy) * int64(ns) * int64(ns)
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
