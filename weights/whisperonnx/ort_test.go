//go:build cgo

package whisperonnx_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
	"github.com/falocal/falocal/weights/onnxpb"
	"github.com/falocal/falocal/weights/whisperonnx"
	"github.com/falocal/falocal/weights/whisperonnx/whisperonnxtest"
)

// runner runs ONNX files in ONNX Runtime by input and output name.
type runner struct {
	t  *testing.T
	rt engine.Runtime
}

func newRunner(t *testing.T) *runner {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	return &runner{t, rt}
}

func (r *runner) run(path string, in map[string]*engine.Tensor) map[string]*engine.Tensor {
	r.t.Helper()
	ins, outs, err := weights.ONNXIO(path)
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := r.rt.Open(r.t.Context(), engine.SessionSpec{Path: path, Inputs: ins, Outputs: outs, IntraOpThreads: 1})
	if err != nil {
		r.t.Fatal(err)
	}
	defer s.Close()
	ts := make([]*engine.Tensor, len(ins))
	for i, n := range ins {
		if ts[i] = in[n]; ts[i] == nil {
			r.t.Fatalf("%s: no value for input %s", filepath.Base(path), n)
		}
	}
	res, err := s.Run(r.t.Context(), ts, nil)
	if err != nil {
		r.t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	got := map[string]*engine.Tensor{}
	for i, n := range outs {
		got[n] = res[i]
	}
	return got
}

func int64s(shape []int64, v ...int64) *engine.Tensor {
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	return &engine.Tensor{DType: engine.Int64, Shape: shape, Raw: raw}
}

// maxDiff compares two float tensors of one shape.
func maxDiff(t *testing.T, what string, a, b *engine.Tensor) float64 {
	t.Helper()
	if a == nil || b == nil {
		t.Fatalf("%s: missing (%v, %v)", what, a != nil, b != nil)
	}
	if fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) {
		t.Fatalf("%s: shape %v, reference %v", what, a.Shape, b.Shape)
	}
	var d float64
	for i := range a.F32 {
		d = math.Max(d, math.Abs(float64(a.F32[i]-b.F32[i])))
	}
	return d
}

