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
	"sort"
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

// Describe documents the endpoint from its spec: the fields of its fal
// schema with its defaults and bounds.
func (e *endpoint) Describe() pipelines.Description {
	s := e.spec
	img := func(name, title, what string) pipelines.Field {
		return pipelines.Field{Name: name, Type: pipelines.String, Title: title, Required: true, Media: "image",
			Description: what + ": an http(s) URL this server may read (its own file URLs, allow-listed hosts) or a data: URI."}
	}
	fs := []pipelines.Field{{Name: "prompt", Type: pipelines.String, Required: true, Description: "What to generate.",
		Examples: []any{"a photo of a red fox in the snow, golden hour"}}}
	if s.sdxlFields {
		fs = append(fs, pipelines.Field{Name: "negative_prompt", Type: pipelines.String, Default: "",
			Description: "What the image should not show."})
	}
	switch s.kind {
	case "t2i":
		names := make([]string, 0, len(presets))
		for n := range presets {
			names = append(names, n)
		}
		sort.Strings(names)
		fs = append(fs, pipelines.Field{Name: "image_size", Default: s.size, Nullable: true,
			Description: "The size of the image: a preset name or {width, height} (64 to " + fmt.Sprint(maxSide) + " on each side); a model exported at a fixed size runs at that size only.",
			AnyOf:       []map[string]any{{"type": "string", "enum": names}, {"$ref": "#/components/schemas/ImageSize"}}})
	case "i2i":
		fs = append(fs, img("image_url", "Image", "The image to start from"))
	case "inpaint":
		fs = append(fs, img("image_url", "Image", "The image to paint into"), img("mask_url", "Mask", "White where the image is painted, black where it is kept"))
	}
	if s.kind != "t2i" {
		fs = append(fs, pipelines.Field{Name: "strength", Type: pipelines.Number, Default: s.strength, Min: pipelines.Num(0), MinExclusive: true, Max: pipelines.Num(1),
			Description: "How much the image changes: 1 ignores it, near 0 keeps it."})
	}
	fs = append(fs,
		pipelines.Field{Name: "num_inference_steps", Type: pipelines.Integer, Default: s.steps, Min: pipelines.Num(1), Max: pipelines.Num(float64(s.maxSteps)),
			Description: "Denoising steps: more is slower and often finer."},
		pipelines.Field{Name: "seed", Type: pipelines.Integer, Nullable: true,
			Description: "The same seed, prompt and settings give the same image; none picks one at random (returned as seed)."},
		pipelines.Field{Name: "guidance_scale", Type: pipelines.Number, Default: s.cfg, Min: pipelines.Num(0), Max: pipelines.Num(20),
			Description: "How closely the image follows the prompt."},
		pipelines.Field{Name: "num_images", Type: pipelines.Integer, Default: 1, Min: pipelines.Num(1), Max: pipelines.Num(float64(s.maxImages)),
			Description: "How many images to generate."})
	if s.key == "fast-turbo-diffusion" {
		fs = append(fs, pipelines.Field{Name: "model_name", Type: pipelines.String, Enum: []string{"stabilityai/sdxl-turbo", "stabilityai/sd-turbo"},
			Default: "stabilityai/sdxl-turbo", Description: "Which distilled model; each needs its model installed on this server."})
	}
	if s.sdxlFields {
		names := make([]string, 0, len(schedulers))
		for n := range schedulers {
			names = append(names, n)
		}
		sort.Strings(names)
		fs = append(fs,
			pipelines.Field{Name: "format", Type: pipelines.String, Enum: []string{"jpeg", "png"}, Default: "jpeg", Description: "The format of the images."},
			pipelines.Field{Name: "scheduler", Type: pipelines.String, Enum: names, Nullable: true, Advanced: true,
				Description: "The sampler; none uses the model's own."},
			pipelines.Field{Name: "loras", Type: pipelines.Array, Default: []any{}, Advanced: true, Items: &pipelines.Field{Type: pipelines.Object},
				Description: "LoRA weights; not supported by this server, send an empty list."},
			pipelines.Field{Name: "embeddings", Type: pipelines.Array, Default: []any{}, Advanced: true, Items: &pipelines.Field{Type: pipelines.Object},
				Description: "Textual-inversion embeddings; not supported by this server, send an empty list."},
			pipelines.Field{Name: "expand_prompt", Type: pipelines.Boolean, Default: false, Advanced: true,
				Description: "Expand the prompt with a language model; not available on this server."},
			pipelines.Field{Name: "safety_checker_version", Type: pipelines.String, Enum: []string{"v1", "v2"}, Default: "v1", Advanced: true,
				Description: "fal's safety checker version; this server runs no safety checker."})
	} else {
		fs = append(fs, pipelines.Field{Name: "output_format", Type: pipelines.String, Enum: []string{"jpeg", "png"}, Default: "jpeg",
			Description: "The format of the images."})
	}
	fs = append(fs,
		pipelines.Field{Name: "acceleration", Type: pipelines.String, Enum: []string{"none", "regular", "high"}, Default: "none", Advanced: true,
			Description: "fal's speed-for-quality trade; the same computation here."},
		pipelines.Field{Name: "enable_safety_checker", Type: pipelines.Boolean, Default: true, Advanced: true,
			Description: "fal's NSFW checker; this server runs none and reports has_nsfw_concepts false."},
		pipelines.Field{Name: "sync_mode", Type: pipelines.Boolean, Default: false, Advanced: true,
			Description: "Return the images as data URIs in the response instead of file URLs on this server."})
	titles := map[string]string{"t2i": "text to image", "i2i": "image to image", "inpaint": "inpainting"}
	cat := map[string]string{"t2i": "text-to-image", "i2i": "image-to-image", "inpaint": "image-to-image"}[s.kind]
	return pipelines.Description{Title: s.key + ", " + titles[s.kind], Category: cat,
		Summary: "Generates images with " + s.key + " (" + titles[s.kind] + ") from an installed diffusers ONNX export.",
		Input: pipelines.Schema{Fields: fs, Components: map[string]map[string]any{"ImageSize": {
			"type": "object", "title": "ImageSize", "required": []string{"width", "height"},
			"properties": map[string]any{
				"width":  map[string]any{"type": "integer", "minimum": 64, "maximum": maxSide, "default": 512},
				"height": map[string]any{"type": "integer", "minimum": 64, "maximum": maxSide, "default": 512},
			}}}},
		Output: Output{}}
}

