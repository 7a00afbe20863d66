package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// f16Const is a Constant node's float16 value attribute.
func f16Const(dims []int64, v ...float32) onnxgraph.Attr {
	return &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
		T: f16Tensor("", dims, v)}
}

// fp32Cases are float16-compute graphs behind float32 edges, as a float16
// export writes them (input "x" [1,3,8,8] float32, float32 outputs outs),
// that Float32Compute converts. casts is how many Cast nodes the converted
// graph keeps.
var fp32Cases = []struct {
	fp16Case
	casts int
}{
	{fp16Case: fp16Case{
		// ISNet's published pattern: the input cast to float16, float16
		// weights feeding Conv directly, a linear Resize to a computed size
		// kept in float32 between Casts, a nearest Resize by float32 scales
		// likewise, float16 Constants, outputs cast back to float32 (one of
		// them also read inside the graph, as ISNet's side outputs are),
		// and nodes out of order (the input's Cast last).
		name: "isnet pattern",
		build: func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			c := g.Op("Relu", []string{g.Op("Conv", []string{"xh", "w16", "b16"}, onnxgraph.AttrInts("pads", 1, 1, 1, 1))})
			g.OpTo("Cast", []string{c}, []string{"side"}, castAttr(onnxpb.TensorProto_FLOAT))
			p := g.Op("MaxPool", []string{c}, onnxgraph.AttrInts("kernel_shape", 2, 2), onnxgraph.AttrInts("strides", 2, 2))
			sh := g.Op("Shape", []string{c})
			hw := g.Op("Slice", []string{sh, g.Ints(2), g.Ints(4), g.Ints(0)})
			size := g.Op("Concat", []string{g.Ints(1, 4), hw}, onnxgraph.AttrInt("axis", 0))
			pf := g.Op("Cast", []string{p}, castAttr(onnxpb.TensorProto_FLOAT))
			r := g.Op("Resize", []string{pf, "", "", size}, onnxgraph.AttrString("mode", "linear"),
				onnxgraph.AttrString("coordinate_transformation_mode", "half_pixel"))
			r16 := g.Op("Cast", []string{r}, castAttr(onnxpb.TensorProto_FLOAT16))
			cat := g.Op("Concat", []string{r16, c}, onnxgraph.AttrInt("axis", 1))
			s := g.Op("Sigmoid", []string{g.Op("Conv", []string{cat, "w2"})})
			sf := g.Op("Cast", []string{s}, castAttr(onnxpb.TensorProto_FLOAT))
			up := g.Op("Resize", []string{sf, "", "scales"}, onnxgraph.AttrString("mode", "nearest"),
				onnxgraph.AttrString("coordinate_transformation_mode", "asymmetric"), onnxgraph.AttrString("nearest_mode", "floor"))
			g.OpTo("Cast", []string{g.Op("Cast", []string{up}, castAttr(onnxpb.TensorProto_FLOAT16))}, []string{"y"}, castAttr(onnxpb.TensorProto_FLOAT))
			k := g.Op("Constant", nil, f16Const(nil, -0.25))
			g.OpTo("Cast", []string{g.Op("Add", []string{s, k})}, []string{"z"}, castAttr(onnxpb.TensorProto_FLOAT))
			g.OpTo("Cast", []string{"x"}, []string{"xh"}, castAttr(onnxpb.TensorProto_FLOAT16)) // out of order
			return []*onnxpb.TensorProto{
				f16Tensor("w16", []int64{4, 3, 3, 3}, wave(4*3*3*3, 0.4, 3)), f16Tensor("b16", []int64{4}, wave(4, 0.1, 4)),
				f16Tensor("w2", []int64{1, 8, 1, 1}, wave(8, 0.6, 5)), f32Tensor("scales", []int64{4}, []float32{1, 1, 2, 2}),
			}
		},
		outs: []string{"y", "z", "side"},
	}},
	{fp16Case: fp16Case{
		// Float16 tensors in both of ONNX's encodings (raw halves and
		// int32_data), with a subnormal, ±65504 and a zero; an output
		// cast from a graph input stays a Cast (there is no producer to
		// rename).
		name: "encodings and edges",
		build: func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			h := g.Op("Cast", []string{"x"}, castAttr(onnxpb.TensorProto_FLOAT16))
			a := g.Op("Mul", []string{h, "scale"})
			b := g.Op("Add", []string{a, g.Op("Constant", nil, f16Const([]int64{3, 1, 1}, 1e-6, 0, -65504))})
			m := g.Op("Min", []string{b, "cap"})
			g.OpTo("Cast", []string{m}, []string{"y"}, castAttr(onnxpb.TensorProto_FLOAT))
			g.OpTo("Cast", []string{"x"}, []string{"echo"}, castAttr(onnxpb.TensorProto_FLOAT))
			bits := make([]int32, 3)
			for i, v := range []float32{65504, 2, 0.5} {
				bits[i] = int32(onnxgraph.Float16(v))
			}
			return []*onnxpb.TensorProto{
				f16Tensor("scale", []int64{3, 1, 1}, []float32{0.5, -1, 3}),
				{Name: proto.String("cap"), Dims: []int64{3, 1, 1}, DataType: proto.Int32(fp16), Int32Data: bits},
			}
		},
		outs: []string{"y", "echo"},
	}, casts: 1},
}

