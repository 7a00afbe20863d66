// Package diffusion is text-to-image, image-to-image and inpainting with
// diffusers-layout ONNX exports: Stable Diffusion 1.5/2.1, SDXL, their turbo
// variants and FLUX.1, on fal's endpoint ids. Schedulers and tokenizers are
// in the subpackages; the denoising loops, classifier-free guidance, latent
// packing and the VAE live here.
package diffusion

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion/tokenizer"
	"github.com/falocal/falocal/weights"
)

// Family is the network layout of a model.
type Family string

// The families this package runs.
const (
	SD   Family = "sd"   // SD 1.x/2.x: one CLIP encoder, UNet
	SDXL Family = "sdxl" // two CLIP encoders, pooled embeddings and time ids
	Flux Family = "flux" // CLIP-L pooled + T5, a transformer on packed latents
)

// Model is one installed diffusers export.
type Model struct {
	Name   string
	Family Family
	man    weights.Manifest
	files  map[string]string // name in the export → verified path
	models *pipelines.Models
	st     *state
	hold   *engine.Hold // a request's hold on the model (Held); nil on the shared Model

	clip  *tokenizer.CLIP
	clip2 *tokenizer.CLIP
	t5    *tokenizer.T5

	// Grid is the pixel multiple the model's sides must be; Fixed, when
	// not empty, lists the only sizes (width, height) it runs.
	Grid  int
	Fixed [][2]int

	// sigs are the declared inputs and outputs of each component's graph:
	// feeds are shaped and typed to what the graph wants.
	sigs map[string]signature

	VAEScale, VAEShift float64
	LatentChannels     int
	// SD/SDXL: the UNet's prediction of the scheduler config; FLUX: whether
	// the transformer takes a guidance input (dev).
	Guidance        bool
	SchedulerConfig []byte
}

// state is what every request's view of a Model shares.
type state struct {
	mu      sync.Mutex
	nets    map[string]*net
	statsMu sync.Mutex
	stats   map[string]time.Duration // component → time in its runs
}

// Held is the model for one request that holds it resident (see
// pipelines.Models.Hold): its runs carry the hold.
func (m *Model) Held(h *engine.Hold) *Model {
	c := *m
	c.hold = h
	return &c
}

// ComponentTimes returns the time spent in each component's runs since the
// last reset (benchmarks split model time from the Go loop's).
func (m *Model) ComponentTimes() map[string]time.Duration {
	m.st.statsMu.Lock()
	defer m.st.statsMu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range m.st.stats {
		out[k] = v
	}
	return out
}

// ResetComponentTimes zeroes the component times.
func (m *Model) ResetComponentTimes() {
	m.st.statsMu.Lock()
	m.st.stats = nil
	m.st.statsMu.Unlock()
}

// net is one ONNX component with its graph's input and output names.
type net struct {
	pool            *pipelines.Net
	inputs, outputs []string
}

// signature is a component graph's declared inputs and outputs.
type signature struct {
	in, out []weights.ValueInfo
}

func (s signature) input(name string) (weights.ValueInfo, bool) {
	for _, v := range s.in {
		if v.Name == name {
			return v, true
		}
	}
	return weights.ValueInfo{}, false
}

func (s signature) output(name string) bool {
	for _, v := range s.out {
		if v.Name == name {
			return true
		}
	}
	return false
}

// components are the graphs a diffusers export may have, with the inputs
// this package knows how to feed each.
var components = map[string][]string{
	"text_encoder":   {"input_ids", "attention_mask"},
	"text_encoder_2": {"input_ids", "attention_mask"},
	"unet":           {"sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids", "timestep_cond"},
	"transformer":    {"hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids", "guidance"},
	"vae_decoder":    {"latent_sample"},
	"vae_encoder":    {"sample"},
}

