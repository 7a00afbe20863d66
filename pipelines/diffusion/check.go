package diffusion

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// Check tries an export the way requests will use it, before it is
// recorded: every component loads, declares the inputs and outputs of its
// role, and a short generation (text-to-image under guidance, and
// image-to-image when the export has a VAE encoder) runs at two sizes on
// tiny images, or at the sizes the model declares or man.Params["sizes"]
// names. It returns the settings to record in the manifest: "sizes" when
// the model runs only at fixed sizes.
func Check(ctx context.Context, d pipelines.Deps, man weights.Manifest) (map[string]string, error) {
	models := pipelines.NewModels(d)
	defer models.Close()
	m, err := LoadModel(man, d.Store, models)
	if err != nil {
		return nil, err
	}
	if err := m.checkRoles(); err != nil {
		return nil, err
	}
	for _, c := range []string{"text_encoder", "text_encoder_2", "unet", "transformer", "vae_decoder", "vae_encoder"} {
		if _, ok := m.sigs[c]; !ok {
			continue
		}
		n, err := m.component(c)
		if err != nil {
			return nil, err
		}
		if err := n.pool.Warm(ctx); err != nil {
			return nil, fmt.Errorf("%s/model.onnx does not load: %s", c, explainLoad(err))
		}
	}
	sizes := m.Fixed
	if len(sizes) == 0 {
		g := max(64, m.Grid)
		sizes = [][2]int{{g, g}, {g + m.Grid, g}}
	}
	for i, sz := range sizes {
		if err := m.smoke(ctx, sz[0], sz[1]); err != nil {
			if i > 0 && len(m.Fixed) == 0 {
				return nil, fmt.Errorf("%s runs at %d×%d but not at %d×%d: its graph fixes the image size although it declares it dynamic "+
					"(a traced rotary embedding or reshape). Re-export it with dynamic sizes (FLUX: tools/flux-export), or import it with "+
					"-param sizes=WIDTHxHEIGHT, the size it was exported for. The error: %v", man.Name, sizes[0][0], sizes[0][1], sz[0], sz[1], err)
			}
			return nil, fmt.Errorf("%s: a one-step generation at %d×%d failed: %v", man.Name, sz[0], sz[1], err)
		}
	}
	if len(m.Fixed) == 0 {
		return nil, nil
	}
	var list []string
	for _, f := range m.Fixed {
		list = append(list, fmt.Sprintf("%dx%d", f[0], f[1]))
	}
	return map[string]string{"sizes": strings.Join(list, ",")}, nil
}

// smoke runs a short generation at w×h and checks the images are finite.
func (m *Model) smoke(ctx context.Context, w, h int) error {
	j := Job{Prompt: "a red cube on a table", Negative: "", NegativeSet: true, Width: w, Height: h, Steps: 1,
		Guidance: 3.5, NumImages: 1, Noise: NewSeededNoise(1)}
	res, err := m.Generate(ctx, j)
	if err != nil {
		return err
	}
	if err := finite(res.Images); err != nil {
		return err
	}
	if !m.has("vae_encoder/model.onnx") {
		return nil
	}
	// image-to-image from the text-to-image result: two steps at strength 0.5 run one
	j.Steps, j.Strength, j.Init = 2, 0.5, make([]float32, 3*w*h)
	for p := 0; p < w*h; p++ {
		for c := 0; c < 3; c++ {
			j.Init[c*w*h+p] = res.Images[0][p*3+c]*2 - 1
		}
	}
	res, err = m.Generate(ctx, j)
	if err != nil {
		return fmt.Errorf("image-to-image: %w", err)
	}
	return finite(res.Images)
}

func finite(imgs [][]float32) error {
	for _, img := range imgs {
		for _, v := range img {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return errors.New("the images have NaN or infinite values (an fp16 overflow?)")
			}
		}
	}
	return nil
}

// roles are what each component must declare for its family's pipeline.
type role struct {
	inputs  []string
	outputs []string // each entry: alternatives separated by "|"
}

