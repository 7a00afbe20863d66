package diffusion

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

// Exports of the same network differ in how they declare an input: a
// per-row or a scalar timestep, float or int64 timesteps and FLUX ids,
// ids with or without a batch dimension. The pipelines build one form;
// conform turns it into the one the graph declares.

// onnxDType maps an ONNX element type to the engine's.
func onnxDType(elem int32) (engine.DType, bool) {
	switch elem {
	case 1:
		return engine.Float32, true
	case 10:
		return engine.Float16, true
	case 2:
		return engine.Uint8, true
	case 6:
		return engine.Int32, true
	case 7:
		return engine.Int64, true
	case 9:
		return engine.Bool, true
	}
	return 0, false
}

// batchOf is the batch of a component call: the leading dimension of its
// main input.
func batchOf(feeds map[string]*engine.Tensor) int64 {
	for _, k := range []string{"sample", "hidden_states", "latent_sample", "input_ids"} {
		if t := feeds[k]; t != nil && len(t.Shape) > 0 {
			return t.Shape[0]
		}
	}
	return 1
}

// conform returns t in the element type and rank v declares: a rank-1
// tensor of equal values becomes the scalar a graph may declare, a tensor
// without the batch dimension a graph declares gets it (rows repeated),
// and values convert between float32, int32 and int64. Static dimensions
// must match; a mismatch is an error that names both shapes.
func conform(t *engine.Tensor, v weights.ValueInfo, batch int64) (*engine.Tensor, error) {
	want, ok := onnxDType(v.Elem)
	if !ok {
		return nil, fmt.Errorf("declared element type %d is not supported", v.Elem)
	}
	if want == t.DType && fits(t.Shape, v) {
		return t, nil // the common case: no copy of the sample or the latents
	}
	vals, err := float64s(t)
	if err != nil {
		return nil, err
	}
	shape := slices.Clone(t.Shape)
	switch {
	case v.Dims == nil: // no declared shape: only the type is converted
		shape = t.Shape
		v.Dims = make([]int64, len(shape))
		for i := range v.Dims {
			v.Dims[i] = -1
		}
	case len(v.Dims) == 0 && len(shape) == 1:
		for _, x := range vals {
			if x != vals[0] {
				return nil, fmt.Errorf("the graph takes a scalar, the pipeline has %d different values", len(vals))
			}
		}
		vals, shape = vals[:1], nil
	case v.Rank() == len(shape)+1 && len(shape) > 0 && v.Dims[0] != 1:
		rep := make([]float64, 0, int(batch)*len(vals))
		for i := int64(0); i < batch; i++ {
			rep = append(rep, vals...)
		}
		vals, shape = rep, append([]int64{batch}, shape...)
	case v.Rank() == len(shape)+1 && v.Dims[0] == 1:
		shape = append([]int64{1}, shape...)
	case v.Rank() == len(shape)-1 && len(shape) > 0 && shape[0] == 1:
		shape = shape[1:]
	}
	if v.Rank() != len(shape) {
		return nil, fmt.Errorf("the graph declares shape %s, the pipeline has %v", declared(v), t.Shape)
	}
	for i, d := range v.Dims {
		if d >= 0 && d != shape[i] {
			return nil, fmt.Errorf("the graph declares shape %s, the pipeline has %v", declared(v), shape)
		}
	}
	if want == t.DType && slices.Equal(shape, t.Shape) {
		return t, nil
	}
	return fromFloat64s(vals, want, shape)
}

// fits reports whether shape is one v declares: same rank, static
// dimensions equal.
func fits(shape []int64, v weights.ValueInfo) bool {
	if v.Dims == nil || len(v.Dims) != len(shape) {
		return false
	}
	for i, d := range v.Dims {
		if d >= 0 && d != shape[i] {
			return false
		}
	}
	return true
}

// declared prints a declared shape with its symbolic dimensions.
func declared(v weights.ValueInfo) string {
	s := "["
	for i, d := range v.Dims {
		if i > 0 {
			s += ", "
		}
		switch {
		case d >= 0:
			s += fmt.Sprint(d)
		case v.DimNames[i] != "":
			s += v.DimNames[i]
		default:
			s += "?"
		}
	}
	return s + "]"
}

func float64s(t *engine.Tensor) ([]float64, error) {
	n := int(engine.Elements(t.Shape))
	out := make([]float64, n)
	switch t.DType {
	case engine.Float32:
		for i, x := range t.F32 {
			out[i] = float64(x)
		}
	case engine.Int64:
		for i := range out {
			out[i] = float64(int64(binary.LittleEndian.Uint64(t.Raw[8*i:])))
		}
	case engine.Int32:
		for i := range out {
			out[i] = float64(int32(binary.LittleEndian.Uint32(t.Raw[4*i:])))
		}
	default:
		return nil, fmt.Errorf("cannot convert %s values", t.DType)
	}
	return out, nil
}

func fromFloat64s(vals []float64, dt engine.DType, shape []int64) (*engine.Tensor, error) {
	t := &engine.Tensor{DType: dt, Shape: shape}
	switch dt {
	case engine.Float32:
		t.F32 = make([]float32, len(vals))
		for i, x := range vals {
			t.F32[i] = float32(x)
		}
	case engine.Int64:
		// timesteps truncate as torch's .long() does
		t.Raw = make([]byte, 0, 8*len(vals))
		for _, x := range vals {
			t.Raw = binary.LittleEndian.AppendUint64(t.Raw, uint64(int64(math.Trunc(x))))
		}
	case engine.Int32:
		t.Raw = make([]byte, 0, 4*len(vals))
		for _, x := range vals {
			t.Raw = binary.LittleEndian.AppendUint32(t.Raw, uint32(int32(math.Trunc(x))))
		}
	default:
		return nil, fmt.Errorf("the graph takes %s, which the pipeline cannot feed (convert the export's inputs to float32)", dt)
	}
	return t, nil
}

// ones is an all-ones int64 tensor (an attention mask that masks nothing).
func ones(shape []int64) *engine.Tensor {
	n := int(engine.Elements(shape))
	raw := make([]byte, 0, 8*n)
	for i := 0; i < n; i++ {
		raw = binary.LittleEndian.AppendUint64(raw, 1)
	}
	return &engine.Tensor{DType: engine.Int64, Shape: slices.Clone(shape), Raw: raw}
}