// LoadModel reads a diffusers export's configs and tokenizers; sessions
// open on first use through models.
func LoadModel(man weights.Manifest, store *weights.Store, models *pipelines.Models) (*Model, error) {
	m := &Model{Name: man.Name, man: man, files: map[string]string{}, models: models, st: &state{nets: map[string]*net{}}}
	for _, f := range man.Files {
		p, err := store.Path(man, f.Role)
		if err != nil {
			return nil, err
		}
		m.files[f.Name] = p
	}
	switch {
	case m.has("transformer/model.onnx"):
		m.Family = Flux
	case m.has("text_encoder_2/model.onnx") && m.has("unet/model.onnx"):
		m.Family = SDXL
	case m.has("unet/model.onnx"):
		m.Family = SD
	default:
		return nil, fmt.Errorf("diffusion model %s: neither unet/model.onnx nor transformer/model.onnx", man.Name)
	}
	for _, need := range []string{"vae_decoder/model.onnx", "text_encoder/model.onnx", "scheduler/scheduler_config.json"} {
		if !m.has(need) {
			return nil, fmt.Errorf("diffusion model %s: missing %s", man.Name, need)
		}
	}
	if err := m.readSignatures(); err != nil {
		return nil, err
	}
	var vae struct {
		ScalingFactor  float64  `json:"scaling_factor"`
		ShiftFactor    *float64 `json:"shift_factor"`
		LatentChannels int      `json:"latent_channels"`
	}
	if m.has("vae_decoder/config.json") {
		if err := m.readJSON("vae_decoder/config.json", &vae); err != nil {
			return nil, err
		}
	} else if m.Family == SD {
		// diffusers' own ONNX folders (OnnxStableDiffusionPipeline) ship no
		// VAE config: that pipeline hard-codes SD's scaling factor
		vae.ScalingFactor = 0.18215
	}
	if vae.LatentChannels == 0 {
		// the decoder's declared latent channels, when static
		if v, ok := m.sigs["vae_decoder"].input("latent_sample"); ok && v.Rank() == 4 && v.Dims[1] > 0 {
			vae.LatentChannels = int(v.Dims[1])
		}
	}
	if vae.ScalingFactor == 0 || vae.LatentChannels == 0 {
		return nil, fmt.Errorf("diffusion model %s: vae_decoder/config.json lacks scaling_factor or latent_channels", man.Name)
	}
	m.VAEScale, m.LatentChannels = vae.ScalingFactor, vae.LatentChannels
	if vae.ShiftFactor != nil {
		m.VAEShift = *vae.ShiftFactor
	}
	if m.Family == Flux {
		var tc struct {
			GuidanceEmbeds bool `json:"guidance_embeds"`
		}
		if m.has("transformer/config.json") {
			if err := m.readJSON("transformer/config.json", &tc); err != nil {
				return nil, err
			}
		}
		// the graph decides: a dev export takes a guidance input
		_, hasInput := m.sigs["transformer"].input("guidance")
		m.Guidance = tc.GuidanceEmbeds || hasInput
	}
	if err := m.readSizes(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(m.files["scheduler/scheduler_config.json"])
	if err != nil {
		return nil, err
	}
	m.SchedulerConfig = b
	var err2 error
	if m.clip, err2 = tokenizer.LoadCLIP(m.dirFiles("tokenizer/")); err2 != nil {
		return nil, fmt.Errorf("diffusion model %s: tokenizer: %w", man.Name, err2)
	}
	switch m.Family {
	case SDXL:
		if m.clip2, err = tokenizer.LoadCLIP(m.dirFiles("tokenizer_2/")); err != nil {
			return nil, fmt.Errorf("diffusion model %s: tokenizer_2: %w", man.Name, err)
		}
	case Flux:
		if m.t5, err = tokenizer.LoadT5(m.dirFiles("tokenizer_2/")); err != nil {
			return nil, fmt.Errorf("diffusion model %s: tokenizer_2: %w", man.Name, err)
		}
	}
	return m, nil
}

func (m *Model) has(name string) bool { _, ok := m.files[name]; return ok }

// readSignatures reads every component's declared inputs and outputs and
// refuses a graph that takes an input no diffusers pipeline feeds it.
func (m *Model) readSignatures() error {
	m.sigs = map[string]signature{}
	for c, known := range components {
		p, ok := m.files[c+"/model.onnx"]
		if !ok {
			continue
		}
		in, out, err := weights.ONNXSignature(p)
		if err != nil {
			return fmt.Errorf("diffusion model %s: %s: %w", m.Name, c, err)
		}
		for _, v := range in {
			if !slices.Contains(known, v.Name) {
				return fmt.Errorf("diffusion model %s: %s/model.onnx takes an input %q that no diffusers pipeline feeds (it takes %s)",
					m.Name, c, v.Name, strings.Join(names(in), ", "))
			}
		}
		m.sigs[c] = signature{in: in, out: out}
	}
	return nil
}

// readSizes finds the sizes the model runs: the manifest's "sizes" (what
// the import measured, or the user said), else static spatial dimensions
// in the graphs, else any multiple of the grid: 64 px for a UNet (three
// halvings of the latent, which exports cannot pad back) and 16 px for
// FLUX (2×2 packed latents).
func (m *Model) readSizes() error {
	m.Grid = 64
	if m.Family == Flux {
		m.Grid = 2 * vaeFactor
	}
	if v := m.man.Params["sizes"]; v != "" {
		for _, f := range strings.Split(v, ",") {
			var w, h int
			step := vaeFactor
			if m.Family == Flux {
				step = 2 * vaeFactor
			}
			if _, err := fmt.Sscanf(strings.TrimSpace(f), "%dx%d", &w, &h); err != nil || w <= 0 || h <= 0 || w%step != 0 || h%step != 0 {
				return fmt.Errorf("diffusion model %s: sizes %q: want WIDTHxHEIGHT[,WIDTHxHEIGHT...], sides multiples of %d", m.Name, v, step)
			}
			m.Fixed = append(m.Fixed, [2]int{w, h})
		}
		return nil
	}
	static := func(comp, input string, hd, wd int) bool {
		v, ok := m.sigs[comp].input(input)
		if !ok || v.Rank() <= max(hd, wd) || v.Dims[hd] <= 0 || v.Dims[wd] <= 0 {
			return false
		}
		m.Fixed = [][2]int{{int(v.Dims[wd]) * vaeFactor, int(v.Dims[hd]) * vaeFactor}}
		return true
	}
	if static("unet", "sample", 2, 3) || static("vae_decoder", "latent_sample", 2, 3) {
		return nil
	}
	if v, ok := m.sigs["transformer"].input("hidden_states"); ok && v.Rank() == 3 && v.Dims[1] > 0 {
		// a fixed token count: the square it packs, when it is one
		side := int(math.Round(math.Sqrt(float64(v.Dims[1]))))
		if side*side != int(v.Dims[1]) {
			return fmt.Errorf("diffusion model %s: the transformer takes %d image tokens only; import it with -param sizes=WIDTHxHEIGHT", m.Name, v.Dims[1])
		}
		m.Fixed = [][2]int{{side * 2 * vaeFactor, side * 2 * vaeFactor}}
	}
	return nil
}

// SizeFor is the size a request for w×h generates at: w×h itself when the
// model runs it, else the next size up on its grid (the caller crops or
// resizes back). A fixed-size model runs only its sizes: another size is
// an error naming them, unless the request did not choose one (any false),
// which gets the first.
func (m *Model) SizeFor(w, h int, chosen bool) (int, int, error) {
	if len(m.Fixed) > 0 {
		for _, f := range m.Fixed {
			if f[0] == w && f[1] == h {
				return w, h, nil
			}
		}
		if !chosen {
			return m.Fixed[0][0], m.Fixed[0][1], nil
		}
		var list []string
		for _, f := range m.Fixed {
			list = append(list, fmt.Sprintf("%d×%d", f[0], f[1]))
		}
		return 0, 0, fmt.Errorf("model %s runs only at %s (width×height); %d×%d is not one of them", m.Name, strings.Join(list, ", "), w, h)
	}
	up := func(v int) int { return (v + m.Grid - 1) / m.Grid * m.Grid }
	return up(w), up(h), nil
}

func names(vs []weights.ValueInfo) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}

