// Package whisperonnx writes Whisper as ONNX graphs in the layout of a
// Hugging Face optimum export (encoder_model.onnx, decoder_model.onnx,
// decoder_with_past_model.onnx, config.json), from the weights of a
// CTranslate2 (faster-whisper) model, so that pipelines/whisper runs
// faster-whisper models unchanged.
//
// The graphs follow CTranslate2's Whisper (src/layers/whisper.cc,
// src/layers/transformer.cc), which is Hugging Face's WhisperModel: a
// two-convolution front end with GELU, learned (stored) position encodings,
// pre-norm layers with exact (erf) GELU feed-forward blocks, attention
// scaled by 1/√head_dim, a final layer norm, and logits from the decoder's
// projection (tied to the token embeddings). CTranslate2 stores the self-
// attention Q, K and V projections fused (self_attention/linear_0, K with a
// zero bias), the cross-attention query as attention/linear_0 and its fused
// K/V as attention/linear_1; the graphs keep the fusions (one MatMul, then
// Split) and fold the 1/√head_dim query scale into the query weights.
//
// Weights are written as float32 (float16, bfloat16 and int16 widened or
// dequantised), except the linear layers' weights of an int8 model (or of
// any model with Options.ComputeType "int8"), which stay int8 with one scale
// per output row as CTranslate2 keeps them and run as ONNX Runtime's
// DynamicQuantizeMatMul (activations quantised per tensor at run time): on
// a CPU, two to five times faster than float32 MatMul at Whisper's shapes.
package whisperonnx

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/falocal/falocal/weights/ct2"
	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// File names of the export, as optimum names them.
const (
	EncoderFile         = "encoder_model.onnx"
	DecoderFile         = "decoder_model.onnx"
	DecoderWithPastFile = "decoder_with_past_model.onnx"
	ConfigFile          = "config.json"
	GenerationFile      = "generation_config.json"
	// External data files (large models). The two decoders share one: the
	// with-past decoder's weights are a subset of the first decoder's.
	EncoderDataFile = EncoderFile + "_data"
	DecoderDataFile = DecoderFile + "_data"
)

// Whisper's fixed input: 30 s of 10 ms frames.
const inputFrames = 3000

// layerNormEpsilon is CTranslate2's (and Hugging Face Whisper's) default.
const layerNormEpsilon = 1e-5

// ExternalMode says when weights go to external data files.
type ExternalMode int

const (
	// ExternalAuto keeps the weights inside each .onnx file unless a file's
	// weights exceed ExternalThreshold (protobuf cannot exceed 2 GiB).
	ExternalAuto ExternalMode = iota
	// ExternalAlways writes every weight to external data files.
	ExternalAlways
	// ExternalNever keeps every weight inside the .onnx files.
	ExternalNever
)

// ExternalThreshold is the weight size above which ExternalAuto writes a
// graph's weights to an external data file.
const ExternalThreshold = 1 << 30

// Options tunes the conversion.
type Options struct {
	External ExternalMode
	// CT2Config is the content of the CTranslate2 model directory's
	// config.json (alignment_heads, suppress_ids, suppress_ids_begin,
	// lang_ids); when set, its settings are written to
	// generation_config.json in Hugging Face form, and its alignment_heads
	// pick the heads of the decoders' cross_attentions output.
	CT2Config []byte
	// AlignmentHeads, when set, are the [layer, head] pairs of the
	// cross_attentions output, over CT2Config's. With neither, the output
	// has openai-whisper's default: every head of the second half of the
	// decoder layers.
	AlignmentHeads [][2]int
	// ComputeType is the linear layers' weight type, as faster-whisper's
	// compute_type names it: "" or "default" keeps int8 weights int8 and
	// writes every other type as float32; "float32" dequantises int8 too;
	// "int8" quantises float weights to int8 (per output row, as
	// CTranslate2 does).
	ComputeType string
}

// ComputeTypes are the values of Options.ComputeType.
var ComputeTypes = []string{"default", "float32", "int8"}

// CrossAttentionsOutput names the decoders' output of the alignment heads'
// cross-attention weights.
const CrossAttentionsOutput = "cross_attentions"