func (m *Model) roles() map[string]role {
	r := map[string]role{
		"text_encoder": {inputs: []string{"input_ids"}, outputs: []string{"last_hidden_state"}},
		"vae_decoder":  {inputs: []string{"latent_sample"}, outputs: []string{"sample"}},
		"vae_encoder":  {inputs: []string{"sample"}, outputs: []string{"latent_parameters|latent_sample"}},
	}
	switch m.Family {
	case SD:
		r["unet"] = role{inputs: []string{"sample", "timestep", "encoder_hidden_states"}, outputs: []string{"out_sample"}}
	case SDXL:
		r["text_encoder"] = role{inputs: []string{"input_ids"}, outputs: []string{"hidden_states.*"}}
		r["text_encoder_2"] = role{inputs: []string{"input_ids"}, outputs: []string{"text_embeds", "hidden_states.*"}}
		r["unet"] = role{inputs: []string{"sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"}, outputs: []string{"out_sample"}}
	case Flux:
		r["text_encoder"] = role{inputs: []string{"input_ids"}, outputs: []string{"pooler_output"}}
		r["text_encoder_2"] = role{inputs: []string{"input_ids"}, outputs: []string{"last_hidden_state"}}
		r["transformer"] = role{inputs: []string{"hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"},
			outputs: []string{"out_hidden_states"}}
	}
	return r
}

// checkRoles compares each component's declared inputs and outputs with
// its role: names present, float tensors float32 (fp16 edges were cast at
// import), token ids integers.
func (m *Model) checkRoles() error {
	for c, r := range m.roles() {
		sig, ok := m.sigs[c]
		if !ok {
			if c == "vae_encoder" {
				continue // text-to-image only
			}
			return fmt.Errorf("diffusion model %s: %s/model.onnx is missing", m.Name, c)
		}
		for _, in := range r.inputs {
			if _, ok := sig.input(in); !ok {
				return fmt.Errorf("diffusion model %s: %s/model.onnx has no input %q (it takes %s)", m.Name, c, in, strings.Join(names(sig.in), ", "))
			}
		}
		for _, v := range sig.in {
			dt, ok := onnxDType(v.Elem)
			switch {
			case !ok:
				return fmt.Errorf("diffusion model %s: %s input %s has element type %d", m.Name, c, v.Name, v.Elem)
			case v.Name == "input_ids" || v.Name == "attention_mask":
				if dt != engine.Int32 && dt != engine.Int64 {
					return fmt.Errorf("diffusion model %s: %s input %s is %s; want int32 or int64", m.Name, c, v.Name, dt)
				}
			case dt == engine.Float16:
				return fmt.Errorf("diffusion model %s: %s input %s is float16 (import converts fp16 inputs to float32; was it imported with this version?)", m.Name, c, v.Name)
			}
		}
		for _, want := range r.outputs {
			found := false
			for _, alt := range strings.Split(want, "|") {
				if prefix, ok := strings.CutSuffix(alt, "*"); ok {
					for _, o := range sig.out {
						found = found || strings.HasPrefix(o.Name, prefix)
					}
				} else {
					found = found || sig.output(alt) || (c == "transformer" && len(sig.out) == 1)
				}
			}
			if !found {
				return fmt.Errorf("diffusion model %s: %s/model.onnx has no output %s (it gives %s)", m.Name, c, strings.ReplaceAll(want, "|", " or "), strings.Join(names(sig.out), ", "))
			}
		}
	}
	return nil
}

// ONNX Runtime words a node without a kernel in two ways: "Could not find an
// implementation for GroupNorm(1) node with name 'n'" and "Failed to find
// kernel for com.microsoft.NhwcConv(1) (node:'n' ep:'CPUExecutionProvider')"
// (ONNX Runtime's own Stable Diffusion optimizer's CUDA output).
var missingKernel = regexp.MustCompile(`Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'|` +
	`Failed to find kernel for (?:[\w.]+\.)?(\w+)\((\d+)\) \(node:'([^']*)'`)

// explainLoad turns ONNX Runtime's load errors into what a user can act
// on: an export optimized for CUDA uses contrib operators (GroupNorm,
// BiasSplitGelu, ...) that the CPU provider lacks.
func explainLoad(err error) string {
	if s := missingKernel.FindStringSubmatch(err.Error()); s != nil {
		op, node := s[1], s[3]
		if op == "" { // the second wording
			op, node = s[4], s[6]
		}
		return fmt.Sprintf("it uses the operator %s (node %q), which the execution providers in use do not implement; "+
			"exports optimized by ONNX Runtime for CUDA need -providers cuda (import and serve on a GPU), "+
			"or use an export without those optimizations (%v)", op, node, err)
	}
	return err.Error()
}
