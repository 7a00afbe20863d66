//go:build cgo

package diffusiontest_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/diffusion/diffusiontest"
	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// decl is a declared graph input or output.
type decl struct {
	name string
	elem onnxpb.TensorProto_DataType
	dims []any // int64 or string
}

func declared(t testing.TB, path string) (ins, outs []decl) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	conv := func(vs []*onnxpb.ValueInfoProto) []decl {
		var out []decl
		for _, v := range vs {
			tt := v.GetType().GetTensorType()
			d := decl{name: v.GetName(), elem: onnxpb.TensorProto_DataType(tt.GetElemType())}
			for _, x := range tt.GetShape().GetDim() {
				if p := x.GetDimParam(); p != "" {
					d.dims = append(d.dims, p)
				} else {
					d.dims = append(d.dims, x.GetDimValue())
				}
			}
			out = append(out, d)
		}
		return out
	}
	return conv(m.GetGraph().GetInput()), conv(m.GetGraph().GetOutput())
}

func (d decl) String() string {
	return fmt.Sprintf("%s %s %v", d.name, strings.ToLower(d.elem.String()), d.dims)
}

// size is a run's batch and pixel size.
type size struct{ batch, width, height int }

// shapes are the shapes of a component's inputs and outputs at a size, by
// name: what a pipeline feeds and gets.
func shapes(o diffusiontest.Options, comp string, s size) (in, out map[string][]int64) {
	B, h, w := int64(s.batch), int64(s.height/8), int64(s.width/8)
	H, W := 8*h, 8*w
	C := int64(o.LatentChannels())
	const D, P = diffusiontest.TextDim, diffusiontest.PooledDim
	in, out = map[string][]int64{}, map[string][]int64{}
	t := []int64{B}
	if o.TimestepScalar {
		t = []int64{}
	}
	switch comp {
	case "text_encoder", "text_encoder_2":
		S := int64(diffusiontest.CLIPLength)
		if o.Family == diffusiontest.Flux && comp == "text_encoder_2" {
			in["input_ids"] = []int64{B, diffusiontest.T5MaxLength}
			out["last_hidden_state"] = []int64{B, diffusiontest.T5MaxLength, D}
			break
		}
		in["input_ids"] = []int64{B, S}
		out["last_hidden_state"] = []int64{B, S, D}
		if comp == "text_encoder" {
			out["pooler_output"] = []int64{B, D}
		} else {
			out["text_embeds"] = []int64{B, P}
		}
		for i := 0; i < 3; i++ {
			out[fmt.Sprintf("hidden_states.%d", i)] = []int64{B, S, D}
		}
	case "unet":
		ctx := int64(D)
		if o.Family == diffusiontest.SDXL {
			ctx = 2 * D
			in["text_embeds"] = []int64{B, P}
			in["time_ids"] = []int64{B, diffusiontest.TimeIDs}
		}
		in["sample"], in["timestep"], in["encoder_hidden_states"] = []int64{B, C, h, w}, t, []int64{B, diffusiontest.CLIPLength, ctx}
		if o.TimestepCond > 0 {
			in["timestep_cond"] = []int64{B, int64(o.TimestepCond)}
		}
		out["out_sample"] = []int64{B, C, h, w}
	case "transformer":
		N, T := (h/2)*(w/2), int64(diffusiontest.T5MaxLength)
		in["hidden_states"] = []int64{B, N, diffusiontest.FluxPacked}
		in["encoder_hidden_states"] = []int64{B, T, D}
		in["pooled_projections"] = []int64{B, P}
		in["timestep"] = t
		in["img_ids"], in["txt_ids"] = []int64{N, 3}, []int64{T, 3}
		if o.IDsBatched {
			in["img_ids"], in["txt_ids"] = []int64{B, N, 3}, []int64{B, T, 3}
		}
		if o.Guidance {
			in["guidance"] = []int64{B}
		}
		out["out_hidden_states"] = []int64{B, N, diffusiontest.FluxPacked}
	case "vae_decoder":
		in["latent_sample"] = []int64{B, C, h, w}
		out["sample"] = []int64{B, 3, H, W}
	case "vae_encoder":
		in["sample"] = []int64{B, 3, H, W}
		out["latent_sample"] = []int64{B, C, h, w}
		out["latent_parameters"] = []int64{B, 2 * C, h, w}
	}
	return in, out
}

