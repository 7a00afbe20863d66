package onnxgraph

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

func TestFloat16(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {65520, 0x7c00}, {1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, {6.103515625e-05, 0x0400},
		{1 + 1.0/2048, 0x3c00},          // a tie rounds to even
		{1 + 3.0/2048, 0x3c02},          // a tie rounds to even, upwards
		{2.980232238769531e-08, 0x0000}, // half the smallest subnormal: a tie to even (zero)
		{0.1, 0x2e66},
	} {
		if got := Float16(c.f); got != c.h {
			t.Errorf("Float16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if h := Float16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("NaN → %#04x", h)
	}
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			continue // NaNs
		}
		if back := Float16(Float16To32(uint16(h))); back != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, Float16To32(uint16(h)), back)
		}
	}
}

func TestModel(t *testing.T) {
	g := New("g")
	x := g.Input("x", onnxpb.TensorProto_FLOAT, "batch", 4)
	w := g.Initializer(Tensor("w", onnxpb.TensorProto_FLOAT, []int64{4}, F32Bytes([]float32{1, 2, 3, 4})))
	y := g.DomainOp(MicrosoftDomain, "FastGelu", []string{g.Op("Mul", []string{x, w}), g.Scalar(2)})
	if g.Scalar(2) != g.Scalar(2) || g.Ints(1, 2) != g.Ints(1, 2) || g.Ints(1) == g.Ints(2) {
		t.Error("constants are not shared")
	}
	g.OpTo("Identity", []string{y}, []string{"y"})
	g.Output("y", onnxpb.TensorProto_FLOAT, "batch", 4)
	m := g.Model(nil, "test", "")
	if len(m.OpsetImport) != 2 || m.OpsetImport[1].GetDomain() != MicrosoftDomain || m.OpsetImport[1].GetVersion() != 1 {
		t.Errorf("opsets %v", m.OpsetImport)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "model.onnx")
	if err := WriteFile(p, m, "model.onnx_data", func(t *onnxpb.TensorProto) bool { return t.GetName() == "w" }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var back onnxpb.ModelProto
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "model.onnx_data"))
	if err != nil || len(data) != 16 {
		t.Fatalf("external data: %d bytes, %v", len(data), err)
	}
	for _, init := range back.Graph.Initializer {
		external := init.GetDataLocation() == onnxpb.TensorProto_EXTERNAL
		if external != (init.GetName() == "w") {
			t.Errorf("%s: external %v", init.GetName(), external)
		}
	}
}
