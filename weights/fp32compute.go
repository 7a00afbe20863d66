package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// ErrFloat32 reports a model Float32Compute cannot convert safely.
var ErrFloat32 = errors.New("cannot convert to float32 compute")

// Float32Compute rewrites an ONNX file in place so that the whole network
// computes in float32, the inverse of Float16Compute for a model whose
// graph inputs and outputs are float32 already (a float16 export behind
// float32 edges, as ISNet's published one):
//
//   - float16 initialisers and Constant values become float32 (exact: every
//     half is a float32);
//   - every Cast to float16 becomes a Cast to float32;
//   - a Cast whose input already has the type it casts to is removed (the
//     Cast after each input and the Casts back to float32 a float16 export
//     wraps around the ops it kept in float32 disappear; a Cast making a
//     graph output is removed by renaming its input's producer's output);
//   - nodes are put in topological order (stable: the file's order where it
//     can), value_info is dropped (ONNX Runtime re-derives it), the opset is
//     kept.
//
// It accepts the ops Float16Compute accepts (float16Ops), in the default
// domain, without subgraphs or external data, and float32 graph inputs and
// outputs only; it checks every node's input types after the rewrite, and
// refuses a model in which any float value other than float32 is left
// (ErrFloat32), leaving the file as it was. The result is a deterministic
// function of the input file. It reports whether anything changed: a model
// with nothing in float16 is left alone, and so is one it converted before
// (its metadata says so, and no later Float16Compute converted it back).
func Float32Compute(path string) (bool, error) {
	return rewriteONNX(path, func(m *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error) {
		mine, f16 := false, false
		for _, p := range m.MetadataProps {
			switch p.GetKey() {
			case float32Mark:
				mine = true
			case float16Mark:
				f16 = true
			}
		}
		if mine && !f16 {
			return false, nil // converted already
		}
		changed, err := float32Compute(g)
		if err != nil {
			return false, fmt.Errorf("%s: %w", path, asFloat32Err(err))
		}
		if !changed {
			return false, nil
		}
		// One mark, the float16 one gone: the model no longer computes
		// in float16, and Float16Compute may convert it again.
		props := m.MetadataProps[:0]
		for _, p := range m.MetadataProps {
			if k := p.GetKey(); k != float16Mark && k != float32Mark {
				props = append(props, p)
			}
		}
		m.MetadataProps = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(float32Mark), Value: proto.String("1")})
		return true, nil
	})
}

// float32Mark is the metadata key Float32Compute leaves in a model it
// converted, so that a second pass changes nothing.
const float32Mark = "falocal_float32_compute"

// asFloat32Err rewords an error of the helpers float32Compute shares with
// Float16Compute (topoSort, castTo, constantType) as an ErrFloat32.
func asFloat32Err(err error) error {
	if errors.Is(err, ErrFloat32) || !errors.Is(err, ErrFloat16) {
		return err
	}
	return fmt.Errorf("%w%s", ErrFloat32, strings.TrimPrefix(err.Error(), ErrFloat16.Error()))
}