// The converted graphs compute what the optimum export computes, from the
// same weights passed through CTranslate2's layout: encoder, first decoder
// step (with the cross-attention cache) and a cached step, within 1e-4 of
// each output's scale (max(1, max |reference|): the random tiny model's
// logits reach 400, where float32 itself resolves 3e-5).
func TestMatchesOptimumExport(t *testing.T) {
	r := newRunner(t)
	cases := []struct {
		name    string
		ext     whisperonnx.ExternalMode
		int8    bool   // the CTranslate2 model stores int8 weights
		compute string // Options.ComputeType
		tol     float64
	}{
		{"inline", whisperonnx.ExternalNever, false, "", 1e-4},
		{"external", whisperonnx.ExternalAlways, false, "", 1e-4},
		// int8 weights: checked below, against the logits' range
		{"int8", whisperonnx.ExternalAuto, true, "", 0},
		{"int8 dequantised", whisperonnx.ExternalAuto, true, "float32", 0},
		{"quantised at conversion", whisperonnx.ExternalAlways, false, "int8", 0},
	}
	ref := map[string]*engine.Tensor{}
	rng := rand.New(rand.NewSource(1))
	const B = 2
	feat := make([]float32, B*80*3000)
	for i := range feat {
		feat[i] = float32(rng.NormFloat64())
	}
	features, _ := engine.NewFloat32(feat, B, 80, 3000)
	ids := int64s([]int64{B, 4}, 50258, 50259, 50359, 50363, 50258, 50260, 50359, 50364)
	next := int64s([]int64{B, 1}, 440, 1012)
	refEnc := r.run(filepath.Join(tinyMultiDir, "encoder_model.onnx"), map[string]*engine.Tensor{"input_features": features})
	h := refEnc["last_hidden_state"]
	refDec := r.run(filepath.Join(tinyMultiDir, "decoder_model.onnx"), map[string]*engine.Tensor{"input_ids": ids, "encoder_hidden_states": h})
	pastIn := func(dec map[string]*engine.Tensor) map[string]*engine.Tensor {
		in := map[string]*engine.Tensor{"input_ids": next, "cache_position": int64s([]int64{1}, 4)}
		for n, v := range dec {
			if rest, ok := strings.CutPrefix(n, "present."); ok {
				in["past_key_values."+rest] = v
			}
		}
		return in
	}
	refPast := r.run(filepath.Join(tinyMultiDir, "decoder_with_past_model.onnx"), pastIn(refDec))
	for k, v := range refDec {
		ref["dec/"+k] = v
	}
	for k, v := range refPast {
		ref["past/"+k] = v
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := whisperonnxtest.FromOptimum(tinyMultiDir, whisperonnxtest.Options{Int8: c.int8})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Aliases) == 0 {
				t.Fatal("no aliased variables: the alias path goes untested")
			}
			dir := t.TempDir()
			info, err := whisperonnx.FromCT2(m, dir, whisperonnx.Options{External: c.ext, ComputeType: c.compute})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("files %v, %d parameters", info.Files, info.Params)
			// int8 weights run as int8, never dequantised to float32 in the file
			wantInt8 := c.compute == "int8" || (c.int8 && c.compute == "")
			for _, f := range []string{whisperonnx.EncoderFile, whisperonnx.DecoderFile, whisperonnx.DecoderWithPastFile} {
				ops, int8s := graphStats(t, filepath.Join(dir, f))
				if got := ops["DynamicQuantizeMatMul"] > 0 && ops["MatMul"] == 2*ops["Softmax"]; got != wantInt8 {
					t.Errorf("%s: ops %v: int8 linear layers %v, want %v", f, ops, got, wantInt8)
				}
				if (int8s > 0) != wantInt8 {
					t.Errorf("%s: %d int8 initializers", f, int8s)
				}
			}
			if c.ext == whisperonnx.ExternalAlways && !strings.Contains(strings.Join(info.Files, " "), whisperonnx.DecoderDataFile) {
				t.Fatalf("no external data written: %v", info.Files)
			}
			r.t = t
			enc := r.run(filepath.Join(dir, whisperonnx.EncoderFile), map[string]*engine.Tensor{"input_features": features})
			// each decoder runs on the reference encoder states, so that its
			// own error is measured
			dec := r.run(filepath.Join(dir, whisperonnx.DecoderFile), map[string]*engine.Tensor{"input_ids": ids, "encoder_hidden_states": h})
			past := r.run(filepath.Join(dir, whisperonnx.DecoderWithPastFile), pastIn(refDec))
			got := map[string]*engine.Tensor{"enc/last_hidden_state": enc["last_hidden_state"]}
			for k, v := range dec {
				got["dec/"+k] = v
			}
			for k, v := range past {
				got["past/"+k] = v
			}
			// the alignment heads' cross-attention is an output optimum lacks
			for _, out := range []map[string]*engine.Tensor{dec, past} {
				if out[whisperonnx.CrossAttentionsOutput] == nil {
					t.Fatalf("no %s output", whisperonnx.CrossAttentionsOutput)
				}
				delete(out, whisperonnx.CrossAttentionsOutput)
			}
			if len(dec) != len(refDec) || len(past) != len(refPast) {
				t.Fatalf("outputs: %d and %d, reference %d and %d", len(dec), len(past), len(refDec), len(refPast))
			}
			ref["enc/last_hidden_state"] = h
			worst := map[string]float64{}
			var maxLogit float64
			for _, v := range ref["dec/logits"].F32 {
				maxLogit = math.Max(maxLogit, math.Abs(float64(v)))
			}
			for name, want := range ref {
				d := maxDiff(t, name, got[name], want)
				kind := strings.SplitN(name, "/", 2)[0] + "/" + strings.TrimRight(strings.Map(func(r rune) rune {
					if r >= '0' && r <= '9' {
						return 'N'
					}
					return r
				}, strings.SplitN(name, "/", 2)[1]), ".")
				worst[kind] = math.Max(worst[kind], d)
				scale := 1.0
				for _, v := range want.F32 {
					scale = math.Max(scale, math.Abs(float64(v)))
				}
				tol := c.tol * scale
				if c.int8 || c.compute == "int8" {
					// int8 weights: ~1/127 of each row's range per weight
					tol = 0.05 * maxLogit
				}
				if d > tol {
					t.Errorf("%s: max |Δ| %.3g > %.3g", name, d, tol)
				}
			}
			t.Logf("max |Δ| by output (max |logit| %.3g): %v", maxLogit, worst)
		})
	}
}

