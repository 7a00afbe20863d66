package diffusion

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion/scheduler"
)

// sdText holds a prompt's conditioning for the UNet, one row per image.
type sdText struct {
	hidden []float32 // [rows, 77, D]
	pooled []float32 // SDXL: [rows, P]
	seq, d int
	p      int
}

// encodeCLIP runs one CLIP text encoder on a prompt and returns the hidden
// states the pipelines read: the last layer (SD) or the penultimate one
// (SDXL), plus the projected pooled embedding when the encoder has one.
func (m *Model) encodeCLIP(ctx context.Context, component string, second bool, prompt string, penultimate bool) (hidden []float32, seq, d int, pooled []float32, err error) {
	tok := m.clip
	if second {
		tok = m.clip2
	}
	ids := tokenIDs([][]int64{tok.EncodePadded(prompt, 77)})
	res, err := m.run(ctx, component, map[string]*tensorT{"input_ids": ids})
	if err != nil {
		return nil, 0, 0, nil, err
	}
	name := "last_hidden_state"
	if penultimate {
		// hidden_states.0 is the embedding layer, hidden_states.L the last
		n := 0
		for k := range res {
			if strings.HasPrefix(k, "hidden_states.") {
				n++
			}
		}
		if n < 2 {
			return nil, 0, 0, nil, fmt.Errorf("%s does not output hidden_states.* (export it with output_hidden_states)", component)
		}
		name = fmt.Sprintf("hidden_states.%d", n-2)
	}
	h := res[name]
	if hidden, err = f32(h); err != nil {
		return nil, 0, 0, nil, fmt.Errorf("%s %s: %w", component, name, err)
	}
	if len(h.Shape) != 3 {
		return nil, 0, 0, nil, fmt.Errorf("%s %s has shape %v", component, name, h.Shape)
	}
	if t, ok := res["text_embeds"]; ok {
		if pooled, err = f32(t); err != nil {
			return nil, 0, 0, nil, err
		}
	}
	return hidden, int(h.Shape[1]), int(h.Shape[2]), pooled, nil
}

// encodeSD returns a prompt's conditioning: CLIP's last hidden state (SD)
// or both encoders' penultimate states side by side and the second's
// pooled projection (SDXL). zero gives SDXL's all-zero unconditional input.
func (m *Model) encodeSD(ctx context.Context, prompt string, zero bool) (*sdText, error) {
	if m.Family == SD {
		h, seq, d, _, err := m.encodeCLIP(ctx, "text_encoder", false, prompt, false)
		if err != nil {
			return nil, err
		}
		return &sdText{hidden: h, seq: seq, d: d}, nil
	}
	h1, seq, d1, _, err := m.encodeCLIP(ctx, "text_encoder", false, prompt, true)
	if err != nil {
		return nil, err
	}
	h2, seq2, d2, pooled, err := m.encodeCLIP(ctx, "text_encoder_2", true, prompt, true)
	if err != nil {
		return nil, err
	}
	if seq2 != seq || pooled == nil {
		return nil, fmt.Errorf("text_encoder_2: sequence %d vs %d, pooled text_embeds present: %v", seq2, seq, pooled != nil)
	}
	t := &sdText{seq: seq, d: d1 + d2, p: len(pooled), pooled: pooled, hidden: make([]float32, seq*(d1+d2))}
	for s := 0; s < seq; s++ {
		copy(t.hidden[s*t.d:], h1[s*d1:(s+1)*d1])
		copy(t.hidden[s*t.d+d1:], h2[s*d2:(s+1)*d2])
	}
	if zero {
		clear(t.hidden)
		clear(t.pooled)
	}
	return t, nil
}

// repeat stacks n copies of v.
func repeat(v []float32, n int) []float32 {
	out := make([]float32, 0, len(v)*n)
	for i := 0; i < n; i++ {
		out = append(out, v...)
	}
	return out
}