func float32Compute(g *onnxpb.GraphProto) (bool, error) {
	// 1. Refuse what is not understood: Float16Compute's rules.
	for _, n := range g.Node {
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			return false, fmt.Errorf("%w: node %s is %s in domain %s", ErrFloat32, n.GetName(), n.GetOpType(), d)
		}
		if _, ok := float16Ops[n.GetOpType()]; !ok {
			return false, fmt.Errorf("%w: node %s: op %s is not one it knows how to convert", ErrFloat32, n.GetName(), n.GetOpType())
		}
		for _, a := range n.Attribute {
			if a.G != nil || len(a.Graphs) > 0 {
				return false, fmt.Errorf("%w: node %s has a subgraph", ErrFloat32, n.GetName())
			}
		}
		if err := checkArity(n); err != nil {
			return false, err
		}
		if n.GetOpType() == "Constant" {
			if _, err := constantType(n); err != nil {
				return false, err
			}
		}
	}
	isInit := map[string]*onnxpb.TensorProto{}
	for _, t := range g.Initializer {
		if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
			return false, fmt.Errorf("%w: initialiser %s is in an external data file", ErrFloat32, t.GetName())
		}
		isInit[t.GetName()] = t
	}
	if len(g.SparseInitializer) > 0 {
		return false, fmt.Errorf("%w: sparse initialisers", ErrFloat32)
	}
	// The edges stay as they are: the pipelines feed and read float32.
	for _, v := range g.Input {
		if isInit[v.GetName()] != nil {
			continue // an older export's initialiser listed as an input
		}
		if e := v.GetType().GetTensorType().GetElemType(); isFloat(e) && e != fp32 {
			return false, fmt.Errorf("%w: input %s is %s", ErrFloat32, v.GetName(), elemName(e))
		}
	}
	for _, v := range g.Output {
		if e := v.GetType().GetTensorType().GetElemType(); isFloat(e) && e != fp32 {
			return false, fmt.Errorf("%w: output %s is %s", ErrFloat32, v.GetName(), elemName(e))
		}
	}

	// 2. Weights, constants and casts to float32.
	changed := false
	for _, t := range g.Initializer {
		c, err := tensorToF32(t)
		if err != nil {
			return false, err
		}
		if c {
			setInputElem(g, t.GetName(), fp32)
		}
		changed = changed || c
	}
	for _, n := range g.Node {
		switch n.GetOpType() {
		case "Constant":
			if a := n.Attribute[0]; a.GetName() == "value" {
				c, err := tensorToF32(a.T)
				if err != nil {
					return false, err
				}
				changed = changed || c
			}
		case "Cast":
			to, err := castTo(n)
			if err != nil {
				return false, err
			}
			if to == fp16 {
				setCastTo(n, fp32)
				changed = true
			}
		}
	}
	if !changed {
		return false, nil
	}

	// 3. Type every value in order; drop casts to the type their input
	// already has; check that each op's inputs agree and that nothing but
	// float32 is left among the floats.
	types := map[string]int32{"": 0}
	isInput, isOutput := map[string]bool{}, map[string]bool{}
	for _, t := range g.Initializer {
		types[t.GetName()] = t.GetDataType()
	}
	for _, v := range g.Input {
		if isInit[v.GetName()] == nil {
			types[v.GetName()] = v.GetType().GetTensorType().GetElemType()
			isInput[v.GetName()] = true
		}
	}
	for _, v := range g.Output {
		isOutput[v.GetName()] = true
	}
	nodes, err := topoSort(g.Node)
	if err != nil {
		return false, err
	}
	alias := map[string]string{}
	kept := nodes[:0]
	for _, n := range nodes {
		for i, x := range n.Input {
			if a, ok := alias[x]; ok {
				n.Input[i] = a
			}
		}
		for _, x := range n.Input {
			if _, ok := types[x]; !ok {
				return false, fmt.Errorf("%w: node %s reads %s, which nothing makes", ErrFloat32, n.GetName(), x)
			}
		}
		op := n.GetOpType()
		switch op {
		case "Constant":
			elem, _ := constantType(n)
			types[n.Output[0]] = elem
		case "Shape":
			types[n.Output[0]] = i64
		case "Cast":
			to, _ := castTo(n)
			if types[n.Input[0]] == to && !isOutput[n.Output[0]] {
				alias[n.Output[0]] = n.Input[0]
				continue // dropped
			}
			types[n.Output[0]] = to
		default:
			if err := typeOp(n, op, types, ErrFloat32); err != nil {
				return false, err
			}
		}
		for _, o := range n.Output {
			if e := types[o]; isFloat(e) && e != fp32 {
				return false, fmt.Errorf("%w: node %s (%s) makes %s as %s", ErrFloat32, n.GetName(), op, o, elemName(e))
			}
		}
		kept = append(kept, n)
	}
	for _, v := range g.Output {
		name := v.GetName()
		e, ok := types[name]
		if !ok {
			return false, fmt.Errorf("%w: output %s: nothing makes it", ErrFloat32, name)
		}
		if want := v.GetType().GetTensorType().GetElemType(); want != 0 && e != want {
			return false, fmt.Errorf("%w: output %s is %s, computed as %s", ErrFloat32, name, elemName(want), elemName(e))
		}
	}

	// 4. A Cast making a graph output from a float32 value: the value's
	// producer makes the output itself, where that value is made by a node
	// and is no graph input or output of its own.
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range kept {
		for _, o := range n.Output {
			producer[o] = n
		}
	}
	final := kept[:0]
	for _, n := range kept {
		if n.GetOpType() == "Cast" {
			x, y := n.Input[0], n.Output[0]
			to, _ := castTo(n)
			if p := producer[x]; p != nil && types[x] == to && !isOutput[x] && !isInput[x] {
				for _, m := range kept {
					renameIn(m.Input, x, y)
				}
				renameIn(p.Output, x, y)
				producer[y] = p
				continue // dropped
			}
		}
		final = append(final, n)
	}
	g.Node = final
	dropValueInfo(g)
	return true, nil
}

func renameIn(names []string, from, to string) {
	for i, s := range names {
		if s == from {
			names[i] = to
		}
	}
}

// isFloat reports whether an ONNX element type is a floating point type.
func isFloat(e int32) bool {
	switch onnxpb.TensorProto_DataType(e) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_BFLOAT16:
		return true
	}
	return false
}

// tensorToF32 rewrites a float16 tensor as float32 (raw little-endian
// floats; the widening is exact); other types are left alone.
func tensorToF32(t *onnxpb.TensorProto) (bool, error) {
	if t.GetDataType() != fp16 {
		return false, nil
	}
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	var h []uint16
	switch {
	case len(t.RawData) > 0:
		if len(t.RawData)%2 != 0 {
			return false, fmt.Errorf("%w: tensor %s has %d bytes of float16", ErrFloat32, t.GetName(), len(t.RawData))
		}
		h = make([]uint16, len(t.RawData)/2)
		for i := range h {
			h[i] = binary.LittleEndian.Uint16(t.RawData[2*i:])
		}
	default: // int32_data holds one half's bits per value
		h = make([]uint16, len(t.Int32Data))
		for i, x := range t.Int32Data {
			if x < 0 || x > math.MaxUint16 {
				return false, fmt.Errorf("%w: tensor %s: int32_data %d is no float16", ErrFloat32, t.GetName(), x)
			}
			h[i] = uint16(x)
		}
	}
	if int64(len(h)) != n {
		return false, fmt.Errorf("%w: tensor %s has %d values for shape %v", ErrFloat32, t.GetName(), len(h), t.Dims)
	}
	raw := make([]byte, 4*len(h))
	for i, x := range h {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(onnxgraph.Float16To32(x)))
	}
	t.DataType = proto.Int32(fp32)
	t.RawData, t.Int32Data = raw, nil
	return true, nil
}
