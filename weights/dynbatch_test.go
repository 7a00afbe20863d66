package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/weights/onnxpb"
	"google.golang.org/protobuf/proto"
)

// batchModel writes a small float32 model pinned to batch n0, as exporters
// write them: x [n0,2,3,3] → y = Relu(Conv1x1(x, w)) [n0,4,3,3] and
// z = Sigmoid(x) [n0,2,3,3], with the Conv's output shape in value_info and
// the weight w also listed among the inputs (older exports do that).
func batchModel(t *testing.T, n0 int64) string {
	t.Helper()
	dim := func(v int64) *onnxpb.TensorShapeProto_Dimension {
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	vi := func(name string, shape ...int64) *onnxpb.ValueInfoProto {
		var dims []*onnxpb.TensorShapeProto_Dimension
		for _, v := range shape {
			dims = append(dims, dim(v))
		}
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
				Shape: &onnxpb.TensorShapeProto{Dim: dims}}}}}
	}
	w := make([]float32, 4*2)
	for i := range w {
		w[i] = float32(i%5) - 1.5
	}
	m := &onnxpb.ModelProto{IrVersion: proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{
			Name:  proto.String("g"),
			Input: []*onnxpb.ValueInfoProto{vi("x", n0, 2, 3, 3), vi("w", 4, 2, 1, 1)},
			Initializer: []*onnxpb.TensorProto{{Name: proto.String("w"), Dims: []int64{4, 2, 1, 1},
				DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: w}},
			Output:    []*onnxpb.ValueInfoProto{vi("y", n0, 4, 3, 3), vi("z", n0, 2, 3, 3)},
			ValueInfo: []*onnxpb.ValueInfoProto{vi("c", n0, 4, 3, 3)},
			Node: []*onnxpb.NodeProto{
				{OpType: proto.String("Conv"), Input: []string{"x", "w"}, Output: []string{"c"}},
				{OpType: proto.String("Relu"), Input: []string{"c"}, Output: []string{"y"}},
				{OpType: proto.String("Sigmoid"), Input: []string{"x"}, Output: []string{"z"}},
			},
		}}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readModel(t *testing.T, p string) *onnxpb.ModelProto {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// A batch pinned to 1 becomes "batch" on every input and output (not on
// the weight listed as an input), value_info goes, the rest of each shape
// stays, and a second pass changes nothing.
func TestDynamicBatch(t *testing.T) {
	p := batchModel(t, 1)
	changed, err := DynamicBatch(p)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	g := readModel(t, p).Graph
	for _, v := range append(append([]*onnxpb.ValueInfoProto{}, g.Input[0]), g.Output...) {
		d := v.GetType().GetTensorType().GetShape().GetDim()
		if len(d) != 4 || d[0].GetDimParam() != "batch" || d[1].GetDimValue() == 0 || d[3].GetDimValue() != 3 {
			t.Errorf("%s: shape %v, want [batch, fixed...]", v.GetName(), d)
		}
	}
	if d := g.Input[1].GetType().GetTensorType().GetShape().GetDim(); d[0].GetDimValue() != 4 {
		t.Errorf("weight w's shape rewritten: %v", d)
	}
	if len(g.ValueInfo) != 0 {
		t.Errorf("value_info kept: %v", g.ValueInfo)
	}
	if len(g.Node) != 3 || len(g.Initializer) != 1 || len(g.Initializer[0].FloatData) != 8 {
		t.Errorf("graph body changed: %v", g)
	}
	before, _ := os.ReadFile(p)
	if changed, err := DynamicBatch(p); err != nil || changed {
		t.Fatalf("second pass changed %v, %v", changed, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("second pass rewrote the file")
	}
}

// A dim 0 fixed to anything but 1 is not a batch of one: refused, and the
// file is left as it was.
func TestDynamicBatchRefusesFixedBatch(t *testing.T) {
	p := batchModel(t, 2)
	before, _ := os.ReadFile(p)
	if changed, err := DynamicBatch(p); err == nil || changed {
		t.Fatalf("batch 2 model: changed %v, err %v; want a refusal", changed, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("refused model was rewritten")
	}
	if _, err := os.Stat(p + ".partial"); err == nil {
		t.Error("left a partial file")
	}
}
