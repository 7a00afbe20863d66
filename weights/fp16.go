package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// ErrFloat16 reports a model Float16Compute cannot convert safely.
var ErrFloat16 = errors.New("cannot convert to float16 compute")

// Float16Compute rewrites an ONNX file in place so that the network
// computes in float16 while its float32 graph inputs and outputs stay
// float32 (the pipelines feed and read float32):
//
//   - float32 initialisers and Constant values become float16;
//   - one Cast to float16 follows each float32 graph input and one Cast back
//     to float32 makes each float32 graph output;
//   - every Cast to float32 becomes a Cast to float16, and a Cast whose
//     input already has the type it casts to is removed (an fp16 export's
//     initialiser → Cast → Conv becomes initialiser → Conv; the casts an
//     fp16 export wraps around ops it kept in float32 disappear);
//   - the inputs ONNX requires to be float32 whatever the data type stay
//     float32: Resize's roi and scales (the only such inputs among the ops
//     it accepts; they must be initialisers or Constants);
//   - value_info is dropped (ONNX Runtime re-derives it); the opset is kept.
//
// It accepts only the ops in float16Ops, in the default domain, without
// subgraphs or external data, and checks every node's input types after the
// rewrite: a model it does not know how to convert is refused
// (ErrFloat16) and the file left as it was. Float16 overflows above 65504:
// a float32 weight beyond it is clamped to ±65504. The result is a
// deterministic function of the input file. It reports whether anything
// changed; a model it converted before (its metadata says so) is left alone.
func Float16Compute(path string) (bool, error) {
	return rewriteONNX(path, func(m *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error) {
		for _, p := range m.MetadataProps {
			if p.GetKey() == float16Mark {
				return false, nil // converted already
			}
		}
		changed, err := float16Compute(g)
		if err != nil {
			return false, fmt.Errorf("%s: %w", path, err)
		}
		if changed {
			m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(float16Mark), Value: proto.String("1")})
		}
		return changed, nil
	})
}

// float16Mark is the metadata key Float16Compute leaves in a model it
// converted, so that a second pass changes nothing.
const float16Mark = "falocal_float16_compute"

// opRule is how float16Compute types an op: the input positions that share
// the op's float type T (-1: all of them), which output positions have type
// T (the rest are int64), and input positions that must be float32.
type opRule struct {
	same   []int // inputs of type T; nil: input 0 only
	allIn  bool  // every input is T
	outs   int   // outputs of type T (the first outs), the rest int64; 0: 1
	fp32In []int // inputs ONNX requires as float32 whatever T is
}

// float16Ops are the ops Float16Compute converts: those of ISNet and of the
// Real-ESRGAN graphs weights/ncnn writes, and a few more whose typing is as
// plain. Each has float16 kernels in ONNX Runtime's CUDA provider; on a CPU
// ONNX Runtime runs those lacking float16 kernels between casts it inserts.
var float16Ops = map[string]opRule{
	"Conv":               {same: []int{0, 1, 2}},
	"ConvTranspose":      {same: []int{0, 1, 2}},
	"Relu":               {},
	"LeakyRelu":          {},
	"PRelu":              {allIn: true},
	"Sigmoid":            {},
	"Tanh":               {},
	"Add":                {allIn: true},
	"Sub":                {allIn: true},
	"Mul":                {allIn: true},
	"Div":                {allIn: true},
	"Sum":                {allIn: true},
	"Max":                {allIn: true},
	"Min":                {allIn: true},
	"Concat":             {allIn: true},
	"MaxPool":            {},
	"AveragePool":        {},
	"GlobalAveragePool":  {},
	"DepthToSpace":       {},
	"SpaceToDepth":       {},
	"Identity":           {},
	"Transpose":          {},
	"Reshape":            {},
	"Flatten":            {},
	"Squeeze":            {},
	"Unsqueeze":          {},
	"Slice":              {},
	"Gather":             {},
	"Resize":             {fp32In: []int{1, 2}}, // roi, scales; sizes is int64
	"Shape":              {},                    // typed by hand: int64
	"Cast":               {},                    // typed by hand: its "to"
	"Constant":           {},                    // typed by hand: its value
	"BatchNormalization": {allIn: true},
}

const (
	fp32 = int32(onnxpb.TensorProto_FLOAT)
	fp16 = int32(onnxpb.TensorProto_FLOAT16)
	i64  = int32(onnxpb.TensorProto_INT64)
)