// tensor is a host tensor of an ONNX element type.
type tensor struct {
	elem  onnxpb.TensorProto_DataType
	shape []int64
	v     []float64
}

// newTensor fills a tensor with f (index → value).
func newTensor(elem onnxpb.TensorProto_DataType, shape []int64, f func(i int) float64) *tensor {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = f(i)
	}
	return &tensor{elem, shape, v}
}

// value makes an ONNX Runtime value of the tensor.
func (x *tensor) value() (ortgo.Value, error) {
	if len(x.shape) == 0 {
		switch x.elem {
		case onnxpb.TensorProto_FLOAT:
			return ortgo.NewScalar(float32(x.v[0]))
		case onnxpb.TensorProto_INT64:
			return ortgo.NewScalar(int64(x.v[0]))
		}
		return nil, fmt.Errorf("no scalar of %s", x.elem)
	}
	var raw []byte
	for _, v := range x.v {
		switch x.elem {
		case onnxpb.TensorProto_FLOAT:
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(v)))
		case onnxpb.TensorProto_FLOAT16:
			raw = binary.LittleEndian.AppendUint16(raw, onnxgraph.Float16(float32(v)))
		case onnxpb.TensorProto_INT32:
			raw = binary.LittleEndian.AppendUint32(raw, uint32(int32(v)))
		case onnxpb.TensorProto_INT64:
			raw = binary.LittleEndian.AppendUint64(raw, uint64(int64(v)))
		}
	}
	return ortgo.NewCustomDataTensor(ortgo.NewShape(x.shape...), raw, ortgo.TensorElementDataType(x.elem))
}

// value is a plausible input value for element i of an input.
func value(o diffusiontest.Options, name string, i int) float64 {
	switch name {
	case "input_ids":
		return float64((i*37 + 11) % 500)
	case "timestep":
		if o.Family == diffusiontest.Flux {
			return 0.5
		}
		return 500
	case "img_ids", "txt_ids":
		return float64(i % 5)
	case "time_ids":
		return 64
	case "guidance":
		return 3.5
	}
	return math.Sin(float64(i)*0.37) * 1.5
}

type component struct {
	name      string
	o         diffusiontest.Options
	ins, outs []decl
	sess      *ortgo.DynamicAdvancedSession
}

// openAll opens every component as the server does (all graph
// optimisations, CPU).
func openAll(t testing.TB, dir string, o diffusiontest.Options) (map[string]*component, error) {
	t.Helper()
	comps := map[string]*component{}
	for _, c := range o.Components() {
		p := filepath.Join(dir, c, "model.onnx")
		ins, outs := declared(t, p)
		cp := &component{name: c, o: o, ins: ins, outs: outs}
		var in, out []string
		for _, d := range ins {
			in = append(in, d.name)
		}
		for _, d := range outs {
			out = append(out, d.name)
		}
		so, err := ortgo.NewSessionOptions()
		if err != nil {
			t.Fatal(err)
		}
		so.SetIntraOpNumThreads(1)
		so.SetGraphOptimizationLevel(ortgo.GraphOptimizationLevelEnableAll)
		s, err := ortgo.NewDynamicAdvancedSession(p, in, out, so)
		so.Destroy()
		if err != nil {
			return comps, fmt.Errorf("%s: %w", c, err)
		}
		t.Cleanup(func() { s.Destroy() })
		cp.sess = s
		comps[c] = cp
	}
	return comps, nil
}

// feeds builds every input at size s.
func (c *component) feeds(t testing.TB, s size) map[string]*tensor {
	in, _ := shapes(c.o, c.name, s)
	m := map[string]*tensor{}
	for _, d := range c.ins {
		name := d.name
		shape, ok := in[name]
		if !ok {
			t.Fatalf("%s: unexpected input %s", c.name, d)
		}
		m[name] = newTensor(d.elem, shape, func(i int) float64 { return value(c.o, name, i) })
	}
	return m
}

