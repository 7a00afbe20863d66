package weights

import (
	"github.com/falocal/falocal/weights/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Float32IO rewrites an ONNX file in place so that its float16 graph
// inputs and outputs become float32, with Cast nodes at the graph's edges;
// the computation inside stays float16. onnxruntime_go cannot hand back
// runtime-allocated float16 outputs, and diffusion outputs have shapes only
// known at run time, so fp16 exports are stored this way at import. It
// reports whether anything changed. Weights in external data files are
// untouched (only the graph is rewritten).
func Float32IO(path string) (bool, error) {
	return rewriteONNX(path, func(_ *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error) {
		return float32IO(g), nil
	})
}

func float32IO(g *onnxpb.GraphProto) bool {
	isHalf := func(v *onnxpb.ValueInfoProto) bool {
		return v.GetType().GetTensorType().GetElemType() == fp16
	}
	var head, tail []*onnxpb.NodeProto
	changed := false
	for _, in := range g.Input {
		if !isHalf(in) {
			continue
		}
		inner := in.GetName() + "__falocal_fp16"
		renameUses(g, in.GetName(), inner)
		head = append(head, castNode(in.GetName(), inner, onnxpb.TensorProto_FLOAT16))
		in.GetType().GetTensorType().ElemType = proto.Int32(fp32)
		changed = true
	}
	for _, out := range g.Output {
		if !isHalf(out) {
			continue
		}
		inner := out.GetName() + "__falocal_fp16"
		renameUses(g, out.GetName(), inner)
		renameProducers(g, out.GetName(), inner)
		for _, vi := range g.ValueInfo {
			if vi.GetName() == out.GetName() {
				vi.Name = proto.String(inner)
			}
		}
		tail = append(tail, castNode(inner, out.GetName(), onnxpb.TensorProto_FLOAT))
		out.GetType().GetTensorType().ElemType = proto.Int32(fp32)
		changed = true
	}
	if !changed {
		return false
	}
	g.Node = append(append(head, g.Node...), tail...)
	return true
}

// castNode is the Cast node the rewrites put at a graph's edges.
func castNode(in, out string, to onnxpb.TensorProto_DataType) *onnxpb.NodeProto {
	typ := onnxpb.AttributeProto_INT
	return &onnxpb.NodeProto{
		OpType: proto.String("Cast"), Name: proto.String("falocal_cast_" + out),
		Input: []string{in}, Output: []string{out},
		Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: &typ, I: proto.Int64(int64(to))}},
	}
}

// renameUses replaces a value name where nodes read it, in g and in every
// subgraph (If/Loop bodies read outer values by name).
func renameUses(g *onnxpb.GraphProto, from, to string) {
	for _, n := range g.Node {
		for i, x := range n.Input {
			if x == from {
				n.Input[i] = to
			}
		}
		for _, a := range n.Attribute {
			if a.G != nil {
				renameUses(a.G, from, to)
			}
			for _, sg := range a.Graphs {
				renameUses(sg, from, to)
			}
		}
	}
}

// renameProducers renames the node output that makes a top-level value.
func renameProducers(g *onnxpb.GraphProto, from, to string) {
	for _, n := range g.Node {
		for i, x := range n.Output {
			if x == from {
				n.Output[i] = to
			}
		}
	}
}