func (m *Model) readJSON(name string, v any) error {
	b, err := os.ReadFile(m.files[name])
	if err != nil {
		return fmt.Errorf("diffusion model %s: %s: %w", m.Name, name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("diffusion model %s: %s: %w", m.Name, name, err)
	}
	return nil
}

// dirFiles maps the base names of the files under prefix to their paths.
func (m *Model) dirFiles(prefix string) map[string]string {
	out := map[string]string{}
	for n, p := range m.files {
		if rest, ok := strings.CutPrefix(n, prefix); ok && !strings.Contains(rest, "/") {
			out[rest] = p
		}
	}
	return out
}

// component opens (once) the ONNX file of a component such as "unet".
func (m *Model) component(name string) (*net, error) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	if n, ok := m.st.nets[name]; ok {
		return n, nil
	}
	file := name + "/model.onnx"
	if !m.has(file) {
		return nil, fmt.Errorf("diffusion model %s has no %s", m.Name, file)
	}
	sig := m.sigs[name]
	in, out := names(sig.in), names(sig.out)
	pl, err := m.models.PoolFor(m.man, file, in, out)
	if err != nil {
		return nil, err
	}
	n := &net{pool: pl, inputs: in, outputs: out}
	m.st.nets[name] = n
	return n, nil
}

