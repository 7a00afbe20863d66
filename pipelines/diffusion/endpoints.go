package diffusion

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"strings"

	"golang.org/x/image/draw"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

func init() { pipelines.Register("diffusion", New) }

// endpointSpec is one fal endpoint id: which family serves it, what kind of
// job it is, and its defaults and bounds (fal's schemas, §7.2–7.5).
type endpointSpec struct {
	id       string
	key      string   // what a manifest's Serves names ("flux/dev", "fast-sdxl", ...)
	families []Family // families that can serve it when no manifest names it
	guidance bool     // FLUX: serve only models with (true) or without (false) guidance input
	kind     string   // "t2i", "i2i", "inpaint"
	steps    int      // default num_inference_steps
	maxSteps int
	cfg      float64 // default guidance_scale
	size     string  // default image_size preset
	strength float64 // img2img/inpaint default
	// sdxlFields: fast-sdxl's input names (format instead of output_format,
	// negative_prompt, loras, embeddings, expand_prompt).
	sdxlFields bool
	maxImages  int
}

var specs = []endpointSpec{
	{id: "fal-ai/flux/dev", key: "flux/dev", families: []Family{Flux}, guidance: true, kind: "t2i", steps: 28, maxSteps: 50, cfg: 3.5, size: "landscape_4_3", maxImages: 4},
	{id: "fal-ai/flux/schnell", key: "flux/schnell", families: []Family{Flux}, kind: "t2i", steps: 4, maxSteps: 12, cfg: 3.5, size: "landscape_4_3", maxImages: 4},
	{id: "fal-ai/flux/dev/image-to-image", key: "flux/dev", families: []Family{Flux}, guidance: true, kind: "i2i", steps: 40, maxSteps: 50, cfg: 3.5, strength: 0.95, maxImages: 4},
	{id: "fal-ai/fast-sdxl", key: "fast-sdxl", families: []Family{SDXL}, kind: "t2i", steps: 25, maxSteps: 50, cfg: 7.5, size: "square_hd", sdxlFields: true, maxImages: 8},
	{id: "fal-ai/fast-sdxl/image-to-image", key: "fast-sdxl", families: []Family{SDXL}, kind: "i2i", steps: 25, maxSteps: 50, cfg: 7.5, strength: 0.95, sdxlFields: true, maxImages: 8},
	{id: "fal-ai/fast-sdxl/inpainting", key: "fast-sdxl", families: []Family{SDXL}, kind: "inpaint", steps: 25, maxSteps: 50, cfg: 7.5, strength: 0.95, sdxlFields: true, maxImages: 8},
	{id: "fal-ai/stable-diffusion-v15", key: "stable-diffusion-v15", families: []Family{SD}, kind: "t2i", steps: 25, maxSteps: 50, cfg: 7.5, size: "square", sdxlFields: true, maxImages: 8},
	// SDXL-Turbo and SD-Turbo: distilled for 1–4 steps without guidance; model_name picks one.
	{id: "fal-ai/fast-turbo-diffusion", key: "fast-turbo-diffusion", families: []Family{SDXL, SD}, kind: "t2i", steps: 2, maxSteps: 8, cfg: 1, size: "square", sdxlFields: true, maxImages: 8},
}

// Pipeline serves every diffusion endpoint over the installed models.
type Pipeline struct {
	deps   pipelines.Deps
	models *pipelines.Models
	eps    []pipelines.Endpoint
}

// New builds the diffusion endpoints.
func New(d pipelines.Deps) (pipelines.Pipeline, error) {
	p := &Pipeline{deps: d, models: pipelines.NewModels(d)}
	for _, s := range specs {
		p.eps = append(p.eps, &endpoint{p: p, spec: s})
	}
	return p, nil
}

// Endpoints are the fal text-to-image, image-to-image and inpainting ids.
func (p *Pipeline) Endpoints() []pipelines.Endpoint { return p.eps }

// Close releases the loaded sessions.
func (p *Pipeline) Close() error { return p.models.Close() }

// Warm opens the sessions of an endpoint's default model.
func (p *Pipeline) Warm(ctx context.Context, endpoint string) error {
	for _, s := range specs {
		if s.id == endpoint {
			m, err := p.model(s, "")
			if err != nil {
				return err
			}
			return m.warm(ctx, s.kind)
		}
	}
	return fmt.Errorf("diffusion: no endpoint %s", endpoint)
}

