// Package rembg serves background removal (fal-ai/birefnet, fal-ai/birefnet/v2,
// fal-ai/imageutils/rembg) with segmentation models from the weights store:
// ISNet by default, or BiRefNet ONNX files a user imports.
package rembg

import (
	"context"
	"fmt"
	"image"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

func init() { pipelines.Register("rembg", New) }

// Pipeline owns the loaded segmentation models.
type Pipeline struct {
	deps   pipelines.Deps
	models *pipelines.Models
	eps    []pipelines.Endpoint
}

// New builds the three endpoints over one shared model set.
func New(d pipelines.Deps) (pipelines.Pipeline, error) {
	p := &Pipeline{deps: d, models: pipelines.NewModels(d)}
	p.eps = []pipelines.Endpoint{
		&birefnet{p: p, id: "fal-ai/birefnet", models: v1Models, resolutions: v1Res},
		&birefnet{p: p, id: "fal-ai/birefnet/v2", models: v2Models, resolutions: v2Res, v2: true},
		&rembgEndpoint{p: p},
	}
	return p, nil
}

// Endpoints are fal-ai/birefnet, fal-ai/birefnet/v2 and fal-ai/imageutils/rembg.
func (p *Pipeline) Endpoints() []pipelines.Endpoint { return p.eps }

// Close releases every loaded model.
func (p *Pipeline) Close() error { return p.models.Close() }

// model is a resolved, loadable segmentation model.
type model struct {
	m      weights.Manifest
	size   int
	mean   [3]float32
	std    [3]float32
	scale  float32
	sigmod bool
}

// install says how to get a background-removal model.
const install = "run 'falocal setup' for the default models, or add one with 'falocal weights import'"

// resolve finds the installed model that serves key ("rembg" or
// "birefnet:<variant>"); what names it in messages.
func (p *Pipeline) resolve(key, what string) (*model, error) {
	man, err := p.deps.Resolve(pipelines.Want{Pipeline: "rembg", Key: key, What: what, Install: install})
	if err != nil {
		return nil, err
	}
	return pipelines.Loaded(p.models, man, func() (*model, error) { return parseModel(man) })
}

func parseModel(m weights.Manifest) (*model, error) {
	md := &model{m: m, scale: 1}
	var err error
	if md.size, err = strconv.Atoi(m.Params["size"]); err != nil || md.size <= 0 {
		return nil, fmt.Errorf("model %s: bad size param %q", m.Name, m.Params["size"])
	}
	if md.mean, err = triple(m.Params["mean"]); err != nil {
		return nil, fmt.Errorf("model %s: mean: %w", m.Name, err)
	}
	if md.std, err = triple(m.Params["std"]); err != nil {
		return nil, fmt.Errorf("model %s: std: %w", m.Name, err)
	}
	if s := m.Params["scale"]; s != "" {
		f, err := strconv.ParseFloat(s, 32)
		if err != nil || f <= 0 {
			return nil, fmt.Errorf("model %s: bad scale %q", m.Name, s)
		}
		md.scale = float32(f)
	}
	switch m.Params["activation"] {
	case "", "none":
	case "sigmoid":
		md.sigmod = true
	default:
		return nil, fmt.Errorf("model %s: unknown activation %q", m.Name, m.Params["activation"])
	}
	return md, nil
}

func triple(s string) ([3]float32, error) {
	var out [3]float32
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return out, fmt.Errorf("want 3 comma-separated numbers, got %q", s)
	}
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
		if err != nil {
			return out, err
		}
		out[i] = float32(f)
	}
	return out, nil
}

func (p *Pipeline) pool(md *model) (*pipelines.Net, error) {
	return p.models.Pool(md.m, md.m.Params["input"], md.m.Params["output"])
}

// Warm loads an endpoint's default model now (used by preload).
func (p *Pipeline) Warm(ctx context.Context, endpoint string) error {
	key, what := "rembg", "the background-removal model"
	if endpoint != idRembg {
		key, what = "birefnet:General Use (Light)", "BiRefNet model 'General Use (Light)'"
	}
	md, err := p.resolve(key, what)
	if err != nil {
		return err
	}
	pl, err := p.pool(md)
	if err != nil {
		return err
	}
	return pl.Warm(ctx)
}

// job is one background removal.
type job struct {
	model        *model
	refine       bool
	outputFormat string
	outputMask   bool
	maskOnly     bool
	cropToBBox   bool
	syncMode     bool
}

type result struct {
	Image     pipelines.ImageFile  `json:"image"`
	MaskImage *pipelines.ImageFile `json:"mask_image,omitempty"`
}

