// Package ncnn reads Tencent ncnn models (a text .param graph plus a binary
// .bin of weights) into a neutral graph and converts that graph to ONNX.
//
// It covers the layers that Real-ESRGAN's ncnn exports use (Input, Split,
// Convolution with a fused activation, PReLU, Eltwise, BinaryOp, Concat,
// Interp, PixelShuffle) and refuses anything else by name, with
// ErrUnsupported, rather than guess at a layer's weights or meaning.
package ncnn

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ErrUnsupported reports a layer type or parameter this package does not convert.
var ErrUnsupported = errors.New("ncnn: unsupported")

// ErrFormat reports a malformed .param or .bin file.
var ErrFormat = errors.New("ncnn: malformed model")

const paramMagic = "7767517"

// Tags of a weight blob stored with a 4-byte type tag (ModelBin::load type 0).
const (
	tagFP16 = 0x01306B47
	tagInt8 = 0x000D4B38
	tagFP32 = 0x00000000
)

// Layer is one layer of a .param file, with its weights once loaded.
type Layer struct {
	Type    string
	Name    string
	Inputs  []string // blob names
	Outputs []string
	Params  Params
	// Weights holds the layer's weight blobs in .bin order, as float32:
	// Convolution: weight (OIHW), then bias if bias_term; PReLU: slopes.
	Weights []Tensor
}

// Tensor is a named weight blob.
type Tensor struct {
	Role  string  // "weight", "bias", "slope"
	Shape []int64 // ONNX shape
	Data  []float32
	FP16  bool // stored as fp16 in the .bin
}

// Params are a layer's key=value parameters. Plain values are kept as text
// (ncnn decides int or float by the key); arrays (key -233xx) under id xx.
type Params struct {
	values map[int]string
	arrays map[int][]string
}

// Has reports whether id was given (plain or array).
func (p Params) Has(id int) bool {
	_, a := p.values[id]
	_, b := p.arrays[id]
	return a || b
}

// IDs lists the ids given, plain and array.
func (p Params) IDs() []int {
	var out []int
	for id := range p.values {
		out = append(out, id)
	}
	for id := range p.arrays {
		out = append(out, id)
	}
	return out
}

// Int returns param id as an integer, def when absent.
func (p Params) Int(id, def int) (int, error) {
	s, ok := p.values[id]
	if !ok {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: param %d=%q is not an integer", ErrFormat, id, s)
	}
	return v, nil
}

// Float returns param id as a float, def when absent.
func (p Params) Float(id int, def float32) (float32, error) {
	s, ok := p.values[id]
	if !ok {
		return def, nil
	}
	v, err := strconv.ParseFloat(s, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: param %d=%q is not a number", ErrFormat, id, s)
	}
	return float32(v), nil
}

// Floats returns array param id (written -233xx=n,v1,…), nil when absent.
func (p Params) Floats(id int) ([]float32, error) {
	a, ok := p.arrays[id]
	if !ok {
		if _, plain := p.values[id]; plain {
			return nil, fmt.Errorf("%w: param %d should be an array", ErrFormat, id)
		}
		return nil, nil
	}
	out := make([]float32, len(a))
	for i, s := range a {
		v, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: array param %d[%d]=%q is not a number", ErrFormat, id, i, s)
		}
		out[i] = float32(v)
	}
	return out, nil
}

// Graph is a parsed ncnn model.
type Graph struct {
	Layers []*Layer
	Input  string // the blob the Input layer defines
	Output string // the one blob no layer consumes
}

// ParamCount is the number of weights in the model (conv weights and
// biases, PReLU slopes), as PyTorch counts parameters.
func (g *Graph) ParamCount() int64 {
	var n int64
	for _, l := range g.Layers {
		for _, w := range l.Weights {
			n += int64(len(w.Data))
		}
	}
	return n
}