// generateSD is diffusers' StableDiffusion(XL) pipeline, its img2img and its
// inpainting (the 4-channel UNet path: the known region is re-noised to each
// step's level and pasted back through the latent mask).
func (m *Model) generateSD(ctx context.Context, j Job) (*Result, error) {
	if j.Width%vaeFactor != 0 || j.Height%vaeFactor != 0 {
		return nil, fmt.Errorf("diffusion: %d×%d is not a multiple of 8", j.Width, j.Height)
	}
	t0 := time.Now()
	timings := map[string]float64{}
	B := j.NumImages
	// an LCM-distilled UNet takes the guidance scale as an embedding
	// (timestep_cond) instead of classifier-free guidance, as diffusers'
	// pipelines decide from time_cond_proj_dim
	cond, hasCond := m.sigs["unet"].input("timestep_cond")
	cfg := j.Guidance > 1 && !hasCond
	text, err := m.encodeSD(ctx, j.Prompt, false)
	if err != nil {
		return nil, err
	}
	var uncond *sdText
	if cfg {
		zero := m.Family == SDXL && !j.NegativeSet && m.forceZerosForEmptyPrompt()
		if uncond, err = m.encodeSD(ctx, j.Negative, zero); err != nil {
			return nil, err
		}
	}
	timings["text"] = since(t0)

	sched, err := m.newScheduler(j.Scheduler)
	if err != nil {
		return nil, err
	}
	if err := sched.SetTimesteps(j.Steps, scheduler.Options{}); err != nil {
		return nil, err
	}
	ts := sched.Timesteps()
	c, h, w := m.LatentChannels, j.Height/vaeFactor, j.Width/vaeFactor
	per := c * h * w
	start := 0
	var latents, imageLatents, noise, latentMask []float32
	switch {
	case j.Init == nil:
		latents = j.Noise.Normal(B * per)
		s := float32(sched.InitNoiseSigma())
		for i := range latents {
			latents[i] *= s
		}
	default:
		t1 := time.Now()
		// one image encoded once (one draw of the VAE's noise), its latents
		// repeated per output, as diffusers' prepare_latents does
		one, err := m.encode(ctx, j.Init, 1, j.Height, j.Width, j.Noise)
		if err != nil {
			return nil, err
		}
		imageLatents = repeat(one, B)
		timings["vae_encode"] = since(t1)
		start = sched.StartIndex(j.Strength)
		if start >= len(ts) {
			return nil, fmt.Errorf("diffusion: strength %.2f leaves no step to run", j.Strength)
		}
		noise = j.Noise.Normal(B * per)
		if j.Mask != nil && j.Strength >= 1 {
			latents = append([]float32(nil), noise...)
			s := float32(sched.InitNoiseSigma())
			for i := range latents {
				latents[i] *= s
			}
		} else {
			latents = sched.AddNoise(imageLatents, noise, start)
		}
		if j.Mask != nil {
			latentMask = downMask(j.Mask, j.Height, j.Width, h, w)
		}
	}

	// Conditioning for the batch: [uncond × B, cond × B] under guidance.
	rows := B
	if cfg {
		rows = 2 * B
	}
	var hidden, pooled, timeIDs []float32
	if cfg {
		hidden = append(repeat(uncond.hidden, B), repeat(text.hidden, B)...)
		pooled = append(repeat(uncond.pooled, B), repeat(text.pooled, B)...)
	} else {
		hidden, pooled = repeat(text.hidden, B), repeat(text.pooled, B)
	}
	var tcond []float32
	if hasCond {
		if cond.Rank() != 2 || cond.Dims[1] <= 0 {
			return nil, pipelines.Unavailable(fmt.Sprintf("diffusion model %s: unet timestep_cond has shape %s; want [batch, time_cond_proj_dim]", m.Name, declared(cond)), nil)
		}
		tcond = repeat(guidanceEmbedding(j.Guidance-1, int(cond.Dims[1])), rows)
	}
	if m.Family == SDXL {
		ids := []float32{float32(j.Height), float32(j.Width), 0, 0, float32(j.Height), float32(j.Width)}
		timeIDs = repeat(ids, rows)
	}

	t1 := time.Now()
	total := len(ts) - start
	for i := start; i < len(ts); i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		in := sched.ScaleModelInput(latents, i)
		if cfg {
			in = append(append([]float32(nil), in...), in...)
		}
		tstep := make([]float32, rows)
		for r := range tstep {
			tstep[r] = float32(ts[i])
		}
		feeds := map[string]*tensorT{
			"sample":                tensor(in, int64(rows), int64(c), int64(h), int64(w)),
			"timestep":              tensor(tstep, int64(rows)),
			"encoder_hidden_states": tensor(hidden, int64(rows), int64(text.seq), int64(text.d)),
		}
		if tcond != nil {
			feeds["timestep_cond"] = tensor(tcond, int64(rows), int64(len(tcond)/rows))
		}
		if m.Family == SDXL {
			feeds["text_embeds"] = tensor(pooled, int64(rows), int64(text.p))
			feeds["time_ids"] = tensor(timeIDs, int64(rows), 6)
		}
		res, err := m.run(ctx, "unet", feeds)
		if err != nil {
			return nil, err
		}
		pred, err := f32(res["out_sample"])
		if err != nil {
			return nil, fmt.Errorf("unet: %w", err)
		}
		if len(pred) != rows*per {
			return nil, fmt.Errorf("unet gave %d values, want %d", len(pred), rows*per)
		}
		if cfg {
			g := float32(j.Guidance)
			guided := make([]float32, B*per)
			for k := range guided {
				u, t := pred[k], pred[B*per+k]
				guided[k] = u + g*(t-u)
			}
			pred = guided
		}
		var stepNoise []float32
		if needsStepNoise(sched.Config().ClassName) && !(sched.Config().ClassName == "LCMScheduler" && i == len(ts)-1) {
			stepNoise = j.Noise.Normal(B * per)
		}
		latents = sched.Step(pred, latents, i, stepNoise)
		if latentMask != nil {
			known := imageLatents
			if i < len(ts)-1 {
				known = sched.AddNoise(imageLatents, noise, i+1)
			}
			for k := range latents {
				mk := latentMask[k%(h*w)]
				latents[k] = (1-mk)*known[k] + mk*latents[k]
			}
		}
		if j.StepLatents != nil {
			j.StepLatents(i, latents)
		}
		if j.Progress != nil {
			j.Progress(i-start+1, total)
		}
		if i < len(ts)-1 {
			if err := m.preview(ctx, j, i-start+1, total, latents, B, h, w); err != nil {
				return nil, err
			}
		}
	}
	timings["denoise"] = since(t1)
	t2 := time.Now()
	imgs, err := m.decode(ctx, latents, B, h, w)
	if err != nil {
		return nil, err
	}
	timings["vae"] = since(t2)
	return &Result{Images: imgs, Width: j.Width, Height: j.Height, Timings: timings}, nil
}