func (p *Pipeline) run(ctx context.Context, req *pipelines.Request, j job, imageURL string) (*result, error) {
	cfg := p.deps.Config
	ops := p.deps.Ops
	t0 := time.Now()
	img, info, err := pipelines.LoadImage(ctx, req, cfg, "image_url", imageURL)
	if err != nil {
		return nil, err
	}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	req.Logf(pipelines.Info, "decoded %s image %dx%d", info.Format, w, h)

	pl, err := p.pool(j.model)
	if err != nil {
		return nil, err
	}
	s := j.model.size
	in := make([]float32, 3*s*s)
	if err := ops.ImageToTensor(in, img.Pix, w, h, img.Stride, 4, s, s, j.model.scale, j.model.mean, j.model.std); err != nil {
		return nil, err
	}
	t, err := engine.NewFloat32(in, 1, 3, int64(s), int64(s))
	if err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "running %s at %dx%d", j.model.m.Name, s, s)
	t1 := time.Now()
	outs, err := pl.Run(ctx, []*engine.Tensor{t})
	if err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "inference took %.2fs", time.Since(t1).Seconds())
	raw := outs[0]
	if raw.DType != engine.Float32 || engine.Elements(raw.Shape) != int64(s*s) {
		return nil, fmt.Errorf("model %s returned %s %v, want float32 with %d elements", j.model.m.Name, raw.DType, raw.Shape, s*s)
	}
	small := raw.F32
	if j.model.sigmod {
		for i, v := range small {
			small[i] = float32(1 / (1 + math.Exp(-float64(v))))
		}
	}
	mask := make([]float32, w*h)
	if err := ops.ResizePlane(mask, w, h, small, s, s); err != nil {
		return nil, err
	}

	res := &result{}
	name := req.ID
	if j.maskOnly || j.outputMask {
		mf, err := pipelines.SaveImage(ctx, req, maskImage(mask, w, h), j.outputFormat, j.syncMode, name+"-mask")
		if err != nil {
			return nil, err
		}
		if j.maskOnly {
			res.Image = mf
			return res, nil
		}
		res.MaskImage = &mf
	}

	src := img.Pix
	stride := img.Stride
	if j.refine {
		fg, err := refine(ops, img, mask)
		if err != nil {
			return nil, err
		}
		src, stride = fg, 4*w
	}
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	if err := ops.ComposeAlpha(out.Pix, src, w, h, stride, 4, mask); err != nil {
		return nil, err
	}
	var final image.Image = out
	if j.cropToBBox {
		final = cropToAlpha(out)
	}
	res.Image, err = pipelines.SaveImage(ctx, req, final, j.outputFormat, j.syncMode, name)
	if err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "done in %.2fs", time.Since(t0).Seconds())
	return res, nil
}

// refine estimates foreground colours (blur fusion), so that hair and soft
// edges do not keep the old background's colour. It returns packed RGBA
// with the source alpha, so that a translucent input stays translucent as
// it does without refinement.
func refine(ops engine.Ops, img *image.NRGBA, mask []float32) ([]uint8, error) {
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	n := w * h
	planar := make([]float32, 3*n)
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				planar[c*n+y*w+x] = float32(row[4*x+c]) / 255
			}
		}
	}
	fg := make([]float32, 3*n)
	if err := ops.ForegroundEstimate(fg, planar, mask, w, h); err != nil {
		return nil, err
	}
	out := make([]uint8, 4*n)
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			out[4*i+c] = uint8(math.Round(float64(clamp01(fg[c*n+i]) * 255)))
		}
		out[4*i+3] = img.Pix[(i/w)*img.Stride+4*(i%w)+3]
	}
	return out, nil
}

func clamp01(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

func maskImage(mask []float32, w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i, v := range mask {
		g.Pix[i] = uint8(math.Round(float64(clamp01(v) * 255)))
	}
	return g
}

// alphaCropThreshold ignores the faint haze a soft mask leaves in the
// background when looking for the subject's bounding box.
const alphaCropThreshold = 16

func cropToAlpha(img *image.NRGBA) image.Image {
	b := img.Bounds()
	minX, minY, maxX, maxY := b.Max.X, b.Max.Y, -1, -1
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := img.Pix[(y-b.Min.Y)*img.Stride:]
		for x := b.Min.X; x < b.Max.X; x++ {
			if row[4*(x-b.Min.X)+3] >= alphaCropThreshold {
				minX, maxX = min(minX, x), max(maxX, x)
				minY, maxY = min(minY, y), max(maxY, y)
			}
		}
	}
	if maxX < 0 {
		return img // nothing opaque: keep the full (transparent) image
	}
	return img.SubImage(image.Rect(minX, minY, maxX+1, maxY+1))
}
