package diffusiontest

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

const (
	tFloat   = onnxpb.TensorProto_FLOAT
	tFloat16 = onnxpb.TensorProto_FLOAT16
	tInt32   = onnxpb.TensorProto_INT32
	tInt64   = onnxpb.TensorProto_INT64
)

// dataFile is the external data file beside each model.onnx.
const dataFile = "model.onnx_data"

type dim = onnxgraph.Dim

// net is one component's graph under construction. Values inside are
// float32; float16 inputs, weights and outputs are cast at the edges.
type net struct {
	*onnxgraph.Graph
	o   Options
	rng *rand.Rand
}

func newNet(o Options, name string) *net {
	h := fnv.New64a()
	h.Write([]byte(string(o.Family) + "/" + name))
	return &net{Graph: onnxgraph.New(name), o: o, rng: rand.New(rand.NewPCG(h.Sum64(), 1))}
}

// float is the export's float type.
func (n *net) float() onnxpb.TensorProto_DataType {
	if n.o.FP16 {
		return tFloat16
	}
	return tFloat
}

func (n *net) toFloat32(x string, from onnxpb.TensorProto_DataType) string {
	if from == tFloat {
		return x
	}
	return n.Op("Cast", []string{x}, onnxgraph.AttrInt("to", int64(tFloat)))
}

// in declares a float input and returns it as float32.
func (n *net) in(name string, dims ...dim) string { return n.inAs(name, false, dims...) }

// inAs declares an int64 input (asInt64) or a float one, and returns it
// as float32.
func (n *net) inAs(name string, asInt64 bool, dims ...dim) string {
	elem := n.float()
	if asInt64 {
		elem = tInt64
	}
	n.Input(name, elem, dims...)
	return n.toFloat32(name, elem)
}

// out declares a float output computed as x.
func (n *net) out(name, x string, dims ...dim) {
	n.Output(name, n.float(), dims...)
	if n.o.FP16 {
		n.OpTo("Cast", []string{x}, []string{name}, onnxgraph.AttrInt("to", int64(tFloat16)))
		return
	}
	n.OpTo("Identity", []string{x}, []string{name})
}

// weight adds a named weight of values bias + scale·U(-1, 1) and returns
// it as float32.
func (n *net) weight(name string, scale, bias float32, dims ...int64) string {
	size := int64(1)
	for _, d := range dims {
		size *= d
	}
	v := make([]float32, size)
	for i := range v {
		v[i] = bias + scale*(2*n.rng.Float32()-1)
	}
	return n.weightOf(name, v, dims...)
}

func (n *net) weightOf(name string, v []float32, dims ...int64) string {
	if n.o.FP16 {
		n.Initializer(onnxgraph.Tensor(name, tFloat16, dims, onnxgraph.F16Bytes(v)))
		return n.toFloat32(name, tFloat16)
	}
	return n.Initializer(onnxgraph.Tensor(name, tFloat, dims, onnxgraph.F32Bytes(v)))
}

func (n *net) floats(dims []int64, v ...float32) string {
	return n.Const(onnxgraph.Tensor("", tFloat, dims, onnxgraph.F32Bytes(v)))
}

func (n *net) add(a, b string) string    { return n.Op("Add", []string{a, b}) }
func (n *net) matmul(a, b string) string { return n.Op("MatMul", []string{a, b}) }
func (n *net) scale(a string, s float32) string {
	return n.Op("Mul", []string{a, n.Scalar(s)})
}

// mean is ReduceMean over axes.
func (n *net) mean(x string, keep bool, axes ...int64) string {
	k := int64(0)
	if keep {
		k = 1
	}
	return n.Op("ReduceMean", []string{x}, onnxgraph.AttrInts("axes", axes...), onnxgraph.AttrInt("keepdims", k))
}

// block is a run of rows of a weight, drawn at one scale.
type block struct {
	rows  int64
	scale float32
}