func float16Compute(g *onnxpb.GraphProto) (bool, error) {
	// 1. Refuse what is not understood.
	for _, n := range g.Node {
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			return false, fmt.Errorf("%w: node %s is %s in domain %s", ErrFloat16, n.GetName(), n.GetOpType(), d)
		}
		if _, ok := float16Ops[n.GetOpType()]; !ok {
			return false, fmt.Errorf("%w: node %s: op %s is not one it knows how to convert", ErrFloat16, n.GetName(), n.GetOpType())
		}
		for _, a := range n.Attribute {
			if a.G != nil || len(a.Graphs) > 0 {
				return false, fmt.Errorf("%w: node %s has a subgraph", ErrFloat16, n.GetName())
			}
		}
		if err := checkArity(n); err != nil {
			return false, err
		}
	}
	for _, t := range g.Initializer {
		if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
			return false, fmt.Errorf("%w: initialiser %s is in an external data file", ErrFloat16, t.GetName())
		}
	}
	if len(g.SparseInitializer) > 0 {
		return false, fmt.Errorf("%w: sparse initialisers", ErrFloat16)
	}

	// 2. Values that must stay float32: Resize's roi and scales. They must
	// be made by an initialiser or a Constant, which is then left alone.
	keep := map[string]bool{}
	for _, n := range g.Node {
		for _, i := range float16Ops[n.GetOpType()].fp32In {
			if i < len(n.Input) && n.Input[i] != "" {
				keep[n.Input[i]] = true
			}
		}
	}
	isInit := map[string]*onnxpb.TensorProto{}
	for _, t := range g.Initializer {
		isInit[t.GetName()] = t
	}
	constOut := map[string]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		if n.GetOpType() == "Constant" {
			for _, o := range n.Output {
				constOut[o] = n
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keep)) {
		if isInit[k] == nil && constOut[k] == nil {
			return false, fmt.Errorf("%w: %s must stay float32 but is computed, not an initialiser or Constant", ErrFloat16, k)
		}
	}

	// 3. Weights and constants to float16.
	changed := false
	for _, t := range g.Initializer {
		if keep[t.GetName()] {
			continue
		}
		c, err := tensorToF16(t)
		if err != nil {
			return false, err
		}
		if c {
			setInputElem(g, t.GetName(), fp16)
		}
		changed = changed || c
	}
	for _, n := range g.Node {
		if n.GetOpType() != "Constant" || keep[n.Output[0]] {
			continue
		}
		c, err := constantToF16(n)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	retargeted := map[*onnxpb.NodeProto]bool{} // Casts to float32 made Casts to float16
	for _, n := range g.Node {
		if n.GetOpType() == "Cast" {
			to, err := castTo(n)
			if err != nil {
				return false, err
			}
			if to == fp32 {
				setCastTo(n, fp16)
				retargeted[n] = true
				changed = true
			}
		}
	}

	// 4. The edges: float32 inputs cast to float16 on entry, float32
	// outputs cast back from an inner float16 value.
	types := map[string]int32{"": 0}
	for _, t := range g.Initializer {
		types[t.GetName()] = t.GetDataType()
	}
	isOutput := map[string]bool{}
	var head, tail []*onnxpb.NodeProto
	for _, in := range g.Input {
		name := in.GetName()
		if isInit[name] != nil {
			continue // an older export's initialiser listed as an input
		}
		elem := in.GetType().GetTensorType().GetElemType()
		if elem != fp32 {
			types[name] = elem
			continue
		}
		inner := name + "__falocal_fp16"
		renameUses(g, name, inner)
		head = append(head, castNode(name, inner, onnxpb.TensorProto_FLOAT16))
		types[name] = fp32
		changed = true
	}
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		for _, o := range n.Output {
			producer[o] = n
		}
	}
	for _, out := range g.Output {
		name := out.GetName()
		isOutput[name] = true
		if out.GetType().GetTensorType().GetElemType() != fp32 {
			continue
		}
		if producer[name] == nil {
			return false, fmt.Errorf("%w: output %s is not made by a node (an input or initialiser)", ErrFloat16, name)
		}
		inner := name + "__falocal_fp16"
		renameUses(g, name, inner)
		renameProducers(g, name, inner)
		tail = append(tail, castNode(inner, name, onnxpb.TensorProto_FLOAT))
		changed = true
	}
	if !changed {
		return false, nil
	}

	// 5. Type every value in order; drop casts to the type their input
	// already has; check that each op's inputs agree.
	alias := map[string]string{}
	nodes, err := topoSort(append(append(head, g.Node...), tail...))
	if err != nil {
		return false, err
	}
	kept := nodes[:0]
	for _, n := range nodes {
		for i, x := range n.Input {
			if a, ok := alias[x]; ok {
				n.Input[i] = a
			}
		}
		for _, x := range n.Input {
			if _, ok := types[x]; !ok {
				return false, fmt.Errorf("%w: node %s reads %s, which nothing makes", ErrFloat16, n.GetName(), x)
			}
		}
		op := n.GetOpType()
		switch op {
		case "Constant":
			elem, err := constantType(n)
			if err != nil {
				return false, err
			}
			types[n.Output[0]] = elem
		case "Shape":
			types[n.Output[0]] = i64
		case "Cast":
			to, _ := castTo(n)
			if retargeted[n] && isInteger(types[n.Input[0]]) {
				return false, fmt.Errorf("%w: node %s casts %s %s to float: integer values cast to float: shape arithmetic would lose precision in float16", ErrFloat16, n.GetName(), elemName(types[n.Input[0]]), n.Input[0])
			}
			if types[n.Input[0]] == to && !isOutput[n.Output[0]] {
				alias[n.Output[0]] = n.Input[0]
				continue // dropped
			}
			types[n.Output[0]] = to
		default:
			if err := typeOp(n, op, types, ErrFloat16); err != nil {
				return false, err
			}
		}
		kept = append(kept, n)
	}
	for _, t := range tail {
		if x := types[t.Input[0]]; x != fp16 && x != fp32 {
			return false, fmt.Errorf("%w: output %s is computed as %s", ErrFloat16, t.Output[0], elemName(x))
		}
	}
	g.Node = kept
	dropValueInfo(g)
	return true, nil
}