// run runs the component; outputs come back as float64s by name.
func (c *component) run(t testing.TB, s size, feeds map[string]*tensor) (map[string]*tensor, error) {
	t.Helper()
	_, outShapes := shapes(c.o, c.name, s)
	ins := make([]ortgo.Value, len(c.ins))
	defer func() {
		for _, v := range ins {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, d := range c.ins {
		v, err := feeds[d.name].value()
		if err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		ins[i] = v
	}
	outs := make([]ortgo.Value, len(c.outs))
	for i, d := range c.outs {
		// onnxruntime_go mis-copies 16-bit outputs it allocates itself
		if d.elem == onnxpb.TensorProto_FLOAT16 {
			x := newTensor(d.elem, outShapes[d.name], func(int) float64 { return 0 })
			v, err := x.value()
			if err != nil {
				t.Fatal(err)
			}
			outs[i] = v
		}
	}
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	if err := c.sess.Run(ins, outs); err != nil {
		return nil, err
	}
	res := map[string]*tensor{}
	for i, d := range c.outs {
		x := &tensor{elem: d.elem, shape: []int64(outs[i].GetShape())}
		switch v := outs[i].(type) {
		case *ortgo.Tensor[float32]:
			for _, f := range v.GetData() {
				x.v = append(x.v, float64(f))
			}
		case *ortgo.CustomDataTensor:
			raw := v.GetData()
			for j := 0; j+1 < len(raw); j += 2 {
				x.v = append(x.v, float64(onnxgraph.Float16To32(binary.LittleEndian.Uint16(raw[j:]))))
			}
		default:
			t.Fatalf("%s: output %s is a %T", c.name, d.name, outs[i])
		}
		res[d.name] = x
	}
	return res, nil
}

func initORT(t testing.TB) {
	if _, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)}); err != nil {
		t.Fatal(err)
	}
}

type variant struct {
	name string
	o    diffusiontest.Options
	// openFails names the component that ONNX Runtime's CPU build cannot load.
	openFails string
}

var (
	sd   = diffusiontest.Options{Family: diffusiontest.SD}
	sdxl = diffusiontest.Options{Family: diffusiontest.SDXL}
	flux = diffusiontest.Options{Family: diffusiontest.Flux}
	dev  = diffusiontest.Options{Family: diffusiontest.Flux, Guidance: true}
)

func with(o diffusiontest.Options, f func(*diffusiontest.Options)) diffusiontest.Options {
	f(&o)
	return o
}

var variants = []variant{
	{name: "sd", o: sd},
	{name: "sdxl", o: sdxl},
	{name: "flux-schnell", o: flux},
	{name: "flux-dev", o: dev},
	{name: "sd-timestep-scalar", o: with(sd, func(o *diffusiontest.Options) { o.TimestepScalar = true })},
	{name: "sd-timestep-int64", o: with(sd, func(o *diffusiontest.Options) { o.TimestepInt64 = true })},
	{name: "sdxl-timestep-scalar-int64", o: with(sdxl, func(o *diffusiontest.Options) { o.TimestepScalar, o.TimestepInt64 = true, true })},
	{name: "sd-lcm", o: with(sd, func(o *diffusiontest.Options) { o.TimestepCond = 8 })},
	{name: "sdxl-lcm", o: with(sdxl, func(o *diffusiontest.Options) { o.TimestepCond = 16 })},
	{name: "flux-ids-int64", o: with(dev, func(o *diffusiontest.Options) { o.IDsInt64 = true })},
	{name: "flux-ids-batched", o: with(flux, func(o *diffusiontest.Options) { o.IDsBatched = true })},
	{name: "flux-ids-int64-batched-scalar-t", o: with(dev, func(o *diffusiontest.Options) { o.IDsInt64, o.IDsBatched, o.TimestepScalar = true, true, true })},
	{name: "sd-fixed", o: with(sd, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 48} })},
	{name: "sdxl-fixed", o: with(sdxl, func(o *diffusiontest.Options) { o.FixedSize = [2]int{48, 64} })},
	{name: "flux-fixed", o: with(dev, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 32} })},
	{name: "sd-runs-only-at", o: with(sd, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 48} })},
	{name: "flux-runs-only-at", o: with(flux, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 32} })},
	{name: "flux-runs-only-at-batched", o: with(flux, func(o *diffusiontest.Options) { o.RunsOnlyAt, o.IDsBatched = [2]int{64, 32}, true })},
	{name: "sd-fastgelu", o: with(sd, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.FastGelu })},
	{name: "flux-fastgelu", o: with(dev, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.FastGelu })},
	{name: "sdxl-groupnorm", o: with(sdxl, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.GroupNorm }), openFails: "unet"},
	{name: "flux-biassplitgelu", o: with(flux, func(o *diffusiontest.Options) { o.ContribOp = diffusiontest.BiasSplitGelu }), openFails: "transformer"},
	{name: "sd-no-vae-config", o: with(sd, func(o *diffusiontest.Options) { o.NoVAEConfig = true })},
	{name: "sd-external", o: with(sd, func(o *diffusiontest.Options) { o.ExternalData = true })},
	{name: "flux-external", o: with(dev, func(o *diffusiontest.Options) { o.ExternalData = true })},
	{name: "sd-fp16", o: with(sd, func(o *diffusiontest.Options) { o.FP16 = true })},
	{name: "sdxl-fp16-external", o: with(sdxl, func(o *diffusiontest.Options) { o.FP16, o.ExternalData = true, true })},
	{name: "flux-fp16", o: with(dev, func(o *diffusiontest.Options) { o.FP16 = true })},
	{name: "flux-fp16-ids-int64-fixed", o: with(dev, func(o *diffusiontest.Options) { o.FP16, o.IDsInt64, o.FixedSize = true, true, [2]int{32, 64} })},
}

