// Package whisperonnxtest builds in-memory CTranslate2 Whisper models for
// tests, from the weights of an optimum ONNX export, the way CTranslate2's
// converter (python/ctranslate2/converters/transformers.py, WhisperLoader)
// builds them from Hugging Face weights: fused self-attention Q/K/V with a
// zero K bias, fused cross-attention K/V, layer norms as gamma/beta, tied
// projection, duplicate variables aliased, optionally int8 quantised.
package whisperonnxtest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/ct2"
	"github.com/falocal/falocal/weights/onnxpb"
)

// Options tunes the model.
type Options struct {
	// Int8 quantises the linear, convolution and embedding weights as
	// CTranslate2's "int8_float32" does: int8 values with one float32
	// scale per output row.
	Int8 bool
}

// quantisableRE matches the variables CTranslate2 quantises (those with a
// "_scale" companion in the spec: linear, Conv1D and embedding weights).
var quantisableRE = regexp.MustCompile(`/(linear_\d+|conv\d|embeddings|projection)/weight$`)

type tensor struct {
	dims []int64
	v    []float32
}

// hfWeights reads an optimum export's weights by Hugging Face name
// ("encoder.layers.0.self_attn.q_proj.weight", "decoder.embed_tokens.weight"),
// with MatMul weights transposed back to PyTorch's [out, in].
func hfWeights(path, prefix string) (map[string]tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g := m.GetGraph()
	inits := map[string]tensor{}
	for _, t := range g.GetInitializer() {
		if t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
			continue
		}
		v := t.GetFloatData()
		if raw := t.GetRawData(); len(raw) > 0 {
			v = make([]float32, len(raw)/4)
			for i := range v {
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		}
		inits[t.GetName()] = tensor{t.GetDims(), v}
	}
	// PyTorch's exporter deduplicates equal weights through Identity nodes
	for _, n := range g.GetNode() {
		if n.GetOpType() == "Identity" {
			if t, ok := inits[n.GetInput()[0]]; ok {
				inits[n.GetOutput()[0]] = t
			}
		}
	}
	out := map[string]tensor{}
	strip := regexp.MustCompile(`^model\.(encoder|decoder)\.`)
	for name, t := range inits {
		if name == "" || name[0] == '/' || strings.HasPrefix(name, "onnx::") {
			continue
		}
		out[prefix+strip.ReplaceAllString(name, "")] = t
	}
	// linear weights are anonymous MatMul operands: name them by their node
	mm := regexp.MustCompile(`^/(?:model/(?:encoder|decoder)/)?(layers\.\d+)/(?:(self_attn|encoder_attn)/)?(q_proj|k_proj|v_proj|out_proj|fc1|fc2)/MatMul$`)
	for _, n := range g.GetNode() {
		sm := mm.FindStringSubmatch(n.GetName())
		if n.GetOpType() != "MatMul" || sm == nil {
			continue
		}
		t, ok := inits[n.GetInput()[1]]
		if !ok || len(t.dims) != 2 {
			return nil, fmt.Errorf("%s: %s has no weight initializer", path, n.GetName())
		}
		in, o := int(t.dims[0]), int(t.dims[1])
		tr := make([]float32, len(t.v))
		for i := range in {
			for j := range o {
				tr[j*in+i] = t.v[i*o+j]
			}
		}
		name := prefix + sm[1] + "."
		if sm[2] != "" {
			name += sm[2] + "."
		}
		out[name+sm[3]+".weight"] = tensor{[]int64{int64(o), int64(in)}, tr}
	}
	return out, nil
}