// guidanceEmbedding is diffusers' get_guidance_scale_embedding for one
// scale w: sin and cos of 1000·w over dim/2 geometric frequencies.
func guidanceEmbedding(w float64, dim int) []float32 {
	half := dim / 2
	out := make([]float32, dim)
	if half < 2 {
		return out
	}
	// torch computes it in float32
	step := float32(math.Log(10000)) / float32(half-1)
	ww := float32(w) * 1000
	for i := 0; i < half; i++ {
		f := float32(math.Exp(float64(float32(i) * -step)))
		a := float64(ww * f)
		out[i] = float32(math.Sin(a))
		out[half+i] = float32(math.Cos(a))
	}
	return out
}

// needsStepNoise reports schedulers whose step draws fresh noise.
func needsStepNoise(class string) bool {
	return class == "EulerAncestralDiscreteScheduler" || class == "LCMScheduler"
}

// forceZerosForEmptyPrompt reads SDXL's model_index.json switch (default true).
func (m *Model) forceZerosForEmptyPrompt() bool {
	if !m.has("model_index.json") {
		return true
	}
	var idx struct {
		Force *bool `json:"force_zeros_for_empty_prompt"`
	}
	if err := m.readJSON("model_index.json", &idx); err != nil || idx.Force == nil {
		return true
	}
	return *idx.Force
}

// downMask binarises a pixel mask (≥ 0.5 repaints) and samples it to the
// latent grid the way torch's nearest interpolation does.
func downMask(mask []float32, H, W, h, w int) []float32 {
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		sy := y * H / h
		for x := 0; x < w; x++ {
			if mask[sy*W+x*W/w] >= 0.5 {
				out[y*w+x] = 1
			}
		}
	}
	return out
}