func (e *endpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	given, err := e.Describe().Input.Decode(req.Input, &in)
	if err != nil {
		return nil, err
	}
	s := e.spec
	v := &pipelines.ValidationError{}
	prompt, steps, guidance, n := *in.Prompt, *in.Steps, *in.Guidance, *in.NumImages
	format := ""
	if s.sdxlFields {
		format = *in.Format
	} else {
		format = *in.OutputFormat
	}
	variant := ""
	if s.key == "fast-turbo-diffusion" {
		variant = *in.ModelName
	}
	sched := ""
	if s.sdxlFields && in.Scheduler != nil {
		sched = schedulers[*in.Scheduler]
	}
	if len(in.Loras) > 0 {
		v.Add("loras", "value_error", "LoRA weights are not supported by this local server; send an empty list")
	}
	if len(in.Embeddings) > 0 {
		v.Add("embeddings", "value_error", "textual-inversion embeddings are not supported by this local server; send an empty list")
	}
	if s.sdxlFields && *in.ExpandPrompt {
		v.Add("expand_prompt", "value_error", "prompt expansion needs a language model, which does not run here; set it to false")
	}
	var width, height int
	if s.kind == "t2i" {
		width, height = parseSize(v, in.ImageSize, s.size)
	}
	var imgURL, maskURL string
	strength := s.strength
	if s.kind != "t2i" {
		imgURL, strength = *in.ImageURL, *in.Strength
	}
	if s.kind == "inpaint" {
		maskURL = *in.MaskURL
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
	chosen := given["image_size"] && in.ImageSize != nil
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