// FromOptimum reads the weights of the optimum Whisper export in dir
// (encoder_model.onnx and decoder_model.onnx) as a CTranslate2 model.
func FromOptimum(dir string, opt Options) (*ct2.Model, error) {
	hf, err := hfWeights(filepath.Join(dir, "encoder_model.onnx"), "encoder.")
	if err != nil {
		return nil, err
	}
	dec, err := hfWeights(filepath.Join(dir, "decoder_model.onnx"), "decoder.")
	if err != nil {
		return nil, err
	}
	for k, v := range dec {
		hf[k] = v
	}
	vars := map[string]tensor{}
	var missing []string
	get := func(name string) tensor {
		t, ok := hf[name]
		if !ok {
			missing = append(missing, name)
		}
		return t
	}
	set := func(name, from string) { vars[name] = get(from) }
	concat := func(name string, parts ...tensor) {
		var v []float32
		rows := int64(0)
		for _, p := range parts {
			v = append(v, p.v...)
			rows += p.dims[0]
		}
		dims := append([]int64{rows}, parts[0].dims[1:]...)
		vars[name] = tensor{dims, v}
	}
	zeros := func(like tensor) tensor { return tensor{[]int64{like.dims[0]}, make([]float32, like.dims[0])} }
	linear := func(name, from string, bias bool) {
		set(name+"/weight", from+".weight")
		if bias {
			set(name+"/bias", from+".bias")
		}
	}
	norm := func(name, from string) {
		set(name+"/gamma", from+".weight")
		set(name+"/beta", from+".bias")
	}
	attention := func(name, from string, self bool) {
		q, k, v := get(from+".q_proj.weight"), get(from+".k_proj.weight"), get(from+".v_proj.weight")
		qb, vb := get(from+".q_proj.bias"), get(from+".v_proj.bias")
		if missing != nil {
			return
		}
		if self {
			concat(name+"/linear_0/weight", q, k, v)
			concat(name+"/linear_0/bias", qb, zeros(k), vb)
			linear(name+"/linear_1", from+".out_proj", true)
		} else {
			vars[name+"/linear_0/weight"], vars[name+"/linear_0/bias"] = q, qb
			concat(name+"/linear_1/weight", k, v)
			concat(name+"/linear_1/bias", zeros(k), vb)
			linear(name+"/linear_2", from+".out_proj", true)
		}
	}
	layers := func(side string) int {
		n := 0
		for {
			if _, ok := hf[fmt.Sprintf("%s.layers.%d.fc1.weight", side, n)]; !ok {
				return n
			}
			n++
		}
	}
	encLayers, decLayers := layers("encoder"), layers("decoder")
	linear("encoder/conv1", "encoder.conv1", true)
	linear("encoder/conv2", "encoder.conv2", true)
	set("encoder/position_encodings/encodings", "encoder.embed_positions.weight")
	norm("encoder/layer_norm", "encoder.layer_norm")
	for l := range encLayers {
		ct, h := fmt.Sprintf("encoder/layer_%d", l), fmt.Sprintf("encoder.layers.%d", l)
		attention(ct+"/self_attention", h+".self_attn", true)
		norm(ct+"/self_attention/layer_norm", h+".self_attn_layer_norm")
		linear(ct+"/ffn/linear_0", h+".fc1", true)
		linear(ct+"/ffn/linear_1", h+".fc2", true)
		norm(ct+"/ffn/layer_norm", h+".final_layer_norm")
	}
	set("decoder/embeddings/weight", "decoder.embed_tokens.weight")
	set("decoder/position_encodings/encodings", "decoder.embed_positions.weight")
	norm("decoder/layer_norm", "decoder.layer_norm")
	for l := range decLayers {
		ct, h := fmt.Sprintf("decoder/layer_%d", l), fmt.Sprintf("decoder.layers.%d", l)
		attention(ct+"/self_attention", h+".self_attn", true)
		norm(ct+"/self_attention/layer_norm", h+".self_attn_layer_norm")
		attention(ct+"/attention", h+".encoder_attn", false)
		norm(ct+"/attention/layer_norm", h+".encoder_attn_layer_norm")
		linear(ct+"/ffn/linear_0", h+".fc1", true)
		linear(ct+"/ffn/linear_1", h+".fc2", true)
		norm(ct+"/ffn/layer_norm", h+".final_layer_norm")
	}
	// proj_out is tied to embed_tokens
	set("decoder/projection/weight", "decoder.embed_tokens.weight")
	if missing != nil {
		return nil, fmt.Errorf("%s: missing weights %v", dir, missing)
	}

	m := &ct2.Model{BinaryVersion: 6, Spec: "WhisperSpec", SpecRevision: 3, Tensors: map[string]*ct2.Tensor{}, Aliases: map[string]string{}}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Strings(names)
	// ModelSpec._alias_variables: a variable equal to one earlier in
	// alphabetical order becomes an alias of it
	stored := map[string][]byte{}
	var kept []string
	for _, n := range names {
		b := f32Bytes(vars[n].v)
		alias := ""
		for _, k := range kept {
			if dimsEqual(vars[k].dims, vars[n].dims) && bytes.Equal(stored[k], b) {
				alias = k
				break
			}
		}
		if alias != "" {
			m.Aliases[n] = alias
			continue
		}
		stored[n] = b
		kept = append(kept, n)
		t := &ct2.Tensor{Name: n, DType: ct2.Float32, Shape: vars[n].dims, Data: b}
		m.Tensors[n] = t
		quantisable := quantisableRE.MatchString(n)
		if opt.Int8 && quantisable {
			q, scale := quantInt8(vars[n])
			t.DType, t.Data = ct2.Int8, q
			m.Tensors[n+"_scale"] = &ct2.Tensor{Name: n + "_scale", DType: ct2.Float32, Shape: []int64{int64(len(scale))}, Data: f32Bytes(scale)}
		}
	}
	scalar := func(name string, dt ct2.DType, v int64) {
		var b []byte
		switch dt {
		case ct2.Int8:
			b = []byte{byte(int8(v))}
		case ct2.Int16:
			b = binary.LittleEndian.AppendUint16(nil, uint16(int16(v)))
		}
		m.Tensors[name] = &ct2.Tensor{Name: name, DType: dt, Data: b}
	}
	// head counts are no weights: CTranslate2 takes them from the config
	var cfg struct {
		EncoderHeads int `json:"encoder_attention_heads"`
		DecoderHeads int `json:"decoder_attention_heads"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: config.json: %w", dir, err)
	}
	scalar("encoder/num_heads", ct2.Int16, int64(cfg.EncoderHeads))
	scalar("decoder/num_heads", ct2.Int16, int64(cfg.DecoderHeads))
	scalar("decoder/pre_norm", ct2.Int8, 1)
	scalar("decoder/activation", ct2.Int8, 3) // GELU
	scalar("decoder/alignment_layer", ct2.Int16, -1)
	scalar("decoder/alignment_heads", ct2.Int16, 1)
	scalar("decoder/scale_embeddings", ct2.Int8, 0)
	return m, nil
}

func dimsEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// quantInt8 is CTranslate2's int8 quantisation: per outer row, scale =
// 127/max|w| (127 for an all-zero row), q = rint(w·scale).
func quantInt8(t tensor) ([]byte, []float32) {
	rows := int(t.dims[0])
	per := len(t.v) / rows
	q := make([]byte, len(t.v))
	scale := make([]float32, rows)
	for r := range rows {
		row := t.v[r*per : (r+1)*per]
		var amax float32
		for _, x := range row {
			amax = max(amax, float32(math.Abs(float64(x))))
		}
		if amax == 0 {
			amax = 127
		}
		s := 127 / amax
		scale[r] = s
		for i, x := range row {
			q[r*per+i] = byte(int8(math.RoundToEven(float64(x * s))))
		}
	}
	return q, scale
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
