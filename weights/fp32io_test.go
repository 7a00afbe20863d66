package weights

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/weights/onnxpb"
	"google.golang.org/protobuf/proto"
)

// A float16 graph's inputs and outputs become float32 behind Cast nodes,
// subgraphs included; a float32 graph is left alone.
func TestFloat32IO(t *testing.T) {
	typ := func(name string, et onnxpb.TensorProto_DataType) *onnxpb.ValueInfoProto {
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(et))}}}}
	}
	sub := &onnxpb.GraphProto{Name: proto.String("then"), Node: []*onnxpb.NodeProto{{OpType: proto.String("Identity"), Input: []string{"x"}, Output: []string{"t"}}}}
	gt := onnxpb.AttributeProto_GRAPH
	m := &onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: &onnxpb.GraphProto{
		Name:   proto.String("g"),
		Input:  []*onnxpb.ValueInfoProto{typ("x", onnxpb.TensorProto_FLOAT16), typ("flag", onnxpb.TensorProto_BOOL)},
		Output: []*onnxpb.ValueInfoProto{typ("y", onnxpb.TensorProto_FLOAT16)},
		Node: []*onnxpb.NodeProto{
			{OpType: proto.String("If"), Input: []string{"flag"}, Output: []string{"y"},
				Attribute: []*onnxpb.AttributeProto{{Name: proto.String("then_branch"), Type: &gt, G: sub}}},
		},
	}}
	b, _ := proto.Marshal(m)
	p := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(p, b, 0o644)
	changed, err := Float32IO(p)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	nb, _ := os.ReadFile(p)
	var got onnxpb.ModelProto
	if err := proto.Unmarshal(nb, &got); err != nil {
		t.Fatal(err)
	}
	g := got.Graph
	if g.Input[0].GetType().GetTensorType().GetElemType() != int32(onnxpb.TensorProto_FLOAT) ||
		g.Output[0].GetType().GetTensorType().GetElemType() != int32(onnxpb.TensorProto_FLOAT) ||
		g.Input[1].GetType().GetTensorType().GetElemType() != int32(onnxpb.TensorProto_BOOL) {
		t.Fatalf("types not rewritten: %v", g)
	}
	first, last := g.Node[0], g.Node[len(g.Node)-1]
	if first.GetOpType() != "Cast" || first.Input[0] != "x" || last.GetOpType() != "Cast" || last.Output[0] != "y" {
		t.Fatalf("casts: %v ... %v", first, last)
	}
	ifNode := g.Node[1]
	if ifNode.Output[0] != last.Input[0] || ifNode.Attribute[0].G.Node[0].Input[0] != first.Output[0] {
		t.Fatalf("If node not rewired: %v", ifNode)
	}
	if changed, err := Float32IO(p); err != nil || changed {
		t.Fatalf("second pass changed %v, %v", changed, err)
	}
}