// writeGraph writes a model whose graph has the given inputs and outputs
// (name → element type, shape [1,3,8,8] for inputs) and returns its path
// and bytes.
func writeGraph(t *testing.T, in, out map[string]onnxpb.TensorProto_DataType, build func(g *onnxgraph.Graph) []*onnxpb.TensorProto) (string, []byte) {
	t.Helper()
	g := onnxgraph.New("t")
	for _, n := range slices.Sorted(maps.Keys(in)) {
		g.Input(n, in[n], 1, 3, 8, 8)
	}
	inits := build(g)
	for _, n := range slices.Sorted(maps.Keys(out)) {
		g.Output(n, out[n])
	}
	b, err := onnxgraph.Marshal(g.Model(inits, "test", ""))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// halves reads a float16 tensor's values, float32s a float32 tensor's.
func halves(t *testing.T, x *onnxpb.TensorProto) []float32 {
	t.Helper()
	var v []float32
	if len(x.RawData) > 0 {
		for i := 0; i+1 < len(x.RawData); i += 2 {
			v = append(v, onnxgraph.Float16To32(binary.LittleEndian.Uint16(x.RawData[i:])))
		}
		return v
	}
	for _, b := range x.Int32Data {
		v = append(v, onnxgraph.Float16To32(uint16(b)))
	}
	return v
}

func float32s(x *onnxpb.TensorProto) []float32 {
	v := make([]float32, len(x.RawData)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(x.RawData[4*i:]))
	}
	return v
}