// rowsOf is a per-row input's part of the shared projection: [batch, k].
type rowsOf struct {
	x     string
	k     int64
	scale float32
}

// perRow concatenates per-row values [batch, k_i] along axis 1 (an error
// unless every batch is the same: ONNX Runtime trusts equal symbolic
// dimensions, so a Reshape or broadcast would not check) and projects
// them with one weight to [batch, cols].
func (n *net) perRow(name string, cols int64, parts ...rowsOf) string {
	var xs []string
	var blocks []block
	for _, p := range parts {
		xs = append(xs, p.x)
		blocks = append(blocks, block{p.k, p.scale})
	}
	x := n.Op("Concat", xs, onnxgraph.AttrInt("axis", 1))
	return n.matmul(x, n.weightBlocks(name, cols, blocks...))
}

// weightBlocks is a [Σ rows, cols] weight whose blocks of rows have their
// own scales.
func (n *net) weightBlocks(name string, cols int64, blocks ...block) string {
	var v []float32
	var rows int64
	for _, b := range blocks {
		for i := int64(0); i < b.rows*cols; i++ {
			v = append(v, b.scale*(2*n.rng.Float32()-1))
		}
		rows += b.rows
	}
	return n.weightOf(name, v, rows, cols)
}

// unsqueeze inserts axes of size 1.
func (n *net) unsqueeze(x string, axes ...int64) string {
	return n.Op("Unsqueeze", []string{x, n.Ints(axes...)})
}

// timestep declares the timestep input and returns it as float32: a
// scalar, or [batch, 1].
func (n *net) timestep() string {
	var dims []dim
	if !n.o.TimestepScalar {
		dims = []dim{"batch_size"}
	}
	t := n.inAs("timestep", n.o.TimestepInt64, dims...)
	if n.o.TimestepScalar {
		return t
	}
	return n.unsqueeze(t, 1)
}

// contrib is the ContribOp side path: v [batch, k] through the operator,
// averaged per row to [batch, 1].
func (n *net) contrib(v string, k int64) string {
	const ms = onnxgraph.MicrosoftDomain
	var r string
	switch n.o.ContribOp {
	case FastGelu:
		x := n.unsqueeze(n.matmul(v, n.weight("contrib.weight", 0.5, 0, k, 8)), 1) // [batch, 1, 8]
		r = n.DomainOp(ms, FastGelu, []string{x, n.weight("contrib.bias", 0.1, 0, 8)})
	case GroupNorm:
		// NHWC [batch, 1, 1, 128] in 32 groups
		x := n.unsqueeze(n.matmul(v, n.weight("contrib.weight", 0.5, 0, k, 128)), 1, 2)
		r = n.DomainOp(ms, GroupNorm, []string{x, n.weight("contrib.gamma", 0.1, 1, 128), n.weight("contrib.beta", 0.1, 0, 128)},
			onnxgraph.AttrInt("activation", 0), onnxgraph.AttrFloat("epsilon", 1e-5), onnxgraph.AttrInt("groups", 32))
	case BiasSplitGelu:
		// the CUDA kernel takes [batch, tokens, 2560|5120|10240]
		x := n.unsqueeze(n.matmul(v, n.weight("contrib.weight", 0.5, 0, k, 2560)), 1)
		r = n.DomainOp(ms, BiasSplitGelu, []string{x, n.weight("contrib.bias", 0.1, 0, 2560)})
	default:
		panic("contrib op " + n.o.ContribOp)
	}
	return n.mean(n.Op("Flatten", []string{r}, onnxgraph.AttrInt("axis", 1)), true, 1)
}

// spatial returns the latent and pixel dimensions of the spatial axes:
// fixed under FixedSize, else named (latent names as in the UNet, or as in
// the VAE).
func (o Options) spatial(unet bool) (h, w, H, W dim) {
	if o.FixedSize != [2]int{} {
		return o.FixedSize[1] / 8, o.FixedSize[0] / 8, o.FixedSize[1], o.FixedSize[0]
	}
	if unet {
		return "height", "width", "height", "width"
	}
	return "height_latent", "width_latent", "height", "width"
}

