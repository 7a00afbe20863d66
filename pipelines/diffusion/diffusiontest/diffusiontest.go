// Package diffusiontest writes tiny stand-ins for diffusers ONNX exports
// (optimum's layout: model_index.json, scheduler/, tokenizer*/,
// text_encoder*/, unet/ or transformer/, vae_decoder/, vae_encoder/) with
// the variations real exports have: scalar or per-row, int64 or float
// timesteps, FLUX ids in either dtype and rank, optional inputs, fixed or
// dynamic spatial sizes, graphs that declare dynamic sizes but run only at
// one, ONNX Runtime contrib operators, external data and float16 weights.
//
// The graphs are cheap but not trivial: every output depends on every
// input, shapes follow the inputs, per-row inputs must match the batch of
// the main input, and values stay in a sane range (the VAE decoder's
// output lies in (-1, 1)), so that a pipeline that feeds a wrong value,
// dtype or shape gets a different image or an error.
package diffusiontest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Family is the network layout written.
type Family string

// The families.
const (
	SD   Family = "sd"   // one CLIP encoder, a UNet
	SDXL Family = "sdxl" // two CLIP encoders (the second with a projection), a UNet with text_embeds and time_ids
	Flux Family = "flux" // CLIP (pooled) and T5 encoders, a transformer on 2×2-packed latents
)

// Sizes of the stub networks.
const (
	TextDim      = 8  // CLIP hidden size (both SDXL encoders too) and T5's
	PooledDim    = 8  // SDXL's text_embeds, FLUX's pooled_projections
	SDChannels   = 4  // SD/SDXL latent channels
	FluxChannels = 16 // FLUX latent channels; packed 2×2 they are 64 per token
	FluxPacked   = 4 * FluxChannels
	T5MaxLength  = 16 // tokenizer_2/tokenizer_config.json's model_max_length (FLUX)
	CLIPLength   = 77 // CLIP's model_max_length
	// TimeIDs is the width of SDXL's time_ids (original size, crop, target size).
	TimeIDs = 6
)

// Contrib operators ContribOp may name: FastGelu has a CPU kernel in
// ONNX Runtime, GroupNorm and BiasSplitGelu only CUDA ones.
const (
	FastGelu      = "FastGelu"
	GroupNorm     = "GroupNorm"
	BiasSplitGelu = "BiasSplitGelu"
)

// Options selects the family and the variations of an export. The zero
// value of every field but Family is the layout of optimum's current
// exports (and of testdata/models): float32 [batch] timestep, float32
// [n, 3] ids, dynamic sizes, weights inline.
type Options struct {
	Family Family
	// Guidance (FLUX): the transformer has a `guidance` [batch] input and
	// guidance_embeds in its config (dev); the scheduler config is dev's.
	Guidance bool
	// TimestepScalar: timestep is declared rank 0 (optimum's stock UNet),
	// else [batch]. A scalar broadcasts over any batch; a [batch] timestep
	// must have the batch of sample (hidden_states).
	TimestepScalar bool
	// TimestepInt64: timestep is declared int64 (older optimum), else float.
	TimestepInt64 bool
	// IDsInt64 (FLUX): img_ids and txt_ids are int64 (optimum), else float.
	IDsInt64 bool
	// IDsBatched (FLUX): ids are [batch, n, 3] (older diffusers), else [n, 3].
	IDsBatched bool
	// TimestepCond > 0 (SD/SDXL): the UNet has a `timestep_cond`
	// [batch, TimestepCond] input (LCM-distilled) and time_cond_proj_dim in
	// its config.
	TimestepCond int
	// FixedSize is a width and height in pixels: the spatial dimensions of
	// the UNet's sample/out_sample, the transformer's hidden_states,
	// img_ids and out_hidden_states, and the VAE's inputs and outputs are
	// declared with these static sizes. Batch stays dynamic.
	FixedSize [2]int
	// RunsOnlyAt is a width and height in pixels: dimensions stay declared
	// dynamic, but the UNet (transformer) reshapes its input to a constant
	// baked from this size, as traced rotary embeddings do, so it fails at
	// any other size. The VAE and text encoders run at any size.
	RunsOnlyAt [2]int
	// ContribOp, when set, puts that com.microsoft operator (FastGelu,
	// GroupNorm or BiasSplitGelu) in the UNet (transformer), on a small
	// side path that changes out_sample by about 1e-3.
	ContribOp string
	// NoVAEConfig leaves out vae_decoder/config.json and
	// vae_encoder/config.json (old diffusers `onnx` folders).
	NoVAEConfig bool
	// ExternalData writes each model.onnx's weights to model.onnx_data
	// beside it (ONNX external data, location relative), or to
	// ExternalDataName when set (diffusers' own exports use weights.pb).
	ExternalData     bool
	ExternalDataName string
	// FP16 stores weights as float16 and declares every float input and
	// output float16 (timestep and ids too, when float); the graphs compute
	// in float32 between Casts.
	FP16 bool
}

// LatentChannels is the VAE's latent channel count for the family.
func (o Options) LatentChannels() int {
	if o.Family == Flux {
		return FluxChannels
	}
	return SDChannels
}

