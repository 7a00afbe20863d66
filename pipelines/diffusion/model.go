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
	"fmt"
	"os"
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
	var vae struct {
		ScalingFactor  float64  `json:"scaling_factor"`
		ShiftFactor    *float64 `json:"shift_factor"`
		LatentChannels int      `json:"latent_channels"`
	}
	if err := m.readJSON("vae_decoder/config.json", &vae); err != nil {
		return nil, err
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
		if err := m.readJSON("transformer/config.json", &tc); err != nil {
			return nil, err
		}
		m.Guidance = tc.GuidanceEmbeds
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
	p, ok := m.files[file]
	if !ok {
		return nil, fmt.Errorf("diffusion model %s has no %s", m.Name, file)
	}
	in, out, err := weights.ONNXIO(p)
	if err != nil {
		return nil, err
	}
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
	for i, k := range n.inputs {
		t, ok := feeds[k]
		if !ok {
			return nil, fmt.Errorf("diffusion model %s: %s needs input %q this pipeline does not provide", m.Name, name, k)
		}
		in[i] = t
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
	if err != nil {
		return nil, err
	}
	res := make(map[string]*engine.Tensor, len(outs))
	for i, k := range n.outputs {
		res[k] = outs[i]
	}
	return res, nil
}

// ids makes a token-id tensor in the integer type the encoder declares
// (optimum exports CLIP with int32 ids, T5 with int64).
func (m *Model) ids(ctx context.Context, component string, rows [][]int64) (*engine.Tensor, error) {
	n, err := m.component(component)
	if err != nil {
		return nil, err
	}
	s, err := n.pool.Session(ctx)
	if err != nil {
		return nil, err
	}
	dt := engine.Int64
	for _, in := range s.Inputs() {
		if in.Name == "input_ids" {
			dt = in.DType
		}
	}
	seq := len(rows[0])
	raw := make([]byte, 0, len(rows)*seq*dt.Size())
	for _, r := range rows {
		for _, v := range r {
			if dt == engine.Int32 {
				raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
			} else {
				raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
			}
		}
	}
	return &engine.Tensor{DType: dt, Shape: []int64{int64(len(rows)), int64(seq)}, Raw: raw}, nil
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