// build makes component c's model.
func build(o Options, c string) *onnxpb.ModelProto {
	n := newNet(o, c)
	switch {
	case c == "text_encoder":
		n.textEncoder(tInt32, 2, "pooler_output")
	case c == "text_encoder_2" && o.Family == SDXL:
		n.textEncoder(tInt32, 2, "text_embeds")
	case c == "text_encoder_2":
		n.textEncoder(tInt64, 1, "")
	case c == "unet":
		n.unet()
	case c == "transformer":
		n.transformer()
	case c == "vae_decoder":
		n.vaeDecoder()
	case c == "vae_encoder":
		n.vaeEncoder()
	default:
		panic("component " + c)
	}
	return n.Model(nil, "diffusiontest", fmt.Sprintf("tiny %s %s with random weights, for tests", o.Family, c))
}

// model writes component c's model.onnx (and model.onnx_data).
func (w *writer) model(c string, m *onnxpb.ModelProto) {
	p := w.path(c + "/model.onnx")
	if w.err != nil {
		return
	}
	data := ""
	if w.o.ExternalData {
		data = cmp.Or(w.o.ExternalDataName, dataFile)
	}
	// the named weights go out; constants (shapes, scalars) stay inline
	external := func(t *onnxpb.TensorProto) bool { return !strings.HasPrefix(t.GetName(), "/") }
	if err := onnxgraph.WriteFile(p, m, data, external); err != nil {
		w.err = fmt.Errorf("diffusiontest: %s: %w", filepath.ToSlash(c), err)
	}
}

// textEncoder: an embedding of the ids (Sin of an affine map of the id),
// layers of x + Tanh(x·W), a final LayerNorm. CLIP encoders output
// last_hidden_state, then pooled ("pooler_output": the mean over the
// sequence; "text_embeds": its projection, which comes first), then
// hidden_states.0..layers; T5 (pooled "") outputs last_hidden_state only.
func (n *net) textEncoder(ids onnxpb.TensorProto_DataType, layers int, pooled string) {
	const d = TextDim
	in := n.Input("input_ids", ids, "batch_size", "sequence_length")
	x := n.Op("Cast", []string{in}, onnxgraph.AttrInt("to", int64(tFloat)))
	x = n.Op("Unsqueeze", []string{x, n.Ints(2)}) // [b, s, 1]
	x = n.add(n.matmul(x, n.weight("embeddings.weight", 0.5, 0, 1, d)), n.weight("embeddings.bias", 3, 0, d))
	h := n.Op("Sin", []string{x})
	hidden := []string{h}
	for l := 0; l < layers; l++ {
		h = n.add(h, n.Op("Tanh", []string{n.matmul(h, n.weight(fmt.Sprintf("layers.%d.weight", l), 0.7, 0, d, d))}))
		hidden = append(hidden, h)
	}
	last := n.Op("LayerNormalization", []string{h, n.weight("final_layer_norm.weight", 0.1, 1, d), n.weight("final_layer_norm.bias", 0.1, 0, d)},
		onnxgraph.AttrInt("axis", -1), onnxgraph.AttrFloat("epsilon", 1e-5))
	seq := []dim{"batch_size", "sequence_length", d}
	switch pooled {
	case "":
		n.out("last_hidden_state", last, seq...)
		return
	case "text_embeds":
		p := n.matmul(n.mean(last, false, 1), n.weight("text_projection.weight", 0.5, 0, d, PooledDim))
		n.out("text_embeds", p, "batch_size", PooledDim)
		n.out("last_hidden_state", last, seq...)
	default:
		n.out("last_hidden_state", last, seq...)
		n.out("pooler_output", n.mean(last, false, 1), "batch_size", d)
	}
	for i, h := range hidden {
		n.out(fmt.Sprintf("hidden_states.%d", i), h, seq...)
	}
}