// Config is the Hugging Face WhisperConfig written as config.json.
type Config struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	ActivationFunction    string   `json:"activation_function"`
	DModel                int      `json:"d_model"`
	EncoderLayers         int      `json:"encoder_layers"`
	EncoderAttentionHeads int      `json:"encoder_attention_heads"`
	EncoderFFNDim         int      `json:"encoder_ffn_dim"`
	DecoderLayers         int      `json:"decoder_layers"`
	DecoderAttentionHeads int      `json:"decoder_attention_heads"`
	DecoderFFNDim         int      `json:"decoder_ffn_dim"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumMelBins            int      `json:"num_mel_bins"`
	VocabSize             int      `json:"vocab_size"`
	MaxSourcePositions    int      `json:"max_source_positions"`
	MaxTargetPositions    int      `json:"max_target_positions"`
	ScaleEmbedding        bool     `json:"scale_embedding"`
	IsEncoderDecoder      bool     `json:"is_encoder_decoder"`
	UseCache              bool     `json:"use_cache"`
	BOSTokenID            int      `json:"bos_token_id"`
	EOSTokenID            int      `json:"eos_token_id"`
	PadTokenID            int      `json:"pad_token_id"`
	DecoderStartTokenID   int      `json:"decoder_start_token_id"`
	TorchDType            string   `json:"torch_dtype"`
}

// Info describes a written export.
type Info struct {
	Config Config
	Files  []string // written files, relative to dir
	Params int64    // weight values written (each shared weight once)
}

// FromCT2 writes into dir (created if needed) an optimum-layout ONNX export
// of the CTranslate2 Whisper model m:
//
//   - encoder_model.onnx: input_features f32[batch, mels, 3000] →
//     last_hidden_state f32[batch, 1500, d_model]
//   - decoder_model.onnx: input_ids i64[batch, seq], encoder_hidden_states
//     f32[batch, 1500, d_model] → logits f32[batch, seq, vocab] and, per
//     layer l, present.l.decoder.key/value f32[batch, heads, seq, head_dim]
//     and present.l.encoder.key/value f32[batch, heads, 1500, head_dim]
//     (the cross-attention keys and values, computed once per window)
//   - decoder_with_past_model.onnx: input_ids i64[batch, seq] and, per layer,
//     past_key_values.l.decoder.key/value f32[batch, heads, past, head_dim]
//     and past_key_values.l.encoder.key/value → logits and
//     present.l.decoder.key/value f32[batch, heads, past+seq, head_dim]
//   - both decoders also output cross_attentions f32[batch, alignment
//     heads, seq, 1500]: the post-softmax cross-attention probabilities of
//     the alignment heads (opt.AlignmentHeads, else CT2Config's
//     alignment_heads, else every head of the second half of the layers),
//     ordered by layer, then as listed; word timestamps read them
//   - config.json (Hugging Face WhisperConfig), and generation_config.json
//     when opt.CT2Config is set.
//
// The tokenizer files (tokenizer.json, vocabulary, preprocessor config) are
// the caller's to copy.
func FromCT2(m *ct2.Model, dir string, opt Options) (*Info, error) {
	c, err := newConverter(m)
	if err != nil {
		return nil, err
	}
	switch opt.ComputeType {
	case "", "default", "float32", "int8":
		c.compute = opt.ComputeType
	default:
		return nil, fmt.Errorf("whisperonnx: compute type %q is not one of %v", opt.ComputeType, ComputeTypes)
	}
	if c.alignHeads, err = c.alignmentHeads(opt); err != nil {
		return nil, err
	}
	enc := c.encoder()
	dec := c.decoder(false)
	past := c.decoder(true)
	if c.err != nil {
		return nil, c.err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	info := &Info{Config: c.config()}
	doc := "Whisper converted from CTranslate2 " + m.Spec + " by falocal"
	groups := []struct {
		data   string
		graphs []*graph
		files  []string
	}{
		{EncoderDataFile, []*graph{enc}, []string{EncoderFile}},
		{DecoderDataFile, []*graph{dec, past}, []string{DecoderFile, DecoderWithPastFile}},
	}
	for _, grp := range groups {
		written, params, err := writeGroup(dir, grp.data, grp.graphs, grp.files, opt.External, doc)
		if err != nil {
			return nil, err
		}
		info.Files = append(info.Files, written...)
		info.Params += params
	}
	b, err := json.MarshalIndent(info.Config, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	info.Files = append(info.Files, ConfigFile)
	if len(opt.CT2Config) > 0 {
		b, err := generationConfig(opt.CT2Config, info.Config)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, GenerationFile), b, 0o644); err != nil {
			return nil, err
		}
		info.Files = append(info.Files, GenerationFile)
	}
	return info, nil
}

// converter builds the graphs of one model.
type converter struct {
	m                    *ct2.Model
	d, vocab, mels       int
	encHeads, decHeads   int
	encLayers, decLayers int
	encFFN, decFFN       int
	srcPos, tgtPos       int
	alignHeads           [][2]int           // [layer, head], ordered by layer
	compute              string             // Options.ComputeType
	weights              map[string]*weight // by ONNX name, shared by the graphs
	err                  error
}

func (c *converter) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("whisperonnx: "+format, args...)
	}
}

// shape is a variable's shape; a missing variable fails the conversion.
func (c *converter) shape(name string) []int64 {
	t, ok := c.m.Tensor(name)
	if !ok {
		c.fail("the model has no variable %s", name)
		return nil
	}
	return t.Shape
}

func (c *converter) has(name string) bool {
	_, ok := c.m.Tensor(name)
	return ok
}

func (c *converter) count(format string) int {
	n := 0
	for c.has(fmt.Sprintf(format, n)) {
		n++
	}
	return n
}

func newConverter(m *ct2.Model) (*converter, error) {
	if m.Spec != "" && m.Spec != "WhisperSpec" {
		return nil, fmt.Errorf("whisperonnx: model spec %s is not WhisperSpec", m.Spec)
	}
	c := &converter{m: m, weights: map[string]*weight{}}
	emb := c.shape("decoder/embeddings/weight")
	conv1 := c.shape("encoder/conv1/weight")
	src := c.shape("encoder/position_encodings/encodings")
	tgt := c.shape("decoder/position_encodings/encodings")
	if c.err != nil {
		return nil, c.err
	}
	if len(emb) != 2 || len(conv1) != 3 || len(src) != 2 || len(tgt) != 2 {
		return nil, fmt.Errorf("whisperonnx: unexpected shapes: embeddings %v, conv1 %v, position encodings %v and %v", emb, conv1, src, tgt)
	}
	c.vocab, c.d = int(emb[0]), int(emb[1])
	c.mels = int(conv1[1])
	c.srcPos, c.tgtPos = int(src[0]), int(tgt[0])
	var err error
	heads := func(name string) int {
		n, e := m.Int(name)
		if e != nil && err == nil {
			err = fmt.Errorf("whisperonnx: %w", e)
		}
		return int(n)
	}
	c.encHeads, c.decHeads = heads("encoder/num_heads"), heads("decoder/num_heads")
	if err != nil {
		return nil, err
	}
	if c.has("decoder/activation") {
		if a, err := m.Int("decoder/activation"); err != nil || a != 3 {
			return nil, fmt.Errorf("whisperonnx: decoder activation %d (%v), want GELU (3)", a, err)
		}
	}
	// settings a Whisper model never has
	for _, name := range []string{"decoder/alibi", "decoder/scale_embeddings", "decoder/start_from_zero_embedding"} {
		if c.has(name) {
			if v, err := m.Int(name); err != nil || v != 0 {
				return nil, fmt.Errorf("whisperonnx: %s is %d (%v), want 0", name, v, err)
			}
		}
	}
	if c.has("decoder/pre_norm") {
		if p, err := m.Int("decoder/pre_norm"); err != nil || p != 1 {
			return nil, fmt.Errorf("whisperonnx: decoder is not pre-norm (%d, %v)", p, err)
		}
	}
	c.encLayers = c.count("encoder/layer_%d/ffn/linear_0/weight")
	c.decLayers = c.count("decoder/layer_%d/ffn/linear_0/weight")
	switch {
	case c.encLayers == 0 || c.decLayers == 0:
		return nil, fmt.Errorf("whisperonnx: %d encoder and %d decoder layers", c.encLayers, c.decLayers)
	case c.d <= 0 || c.encHeads <= 0 || c.decHeads <= 0 || c.d%c.encHeads != 0 || c.d%c.decHeads != 0:
		return nil, fmt.Errorf("whisperonnx: width %d does not split into %d encoder / %d decoder heads", c.d, c.encHeads, c.decHeads)
	case c.srcPos != inputFrames/2:
		return nil, fmt.Errorf("whisperonnx: %d encoder positions, want %d", c.srcPos, inputFrames/2)
	case src[1] != int64(c.d) || tgt[1] != int64(c.d) || conv1[0] != int64(c.d):
		return nil, fmt.Errorf("whisperonnx: widths disagree: embeddings %v, conv1 %v, position encodings %v and %v", emb, conv1, src, tgt)
	}
	c.encFFN = int(c.shape("encoder/layer_0/ffn/linear_0/weight")[0])
	c.decFFN = int(c.shape("decoder/layer_0/ffn/linear_0/weight")[0])
	return c, nil
}

func (c *converter) config() Config {
	// English-only vocabularies (51864) lack one language token, which
	// shifts the special tokens by one
	eot := 50257
	if c.vocab < 51865 {
		eot = 50256
	}
	return Config{
		Architectures: []string{"WhisperForConditionalGeneration"}, ModelType: "whisper", ActivationFunction: "gelu",
		DModel:        c.d,
		EncoderLayers: c.encLayers, EncoderAttentionHeads: c.encHeads, EncoderFFNDim: c.encFFN,
		DecoderLayers: c.decLayers, DecoderAttentionHeads: c.decHeads, DecoderFFNDim: c.decFFN,
		NumHiddenLayers: c.encLayers, NumMelBins: c.mels, VocabSize: c.vocab,
		MaxSourcePositions: c.srcPos, MaxTargetPositions: c.tgtPos,
		IsEncoderDecoder: true, UseCache: true,
		BOSTokenID: eot, EOSTokenID: eot, PadTokenID: eot, DecoderStartTokenID: eot + 1,
		TorchDType: "float32",
	}
}

// quantized reports whether the linear weight name is written as int8.
func (c *converter) quantized(name string) bool {
	t, ok := c.m.Tensor(name)
	if !ok || len(t.Shape) != 2 {
		return false
	}
	switch c.compute {
	case "int8":
		return true
	case "float32":
		return false
	}
	return t.DType == ct2.Int8
}

// --- weights ---

// storedName names an initializer after the variable as stored, so that
// aliases (the tied projection) share one initializer.
func storedName(t *ct2.Tensor, name string) string {
	if t.Name != "" {
		return t.Name
	}
	return name
}

func (c *converter) cached(name string, dims []int64, load func() ([]float32, error)) *weight {
	if w, ok := c.weights[name]; ok {
		return w
	}
	w := &weight{name: name, dims: dims, load: load}
	c.weights[name] = w
	return w
}

// stored is a variable as CTranslate2 stores it (aliases resolved, so that
// tied weights are written once).
func (c *converter) stored(name string) *weight {
	t, ok := c.m.Tensor(name)
	if !ok {
		c.fail("the model has no variable %s", name)
		return &weight{name: name}
	}
	return c.cached(storedName(t, name), slices.Clone(t.Shape), func() ([]float32, error) {
		v, _, err := c.m.Float32(name)
		return v, err
	})
}

// scaledRows loads a variable with its first rows values multiplied by s.
func (c *converter) scaledRows(name string, rows int, s float32) func() ([]float32, []int64, error) {
	return func() ([]float32, []int64, error) {
		v, shape, err := c.m.Float32(name)
		if err != nil {
			return nil, nil, err
		}
		if rows > 0 {
			per := 1
			for _, d := range shape[1:] {
				per *= int(d)
			}
			n := min(rows*per, len(v))
			for i := range n {
				v[i] *= s
			}
		}
		return v, shape, nil
	}
}

// linearWeight is a CTranslate2 linear weight [out, in] transposed to the
// [in, out] right operand of MatMul, its first qRows output rows scaled.
func (c *converter) linearWeight(name string, qRows int, s float32) *weight {
	t, ok := c.m.Tensor(name)
	if !ok || len(t.Shape) != 2 {
		c.fail("the model has no matrix %s", name)
		return &weight{name: name}
	}
	out, in := t.Shape[0], t.Shape[1]
	key := storedName(t, name) + "^T"
	if qRows > 0 {
		key += fmt.Sprintf("*%g[:%d]", s, qRows)
	}
	load := c.scaledRows(name, qRows, s)
	return c.cached(key, []int64{in, out}, func() ([]float32, error) {
		v, _, err := load()
		if err != nil {
			return nil, err
		}
		if int64(len(v)) != in*out {
			return nil, fmt.Errorf("%s: %d values, want %d", name, len(v), in*out)
		}
		tr := make([]float32, len(v))
		for i := range out {
			for j := range in {
				tr[j*out+i] = v[i*in+j]
			}
		}
		return tr, nil
	})
}

// linearBias is a linear layer's bias, its first qRows values scaled; nil
// when the layer has none.
func (c *converter) linearBias(name string, qRows int, s float32) *weight {
	t, ok := c.m.Tensor(name)
	if !ok {
		return nil
	}
	key := storedName(t, name)
	if qRows > 0 {
		key += fmt.Sprintf("*%g[:%d]", s, qRows)
	}
	load := c.scaledRows(name, qRows, s)
	return c.cached(key, slices.Clone(t.Shape), func() ([]float32, error) {
		v, _, err := load()
		return v, err
	})
}

// --- layers ---

// linear applies the linear layer prefix (weight [out, in], optional bias)
// to x [..., in].
func (c *converter) linear(g *graph, x, prefix string) string {
	return c.linearScaled(g, x, prefix, 0, 1)
}

func (c *converter) linearScaled(g *graph, x, prefix string, qRows int, s float32) string {
	b := c.linearBias(prefix+"/bias", qRows, s)
	if c.quantized(prefix + "/weight") {
		w, scale := c.int8Weight(prefix+"/weight", qRows, s)
		ins := []string{x, g.w(w), g.w(scale)}
		if b != nil {
			ins = append(ins, "", g.w(b)) // no zero point: symmetric
		}
		return g.DomainOp(onnxgraph.MicrosoftDomain, "DynamicQuantizeMatMul", ins)
	}
	y := g.op("MatMul", []string{x, g.w(c.linearWeight(prefix+"/weight", qRows, s))})
	if b != nil {
		y = g.op("Add", []string{y, g.w(b)})
	}
	return y
}

// int8Weight is a linear weight [out, in] as the int8 [in, out] right
// operand of DynamicQuantizeMatMul and its per-column scale [out] (w = q ·
// scale), the first qRows output rows scaled by s. An int8 variable keeps
// its values (CTranslate2 stores q = round(w · k) and k per row, so scale
// is 1/k); a float one is quantised as CTranslate2 quantises: k =
// 127 / max|row|, q = round(w · k).
func (c *converter) int8Weight(name string, qRows int, s float32) (*weight, *weight) {
	t, ok := c.m.Tensor(name)
	if !ok || len(t.Shape) != 2 {
		c.fail("the model has no matrix %s", name)
		return &weight{name: name}, &weight{name: name + "_scale"}
	}
	out, in := t.Shape[0], t.Shape[1]
	base := storedName(t, name)
	scaleKey := base + "^int8_scale"
	if qRows > 0 {
		scaleKey += fmt.Sprintf("*%g[:%d]", s, qRows)
	}
	// both weights load from one quantisation, done when the first is written
	var q []byte
	var k []float32
	quantize := func() error {
		if q != nil {
			return nil
		}
		var err error
		q, k, err = c.int8Rows(name, out, in)
		return err
	}
	w := c.cached(base+"^T_int8", []int64{in, out}, nil)
	if w.loadInt8 == nil {
		w.loadInt8 = func() ([]byte, error) {
			if err := quantize(); err != nil {
				return nil, err
			}
			tr := make([]byte, len(q))
			for i := range out {
				for j := range in {
					tr[j*out+i] = q[i*in+j]
				}
			}
			return tr, nil
		}
	}
	scale := c.cached(scaleKey, []int64{out}, func() ([]float32, error) {
		if err := quantize(); err != nil {
			return nil, err
		}
		v := make([]float32, out)
		for i := range v {
			v[i] = 1 / k[i]
			if i < qRows {
				v[i] *= s
			}
		}
		return v, nil
	})
	return w, scale
}

// int8Rows returns a matrix's int8 values [out, in] and CTranslate2's
// per-row quantisation scales k (w = q / k).
func (c *converter) int8Rows(name string, out, in int64) ([]byte, []float32, error) {
	t, _ := c.m.Tensor(name)
	if t.DType == ct2.Int8 {
		st, ok := c.m.Tensors[t.Name+"_scale"]
		if !ok || !st.DType.IsFloat() {
			return nil, nil, fmt.Errorf("%s: int8 without a float %s_scale", name, t.Name)
		}
		k, _, err := c.m.Float32(t.Name + "_scale")
		if err != nil {
			return nil, nil, err
		}
		switch int64(len(k)) {
		case out:
		case 1:
			k = slices.Repeat(k, int(out))
		default:
			return nil, nil, fmt.Errorf("%s: %d scales for %d rows", name, len(k), out)
		}
		if int64(len(t.Data)) != out*in {
			return nil, nil, fmt.Errorf("%s: %d values, want %d", name, len(t.Data), out*in)
		}
		return t.Data, k, nil
	}
	v, _, err := c.m.Float32(name)
	if err != nil {
		return nil, nil, err
	}
	if int64(len(v)) != out*in {
		return nil, nil, fmt.Errorf("%s: %d values, want %d", name, len(v), out*in)
	}
	q := make([]byte, len(v))
	k := make([]float32, out)
	for i := range out {
		row := v[i*in : (i+1)*in]
		var amax float32
		for _, x := range row {
			amax = max(amax, float32(math.Abs(float64(x))))
		}
		k[i] = 1
		if amax > 0 {
			k[i] = 127 / amax
		}
		for j, x := range row {
			q[i*in+int64(j)] = byte(int8(max(-127, min(127, math.Round(float64(x*k[i]))))))
		}
	}
	return q, k, nil
}

func (c *converter) layerNorm(g *graph, x, prefix string, out ...string) string {
	ins := []string{x, g.w(c.stored(prefix + "/gamma")), g.w(c.stored(prefix + "/beta"))}
	if len(out) == 0 {
		return g.op("LayerNormalization", ins, attrInt("axis", -1), attrFloat("epsilon", layerNormEpsilon))
	}
	g.opTo("LayerNormalization", ins, out, attrInt("axis", -1), attrFloat("epsilon", layerNormEpsilon))
	return out[0]
}

// gelu is the exact GELU, x·½·(1 + erf(x/√2)), in the pattern ONNX Runtime
// fuses into one Gelu kernel.
func gelu(g *graph, x string) string {
	t := g.op("Div", []string{x, g.scalar(math.Sqrt2)})
	t = g.op("Erf", []string{t})
	t = g.op("Add", []string{t, g.scalar(1)})
	t = g.op("Mul", []string{x, t})
	return g.op("Mul", []string{t, g.scalar(0.5)})
}

// heads reshapes x [B, T, heads·hd] to [B, heads, T, hd] (perm 0,2,1,3) or
// to [B, heads, hd, T] (perm 0,2,3,1), optionally into a named value.
func (c *converter) heads(g *graph, x string, heads int, perm []int64, out ...string) string {
	r := g.op("Reshape", []string{x, g.ints(0, 0, int64(heads), int64(c.d/heads))})
	if len(out) == 0 {
		return g.op("Transpose", []string{r}, attrInts("perm", perm...))
	}
	g.opTo("Transpose", []string{r}, out, attrInts("perm", perm...))
	return out[0]
}

var (
	permBHTD = []int64{0, 2, 1, 3}
	permBHDT = []int64{0, 2, 3, 1}
)

// attend is softmax(q·kT [masked]) · v for q [B,H,T,hd], kT [B,H,hd,S],
// v [B,H,S,hd], back to [B, T, d]. mask [T, S] is true where a query may
// not look.
func (c *converter) attend(g *graph, q, kT, v, mask string) string {
	o, _ := c.attendProbs(g, q, kT, v, mask)
	return o
}

// attendProbs is attend that also returns the attention probabilities
// [B, H, T, S].
func (c *converter) attendProbs(g *graph, q, kT, v, mask string) (string, string) {
	s := g.op("MatMul", []string{q, kT})
	if mask != "" {
		s = g.op("Where", []string{mask, g.scalar(-math.MaxFloat32), s})
	}
	a := g.op("Softmax", []string{s}, attrInt("axis", -1))
	o := g.op("MatMul", []string{a, v})
	o = g.op("Transpose", []string{o}, attrInts("perm", permBHTD...))
	return g.op("Reshape", []string{o, g.ints(0, 0, int64(c.d))}), a
}

func (c *converter) ffn(g *graph, x, prefix string) string {
	h := c.layerNorm(g, x, prefix+"/layer_norm")
	h = gelu(g, c.linear(g, h, prefix+"/linear_0"))
	h = c.linear(g, h, prefix+"/linear_1")
	return g.op("Add", []string{x, h})
}

// split splits x [..., n·d] into n parts of width d.
func (c *converter) split(g *graph, x string, n int) []string {
	sizes := make([]int64, n)
	for i := range sizes {
		sizes[i] = int64(c.d)
	}
	return g.opN("Split", []string{x, g.ints(sizes...)}, n, attrInt("axis", -1))
}

func (c *converter) encoder() *graph {
	g := newGraph("whisper_encoder")
	in := g.input("input_features", onnxpb.TensorProto_FLOAT, "batch_size", c.mels, inputFrames)
	x := g.op("Conv", []string{in, g.w(c.stored("encoder/conv1/weight")), g.w(c.stored("encoder/conv1/bias"))},
		attrInts("kernel_shape", 3), attrInts("pads", 1, 1), attrInts("strides", 1))
	x = gelu(g, x)
	x = g.op("Conv", []string{x, g.w(c.stored("encoder/conv2/weight")), g.w(c.stored("encoder/conv2/bias"))},
		attrInts("kernel_shape", 3), attrInts("pads", 1, 1), attrInts("strides", 2))
	x = gelu(g, x)
	x = g.op("Transpose", []string{x}, attrInts("perm", 0, 2, 1))
	x = g.op("Add", []string{x, g.w(c.stored("encoder/position_encodings/encodings"))})
	hd := c.d / c.encHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	for l := range c.encLayers {
		pre := fmt.Sprintf("encoder/layer_%d", l)
		h := c.layerNorm(g, x, pre+"/self_attention/layer_norm")
		qkv := c.split(g, c.linearScaled(g, h, pre+"/self_attention/linear_0", c.d, scale), 3)
		q := c.heads(g, qkv[0], c.encHeads, permBHTD)
		kT := c.heads(g, qkv[1], c.encHeads, permBHDT)
		v := c.heads(g, qkv[2], c.encHeads, permBHTD)
		o := c.linear(g, c.attend(g, q, kT, v, ""), pre+"/self_attention/linear_1")
		x = g.op("Add", []string{x, o})
		x = c.ffn(g, x, pre+"/ffn")
	}
	c.layerNorm(g, x, "encoder/layer_norm", "last_hidden_state")
	g.output("last_hidden_state", onnxpb.TensorProto_FLOAT, "batch_size", inputFrames/2, c.d)
	return g
}

// decoder builds the first-step decoder or, withPast, the cached one.
func (c *converter) decoder(withPast bool) *graph {
	name := "whisper_decoder"
	if withPast {
		name = "whisper_decoder_with_past"
	}
	g := newGraph(name)
	hd := c.d / c.decHeads
	H := c.decHeads
	ids := g.input("input_ids", onnxpb.TensorProto_INT64, "batch_size", "decoder_sequence_length")
	var enc string
	if !withPast {
		enc = g.input("encoder_hidden_states", onnxpb.TensorProto_FLOAT, "batch_size", "encoder_sequence_length / 2", c.d)
	}
	pastName := func(l int, kind string) string { return fmt.Sprintf("past_key_values.%d.%s", l, kind) }
	if withPast {
		for l := range c.decLayers {
			for _, kind := range []string{"decoder.key", "decoder.value"} {
				g.input(pastName(l, kind), onnxpb.TensorProto_FLOAT, "batch_size", H, "past_decoder_sequence_length", hd)
			}
			for _, kind := range []string{"encoder.key", "encoder.value"} {
				g.input(pastName(l, kind), onnxpb.TensorProto_FLOAT, "batch_size", H, "encoder_sequence_length_out", hd)
			}
		}
	}
	g.output("logits", onnxpb.TensorProto_FLOAT, "batch_size", "decoder_sequence_length", c.vocab)
	total := "decoder_sequence_length"
	if withPast {
		total = "past_decoder_sequence_length + decoder_sequence_length"
	}
	for l := range c.decLayers {
		g.output(fmt.Sprintf("present.%d.decoder.key", l), onnxpb.TensorProto_FLOAT, "batch_size", H, total, hd)
		g.output(fmt.Sprintf("present.%d.decoder.value", l), onnxpb.TensorProto_FLOAT, "batch_size", H, total, hd)
		if !withPast {
			g.output(fmt.Sprintf("present.%d.encoder.key", l), onnxpb.TensorProto_FLOAT, "batch_size", H, "encoder_sequence_length_out", hd)
			g.output(fmt.Sprintf("present.%d.encoder.value", l), onnxpb.TensorProto_FLOAT, "batch_size", H, "encoder_sequence_length_out", hd)
		}
	}
	// after optimum's outputs, which stay a prefix
	g.output(CrossAttentionsOutput, onnxpb.TensorProto_FLOAT, "batch_size", len(c.alignHeads), "decoder_sequence_length", "encoder_sequence_length_out")
	var aligned []string // per layer with alignment heads: [B, k, T, S]

	// positions past … past+T-1, and the causal mask [T, past+T]
	T := g.op("Shape", []string{ids}, attrInt("start", 1), attrInt("end", 2))
	past := g.ints(0)
	if withPast {
		past = g.op("Shape", []string{pastName(0, "decoder.key")}, attrInt("start", 2), attrInt("end", 3))
	}
	end := g.op("Add", []string{past, T})
	pos := g.op("Slice", []string{g.w(c.stored("decoder/position_encodings/encodings")), past, end, g.ints(0)})
	x := c.embed(g, ids)
	x = g.op("Add", []string{x, pos})
	one := g.int64Scalar(1)
	endS := g.op("Squeeze", []string{end})
	qpos := g.op("Range", []string{g.op("Squeeze", []string{past}), endS, one})
	qpos = g.op("Unsqueeze", []string{qpos, g.ints(1)})
	kpos := g.op("Range", []string{g.int64Scalar(0), endS, one})
	mask := g.op("Greater", []string{kpos, qpos})

	scale := float32(1 / math.Sqrt(float64(hd)))
	for l := range c.decLayers {
		pre := fmt.Sprintf("decoder/layer_%d", l)
		present := func(kind string) string { return fmt.Sprintf("present.%d.%s", l, kind) }
		// self-attention over the past and the new tokens
		h := c.layerNorm(g, x, pre+"/self_attention/layer_norm")
		qkv := c.split(g, c.linearScaled(g, h, pre+"/self_attention/linear_0", c.d, scale), 3)
		q := c.heads(g, qkv[0], H, permBHTD)
		var k, v string
		if withPast {
			k = c.heads(g, qkv[1], H, permBHTD)
			v = c.heads(g, qkv[2], H, permBHTD)
			g.opTo("Concat", []string{pastName(l, "decoder.key"), k}, []string{present("decoder.key")}, attrInt("axis", 2))
			g.opTo("Concat", []string{pastName(l, "decoder.value"), v}, []string{present("decoder.value")}, attrInt("axis", 2))
		} else {
			c.heads(g, qkv[1], H, permBHTD, present("decoder.key"))
			c.heads(g, qkv[2], H, permBHTD, present("decoder.value"))
		}
		k, v = present("decoder.key"), present("decoder.value")
		kT := g.op("Transpose", []string{k}, attrInts("perm", 0, 1, 3, 2))
		o := c.linear(g, c.attend(g, q, kT, v, mask), pre+"/self_attention/linear_1")
		x = g.op("Add", []string{x, o})

		// cross-attention over the window's encoder states
		h = c.layerNorm(g, x, pre+"/attention/layer_norm")
		q = c.heads(g, c.linearScaled(g, h, pre+"/attention/linear_0", c.d, scale), H, permBHTD)
		if withPast {
			k, v = pastName(l, "encoder.key"), pastName(l, "encoder.value")
		} else {
			kv := c.split(g, c.linear(g, enc, pre+"/attention/linear_1"), 2)
			k = c.heads(g, kv[0], H, permBHTD, present("encoder.key"))
			v = c.heads(g, kv[1], H, permBHTD, present("encoder.value"))
		}
		kT = g.op("Transpose", []string{k}, attrInts("perm", 0, 1, 3, 2))
		o, probs := c.attendProbs(g, q, kT, v, "")
		if hs := c.layerHeads(l); len(hs) > 0 {
			aligned = append(aligned, g.op("Gather", []string{probs, g.ints(hs...)}, attrInt("axis", 1)))
		}
		o = c.linear(g, o, pre+"/attention/linear_2")
		x = g.op("Add", []string{x, o})
		x = c.ffn(g, x, pre+"/ffn")
	}
	if len(aligned) == 1 {
		g.opTo("Identity", aligned, []string{CrossAttentionsOutput})
	} else {
		g.opTo("Concat", aligned, []string{CrossAttentionsOutput}, attrInt("axis", 1))
	}
	x = c.layerNorm(g, x, "decoder/layer_norm")
	// logits = x · projectionᵀ: Gemm reads the [vocab, d] matrix as stored,
	// which is the token embedding matrix when tied (one copy on disk)
	x2 := g.op("Reshape", []string{x, g.ints(-1, int64(c.d))})
	var lg string
	if c.quantized("decoder/projection/weight") {
		// the vocabulary-wide projection is the decoder's largest matrix
		lg = c.linear(g, x2, "decoder/projection")
	} else {
		ins := []string{x2, g.w(c.stored("decoder/projection/weight"))}
		if c.has("decoder/projection/bias") {
			ins = append(ins, g.w(c.stored("decoder/projection/bias")))
		}
		lg = g.op("Gemm", ins, attrInt("transB", 1))
	}
	shape := g.op("Concat", []string{g.op("Shape", []string{ids}), g.ints(int64(c.vocab))}, attrInt("axis", 0))
	g.opTo("Reshape", []string{lg, shape}, []string{"logits"})
	if p := c.shape("decoder/projection/weight"); c.err == nil && (len(p) != 2 || p[0] != int64(c.vocab) || p[1] != int64(c.d)) {
		c.fail("decoder projection %v, want [%d %d]", p, c.vocab, c.d)
	}
	return g
}

// embed looks the token ids up in the embedding matrix. When the projection
// is int8 and tied to the embeddings, the lookup reads the projection's int8
// [d, vocab] copy (columns, times their scales), so that the model holds
// one copy of the matrix.
func (c *converter) embed(g *graph, ids string) string {
	const emb, proj = "decoder/embeddings/weight", "decoder/projection/weight"
	te, ok1 := c.m.Tensor(emb)
	tp, ok2 := c.m.Tensor(proj)
	if !ok1 || !ok2 || te != tp || !c.quantized(proj) {
		return g.op("Gather", []string{g.w(c.stored(emb)), ids}, attrInt("axis", 0))
	}
	w, scale := c.int8Weight(proj, 0, 1)
	cols := g.op("Gather", []string{g.w(w), ids}, attrInt("axis", 1)) // [d, batch, seq]
	cols = g.op("Transpose", []string{cols}, attrInts("perm", 1, 2, 0))
	cols = g.op("Cast", []string{cols}, attrInt("to", int64(onnxpb.TensorProto_FLOAT)))
	s := g.op("Unsqueeze", []string{g.op("Gather", []string{g.w(scale), ids}, attrInt("axis", 0)), g.ints(-1)})
	return g.op("Mul", []string{cols, s})
}

// alignmentHeads are the heads of the cross_attentions output, ordered by
// layer (stable within a layer).
func (c *converter) alignmentHeads(opt Options) ([][2]int, error) {
	heads := opt.AlignmentHeads
	if heads == nil && len(opt.CT2Config) > 0 {
		var in struct {
			AlignmentHeads [][2]int `json:"alignment_heads"`
		}
		if err := json.Unmarshal(opt.CT2Config, &in); err != nil {
			return nil, fmt.Errorf("whisperonnx: CTranslate2 config.json: %w", err)
		}
		heads = in.AlignmentHeads
	}
	if len(heads) == 0 {
		// openai-whisper's default: all heads of the second half of the layers
		heads = nil
		for l := c.decLayers / 2; l < c.decLayers; l++ {
			for h := range c.decHeads {
				heads = append(heads, [2]int{l, h})
			}
		}
	}
	seen := map[[2]int]bool{}
	for _, lh := range heads {
		if lh[0] < 0 || lh[0] >= c.decLayers || lh[1] < 0 || lh[1] >= c.decHeads {
			return nil, fmt.Errorf("whisperonnx: alignment head %v outside %d layers of %d heads", lh, c.decLayers, c.decHeads)
		}
		if seen[lh] {
			return nil, fmt.Errorf("whisperonnx: alignment head %v listed twice", lh)
		}
		seen[lh] = true
	}
	out := slices.Clone(heads)
	slices.SortStableFunc(out, func(a, b [2]int) int { return a[0] - b[0] })
	return out, nil
}

// layerHeads are the alignment heads of decoder layer l.
func (c *converter) layerHeads(l int) []int64 {
	var hs []int64
	for _, lh := range c.alignHeads {
		if lh[0] == l {
			hs = append(hs, int64(lh[1]))
		}
	}
	return hs
}

// generationConfig turns CTranslate2's config.json into Hugging Face's
// generation_config.json.
func generationConfig(ct2Config []byte, cfg Config) ([]byte, error) {
	var in struct {
		AlignmentHeads   [][2]int `json:"alignment_heads"`
		SuppressIDs      []int    `json:"suppress_ids"`
		SuppressIDsBegin []int    `json:"suppress_ids_begin"`
		LangIDs          []int    `json:"lang_ids"`
	}
	if err := json.Unmarshal(ct2Config, &in); err != nil {
		return nil, fmt.Errorf("whisperonnx: CTranslate2 config.json: %w", err)
	}
	out := map[string]any{
		"is_multilingual":        len(in.LangIDs) > 0 && cfg.VocabSize >= 51865,
		"bos_token_id":           cfg.BOSTokenID,
		"eos_token_id":           cfg.EOSTokenID,
		"pad_token_id":           cfg.PadTokenID,
		"decoder_start_token_id": cfg.DecoderStartTokenID,
		"max_length":             cfg.MaxTargetPositions,
	}
	if in.AlignmentHeads != nil {
		out["alignment_heads"] = in.AlignmentHeads
	}
	if in.SuppressIDs != nil {
		out["suppress_tokens"] = in.SuppressIDs
	}
	if in.SuppressIDsBegin != nil {
		out["begin_suppress_tokens"] = in.SuppressIDsBegin
	}
	b, err := json.MarshalIndent(out, "", "  ")
	return append(b, '\n'), err
}