// model finds the installed model for an endpoint: one whose manifest
// serves its key (e.g. "flux/dev", "fast-turbo-diffusion:stabilityai/sd-turbo"),
// else the first diffusion model of a family that fits.
func (p *Pipeline) model(s endpointSpec, variant string) (*Model, error) {
	want := s.key
	if variant != "" {
		want += ":" + variant
	}
	man, err := p.deps.Resolve(pipelines.Want{Pipeline: "diffusion", Key: want,
		Match: func(m weights.Manifest) bool {
			for _, sv := range m.Serves {
				if sv == want || (variant == "" && strings.HasPrefix(sv, s.key+":")) {
					return true
				}
			}
			return false
		},
		What:    "a diffusion model for " + want,
		Install: "import a diffusers ONNX export with 'falocal weights import -pipeline diffusion -name NAME -dir DIR -serves " + want + "'"})
	if err == nil {
		return p.load(man)
	}
	if !errors.Is(err, pipelines.ErrNoModel) {
		return nil, err
	}
	// no manifest names the endpoint: the first model of a fitting family
	all, lerr := p.deps.Store.List()
	if lerr != nil {
		return nil, lerr
	}
	fams := s.families
	switch variant {
	case "stabilityai/sdxl-turbo":
		fams = []Family{SDXL}
	case "stabilityai/sd-turbo":
		fams = []Family{SD}
	}
	for _, man := range all {
		if man.Pipeline != "diffusion" || len(man.Serves) > 0 {
			continue
		}
		m, lerr := p.load(man)
		if lerr != nil {
			continue
		}
		for _, f := range fams {
			if m.Family == f && (f != Flux || m.Guidance == s.guidance) {
				return m, nil
			}
		}
	}
	return nil, err
}

func (p *Pipeline) load(man weights.Manifest) (*Model, error) {
	return pipelines.Loaded(p.models, man, func() (*Model, error) { return LoadModel(man, p.deps.Store, p.models) })
}

type endpoint struct {
	p    *Pipeline
	spec endpointSpec
}

func (e *endpoint) ID() string { return e.spec.id }

// input is the union of the served schemas; pointers tell absent from zero.
type input struct {
	Prompt         *string           `json:"prompt"`
	NegativePrompt *string           `json:"negative_prompt"`
	ImageSize      *json.RawMessage  `json:"image_size"`
	Steps          *int              `json:"num_inference_steps"`
	Seed           *int64            `json:"seed"`
	Guidance       *float64          `json:"guidance_scale"`
	SyncMode       *bool             `json:"sync_mode"`
	NumImages      *int              `json:"num_images"`
	SafetyChecker  *bool             `json:"enable_safety_checker"`
	SafetyVersion  *string           `json:"safety_checker_version"`
	OutputFormat   *string           `json:"output_format"`
	Format         *string           `json:"format"`
	Acceleration   *string           `json:"acceleration"`
	ImageURL       *string           `json:"image_url"`
	MaskURL        *string           `json:"mask_url"`
	Strength       *float64          `json:"strength"`
	Loras          []json.RawMessage `json:"loras"`
	Embeddings     []json.RawMessage `json:"embeddings"`
	ExpandPrompt   *bool             `json:"expand_prompt"`
	ModelName      *string           `json:"model_name"`
	Scheduler      *string           `json:"scheduler"`
}

// presets are fal's image_size names (width × height).
var presets = map[string][2]int{
	"square_hd": {1024, 1024}, "square": {512, 512}, "portrait_4_3": {768, 1024}, "portrait_16_9": {576, 1024},
	"landscape_4_3": {1024, 768}, "landscape_16_9": {1024, 576},
}

// schedulers are the names fast-sdxl-style endpoints accept, mapped to diffusers classes.
var schedulers = map[string]string{
	"Euler": "EulerDiscreteScheduler", "Euler A": "EulerAncestralDiscreteScheduler",
	"DPM++ 2M": "DPMSolverMultistepScheduler", "DPM++ 2M Karras": "DPMSolverMultistepScheduler+karras",
	"DDIM": "DDIMScheduler", "LCM": "LCMScheduler",
}