// VAEScale and VAEShift are the scaling_factor and shift_factor written to
// the VAE config (shift 0 outside FLUX).
func (o Options) VAEScale() float64 {
	switch o.Family {
	case SDXL:
		return 0.13025
	case Flux:
		return 0.3611
	}
	return 0.18215
}

// VAEShift is FLUX's shift_factor, 0 for SD/SDXL.
func (o Options) VAEShift() float64 {
	if o.Family == Flux {
		return 0.1159
	}
	return 0
}

// Components lists the ONNX components written, each as <name>/model.onnx.
func (o Options) Components() []string {
	switch o.Family {
	case SD:
		return []string{"text_encoder", "unet", "vae_decoder", "vae_encoder"}
	case SDXL:
		return []string{"text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"}
	}
	return []string{"text_encoder", "text_encoder_2", "transformer", "vae_decoder", "vae_encoder"}
}

func (o Options) check() error {
	switch o.Family {
	case SD, SDXL, Flux:
	default:
		return fmt.Errorf("diffusiontest: family %q (want sd, sdxl or flux)", o.Family)
	}
	if o.Family != Flux && (o.Guidance || o.IDsInt64 || o.IDsBatched) {
		return fmt.Errorf("diffusiontest: Guidance, IDsInt64 and IDsBatched are FLUX options")
	}
	if o.TimestepCond < 0 || (o.Family == Flux && o.TimestepCond > 0) {
		return fmt.Errorf("diffusiontest: TimestepCond %d (a positive width, SD/SDXL only)", o.TimestepCond)
	}
	step := 8
	if o.Family == Flux {
		step = 16 // even latent sides, for 2×2 packing
	}
	for _, s := range []struct {
		name string
		v    [2]int
	}{{"FixedSize", o.FixedSize}, {"RunsOnlyAt", o.RunsOnlyAt}} {
		if s.v == [2]int{} {
			continue
		}
		if s.v[0] <= 0 || s.v[1] <= 0 || s.v[0]%step != 0 || s.v[1]%step != 0 {
			return fmt.Errorf("diffusiontest: %s %v: width and height must be positive multiples of %d", s.name, s.v, step)
		}
	}
	if o.FixedSize != [2]int{} && o.RunsOnlyAt != [2]int{} {
		return fmt.Errorf("diffusiontest: FixedSize and RunsOnlyAt exclude each other")
	}
	switch o.ContribOp {
	case "", FastGelu, GroupNorm, BiasSplitGelu:
	default:
		return fmt.Errorf("diffusiontest: contrib op %q (want FastGelu, GroupNorm or BiasSplitGelu)", o.ContribOp)
	}
	return nil
}

// Write writes a complete export for o into dir (created if needed), as
// diffusion.LoadModel reads it.
func Write(dir string, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	w := &writer{dir: dir, o: o}
	w.json("model_index.json", modelIndex(o))
	w.json("scheduler/scheduler_config.json", schedulerConfig(o))
	w.clipTokenizer("tokenizer", "<|endoftext|>")
	w.json("text_encoder/config.json", textConfig("CLIPTextModel", TextDim))
	switch o.Family {
	case SD, SDXL:
		if o.Family == SDXL {
			w.clipTokenizer("tokenizer_2", "!")
			w.json("text_encoder_2/config.json", textConfig("CLIPTextModelWithProjection", TextDim))
		}
		w.json("unet/config.json", unetConfig(o))
	case Flux:
		w.t5Tokenizer("tokenizer_2")
		w.json("text_encoder_2/config.json", textConfig("T5EncoderModel", TextDim))
		w.json("transformer/config.json", transformerConfig(o))
	}
	if !o.NoVAEConfig {
		w.json("vae_decoder/config.json", vaeConfig(o))
		w.json("vae_encoder/config.json", vaeConfig(o))
	}
	for _, c := range o.Components() {
		w.model(c, build(o, c))
	}
	return w.err
}

type writer struct {
	dir string
	o   Options
	err error
}

func (w *writer) path(name string) string {
	p := filepath.Join(w.dir, filepath.FromSlash(name))
	if w.err == nil {
		w.err = os.MkdirAll(filepath.Dir(p), 0o755)
	}
	return p
}

func (w *writer) file(name string, b []byte) {
	p := w.path(name)
	if w.err == nil {
		w.err = os.WriteFile(p, b, 0o644)
	}
}

func (w *writer) json(name string, v any) { w.file(name, jsonNoEscape(v)) }

// orderedMap keeps keys in the order given, as diffusers' configs do.
type orderedMap []kv

type kv struct {
	k string
	v any
}