// ParseParam reads a .param text file. Weights are left empty.
func ParseParam(r io.Reader) (*Graph, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	var lines []string
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			lines = append(lines, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(lines) < 2 || lines[0] != paramMagic {
		return nil, fmt.Errorf("%w: .param does not start with %s (binary .param.bin files are not supported)", ErrFormat, paramMagic)
	}
	var nLayers, nBlobs int
	if _, err := fmt.Sscanf(lines[1], "%d %d", &nLayers, &nBlobs); err != nil {
		return nil, fmt.Errorf("%w: second line %q: %v", ErrFormat, lines[1], err)
	}
	if len(lines)-2 != nLayers {
		return nil, fmt.Errorf("%w: header says %d layers, file has %d", ErrFormat, nLayers, len(lines)-2)
	}
	g := &Graph{}
	produced := map[string]bool{}
	consumed := map[string]bool{}
	var order []string
	for i, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("%w: layer line %d: %q", ErrFormat, i+1, line)
		}
		nin, err1 := strconv.Atoi(f[2])
		nout, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || nin < 0 || nout < 0 || len(f) < 4+nin+nout {
			return nil, fmt.Errorf("%w: layer %s: bad blob counts", ErrFormat, f[1])
		}
		l := &Layer{Type: f[0], Name: f[1],
			Inputs:  append([]string(nil), f[4:4+nin]...),
			Outputs: append([]string(nil), f[4+nin:4+nin+nout]...),
			Params:  Params{values: map[int]string{}, arrays: map[int][]string{}}}
		for _, kv := range f[4+nin+nout:] {
			k, v, ok := strings.Cut(kv, "=")
			id, err := strconv.Atoi(k)
			if !ok || err != nil {
				return nil, fmt.Errorf("%w: layer %s: param %q", ErrFormat, l.Name, kv)
			}
			if id <= -23300 {
				id = -id - 23300
				parts := strings.Split(v, ",")
				n, err := strconv.Atoi(parts[0])
				if err != nil || n != len(parts)-1 {
					return nil, fmt.Errorf("%w: layer %s: array param %q", ErrFormat, l.Name, kv)
				}
				l.Params.arrays[id] = parts[1:]
			} else {
				l.Params.values[id] = v
			}
		}
		for _, b := range l.Inputs {
			if !produced[b] {
				return nil, fmt.Errorf("%w: layer %s reads blob %q before any layer writes it", ErrFormat, l.Name, b)
			}
			if consumed[b] {
				return nil, fmt.Errorf("%w: blob %q is read twice without a Split", ErrFormat, b)
			}
			consumed[b] = true
		}
		for _, b := range l.Outputs {
			if produced[b] {
				return nil, fmt.Errorf("%w: blob %q written twice", ErrFormat, b)
			}
			produced[b] = true
			order = append(order, b)
		}
		if l.Type == "Input" {
			if g.Input != "" || len(l.Outputs) != 1 {
				return nil, fmt.Errorf("%w: only one Input layer with one blob is supported", ErrUnsupported)
			}
			g.Input = l.Outputs[0]
		}
		g.Layers = append(g.Layers, l)
	}
	if len(order) != nBlobs {
		return nil, fmt.Errorf("%w: header says %d blobs, layers write %d", ErrFormat, nBlobs, len(order))
	}
	if g.Input == "" {
		return nil, fmt.Errorf("%w: no Input layer", ErrFormat)
	}
	for _, b := range order {
		if !consumed[b] {
			if g.Output != "" {
				return nil, fmt.Errorf("%w: several outputs (%s, %s)", ErrUnsupported, g.Output, b)
			}
			g.Output = b
		}
	}
	if g.Output == "" {
		return nil, fmt.Errorf("%w: no output blob", ErrFormat)
	}
	return g, nil
}

// Load parses a .param file and reads its weights from the .bin bytes,
// which must be consumed exactly.
func Load(param io.Reader, bin []byte) (*Graph, error) {
	g, err := ParseParam(param)
	if err != nil {
		return nil, err
	}
	if err := g.LoadWeights(bin); err != nil {
		return nil, err
	}
	return g, nil
}

// binReader reads ncnn's ModelBin layout.
type binReader struct {
	b   []byte
	off int
}

