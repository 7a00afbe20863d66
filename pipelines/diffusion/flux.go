package diffusion

import (
	"context"
	"fmt"
	"time"

	"github.com/falocal/falocal/pipelines/diffusion/scheduler"
)

// FLUX.1 (dev and schnell) as diffusers 0.36's FluxPipeline and
// FluxImg2ImgPipeline compute it: CLIP-L's pooled output and T5's hidden
// states condition a transformer that works on 2×2-packed latents; no
// classifier-free guidance (dev takes the guidance scale as an input).

// fluxCLIPLen is FluxPipeline's tokenizer_max_length (CLIP-L's 77 positions).
const fluxCLIPLen = 77

// fluxTrace observes a FLUX run (tests compare it with diffusers' records);
// it travels in its Job so concurrent jobs cannot see each other's.
type fluxTrace struct {
	call func(component string, feeds map[string]*tensorT) // before each text encoder/transformer call
	step func(i int, latents []float32)                    // packed latents after step i (absolute index)
}

func (m *Model) generateFlux(ctx context.Context, j Job) (*Result, error) {
	if j.Mask != nil {
		return nil, fmt.Errorf("diffusion: FLUX inpainting is not supported")
	}
	if j.Width <= 0 || j.Height <= 0 || j.Width%(2*vaeFactor) != 0 || j.Height%(2*vaeFactor) != 0 {
		// Packing needs even latent sides; diffusers would silently crop.
		return nil, fmt.Errorf("diffusion: FLUX needs width and height that are multiples of %d, got %d×%d", 2*vaeFactor, j.Width, j.Height)
	}
	if j.Steps < 1 {
		return nil, fmt.Errorf("diffusion: %d steps", j.Steps)
	}
	trace := j.fluxTrace
	B := j.NumImages
	C := m.LatentChannels
	h, w := j.Height/vaeFactor, j.Width/vaeFactor
	N := (h / 2) * (w / 2) // packed sequence length
	D := C * 4
	timings := map[string]float64{}

	t0 := time.Now()
	pooled, pooledDim, t5, T, t5Dim, err := m.fluxText(ctx, j.Prompt, trace)
	if err != nil {
		return nil, err
	}
	timings["text"] = since(t0)

	s, err := m.newScheduler(j.Scheduler)
	if err != nil {
		return nil, err
	}
	if s.Config().ClassName != scheduler.ClassFlowMatch {
		return nil, fmt.Errorf("diffusion: FLUX needs %s, not %s", scheduler.ClassFlowMatch, s.Config().ClassName)
	}
	// mu comes from the packed token count; the scheduler ignores it
	// unless the config shifts dynamically (dev), as diffusers does.
	if err := s.SetTimesteps(j.Steps, scheduler.Options{ImageSeqLen: N}); err != nil {
		return nil, err
	}
	ts := s.Timesteps()

	start := 0
	var latents []float32 // packed [B, N, D]
	if j.Init != nil {
		start = s.StartIndex(j.Strength)
		if start >= len(ts) {
			return nil, fmt.Errorf("diffusion: strength %g leaves no step of %d", j.Strength, j.Steps)
		}
		tv := time.Now()
		per := 3 * j.Height * j.Width
		n := len(j.Init) / per
		if n < 1 || n*per != len(j.Init) || (B%n != 0) {
			return nil, fmt.Errorf("diffusion: init image has %d values, not a whole number of %d×%d images dividing %d", len(j.Init), j.Width, j.Height, B)
		}
		// The VAE draws its sampling noise first, one draw per encoded
		// image; the batch then repeats the image latents.
		img, err := m.encode(ctx, j.Init, n, j.Height, j.Width, j.Noise)
		if err != nil {
			return nil, err
		}
		timings["vae_encode"] = since(tv)
		imgLat := make([]float32, 0, B*C*h*w)
		for len(imgLat) < B*C*h*w {
			imgLat = append(imgLat, img...)
		}
		noise := j.Noise.Normal(B * C * h * w)
		latents = fluxPack(s.AddNoise(imgLat, noise, start), B, C, h, w)
	} else {
		// prepare_latents draws the unpacked shape, then packs.
		latents = fluxPack(j.Noise.Normal(B*C*h*w), B, C, h, w)
	}

	// Text embeddings are the same for every image of the batch.
	feeds := map[string]*tensorT{
		"encoder_hidden_states": tensor(repeat(t5, B), int64(B), int64(T), int64(t5Dim)),
		"pooled_projections":    tensor(repeat(pooled, B), int64(B), int64(pooledDim)),
		"img_ids":               tensor(fluxImageIDs(h/2, w/2), int64(N), 3),
		"txt_ids":               tensor(make([]float32, T*3), int64(T), 3),
	}
	if m.Guidance {
		feeds["guidance"] = tensor(repeat([]float32{float32(j.Guidance)}, B), int64(B))
	}

	td := time.Now()
	total := len(ts) - start
	for i := start; i < len(ts); i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// diffusers feeds timestep/1000 in float32 (sigma, up to rounding).
		feeds["timestep"] = tensor(repeat([]float32{float32(ts[i]) / 1000}, B), int64(B))
		feeds["hidden_states"] = tensor(latents, int64(B), int64(N), int64(D))
		if trace != nil && trace.call != nil {
			trace.call("transformer", feeds)
		}
		res, err := m.run(ctx, "transformer", feeds)
		if err != nil {
			return nil, err
		}
		out := res["out_hidden_states"]
		if out == nil && len(res) == 1 {
			for _, v := range res {
				out = v
			}
		}
		pred, err := f32(out)
		if err != nil {
			return nil, fmt.Errorf("transformer: %w", err)
		}
		if len(pred) != len(latents) {
			return nil, fmt.Errorf("transformer gave %d values, want %d", len(pred), len(latents))
		}
		latents = s.Step(pred, latents, i, nil)
		if trace != nil && trace.step != nil {
			trace.step(i, latents)
		}
		if j.Progress != nil {
			j.Progress(i-start+1, total)
		}
		if i < len(s.Timesteps())-1 && j.Preview != nil {
			if err := m.preview(ctx, j, i-start+1, total, fluxUnpack(latents, B, C, h, w), B, h, w); err != nil {
				return nil, err
			}
		}
	}
	timings["denoise"] = since(td)

	tv := time.Now()
	images, err := m.decode(ctx, fluxUnpack(latents, B, C, h, w), B, h, w)
	if err != nil {
		return nil, err
	}
	timings["vae"] = since(tv)
	return &Result{Images: images, Width: j.Width, Height: j.Height, Timings: timings}, nil
}