// The decoders' cross_attentions output holds the chosen heads' attention
// probabilities: rows that sum to 1, heads ordered by layer, openai-whisper's
// default heads when none are named, and the cached decoder's row for a new
// token equal to the uncached decoder's row at that position.
func TestCrossAttentions(t *testing.T) {
	r := newRunner(t)
	r.t = t
	m, err := whisperonnxtest.FromOptimum(tinyMultiDir, whisperonnxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	const B = 2
	feat := make([]float32, B*80*3000)
	for i := range feat {
		feat[i] = float32(rng.NormFloat64())
	}
	features, _ := engine.NewFloat32(feat, B, 80, 3000)
	ids := int64s([]int64{B, 4}, 50258, 50259, 50359, 50363, 50258, 50260, 50359, 50364)
	ids5 := int64s([]int64{B, 5}, 50258, 50259, 50359, 50363, 440, 50258, 50260, 50359, 50364, 1012)
	next := int64s([]int64{B, 1}, 440, 1012)
	convert := func(opt whisperonnx.Options) string {
		dir := t.TempDir()
		if _, err := whisperonnx.FromCT2(m, dir, opt); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// tiny-multi: 2 decoder layers of 2 heads; the default is layer 1's heads
	def := convert(whisperonnx.Options{})
	named := convert(whisperonnx.Options{AlignmentHeads: [][2]int{{1, 1}, {0, 0}}})
	fromConfig := convert(whisperonnx.Options{CT2Config: []byte(`{"alignment_heads": [[0, 1]]}`)})
	h := r.run(filepath.Join(def, whisperonnx.EncoderFile), map[string]*engine.Tensor{"input_features": features})["last_hidden_state"]
	dec := func(dir string, ids *engine.Tensor) map[string]*engine.Tensor {
		return r.run(filepath.Join(dir, whisperonnx.DecoderFile), map[string]*engine.Tensor{"input_ids": ids, "encoder_hidden_states": h})
	}
	// head k of a [B, heads, T, S] tensor, as [B][T][S] values
	head := func(x *engine.Tensor, k int) []float32 {
		nh, T, S := int(x.Shape[1]), int(x.Shape[2]), int(x.Shape[3])
		var out []float32
		for b := range int(x.Shape[0]) {
			off := (b*nh + k) * T * S
			out = append(out, x.F32[off:off+T*S]...)
		}
		return out
	}
	same := func(what string, a, b []float32) {
		t.Helper()
		if len(a) != len(b) {
			t.Fatalf("%s: %d and %d values", what, len(a), len(b))
		}
		var d float64
		for i := range a {
			d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		}
		if d > 1e-6 {
			t.Errorf("%s: max |Δ| %.3g", what, d)
		}
	}
	dd := dec(def, ids)
	ca := dd[whisperonnx.CrossAttentionsOutput]
	if fmt.Sprint(ca.Shape) != "[2 2 4 1500]" {
		t.Fatalf("default heads: shape %v, want [2 2 4 1500]", ca.Shape)
	}
	for row := 0; row < len(ca.F32); row += 1500 {
		var sum float64
		for _, v := range ca.F32[row : row+1500] {
			sum += float64(v)
		}
		if math.Abs(sum-1) > 1e-4 {
			t.Fatalf("row %d sums to %g", row/1500, sum)
		}
	}
	dn := dec(named, ids)[whisperonnx.CrossAttentionsOutput]
	if fmt.Sprint(dn.Shape) != "[2 2 4 1500]" {
		t.Fatalf("named heads: shape %v", dn.Shape)
	}
	// named [[1,1],[0,0]] is ordered by layer: [0,0] then [1,1]
	same("layer 1 head 1", head(dn, 1), head(ca, 1))
	dc := dec(fromConfig, ids)[whisperonnx.CrossAttentionsOutput]
	if fmt.Sprint(dc.Shape) != "[2 1 4 1500]" {
		t.Fatalf("config heads: shape %v", dc.Shape)
	}
	if d := maxAbsDiff(head(dc, 0), head(dn, 0)); d < 1e-6 {
		t.Errorf("heads [0,1] and [0,0] attend alike (max |Δ| %.3g): is the head picked?", d)
	}

	// the cached step's row is the full decoder's last row
	in := map[string]*engine.Tensor{"input_ids": next}
	for n, v := range dd {
		if rest, ok := strings.CutPrefix(n, "present."); ok {
			in["past_key_values."+rest] = v
		}
	}
	pc := r.run(filepath.Join(def, whisperonnx.DecoderWithPastFile), in)[whisperonnx.CrossAttentionsOutput]
	if fmt.Sprint(pc.Shape) != "[2 2 1 1500]" {
		t.Fatalf("with-past: shape %v", pc.Shape)
	}
	full := dec(def, ids5)[whisperonnx.CrossAttentionsOutput]
	var last []float32
	for b := range B {
		for k := range 2 {
			off := ((b*2+k)*5 + 4) * 1500
			last = append(last, full.F32[off:off+1500]...)
		}
	}
	if d := maxAbsDiff(pc.F32, last); d > 1e-5 {
		t.Errorf("with-past cross_attentions differ from the full decoder's last row: max |Δ| %.3g", d)
	}
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// graphStats counts a graph's nodes by operator and its int8 initializers.
func graphStats(t *testing.T, path string) (map[string]int, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range m.GetGraph().GetNode() {
		ops[n.GetOpType()]++
	}
	int8s := 0
	for _, in := range m.GetGraph().GetInitializer() {
		if in.GetDataType() == int32(onnxpb.TensorProto_INT8) {
			int8s++
		}
	}
	return ops, int8s
}