func (m orderedMap) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, e := range m {
		if i > 0 {
			b = append(b, ',')
		}
		k, err := json.Marshal(e.k)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

func modelIndex(o Options) orderedMap {
	lib := func(l, c string) []string { return []string{l, c} }
	switch o.Family {
	case SD:
		return orderedMap{
			{"_class_name", "StableDiffusionPipeline"}, {"_diffusers_version", "0.36.0"},
			{"feature_extractor", []any{nil, nil}}, {"requires_safety_checker", false}, {"safety_checker", []any{nil, nil}},
			{"scheduler", lib("diffusers", "EulerDiscreteScheduler")},
			{"text_encoder", lib("transformers", "CLIPTextModel")},
			{"tokenizer", lib("transformers", "CLIPTokenizer")},
			{"unet", lib("diffusers", "UNet2DConditionModel")},
			{"vae", lib("diffusers", "AutoencoderKL")},
		}
	case SDXL:
		return orderedMap{
			{"_class_name", "StableDiffusionXLPipeline"}, {"_diffusers_version", "0.36.0"},
			{"force_zeros_for_empty_prompt", true},
			{"scheduler", lib("diffusers", "EulerDiscreteScheduler")},
			{"text_encoder", lib("transformers", "CLIPTextModel")},
			{"text_encoder_2", lib("transformers", "CLIPTextModelWithProjection")},
			{"tokenizer", lib("transformers", "CLIPTokenizer")},
			{"tokenizer_2", lib("transformers", "CLIPTokenizer")},
			{"unet", lib("diffusers", "UNet2DConditionModel")},
			{"vae", lib("diffusers", "AutoencoderKL")},
		}
	}
	return orderedMap{
		{"_class_name", "FluxPipeline"}, {"_diffusers_version", "0.36.0"},
		{"scheduler", lib("diffusers", "FlowMatchEulerDiscreteScheduler")},
		{"text_encoder", lib("transformers", "CLIPTextModel")},
		{"text_encoder_2", lib("transformers", "T5EncoderModel")},
		{"tokenizer", lib("transformers", "CLIPTokenizer")},
		{"tokenizer_2", lib("transformers", "T5TokenizerFast")},
		{"transformer", lib("diffusers", "FluxTransformer2DModel")},
		{"vae", lib("diffusers", "AutoencoderKL")},
	}
}

func schedulerConfig(o Options) orderedMap {
	if o.Family == Flux {
		shift, dynamic := 1.0, false // schnell
		if o.Guidance {
			shift, dynamic = 3.0, true // dev
		}
		return orderedMap{
			{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"_diffusers_version", "0.36.0"},
			{"base_image_seq_len", 256}, {"base_shift", 0.5}, {"max_image_seq_len", 4096}, {"max_shift", 1.15},
			{"num_train_timesteps", 1000}, {"shift", shift}, {"use_dynamic_shifting", dynamic},
		}
	}
	return orderedMap{
		{"_class_name", "EulerDiscreteScheduler"}, {"_diffusers_version", "0.36.0"},
		{"beta_end", 0.012}, {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},
		{"clip_sample", false}, {"interpolation_type", "linear"}, {"num_train_timesteps", 1000},
		{"prediction_type", "epsilon"}, {"sample_max_value", 1.0}, {"set_alpha_to_one", false},
		{"skip_prk_steps", true}, {"steps_offset", 1}, {"timestep_spacing", "leading"},
		{"trained_betas", nil}, {"use_karras_sigmas", false},
	}
}

func textConfig(class string, d int) orderedMap {
	return orderedMap{{"architectures", []string{class}}, {"hidden_size", d}, {"num_hidden_layers", 2}}
}

func unetConfig(o Options) orderedMap {
	cross := TextDim
	var addition, addTime, projDim any
	if o.Family == SDXL {
		cross = 2 * TextDim
		addition, addTime, projDim = "text_time", 256, PooledDim+TimeIDs*256
	}
	var cond any
	if o.TimestepCond > 0 {
		cond = o.TimestepCond
	}
	size := 8
	if o.FixedSize != [2]int{} {
		size = o.FixedSize[1] / 8
	}
	return orderedMap{
		{"_class_name", "UNet2DConditionModel"}, {"_diffusers_version", "0.36.0"},
		{"addition_embed_type", addition}, {"addition_time_embed_dim", addTime},
		{"cross_attention_dim", cross}, {"in_channels", SDChannels}, {"out_channels", SDChannels},
		{"projection_class_embeddings_input_dim", projDim}, {"sample_size", size}, {"time_cond_proj_dim", cond},
	}
}

func transformerConfig(o Options) orderedMap {
	return orderedMap{
		{"_class_name", "FluxTransformer2DModel"}, {"_diffusers_version", "0.36.0"},
		{"attention_head_dim", 8}, {"axes_dims_rope", []int{2, 2, 4}}, {"guidance_embeds", o.Guidance},
		{"in_channels", FluxPacked}, {"joint_attention_dim", TextDim}, {"num_attention_heads", 1},
		{"num_layers", 1}, {"num_single_layers", 1}, {"out_channels", nil}, {"patch_size", 1},
		{"pooled_projection_dim", PooledDim},
	}
}

func vaeConfig(o Options) orderedMap {
	m := orderedMap{
		{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.36.0"},
		{"in_channels", 3}, {"latent_channels", o.LatentChannels()}, {"out_channels", 3},
		{"scaling_factor", o.VAEScale()},
	}
	if o.Family == Flux {
		m = append(m, kv{"shift_factor", o.VAEShift()})
	}
	return m
}