// unet: out_sample = 0.9·sample + a 1×1 convolution of it + a
// per-channel projection of the per-row values (the sample's channel
// means, timestep, the mean text state, text_embeds, time_ids,
// timestep_cond, the contrib path), + 0.001·timestep when it is a scalar
// (+ the baked-size reshape).
func (n *net) unet() {
	o := n.o
	const c = SDChannels
	h, w, _, _ := o.spatial(true)
	s := n.in("sample", "batch_size", c, h, w)
	t := n.timestep()
	ctx := TextDim
	if o.Family == SDXL {
		ctx = 2 * TextDim
	}
	e := n.in("encoder_hidden_states", "batch_size", "sequence_length", ctx)
	y := n.add(n.scale(s, 0.9), n.Op("Conv", []string{s, n.weight("conv.weight", 0.05, 0, c, c, 1, 1)}))
	rows := []rowsOf{{n.mean(s, false, 2, 3), c, 0.05}, {n.mean(e, false, 1), int64(ctx), 0.05}}
	if o.TimestepScalar {
		y = n.add(y, n.scale(t, 0.001))
	} else {
		rows = append(rows, rowsOf{t, 1, 0.001})
	}
	if o.Family == SDXL {
		rows = append(rows, rowsOf{n.in("text_embeds", "batch_size", PooledDim), PooledDim, 0.05},
			rowsOf{n.in("time_ids", "batch_size", TimeIDs), TimeIDs, 1e-4})
	}
	if o.TimestepCond > 0 {
		rows = append(rows, rowsOf{n.in("timestep_cond", "batch_size", o.TimestepCond), int64(o.TimestepCond), 0.05})
	}
	if o.ContribOp != "" {
		rows = append(rows, rowsOf{n.contrib(n.mean(s, false, 2, 3), c), 1, 1e-3})
	}
	y = n.add(y, n.unsqueeze(n.perRow("conditioning.weight", c, rows...), 2, 3))
	if o.RunsOnlyAt != [2]int{} {
		fixed := n.Op("Reshape", []string{s, n.Ints(-1, c, int64(o.RunsOnlyAt[1]/8), int64(o.RunsOnlyAt[0]/8))})
		y = n.add(y, n.scale(fixed, 0.001))
	}
	n.out("out_sample", y, "batch_size", c, h, w)
}