// topoSort orders nodes so that each comes after the nodes making its
// inputs, keeping the given order where it can (a deterministic result).
// ONNX requires that order but ONNX Runtime sorts for itself, and some
// exports (ISNet's) append the Casts their converter added at the end.
func topoSort(nodes []*onnxpb.NodeProto) ([]*onnxpb.NodeProto, error) {
	producer := map[string]int{}
	for i, n := range nodes {
		for _, o := range n.Output {
			producer[o] = i
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(nodes))
	out := make([]*onnxpb.NodeProto, 0, len(nodes))
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("%w: the graph has a cycle through node %s", ErrFloat16, nodes[i].GetName())
		}
		state[i] = visiting
		for _, x := range nodes[i].Input {
			if p, ok := producer[x]; ok && x != "" {
				if err := visit(p); err != nil {
					return err
				}
			}
		}
		state[i] = done
		out = append(out, nodes[i])
		return nil
	}
	for i := range nodes {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkArity refuses a Constant, Cast or Shape node without the inputs
// and outputs the converters index (ONNX: a Constant has no input and one
// output, a Cast and a Shape one of each).
func checkArity(n *onnxpb.NodeProto) error {
	ins := -1
	switch n.GetOpType() {
	case "Constant":
		ins = 0
	case "Cast", "Shape":
		ins = 1
	default:
		return nil
	}
	if len(n.Input) != ins || len(n.Output) != 1 || n.Output[0] == "" || (ins == 1 && n.Input[0] == "") {
		return fmt.Errorf("%w: node %s (%s) has %d inputs and %d outputs, want %d and 1", ErrFloat16, n.GetName(), n.GetOpType(), len(n.Input), len(n.Output), ins)
	}
	return nil
}

// setInputElem sets the element type of the graph input named name, if
// any (an older export lists its initialisers among the inputs too).
func setInputElem(g *onnxpb.GraphProto, name string, elem int32) {
	for _, in := range g.Input {
		if tt := in.GetType().GetTensorType(); in.GetName() == name && tt != nil {
			tt.ElemType = proto.Int32(elem)
		}
	}
}

// isInteger reports whether an ONNX element type is an integer type.
func isInteger(e int32) bool {
	switch onnxpb.TensorProto_DataType(e) {
	case onnxpb.TensorProto_UINT8, onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT16, onnxpb.TensorProto_INT16,
		onnxpb.TensorProto_INT32, onnxpb.TensorProto_INT64, onnxpb.TensorProto_UINT32, onnxpb.TensorProto_UINT64:
		return true
	}
	return false
}

func elemName(t int32) string {
	if s, ok := onnxpb.TensorProto_DataType_name[t]; ok {
		return strings.ToLower(s)
	}
	return fmt.Sprintf("type %d", t)
}

func castTo(n *onnxpb.NodeProto) (int32, error) {
	for _, a := range n.Attribute {
		if a.GetName() == "to" {
			return int32(a.GetI()), nil
		}
	}
	return 0, fmt.Errorf("%w: Cast %s has no 'to'", ErrFloat16, n.GetName())
}

func setCastTo(n *onnxpb.NodeProto, to int32) {
	for _, a := range n.Attribute {
		if a.GetName() == "to" {
			a.I = proto.Int64(int64(to))
		}
	}
}

// tensorToF16 rewrites a float32 tensor as float16 (raw little-endian
// halves), clamping to ±65504; other types are left alone.
func tensorToF16(t *onnxpb.TensorProto) (bool, error) {
	if t.GetDataType() != fp32 {
		return false, nil
	}
	var v []float32
	switch {
	case len(t.RawData) > 0:
		if len(t.RawData)%4 != 0 {
			return false, fmt.Errorf("%w: tensor %s has %d bytes of float32", ErrFloat16, t.GetName(), len(t.RawData))
		}
		v = make([]float32, len(t.RawData)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
		}
	default:
		v = t.FloatData
	}
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	if int64(len(v)) != n {
		return false, fmt.Errorf("%w: tensor %s has %d values for shape %v", ErrFloat16, t.GetName(), len(v), t.Dims)
	}
	const maxHalf = 65504
	raw := make([]byte, 2*len(v))
	for i, x := range v {
		if x > maxHalf {
			x = maxHalf
		} else if x < -maxHalf {
			x = -maxHalf
		}
		binary.LittleEndian.PutUint16(raw[2*i:], onnxgraph.Float16(x))
	}
	t.DataType = proto.Int32(fp16)
	t.RawData, t.FloatData = raw, nil
	return true, nil
}

// constantToF16 makes a float32 Constant float16: a value tensor is
// converted, value_float(s) become a float16 value tensor.
func constantToF16(n *onnxpb.NodeProto) (bool, error) {
	if len(n.Attribute) != 1 {
		return false, fmt.Errorf("%w: Constant %s has %d attributes", ErrFloat16, n.GetName(), len(n.Attribute))
	}
	a := n.Attribute[0]
	switch a.GetName() {
	case "value":
		return tensorToF16(a.T)
	case "value_float", "value_floats":
		t := &onnxpb.TensorProto{DataType: proto.Int32(fp32), FloatData: a.Floats}
		if a.GetName() == "value_float" {
			t.FloatData = []float32{a.GetF()}
		} else {
			t.Dims = []int64{int64(len(a.Floats))}
		}
		if _, err := tensorToF16(t); err != nil {
			return false, err
		}
		typ := onnxpb.AttributeProto_TENSOR
		n.Attribute[0] = &onnxpb.AttributeProto{Name: proto.String("value"), Type: &typ, T: t}
		return true, nil
	}
	return false, nil
}

// constantType is the element type of a Constant's output.
func constantType(n *onnxpb.NodeProto) (int32, error) {
	if len(n.Attribute) == 1 {
		switch a := n.Attribute[0]; a.GetName() {
		case "value":
			return a.T.GetDataType(), nil
		case "value_float", "value_floats":
			return fp32, nil
		case "value_int", "value_ints":
			return i64, nil
		}
	}
	return 0, fmt.Errorf("%w: Constant %s: unsupported form", ErrFloat16, n.GetName())
}

// typeOp types the outputs of n, an op of float16Ops, from its inputs' types
// after a rewrite: the inputs the op requires alike must agree, and those
// ONNX wants in float32 must be. Errors wrap kind.
func typeOp(n *onnxpb.NodeProto, op string, types map[string]int32, kind error) error {
	r := float16Ops[op]
	var idx []int
	switch {
	case r.allIn:
		for i := range n.Input {
			idx = append(idx, i)
		}
	case r.same != nil:
		idx = r.same
	default:
		idx = []int{0}
	}
	t := int32(0)
	for _, i := range idx {
		if i >= len(n.Input) || n.Input[i] == "" {
			continue
		}
		if x := types[n.Input[i]]; t == 0 {
			t = x
		} else if x != t {
			return fmt.Errorf("%w: node %s (%s) mixes %s and %s inputs after the rewrite", kind, n.GetName(), op, elemName(t), elemName(x))
		}
	}
	for _, i := range r.fp32In {
		if i < len(n.Input) && n.Input[i] != "" && types[n.Input[i]] != fp32 {
			return fmt.Errorf("%w: node %s (%s): input %d is %s, ONNX wants float32", kind, n.GetName(), op, i, elemName(types[n.Input[i]]))
		}
	}
	outs := max(r.outs, 1)
	for j, o := range n.Output {
		if j < outs {
			types[o] = t
		} else {
			types[o] = i64 // MaxPool's Indices
		}
	}
	return nil
}