// warm opens every component a job of kind runs (the VAE encoder only for
// image-to-image and inpainting), so the first request does not load them.
func (m *Model) warm(ctx context.Context, kind string) error {
	for _, c := range []string{"text_encoder", "text_encoder_2", "unet", "transformer", "vae_decoder", "vae_encoder"} {
		if !m.has(c+"/model.onnx") || (c == "vae_encoder" && kind == "t2i") {
			continue
		}
		n, err := m.component(c)
		if err != nil {
			return err
		}
		if err := n.pool.Warm(ctx); err != nil {
			return fmt.Errorf("diffusion model %s: %s: %w", m.Name, c, err)
		}
	}
	return nil
}

// run feeds a component by input name and returns its outputs by name.
// Inputs the graph does not declare are an error; so are missing ones.
func (m *Model) run(ctx context.Context, name string, feeds map[string]*engine.Tensor) (map[string]*engine.Tensor, error) {
	n, err := m.component(name)
	if err != nil {
		return nil, err
	}
	in := make([]*engine.Tensor, len(n.inputs))
	for i, v := range m.sigs[name].in {
		t, ok := feeds[v.Name]
		if !ok && v.Name == "attention_mask" && feeds["input_ids"] != nil {
			// diffusers runs the text encoders without a mask: all ones
			t, ok = ones(feeds["input_ids"].Shape), true
		}
		if !ok {
			return nil, pipelines.Unavailable(fmt.Sprintf("diffusion model %s: %s needs input %q, which this pipeline does not provide for this request", m.Name, name, v.Name), nil)
		}
		if in[i], err = conform(t, v, batchOf(feeds)); err != nil {
			return nil, pipelines.Unavailable(fmt.Sprintf("diffusion model %s: %s input %s: %v", m.Name, name, v.Name, err), err)
		}
	}
	t0 := time.Now()
	outs, err := n.pool.Do(ctx, engine.Run{Inputs: in, Hold: m.hold})
	took := time.Since(t0)
	m.st.statsMu.Lock()
	if m.st.stats == nil {
		m.st.stats = map[string]time.Duration{}
	}
	m.st.stats[name] += took
	m.st.statsMu.Unlock()
	var nm *engine.NoMemoryError
	if err != nil && ctx.Err() == nil && !errors.As(err, &nm) {
		// name the component and what it was given: a graph that fails on
		// a shape it declared to take is the export's limit, not a crash
		var fed []string
		for i, v := range m.sigs[name].in {
			fed = append(fed, fmt.Sprintf("%s %s%v", v.Name, in[i].DType, in[i].Shape))
		}
		return nil, &pipelines.HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure",
			Msg: fmt.Sprintf("diffusion model %s: %s failed on %s: %s", m.Name, name, strings.Join(fed, ", "), explainLoad(err)), Err: err}
	}
	if err != nil {
		return nil, err
	}
	res := make(map[string]*engine.Tensor, len(outs))
	for i, k := range n.outputs {
		res[k] = outs[i]
	}
	return res, nil
}

// tokenIDs makes a token-id tensor [rows, seq]; run converts it to the integer
// type the encoder declares (optimum exports CLIP with int32 ids, T5 with
// int64).
func tokenIDs(rows [][]int64) *engine.Tensor {
	seq := len(rows[0])
	raw := make([]byte, 0, len(rows)*seq*8)
	for _, r := range rows {
		for _, v := range r {
			raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
		}
	}
	return &engine.Tensor{DType: engine.Int64, Shape: []int64{int64(len(rows)), int64(seq)}, Raw: raw}
}

// f32 returns a float output's values.
func f32(t *engine.Tensor) ([]float32, error) {
	if t == nil {
		return nil, fmt.Errorf("missing output")
	}
	if t.DType != engine.Float32 {
		return nil, fmt.Errorf("output is %s; fp16 diffusion exports need float32 inputs and outputs", t.DType)
	}
	return t.F32, nil
}

func tensor(data []float32, shape ...int64) *engine.Tensor {
	t, err := engine.NewFloat32(data, shape...)
	if err != nil {
		panic(err) // shapes are computed here, never from input
	}
	return t
}

type tensorT = engine.Tensor