// runSize is where a variant runs: its fixed size, else 64×64.
func runSize(o diffusiontest.Options) size {
	s := size{batch: 2, width: 64, height: 64}
	for _, v := range [][2]int{o.FixedSize, o.RunsOnlyAt} {
		if v != [2]int{} {
			s.width, s.height = v[0], v[1]
		}
	}
	return s
}

// TestVariants writes every variant, opens each component in ONNX
// Runtime's CPU build, runs it at its size (the declared dimensions, the
// output shapes, sane values) and, for size-bound variants, at another
// size (an error).
func TestVariants(t *testing.T) {
	initORT(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			t0 := time.Now()
			if err := diffusiontest.Write(dir, v.o); err != nil {
				t.Fatal(err)
			}
			tw := time.Since(t0)
			comps, err := openAll(t, dir, v.o)
			if v.openFails != "" {
				if err == nil || !strings.Contains(err.Error(), "Could not find an implementation") || !strings.HasPrefix(err.Error(), v.openFails+":") {
					t.Fatalf("opening the components: %v, want %s to fail for want of a kernel", err, v.openFails)
				}
				t.Logf("as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("write %v, write and open %v", tw.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
			checkFiles(t, dir, v.o)
			s := runSize(v.o)
			for _, name := range v.o.Components() {
				c := comps[name]
				checkDeclared(t, c, s)
				res, err := c.run(t, s, c.feeds(t, s))
				if err != nil {
					t.Fatalf("%s at %v: %v", name, s, err)
				}
				_, want := shapes(v.o, name, s)
				for _, d := range c.outs {
					if got := res[d.name].shape; !slices.Equal(got, want[d.name]) {
						t.Errorf("%s %s: shape %v, want %v", name, d.name, got, want[d.name])
					}
					lim := 20.0
					if name == "vae_decoder" {
						lim = 1
					}
					for _, x := range res[d.name].v {
						if math.IsNaN(x) || math.Abs(x) > lim {
							t.Fatalf("%s %s: value %v", name, d.name, x)
						}
					}
				}
				spatial := name == "unet" || name == "transformer" || strings.HasPrefix(name, "vae_")
				bound := v.o.FixedSize != [2]int{} || (v.o.RunsOnlyAt != [2]int{} && !strings.HasPrefix(name, "vae_"))
				if spatial {
					for _, other := range []size{{s.batch, 2 * s.width, s.height}, {s.batch, s.width, s.height + 16}} {
						_, err := c.run(t, other, c.feeds(t, other))
						if bound && err == nil {
							t.Errorf("%s runs at %v as well as at %v", name, other, s)
						}
						if !bound && err != nil {
							t.Errorf("%s at %v: %v", name, other, err)
						}
					}
				}
			}
		})
	}
}

// symbolic are the dimension names of optimum's exports (onnx_io.json).
var symbolic = map[string]bool{"batch_size": true, "sequence_length": true, "height": true, "width": true,
	"height_latent": true, "width_latent": true, "image_sequence_length": true, "text_sequence_length": true}