// The converted graphs keep their float32 edges (names, order), opset and
// every non-Cast node; every float tensor is float32 holding exactly the
// halves it held; the Casts are gone but those a graph output needs; the
// nodes are in topological order; two conversions give the same bytes and
// a second pass changes nothing.
func TestFloat32ComputeGraph(t *testing.T) {
	for _, c := range fp32Cases {
		t.Run(c.name, func(t *testing.T) {
			p, p2 := writeCase(t, c.fp16Case, 17), writeCase(t, c.fp16Case, 17)
			before := readFP16Model(t, p)
			for _, path := range []string{p, p2} {
				if changed, err := Float32Compute(path); err != nil || !changed {
					t.Fatalf("changed %v, %v", changed, err)
				}
			}
			b1, _ := os.ReadFile(p)
			b2, _ := os.ReadFile(p2)
			if !bytes.Equal(b1, b2) {
				t.Error("two conversions of the same file differ")
			}
			m := readFP16Model(t, p)
			g := m.Graph
			if v := m.OpsetImport[0].GetVersion(); v != 17 {
				t.Errorf("opset %d, want 17 kept", v)
			}
			if len(g.ValueInfo) != 0 {
				t.Error("value_info kept")
			}
			if len(m.MetadataProps) != 1 || m.MetadataProps[0].GetKey() != float32Mark {
				t.Errorf("metadata %v", m.MetadataProps)
			}
			if len(g.Input) != 1 || g.Input[0].GetName() != "x" || len(g.Output) != len(c.outs) {
				t.Fatalf("inputs %v outputs %v", g.Input, g.Output)
			}
			for i, o := range g.Output {
				if o.GetName() != c.outs[i] || o.GetType().GetTensorType().GetElemType() != fp32 {
					t.Errorf("output %d: %v, want float32 %s", i, o, c.outs[i])
				}
			}
			// Weights: float32, exactly the halves they were.
			old := map[string]*onnxpb.TensorProto{}
			for _, x := range before.Graph.Initializer {
				old[x.GetName()] = x
			}
			for _, x := range g.Initializer {
				o := old[x.GetName()]
				switch o.GetDataType() {
				case fp16:
					want, got := halves(t, o), float32s(x)
					if x.GetDataType() != fp32 || len(x.Int32Data) != 0 || len(got) != len(want) {
						t.Fatalf("%s: %s, %d values, want float32 × %d", x.GetName(), elemName(x.GetDataType()), len(got), len(want))
					}
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Errorf("%s[%d] = %v, want %v", x.GetName(), i, got[i], want[i])
						}
					}
				default:
					if !proto.Equal(o, x) {
						t.Errorf("%s changed", x.GetName())
					}
				}
			}
			// Nodes: the same but for the Casts; Constants float32; order.
			count := func(nodes []*onnxpb.NodeProto) (map[string]int, int) {
				ops, casts := map[string]int{}, 0
				for _, n := range nodes {
					if n.GetOpType() == "Cast" {
						casts++
					} else {
						ops[n.GetOpType()]++
					}
				}
				return ops, casts
			}
			ops0, _ := count(before.Graph.Node)
			ops1, casts := count(g.Node)
			if casts != c.casts || len(ops0) != len(ops1) {
				t.Errorf("ops %v and %d Casts, want %v and %d", ops1, casts, ops0, c.casts)
			}
			for op, n := range ops0 {
				if ops1[op] != n {
					t.Errorf("%d %s nodes, want %d", ops1[op], op, n)
				}
			}
			known := map[string]bool{"": true, "x": true}
			for _, x := range g.Initializer {
				known[x.GetName()] = true
			}
			for _, n := range g.Node {
				for _, x := range n.Input {
					if !known[x] {
						t.Errorf("node %s (%s) reads %s before it is made", n.GetName(), n.GetOpType(), x)
					}
				}
				for _, o := range n.Output {
					known[o] = true
				}
				switch n.GetOpType() {
				case "Constant":
					if typ, _ := constantType(n); typ != fp32 && typ != i64 {
						t.Errorf("Constant %s is %s", n.GetName(), elemName(typ))
					}
				case "Cast":
					if to, _ := castTo(n); to != fp32 {
						t.Errorf("Cast %s to %s", n.GetName(), elemName(to))
					}
				}
			}
			for _, o := range c.outs {
				if !known[o] {
					t.Errorf("nothing makes output %s", o)
				}
			}
			if changed, err := Float32Compute(p); err != nil || changed {
				t.Errorf("second pass: changed %v, %v", changed, err)
			}
			if after, _ := os.ReadFile(p); !bytes.Equal(after, b1) {
				t.Error("the second pass rewrote the file")
			}
		})
	}
}

// A float32 model has nothing to convert: it is left alone (no mark).
func TestFloat32ComputeFloat32Model(t *testing.T) {
	p := writeCase(t, fp16Cases[0], 17)
	b, _ := os.ReadFile(p)
	if changed, err := Float32Compute(p); err != nil || changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
		t.Error("the file was rewritten")
	}
}

// Float16Compute then Float32Compute gives a float32 graph again: no Cast
// is left, the float16 mark is replaced by the float32 one, and
// Float16Compute converts the result again.
func TestFloat32ComputeUndoesFloat16(t *testing.T) {
	for _, c := range fp16Cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeCase(t, c, 17)
			if _, err := Float16Compute(p); err != nil {
				t.Fatal(err)
			}
			if changed, err := Float32Compute(p); err != nil || !changed {
				t.Fatalf("changed %v, %v", changed, err)
			}
			m := readFP16Model(t, p)
			for _, n := range m.Graph.Node {
				if n.GetOpType() == "Cast" {
					t.Errorf("Cast %v left", n)
				}
			}
			if len(m.MetadataProps) != 1 || m.MetadataProps[0].GetKey() != float32Mark {
				t.Errorf("metadata %v", m.MetadataProps)
			}
			if changed, err := Float16Compute(p); err != nil || !changed {
				t.Errorf("Float16Compute after: changed %v, %v", changed, err)
			}
			if changed, err := Float32Compute(p); err != nil || !changed {
				t.Errorf("Float32Compute after that: changed %v, %v", changed, err)
			}
		})
	}
}