func (r *binReader) take(n int, what string) ([]byte, error) {
	if n < 0 || r.off+n > len(r.b) {
		return nil, fmt.Errorf("%w: .bin ends at %d bytes, %s needs %d more from offset %d", ErrFormat, len(r.b), what, n, r.off)
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

// raw reads n float32 values with no tag (ModelBin::load type 1).
func (r *binReader) raw(n int, what string) ([]float32, error) {
	p, err := r.take(4*n, what)
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
	return out, nil
}

// tagged reads n values behind a 4-byte type tag (ModelBin::load type 0).
func (r *binReader) tagged(n int, what string) ([]float32, bool, error) {
	p, err := r.take(4, what+" tag")
	if err != nil {
		return nil, false, err
	}
	switch tag := binary.LittleEndian.Uint32(p); tag {
	case tagFP16:
		p, err := r.take((2*n+3)&^3, what)
		if err != nil {
			return nil, false, err
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = fp16ToFloat32(binary.LittleEndian.Uint16(p[2*i:]))
		}
		return out, true, nil
	case tagFP32:
		v, err := r.raw(n, what)
		return v, false, err
	case tagInt8:
		return nil, false, fmt.Errorf("%w: %s is int8-quantised", ErrUnsupported, what)
	default:
		return nil, false, fmt.Errorf("%w: %s has weight tag %#08x (table-quantised weights)", ErrUnsupported, what, tag)
	}
}

// LoadWeights reads each layer's weights from bin in layer order and
// fails unless every byte is used.
func (g *Graph) LoadWeights(bin []byte) error {
	r := &binReader{b: bin}
	for _, l := range g.Layers {
		if err := l.check(); err != nil {
			return err
		}
		l.Weights = nil
		switch l.Type {
		case "Convolution":
			out, _ := l.Params.Int(0, 0)
			kw, _ := l.Params.Int(1, 0)
			kh, _ := l.Params.Int(11, kw)
			bias, _ := l.Params.Int(5, 0)
			n, _ := l.Params.Int(6, 0)
			if out <= 0 || kw <= 0 || kh <= 0 || n <= 0 || n%(out*kw*kh) != 0 {
				return fmt.Errorf("%w: %s %s: weight count %d does not fit %d outputs of %dx%d", ErrFormat, l.Type, l.Name, n, out, kh, kw)
			}
			w, fp16, err := r.tagged(n, l.Name+" weight")
			if err != nil {
				return err
			}
			l.Weights = append(l.Weights, Tensor{Role: "weight", Data: w, FP16: fp16,
				Shape: []int64{int64(out), int64(n / (out * kw * kh)), int64(kh), int64(kw)}})
			if bias != 0 {
				b, err := r.raw(out, l.Name+" bias")
				if err != nil {
					return err
				}
				l.Weights = append(l.Weights, Tensor{Role: "bias", Data: b, Shape: []int64{int64(out)}})
			}
		case "PReLU":
			n, _ := l.Params.Int(0, 0)
			if n <= 0 {
				return fmt.Errorf("%w: PReLU %s: %d slopes", ErrFormat, l.Name, n)
			}
			s, err := r.raw(n, l.Name+" slope")
			if err != nil {
				return err
			}
			shape := []int64{int64(n), 1, 1}
			if n == 1 {
				shape = []int64{1}
			}
			l.Weights = append(l.Weights, Tensor{Role: "slope", Data: s, Shape: shape})
		}
	}
	if r.off != len(bin) {
		return fmt.Errorf("%w: layers use %d bytes of the .bin, which has %d", ErrFormat, r.off, len(bin))
	}
	return nil
}

// known lists, per supported layer type, the param ids it understands.
var known = map[string]map[int]bool{
	"Input":        {0: true, 1: true, 2: true, 11: true},
	"Split":        {},
	"Convolution":  {0: true, 1: true, 11: true, 2: true, 12: true, 3: true, 13: true, 4: true, 14: true, 15: true, 16: true, 18: true, 5: true, 6: true, 8: true, 9: true, 10: true, 17: true, 19: true},
	"PReLU":        {0: true},
	"Eltwise":      {0: true, 1: true},
	"BinaryOp":     {0: true, 1: true, 2: true},
	"Concat":       {0: true},
	"Interp":       {0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true},
	"PixelShuffle": {0: true, 1: true},
}

// check refuses layer types and parameter values the converter does not
// handle, naming them.
func (l *Layer) check() error {
	ids, ok := known[l.Type]
	if !ok {
		return &UnsupportedError{Layer: l.Name, Type: l.Type}
	}
	for _, id := range l.Params.IDs() {
		if !ids[id] {
			return &UnsupportedError{Layer: l.Name, Type: l.Type, Param: id, Value: l.Params.text(id)}
		}
	}
	bad := func(id int, why string) error {
		return &UnsupportedError{Layer: l.Name, Type: l.Type, Param: id, Value: l.Params.text(id), Why: why}
	}
	ints := func(id, def int) int {
		v, err := l.Params.Int(id, def)
		if err != nil {
			return math.MinInt
		}
		return v
	}
	switch l.Type {
	case "Convolution":
		for _, id := range []int{4, 14, 15, 16} {
			if v := ints(id, 0); v < 0 {
				return bad(id, "negative padding (SAME padding) is not converted")
			}
		}
		if v, _ := l.Params.Float(18, 0); v != 0 {
			return bad(18, "non-zero pad value")
		}
		if ints(8, 0) != 0 {
			return bad(8, "int8 convolution")
		}
		if ints(19, 0) != 0 {
			return bad(19, "dynamic weights")
		}
		switch a := ints(9, 0); a {
		case 0, 1, 2, 4:
		default:
			return bad(9, "activation type other than none, ReLU, LeakyReLU, Sigmoid")
		}
		for _, id := range []int{0, 1, 2, 3, 5, 6} {
			if ints(id, 0) == math.MinInt {
				return bad(id, "not an integer")
			}
		}
	case "Eltwise":
		if op := ints(0, 0); op < 0 || op > 2 {
			return bad(0, "operation")
		}
	case "BinaryOp":
		if op := ints(0, 0); op < 0 || op > 3 {
			return bad(0, "operation other than add, sub, mul, div")
		}
	case "Concat":
		if ints(0, 0) != 0 {
			return bad(0, "concat on an axis other than channels")
		}
	case "Interp":
		if t := ints(0, 0); t < 1 || t > 3 {
			return bad(0, "resize type other than nearest, bilinear, bicubic")
		}
		if ints(3, 0) != 0 || ints(4, 0) != 0 {
			return bad(3, "fixed output size")
		}
		if ints(5, 0) != 0 {
			return bad(5, "dynamic target size")
		}
		if ints(6, 0) != 0 && ints(0, 0) == 1 {
			return bad(6, "align_corner with nearest")
		}
	case "PixelShuffle":
		if m := ints(1, 0); m != 0 && m != 1 {
			return bad(1, "mode")
		}
		if ints(0, 1) < 1 {
			return bad(0, "upscale factor")
		}
	case "Split":
		if len(l.Inputs) != 1 {
			return fmt.Errorf("%w: Split %s has %d inputs", ErrFormat, l.Name, len(l.Inputs))
		}
	}
	return nil
}

func (p Params) text(id int) string {
	if v, ok := p.values[id]; ok {
		return v
	}
	if a, ok := p.arrays[id]; ok {
		return "[" + strings.Join(a, ",") + "]"
	}
	return ""
}

// UnsupportedError names a layer that cannot be converted.
type UnsupportedError struct {
	Layer, Type string
	Param       int // 0 with Value "" means the layer type itself
	Value       string
	Why         string
}

func (e *UnsupportedError) Error() string {
	if e.Value == "" && e.Why == "" {
		return fmt.Sprintf("ncnn: unsupported layer type %s (layer %s)", e.Type, e.Layer)
	}
	s := fmt.Sprintf("ncnn: unsupported %s param %d=%s (layer %s)", e.Type, e.Param, e.Value, e.Layer)
	if e.Why != "" {
		s += ": " + e.Why
	}
	return s
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// fp16ToFloat32 converts an IEEE 754 half to float32 exactly.
func fp16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant · 2^-24
		f := float32(mant) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