// Output is fal's text-to-image output.
type Output struct {
	Images          []pipelines.ImageFile `json:"images"`
	Timings         map[string]float64    `json:"timings"`
	Seed            int64                 `json:"seed"`
	HasNSFWConcepts []bool                `json:"has_nsfw_concepts"`
	Prompt          string                `json:"prompt"`
}

const maxSide = 4096 // largest image side served (fal allows up to 14142; memory does not)

func (e *endpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	if err := pipelines.DecodeInput(req.Input, &in); err != nil {
		return nil, err
	}
	s := e.spec
	v := &pipelines.ValidationError{}
	prompt := pipelines.Required(v, "prompt", in.Prompt)
	steps := s.steps
	if in.Steps != nil {
		steps = *in.Steps
		if steps < 1 || steps > s.maxSteps {
			v.Add("num_inference_steps", "value_error", fmt.Sprintf("Input should be between 1 and %d", s.maxSteps))
		}
	}
	guidance := s.cfg
	if in.Guidance != nil {
		guidance = *in.Guidance
		if math.IsNaN(guidance) || guidance < 0 || guidance > 20 {
			v.Add("guidance_scale", "value_error", "Input should be between 0 and 20")
		}
	}
	n := 1
	if in.NumImages != nil {
		n = *in.NumImages
		if n < 1 || n > s.maxImages {
			v.Add("num_images", "value_error", fmt.Sprintf("Input should be between 1 and %d", s.maxImages))
		}
	}
	var format string
	if s.sdxlFields {
		format = pipelines.Literal(v, "format", in.Format, "jpeg", "jpeg", "png")
	} else {
		format = pipelines.Literal(v, "output_format", in.OutputFormat, "jpeg", "jpeg", "png")
	}
	pipelines.Literal(v, "acceleration", in.Acceleration, "none", "none", "regular", "high")
	pipelines.Literal(v, "safety_checker_version", in.SafetyVersion, "v1", "v1", "v2")
	variant := ""
	if s.key == "fast-turbo-diffusion" {
		variant = pipelines.Literal(v, "model_name", in.ModelName, "stabilityai/sdxl-turbo", "stabilityai/sdxl-turbo", "stabilityai/sd-turbo")
	}
	sched := ""
	if in.Scheduler != nil {
		if c, ok := schedulers[*in.Scheduler]; ok && s.families[0] != Flux {
			sched = c
		} else {
			v.Add("scheduler", "literal_error", "Input should be one of: Euler, Euler A, DPM++ 2M, DPM++ 2M Karras, DDIM, LCM")
		}
	}
	if len(in.Loras) > 0 {
		v.Add("loras", "value_error", "LoRA weights are not supported by this local server; send an empty list")
	}
	if len(in.Embeddings) > 0 {
		v.Add("embeddings", "value_error", "textual-inversion embeddings are not supported by this local server; send an empty list")
	}
	if in.ExpandPrompt != nil && *in.ExpandPrompt {
		v.Add("expand_prompt", "value_error", "prompt expansion needs a language model, which does not run here; set it to false")
	}
	var width, height int
	if s.kind == "t2i" {
		width, height = parseSize(v, in.ImageSize, s.size)
	}
	strength := s.strength
	var imgURL, maskURL string
	if s.kind != "t2i" {
		imgURL = pipelines.Required(v, "image_url", in.ImageURL)
		if in.Strength != nil {
			strength = *in.Strength
			if !(strength > 0 && strength <= 1) {
				v.Add("strength", "value_error", "Input should be greater than 0 and at most 1")
			}
		}
	}
	if s.kind == "inpaint" {
		maskURL = pipelines.Required(v, "mask_url", in.MaskURL)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	m, err := e.p.model(s, variant)
	if err != nil {
		return nil, err
	}
	seed := int64(0)
	if in.Seed != nil {
		seed = *in.Seed
	} else {
		var b [8]byte
		crand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]) >> 33) // a positive int that JSON clients round-trip
	}
	j := Job{Prompt: prompt, Steps: steps, Guidance: guidance, NumImages: n, Scheduler: sched,
		Noise: NewSeededNoise(uint64(seed))}
	if m.Family != Flux {
		// fal's schemas default negative_prompt to "", which diffusers
		// encodes like any other string (it zeroes SDXL's unconditional
		// embeddings only for None, which a fal request cannot send)
		j.NegativeSet = true
		if in.NegativePrompt != nil {
			j.Negative = *in.NegativePrompt
		}
	}
	// The size the response has (outW×outH) and the size the model
	// generates at: the same, or the next size on the model's grid, cropped
	// (text-to-image) or resized (image-to-image) back.
	outW, outH := width, height
	chosen := in.ImageSize != nil && string(*in.ImageSize) != "null"
	var img *image.NRGBA
	if s.kind != "t2i" {
		if img, _, err = pipelines.LoadImage(ctx, req, e.p.deps.Config, "image_url", imgURL); err != nil {
			return nil, err
		}
		b := img.Bounds()
		outW, outH = b.Dx(), b.Dy()
		if outW < 64 || outH < 64 || outW > maxSide || outH > maxSide {
			return nil, pipelines.Invalid("image_url", fmt.Sprintf("the image is %d×%d; it must be between 64 and %d pixels on each side", outW, outH, maxSide))
		}
	}
	genW, genH, err := m.SizeFor(outW, outH, chosen)
	if err != nil {
		return nil, pipelines.Invalid("image_size", err.Error())
	}
	if s.kind == "t2i" && !chosen {
		outW, outH = genW, genH // a fixed-size model's own size
	}
	if work, limit := int64(steps)*int64(genW)*int64(genH)*int64(n), pipelines.Budget(e.p.deps.Config.MaxDiffusionWork, pipelines.DefaultMaxDiffusionWork); limit > 0 && work > limit {
		return nil, pipelines.Invalid("", fmt.Sprintf("%d step(s) × %d×%d pixels (the size %s generates at) × %d image(s) = %d pixel-steps, over this server's budget of %d pixel-steps; ask for fewer steps, images or pixels",
			steps, genW, genH, m.Name, n, work, limit))
	}
	if img != nil {
		j.Init = toNCHW(resize(img, genW, genH))
		j.Strength = strength
		if maskURL != "" {
			mimg, _, err := pipelines.LoadImage(ctx, req, e.p.deps.Config, "mask_url", maskURL)
			if err != nil {
				return nil, err
			}
			j.Mask = toMask(mimg, genW, genH)
		}
	}
	j.Width, j.Height = genW, genH
	if genW != outW || genH != outH {
		req.Logf(pipelines.Info, "%s runs %d×%d, not %d×%d: generating at %d×%d and %s", m.Name, genW, genH, outW, outH, genW, genH,
			map[bool]string{true: "cropping the centre", false: "resizing the result"}[s.kind == "t2i"])
	}
	final := func(px []float32) *image.NRGBA {
		return fit(toImage(px, genW, genH), outW, outH, s.kind == "t2i")
	}
	if m.Family == Flux && !s.guidance && m.Guidance {
		return nil, pipelines.Unavailable("the model serving "+s.id+" expects a guidance input (a FLUX dev export)", nil)
	}
	if in.SafetyChecker == nil || *in.SafetyChecker {
		req.Logf(pipelines.Warn, "enable_safety_checker: no safety checker model runs locally; has_nsfw_concepts is all false")
	}
	if in.Acceleration != nil && *in.Acceleration != "none" {
		req.Logf(pipelines.Info, "acceleration %q: this server runs one precision; the request runs as 'none'", *in.Acceleration)
	}
	hold, err := e.p.models.Hold(ctx, m.man)
	if err != nil {
		return nil, err
	}
	defer hold.Release()
	m = m.Held(hold)
	j.Progress = func(step, total int) { req.Logf(pipelines.Info, "step %d/%d", step, total) }
	if req.Partial != nil {
		// fal.stream: after each step, the current latents decoded, in the
		// final output's shape (images as JPEG data URIs)
		j.Preview = func(step, total int, imgs [][]float32) {
			p := Output{Seed: seed, Prompt: prompt, Timings: map[string]float64{}, HasNSFWConcepts: make([]bool, n)}
			for i, px := range imgs {
				f, err := pipelines.SaveImage(ctx, req, final(px), "jpeg", true, fmt.Sprintf("%s-%d-step%d", req.ID, i, step))
				if err != nil {
					return
				}
				p.Images = append(p.Images, f)
			}
			req.Partial(p)
		}
	}
	req.Logf(pipelines.Info, "%s (%s) %d×%d, %d step(s), %d image(s), seed %d", m.Name, m.Family, outW, outH, steps, n, seed)
	res, err := m.Generate(ctx, j)
	if err != nil {
		return nil, err
	}
	out := Output{Seed: seed, Prompt: prompt, Timings: map[string]float64{}, HasNSFWConcepts: make([]bool, n)}
	var total float64
	for k, t := range res.Timings {
		total += t
		out.Timings[k] = t
	}
	out.Timings["inference"] = total
	sync := pipelines.Bool(in.SyncMode, false)
	for i, px := range res.Images {
		f, err := pipelines.SaveImage(ctx, req, final(px), format, sync, fmt.Sprintf("%s-%d", req.ID, i))
		if err != nil {
			return nil, err
		}
		out.Images = append(out.Images, f)
	}
	return out, nil
}