// Models it cannot convert safely are refused and left as they were.
func TestFloat32ComputeRefuses(t *testing.T) {
	type io = map[string]onnxpb.TensorProto_DataType
	f32, f16 := onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_FLOAT16
	w := func() []*onnxpb.TensorProto { return []*onnxpb.TensorProto{f16Tensor("w", []int64{1}, []float32{2})} }
	for _, c := range []struct {
		name    string
		in, out io
		build   func(g *onnxgraph.Graph) []*onnxpb.TensorProto
	}{
		{"unknown op", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Cast", []string{g.Op("Erf", []string{g.Op("Cast", []string{"x"}, castAttr(f16))})}, []string{"y"}, castAttr(f32))
			return nil
		}},
		{"contrib domain", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.DomainOpTo(onnxgraph.MicrosoftDomain, "FastGelu", []string{g.Op("Mul", []string{"x", "w"})}, []string{"y"})
			return w()
		}},
		{"float16 input", io{"x": f16}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Cast", []string{g.Op("Mul", []string{"x", "w"})}, []string{"y"}, castAttr(f32))
			return w()
		}},
		{"float16 output", io{"x": f32}, io{"y": f16}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Mul", []string{g.Op("Cast", []string{"x"}, castAttr(f16)), "w"}, []string{"y"})
			return w()
		}},
		{"double left", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			d := g.Op("Cast", []string{g.Op("Mul", []string{g.Op("Cast", []string{"x"}, castAttr(f16)), "w"})}, castAttr(onnxpb.TensorProto_DOUBLE))
			g.OpTo("Cast", []string{d}, []string{"y"}, castAttr(f32))
			return w()
		}},
		{"mixed types", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			i := g.Op("Cast", []string{"x"}, castAttr(onnxpb.TensorProto_INT64))
			g.OpTo("Add", []string{g.Op("Mul", []string{"x", "w"}), i}, []string{"y"})
			return w()
		}},
		{"cycle", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Add", []string{"x", "b"}, []string{"a"})
			g.OpTo("Mul", []string{"a", "w"}, []string{"b"})
			g.OpTo("Identity", []string{"b"}, []string{"y"})
			return w()
		}},
		{"external data", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Mul", []string{"x", "w"}, []string{"y"})
			t := &onnxpb.TensorProto{Name: proto.String("w"), Dims: []int64{1}, DataType: proto.Int32(fp16),
				DataLocation: onnxpb.TensorProto_EXTERNAL.Enum(),
				ExternalData: []*onnxpb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String("w.bin")}}}
			return []*onnxpb.TensorProto{t}
		}},
		{"Cast without input", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			c := g.Op("Cast", nil, castAttr(f32))
			g.OpTo("Add", []string{g.Op("Mul", []string{"x", "w"}), c}, []string{"y"})
			return w()
		}},
		{"Cast without output", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Cast", []string{"x"}, nil, castAttr(f16))
			g.OpTo("Mul", []string{"x", "w"}, []string{"y"})
			return w()
		}},
		{"Constant without output", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Constant", nil, nil, f16Const(nil, 0.5))
			g.OpTo("Mul", []string{"x", "w"}, []string{"y"})
			return w()
		}},
		{"Shape without output", io{"x": f32}, io{"y": f32}, func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Shape", []string{"x"}, nil)
			g.OpTo("Mul", []string{"x", "w"}, []string{"y"})
			return w()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, b := writeGraph(t, c.in, c.out, c.build)
			changed, err := Float32Compute(p)
			if !errors.Is(err, ErrFloat32) || changed {
				t.Fatalf("changed %v, err %v; want ErrFloat32", changed, err)
			}
			t.Log(err)
			if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
				t.Error("the refused file was changed")
			}
		})
	}
}

// An older export lists its initialisers among the graph inputs too: the
// converted weights are declared float32 there as well.
func TestFloat32ComputeInitialiserInputs(t *testing.T) {
	f32, f16 := onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_FLOAT16
	p, _ := writeGraph(t, map[string]onnxpb.TensorProto_DataType{"x": f32}, map[string]onnxpb.TensorProto_DataType{"y": f32},
		func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.Input("w", f16, 1)
			g.OpTo("Cast", []string{g.Op("Mul", []string{g.Op("Cast", []string{"x"}, castAttr(f16)), "w"})}, []string{"y"}, castAttr(f32))
			return []*onnxpb.TensorProto{f16Tensor("w", []int64{1}, []float32{2})}
		})
	if changed, err := Float32Compute(p); err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	m := readFP16Model(t, p)
	for _, in := range m.Graph.Input {
		if e := in.GetType().GetTensorType().GetElemType(); e != fp32 {
			t.Errorf("input %s declared %s, want float32", in.GetName(), elemName(e))
		}
	}
}