// fluxText runs both text encoders on one prompt: CLIP's pooled output
// [pooledDim] and T5's last hidden state [T, t5Dim]. diffusers encodes the
// prompt once and repeats it per image, so the batch rows are copies.
func (m *Model) fluxText(ctx context.Context, prompt string, trace *fluxTrace) (pooled []float32, pooledDim int, t5 []float32, T, t5Dim int, err error) {
	ids := tokenIDs([][]int64{m.clip.EncodePadded(prompt, fluxCLIPLen)})
	feeds := map[string]*tensorT{"input_ids": ids}
	if trace != nil && trace.call != nil {
		trace.call("text_encoder", feeds)
	}
	res, err := m.run(ctx, "text_encoder", feeds)
	if err != nil {
		return nil, 0, nil, 0, 0, err
	}
	if pooled, err = f32(res["pooler_output"]); err != nil {
		return nil, 0, nil, 0, 0, fmt.Errorf("text_encoder: pooler_output: %w", err)
	}

	T = m.t5MaxLen()
	ids = tokenIDs([][]int64{m.t5.EncodePadded(prompt, T)})
	feeds = map[string]*tensorT{"input_ids": ids}
	if trace != nil && trace.call != nil {
		trace.call("text_encoder_2", feeds)
	}
	res, err = m.run(ctx, "text_encoder_2", feeds)
	if err != nil {
		return nil, 0, nil, 0, 0, err
	}
	if t5, err = f32(res["last_hidden_state"]); err != nil {
		return nil, 0, nil, 0, 0, fmt.Errorf("text_encoder_2: last_hidden_state: %w", err)
	}
	if len(t5) == 0 || len(t5)%T != 0 || len(pooled) == 0 {
		return nil, 0, nil, 0, 0, fmt.Errorf("diffusion model %s: text encoders gave %d pooled and %d T5 values", m.Name, len(pooled), len(t5))
	}
	return pooled, len(pooled), t5, T, len(t5) / T, nil
}

// t5MaxLen is the T5 sequence length: the tokenizer's model_max_length
// when the export ships it (512 for dev, 256 for schnell, the lengths
// they were trained with), else those defaults; FluxPipeline caps it at 512.
func (m *Model) t5MaxLen() int {
	n := 256
	if m.Guidance {
		n = 512
	}
	if m.has("tokenizer_2/tokenizer_config.json") {
		var tc struct {
			ModelMaxLength float64 `json:"model_max_length"`
		}
		// Absent or huge (transformers' "no limit" 1e30) keeps the default.
		if m.readJSON("tokenizer_2/tokenizer_config.json", &tc) == nil && tc.ModelMaxLength >= 1 && tc.ModelMaxLength <= 512 {
			n = int(tc.ModelMaxLength)
		}
	}
	return n
}

// fluxPack is FluxPipeline._pack_latents: [B, C, h, w] → [B, (h/2)(w/2),
// C·4], each token the 2×2 patch of every channel (channel-major).
func fluxPack(x []float32, B, C, h, w int) []float32 {
	out := make([]float32, len(x))
	h2, w2 := h/2, w/2
	k := 0
	for b := 0; b < B; b++ {
		for y := 0; y < h2; y++ {
			for xx := 0; xx < w2; xx++ {
				for c := 0; c < C; c++ {
					for dy := 0; dy < 2; dy++ {
						row := ((b*C+c)*h + 2*y + dy) * w
						out[k] = x[row+2*xx]
						out[k+1] = x[row+2*xx+1]
						k += 2
					}
				}
			}
		}
	}
	return out
}

// fluxUnpack is FluxPipeline._unpack_latents, the inverse of fluxPack.
func fluxUnpack(p []float32, B, C, h, w int) []float32 {
	out := make([]float32, len(p))
	h2, w2 := h/2, w/2
	k := 0
	for b := 0; b < B; b++ {
		for y := 0; y < h2; y++ {
			for xx := 0; xx < w2; xx++ {
				for c := 0; c < C; c++ {
					for dy := 0; dy < 2; dy++ {
						row := ((b*C+c)*h + 2*y + dy) * w
						out[row+2*xx] = p[k]
						out[row+2*xx+1] = p[k+1]
						k += 2
					}
				}
			}
		}
	}
	return out
}

// fluxImageIDs is _prepare_latent_image_ids: (0, row, col) per packed token.
func fluxImageIDs(h2, w2 int) []float32 {
	ids := make([]float32, 0, h2*w2*3)
	for y := 0; y < h2; y++ {
		for x := 0; x < w2; x++ {
			ids = append(ids, 0, float32(y), float32(x))
		}
	}
	return ids
}
