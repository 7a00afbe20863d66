//go:build cgo

package ort

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights/onnxpb"
)

// Rank-0 inputs (optimum's UNet takes a scalar timestep) are fed as
// scalars, float32 and int64 alike: y = x·s + float(k).
func TestScalarInputs(t *testing.T) {
	vi := func(name string, elem onnxpb.TensorProto_DataType, dims ...int64) *onnxpb.ValueInfoProto {
		sh := &onnxpb.TensorShapeProto{}
		for _, d := range dims {
			sh.Dim = append(sh.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: sh}}}}
	}
	to := onnxpb.AttributeProto_INT
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("scalars"),
			Node: []*onnxpb.NodeProto{
				{OpType: proto.String("Cast"), Input: []string{"k"}, Output: []string{"kf"},
					Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: &to, I: proto.Int64(int64(onnxpb.TensorProto_FLOAT))}}},
				{OpType: proto.String("Mul"), Input: []string{"x", "s"}, Output: []string{"xs"}},
				{OpType: proto.String("Add"), Input: []string{"xs", "kf"}, Output: []string{"y"}},
			},
			Input:  []*onnxpb.ValueInfoProto{vi("x", onnxpb.TensorProto_FLOAT, 3), vi("s", onnxpb.TensorProto_FLOAT), vi("k", onnxpb.TensorProto_INT64)},
			Output: []*onnxpb.ValueInfoProto{vi("y", onnxpb.TensorProto_FLOAT, 3)}},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "scalars.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := runtimeT(t).Open(context.Background(), engine.SessionSpec{Path: p, Inputs: []string{"x", "s", "k"}, Outputs: []string{"y"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := &engine.Tensor{DType: engine.Int64, Raw: binary.LittleEndian.AppendUint64(nil, 10)}
	out, err := s.Run(context.Background(), []*engine.Tensor{
		{DType: engine.Float32, Shape: []int64{3}, F32: []float32{1, 2, 3}},
		{DType: engine.Float32, F32: []float32{0.5}}, k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := out[0].F32; !slices.Equal(got, []float32{10.5, 11, 11.5}) {
		t.Fatalf("y = %v", got)
	}
	if _, err := s.Run(context.Background(), []*engine.Tensor{
		{DType: engine.Float32, Shape: []int64{3}, F32: []float32{1, 2, 3}},
		{DType: engine.Float32, F32: []float32{0.5, 1}}, k}, nil); err == nil {
		t.Fatal("a scalar with two values ran")
	}
}
