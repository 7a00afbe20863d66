//go:build cgo

package ort

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights/onnxpb"
)

// doubleModel writes y = x + x for x float32 [dim0, 3] (dim0 "" = dynamic).
func doubleModel(t *testing.T, dim0 string, fixed int64) string {
	t.Helper()
	vi := func(name string) *onnxpb.ValueInfoProto {
		d0 := &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: fixed}}
		if dim0 != "" {
			d0 = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: dim0}}
		}
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
				Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{d0,
					{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 3}}}}}}}}
	}
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("double"),
			Node:   []*onnxpb.NodeProto{{OpType: proto.String("Add"), Input: []string{"x", "x"}, Output: []string{"y"}}},
			Input:  []*onnxpb.ValueInfoProto{vi("x")},
			Output: []*onnxpb.ValueInfoProto{vi("y")}},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "double.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The batcher on the real runtime: concurrent runs of a model with a
// dynamic batch dimension run as one, each getting its own rows back; a
// model whose batch dimension is fixed at 1 (as ISNet's is) is not batched.
func TestPoolBatchingORT(t *testing.T) {
	rt := runtimeT(t)
	for _, tc := range []struct {
		name      string
		path      string
		wantBatch bool
	}{
		{"dynamic", doubleModel(t, "N", 0), true},
		{"fixed at 1", doubleModel(t, "", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := engine.NewPoolWith(rt, engine.SessionSpec{Path: tc.path, Inputs: []string{"x"}, Outputs: []string{"y"}},
				engine.PoolOptions{Size: 1, Batch: engine.BatchConfig{MaxBatch: 4, MaxDelay: 200 * time.Millisecond}, Name: "double-" + tc.name})
			defer pl.Close()
			if err := pl.Warm(context.Background()); err != nil {
				t.Fatal(err)
			}
			if pl.Batching() != tc.wantBatch {
				t.Fatalf("Batching() = %v, want %v", pl.Batching(), tc.wantBatch)
			}
			var wg sync.WaitGroup
			stats := make([]engine.RunStats, 4)
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v := float32(i + 1)
					in, _ := engine.NewFloat32([]float32{v, v, v}, 1, 3)
					out, err := pl.Do(context.Background(), engine.Run{Inputs: []*engine.Tensor{in}, Stats: &stats[i]})
					if err != nil {
						t.Error(err)
						return
					}
					if y := out[0]; len(y.F32) != 3 || y.Shape[0] != 1 || y.F32[0] != 2*v || y.F32[2] != 2*v {
						t.Errorf("request %d got %v %v", i, y.Shape, y.F32)
					}
				}()
			}
			wg.Wait()
			for i, st := range stats {
				if tc.wantBatch && st.Batch != 4 {
					t.Errorf("request %d ran in a batch of %d, want 4", i, st.Batch)
				}
				if !tc.wantBatch && st.Batch != 1 {
					t.Errorf("request %d ran in a batch of %d, want 1", i, st.Batch)
				}
			}
		})
	}
}

// ISNet (isnet-general-use) is installed with a dynamic batch dimension
// (weights.DynamicBatch), so a pool asked to batch it can.
func TestISNetBatchAxis(t *testing.T) {
	rt := runtimeT(t)
	pl := engine.NewPoolWith(rt, engine.SessionSpec{Path: isnetPath(t), Inputs: []string{"input"}, Outputs: []string{"output"}},
		engine.PoolOptions{Size: 1, Batch: engine.BatchConfig{MaxBatch: 4, MaxDelay: time.Millisecond}})
	defer pl.Close()
	s, err := pl.Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Inputs()[0].Shape[0]; d != -1 || !pl.Batching() {
		t.Errorf("ISNet input dim 0 = %d, batching %v; want dynamic (-1), batching", d, pl.Batching())
	}
}