// transformer: out_hidden_states = 0.9·hidden_states + a projection of
// [img_ids, hidden_states] per token + a projection of the per-row values
// (the token mean, timestep, the mean of [txt_ids, T5 state], the pooled
// projection, guidance, the contrib path), + 0.1·timestep when it is a
// scalar (+ a term from img_ids reshaped to the baked size). ids must
// match the token counts (and batch): they are concatenated with the
// states.
func (n *net) transformer() {
	o := n.o
	const p = FluxPacked
	var seq dim = "image_sequence_length"
	if o.FixedSize != [2]int{} {
		seq = (o.FixedSize[0] / 16) * (o.FixedSize[1] / 16)
	}
	ids := func(s dim) []dim {
		if o.IDsBatched {
			return []dim{"batch_size", s, 3}
		}
		return []dim{s, 3}
	}
	hs := n.in("hidden_states", "batch_size", seq, p)
	e := n.in("encoder_hidden_states", "batch_size", "text_sequence_length", TextDim)
	pooled := n.in("pooled_projections", "batch_size", PooledDim)
	t := n.timestep()
	img := n.inAs("img_ids", o.IDsInt64, ids(seq)...)
	txt := n.inAs("txt_ids", o.IDsInt64, ids("text_sequence_length")...)
	// batched ids as they are, [n, 3] repeated over hidden_states' batch
	perToken := func(x, like string) string {
		if o.IDsBatched {
			return x
		}
		b := n.Op("Shape", []string{like}, onnxgraph.AttrInt("end", 1))
		return n.Op("Expand", []string{n.unsqueeze(x, 0), n.Op("Concat", []string{b, n.Ints(1, 1)}, onnxgraph.AttrInt("axis", 0))})
	}
	tokens := n.Op("Concat", []string{perToken(img, hs), hs}, onnxgraph.AttrInt("axis", 2)) // [b, n, 3+p]
	y := n.add(n.scale(hs, 0.9), n.matmul(tokens, n.weightBlocks("tokens.weight", p, block{3, 0.002}, block{p, 0.02})))
	text := n.Op("Concat", []string{perToken(txt, e), e}, onnxgraph.AttrInt("axis", 2)) // [b, t, 3+d]
	rows := []rowsOf{{n.mean(hs, false, 1), p, 0.02}, {n.mean(text, false, 1), 3 + TextDim, 0.05}, {pooled, PooledDim, 0.05}}
	if o.TimestepScalar {
		y = n.add(y, n.scale(t, 0.1))
	} else {
		rows = append(rows, rowsOf{t, 1, 0.1})
	}
	if o.Guidance {
		rows = append(rows, rowsOf{n.unsqueeze(n.in("guidance", "batch_size"), 1), 1, 0.01})
	}
	if o.ContribOp != "" {
		rows = append(rows, rowsOf{n.contrib(n.mean(hs, false, 1), p), 1, 1e-3})
	}
	y = n.add(y, n.unsqueeze(n.perRow("conditioning.weight", p, rows...), 1))
	if o.RunsOnlyAt != [2]int{} {
		baked := int64((o.RunsOnlyAt[0] / 16) * (o.RunsOnlyAt[1] / 16))
		shape := n.Ints(baked, 3)
		if o.IDsBatched {
			shape = n.Ints(-1, baked, 3)
		}
		rope := n.Op("Reshape", []string{img, shape})
		y = n.add(y, n.matmul(rope, n.weight("rope.weight", 0.001, 0, 3, p)))
	}
	n.out("out_hidden_states", y, "batch_size", seq, p)
}

// vaeDecoder: sample = Tanh(nearest ×8 upsampling of a 1×1 convolution to
// RGB).
func (n *net) vaeDecoder() {
	c := int64(n.o.LatentChannels())
	h, w, H, W := n.o.spatial(false)
	z := n.in("latent_sample", "batch_size", c, h, w)
	x := n.Op("Conv", []string{z, n.weight("conv_out.weight", 0.3, 0, 3, c, 1, 1), n.weight("conv_out.bias", 0.1, 0, 3)})
	x = n.Op("Resize", []string{x, "", n.floats([]int64{4}, 1, 1, 8, 8)},
		onnxgraph.AttrString("mode", "nearest"), onnxgraph.AttrString("coordinate_transformation_mode", "asymmetric"),
		onnxgraph.AttrString("nearest_mode", "floor"))
	n.out("sample", n.Op("Tanh", []string{x}), "batch_size", 3, H, W)
}

// vaeEncoder: latent_parameters = a 1×1 convolution of the 8×8 average
// pool (means, then log-variances around -6); latent_sample = the means.
func (n *net) vaeEncoder() {
	c := int64(n.o.LatentChannels())
	h, w, H, W := n.o.spatial(false)
	x := n.in("sample", "batch_size", 3, H, W)
	x = n.Op("AveragePool", []string{x}, onnxgraph.AttrInts("kernel_shape", 8, 8), onnxgraph.AttrInts("strides", 8, 8))
	bias := make([]float32, 2*c)
	for i := c; i < 2*c; i++ {
		bias[i] = -6
	}
	params := n.Op("Conv", []string{x, n.weight("quant_conv.weight", 0.5, 0, 2*c, 3, 1, 1), n.weightOf("quant_conv.bias", bias, 2*c)})
	mean := n.Op("Slice", []string{params, n.Ints(0), n.Ints(c), n.Ints(1)})
	n.out("latent_sample", mean, "batch_size", c, h, w)
	n.out("latent_parameters", params, "batch_size", 2*c, h, w)
}