// parseSize reads image_size: a preset name or {width, height}.
func parseSize(v *pipelines.ValidationError, raw *json.RawMessage, def string) (int, int) {
	if raw == nil || string(*raw) == "null" {
		p := presets[def]
		return p[0], p[1]
	}
	var name string
	if err := json.Unmarshal(*raw, &name); err == nil {
		p, ok := presets[name]
		if !ok {
			v.Add("image_size", "literal_error", "Input should be 'square_hd', 'square', 'portrait_4_3', 'portrait_16_9', 'landscape_4_3' or 'landscape_16_9', or {width, height}")
		}
		return p[0], p[1]
	}
	var wh struct {
		Width  *int `json:"width"`
		Height *int `json:"height"`
	}
	if err := json.Unmarshal(*raw, &wh); err != nil {
		v.Add("image_size", "model_type", "Input should be a preset name or an object {width, height} of integers")
		return 0, 0
	}
	w, h := 512, 512
	if wh.Width != nil {
		w = *wh.Width
	}
	if wh.Height != nil {
		h = *wh.Height
	}
	if w < 64 || h < 64 || w > maxSide || h > maxSide {
		v.Add("image_size", "value_error", fmt.Sprintf("width and height should be between 64 and %d", maxSide))
	}
	return w, h
}