// checkDeclared compares the declared inputs and outputs with the shapes
// fed and expected at s: names, ranks, static sizes, the names of dynamic
// ones, and the dtypes the options ask for.
func checkDeclared(t *testing.T, c *component, s size) {
	in, out := shapes(c.o, c.name, s)
	check := func(ds []decl, want map[string][]int64) {
		if len(ds) != len(want) {
			t.Errorf("%s declares %v, want %d", c.name, ds, len(want))
		}
		for _, d := range ds {
			w, ok := want[d.name]
			if !ok || len(w) != len(d.dims) {
				t.Errorf("%s: %s, want shape %v", c.name, d, w)
				continue
			}
			for i, x := range d.dims {
				switch x := x.(type) {
				case int64:
					if x != w[i] {
						t.Errorf("%s: %s, want %v", c.name, d, w)
					}
				case string:
					if !symbolic[x] {
						t.Errorf("%s: %s: dimension name %q", c.name, d, x)
					}
					bound := c.o.FixedSize != [2]int{} && c.name != "transformer" && i >= 2 &&
						(c.name != "unet" || d.name != "encoder_hidden_states")
					if bound {
						t.Errorf("%s: %s: dynamic under FixedSize", c.name, d)
					}
				}
			}
			elem := onnxpb.TensorProto_FLOAT
			if c.o.FP16 {
				elem = onnxpb.TensorProto_FLOAT16
			}
			switch {
			case d.name == "input_ids" && c.name == "text_encoder_2" && c.o.Family == diffusiontest.Flux:
				elem = onnxpb.TensorProto_INT64
			case d.name == "input_ids":
				elem = onnxpb.TensorProto_INT32
			case d.name == "timestep" && c.o.TimestepInt64, (d.name == "img_ids" || d.name == "txt_ids") && c.o.IDsInt64:
				elem = onnxpb.TensorProto_INT64
			}
			if d.elem != elem {
				t.Errorf("%s: %s, want %s", c.name, d, elem)
			}
		}
	}
	check(c.ins, in)
	check(c.outs, out)
}

// checkFiles checks the folder's layout for the variant.
func checkFiles(t *testing.T, dir string, o diffusiontest.Options) {
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(dir, p)); return err == nil }
	for _, c := range o.Components() {
		if got := exists(c + "/model.onnx_data"); got != o.ExternalData {
			t.Errorf("%s/model.onnx_data exists: %v", c, got)
		}
	}
	if got := exists("vae_decoder/config.json"); got == o.NoVAEConfig {
		t.Errorf("vae_decoder/config.json exists: %v", got)
	}
	for _, p := range []string{"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"} {
		if !exists(p) {
			t.Errorf("no %s", p)
		}
	}
}

// TestDependence: every output of every component changes when one value
// of any one input changes.
func TestDependence(t *testing.T) {
	initORT(t)
	for _, v := range variants {
		if v.openFails != "" || v.o.FP16 {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := diffusiontest.Write(dir, v.o); err != nil {
				t.Fatal(err)
			}
			comps, err := openAll(t, dir, v.o)
			if err != nil {
				t.Fatal(err)
			}
			s := runSize(v.o)
			for _, name := range v.o.Components() {
				c := comps[name]
				base, err := c.run(t, s, c.feeds(t, s))
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range c.ins {
					feeds := c.feeds(t, s)
					in := d.name
					x := feeds[in]
					x.v[0] += 1 // one value of one row
					if in == "timestep" || in == "input_ids" {
						x.v[0] += 6
					}
					res, err := c.run(t, s, feeds)
					if err != nil {
						t.Fatal(err)
					}
					for _, o := range c.outs {
						if slices.Equal(base[o.name].v, res[o.name].v) {
							t.Errorf("%s: %s does not depend on %s", name, o.name, in)
						}
					}
				}
			}
		})
	}
}