// toNCHW maps RGB to [-1, 1] as diffusers' image processor does.
func toNCHW(img *image.NRGBA) []float32 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]float32, 3*h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := img.PixOffset(x+b.Min.X, y+b.Min.Y)
			for c := 0; c < 3; c++ {
				out[(c*h+y)*w+x] = float32(img.Pix[o+c])/255*2 - 1
			}
		}
	}
	return out
}

// resize scales img to w×h (Catmull-Rom); the same image when it has that size.
func resize(img *image.NRGBA, w, h int) *image.NRGBA {
	if img.Bounds().Dx() == w && img.Bounds().Dy() == h {
		return img
	}
	dst := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, img.Bounds(), draw.Src, nil)
	return dst
}

// fit brings a generated image to the requested w×h: its centre (crop) or
// the whole image resized.
func fit(img *image.NRGBA, w, h int, crop bool) *image.NRGBA {
	b := img.Bounds()
	if b.Dx() == w && b.Dy() == h {
		return img
	}
	if !crop {
		return resize(img, w, h)
	}
	x0, y0 := (b.Dx()-w)/2, (b.Dy()-h)/2
	return img.SubImage(image.Rect(x0, y0, x0+w, y0+h)).(*image.NRGBA)
}

// toMask reads a mask image as luma in [0, 1] (white = repaint), cropped or
// nearest-sampled to w×h.
func toMask(img *image.NRGBA, w, h int) []float32 {
	b := img.Bounds()
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		sy := b.Min.Y + y*b.Dy()/h
		for x := 0; x < w; x++ {
			o := img.PixOffset(b.Min.X+x*b.Dx()/w, sy)
			l := (uint32(img.Pix[o])*299 + uint32(img.Pix[o+1])*587 + uint32(img.Pix[o+2])*114) / 1000
			out[y*w+x] = float32(l) / 255
		}
	}
	return out
}

// toImage quantises NHWC [0, 1] to 8-bit as diffusers' numpy_to_pil does
// (×255, round half to even).
func toImage(px []float32, w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for p := 0; p < w*h; p++ {
		for c := 0; c < 3; c++ {
			img.Pix[p*4+c] = uint8(math.RoundToEven(float64(px[p*3+c]) * 255))
		}
		img.Pix[p*4+3] = 255
	}
	return img
}