// TestErrors records ONNX Runtime's errors for the misuses the variants
// exist to catch.
func TestErrors(t *testing.T) {
	initORT(t)
	open := func(t *testing.T, o diffusiontest.Options) map[string]*component {
		dir := t.TempDir()
		if err := diffusiontest.Write(dir, o); err != nil {
			t.Fatal(err)
		}
		comps, err := openAll(t, dir, o)
		if err != nil {
			t.Fatal(err)
		}
		return comps
	}
	expectErr := func(t *testing.T, err error, what string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s ran", what)
		}
		t.Logf("%s: %v", what, err)
	}
	float := onnxpb.TensorProto_FLOAT
	t.Run("timestep-batch", func(t *testing.T) {
		c := open(t, sd)["unet"]
		s := size{batch: 2, width: 64, height: 64}
		f := c.feeds(t, s)
		f["timestep"] = newTensor(float, []int64{1}, func(int) float64 { return 500 })
		_, err := c.run(t, s, f)
		expectErr(t, err, "a [1] timestep with a batch of 2")
		// a scalar timestep takes any batch
		o := with(sd, func(o *diffusiontest.Options) { o.TimestepScalar = true })
		c = open(t, o)["unet"]
		if _, err := c.run(t, s, c.feeds(t, s)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("int64-fed-float", func(t *testing.T) {
		o := with(sd, func(o *diffusiontest.Options) { o.TimestepInt64 = true })
		c := open(t, o)["unet"]
		s := size{batch: 2, width: 64, height: 64}
		f := c.feeds(t, s)
		f["timestep"] = newTensor(float, []int64{2}, func(int) float64 { return 500 })
		_, err := c.run(t, s, f)
		expectErr(t, err, "float32 timestep into int64")
	})
	t.Run("rank", func(t *testing.T) {
		c := open(t, flux)["transformer"]
		s := size{batch: 1, width: 64, height: 64}
		f := c.feeds(t, s)
		f["img_ids"] = newTensor(float, []int64{1, 16, 3}, func(int) float64 { return 1 })
		_, err := c.run(t, s, f)
		expectErr(t, err, "[1, n, 3] img_ids into [n, 3]")
		c = open(t, sd)["unet"]
		f = c.feeds(t, s)
		f["timestep"] = newTensor(float, nil, func(int) float64 { return 1 })
		_, err = c.run(t, s, f)
		expectErr(t, err, "a scalar timestep into [batch]")
	})
	t.Run("batch", func(t *testing.T) {
		c := open(t, sdxl)["unet"]
		s := size{batch: 2, width: 64, height: 64}
		f := c.feeds(t, s)
		f["text_embeds"] = newTensor(float, []int64{1, 8}, func(int) float64 { return 1 })
		_, err := c.run(t, s, f)
		expectErr(t, err, "text_embeds of batch 1 with a batch of 2")
	})
	t.Run("runs-only-at", func(t *testing.T) {
		for _, o := range []diffusiontest.Options{
			with(sd, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 48} }),
			with(flux, func(o *diffusiontest.Options) { o.RunsOnlyAt = [2]int{64, 32} }),
		} {
			name := "unet"
			if o.Family == diffusiontest.Flux {
				name = "transformer"
			}
			c := open(t, o)[name]
			for _, s := range []size{{1, 128, 96}, {1, 48, 64}} {
				_, err := c.run(t, s, c.feeds(t, s))
				expectErr(t, err, fmt.Sprintf("%s built for %v at %d×%d", name, o.RunsOnlyAt, s.width, s.height))
			}
		}
	})
	t.Run("fixed-size", func(t *testing.T) {
		o := with(sd, func(o *diffusiontest.Options) { o.FixedSize = [2]int{64, 48} })
		c := open(t, o)["unet"]
		s := size{1, 128, 48}
		_, err := c.run(t, s, c.feeds(t, s))
		expectErr(t, err, "fixed 64×48 at 128×48")
	})
}

// TestWriteAndOpenTime logs how long Write and opening every component take.
func TestWriteAndOpenTime(t *testing.T) {
	initORT(t)
	for _, v := range []variant{variants[0], variants[1], variants[3]} {
		t0 := time.Now()
		dir := t.TempDir()
		if err := diffusiontest.Write(dir, v.o); err != nil {
			t.Fatal(err)
		}
		tw := time.Since(t0)
		if _, err := openAll(t, dir, v.o); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: Write %v, Write and open %v", v.name, tw.Round(time.Microsecond), time.Since(t0).Round(time.Microsecond))
	}
}
