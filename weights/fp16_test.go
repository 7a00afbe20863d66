package weights

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// f32Tensor is a float32 initialiser; f16Tensor a float16 one.
func f32Tensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	return onnxgraph.Tensor(name, onnxpb.TensorProto_FLOAT, dims, onnxgraph.F32Bytes(v))
}

func f16Tensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	return onnxgraph.Tensor(name, onnxpb.TensorProto_FLOAT16, dims, onnxgraph.F16Bytes(v))
}

// wave is n deterministic values in [-amp, amp].
func wave(n int, amp float32, phase float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = amp * float32(math.Sin(float64(i)*0.7+phase))
	}
	return v
}

func castAttr(to onnxpb.TensorProto_DataType) onnxgraph.Attr {
	return onnxgraph.AttrInt("to", int64(to))
}

// fp16Case is a small float32 graph the table tests convert: input "x"
// [1,3,8,8], outputs named outs.
type fp16Case struct {
	name  string
	build func(g *onnxgraph.Graph) []*onnxpb.TensorProto // extra initialisers
	outs  []string
}

// fp16Cases are the graphs of the table: the patterns ISNet and the
// Real-ESRGAN conversions contain.
var fp16Cases = []fp16Case{
	{
		// Conv → LeakyRelu → nearest Resize ×2 by scales → Conv, as RRDBNet
		// upsamples; Constant scale factor; a second output mid-graph.
		name: "conv resize scales",
		build: func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			c := g.Op("Conv", []string{"x", "w1", "b1"}, onnxgraph.AttrInts("pads", 1, 1, 1, 1))
			a := g.Op("LeakyRelu", []string{c}, onnxgraph.AttrFloat("alpha", 0.2))
			g.OpTo("Sigmoid", []string{a}, []string{"mid"})
			r := g.Op("Resize", []string{a, "", "scales"}, onnxgraph.AttrString("mode", "nearest"),
				onnxgraph.AttrString("coordinate_transformation_mode", "asymmetric"), onnxgraph.AttrString("nearest_mode", "floor"))
			k := g.Op("Constant", nil, &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
				T: f32Tensor("", nil, []float32{0.5})})
			m := g.Op("Mul", []string{r, k})
			g.OpTo("Conv", []string{m, "w2"}, []string{"y"})
			return []*onnxpb.TensorProto{
				f32Tensor("w1", []int64{4, 3, 3, 3}, wave(4*3*3*3, 0.4, 0)), f32Tensor("b1", []int64{4}, wave(4, 0.1, 1)),
				f32Tensor("w2", []int64{2, 4, 1, 1}, wave(8, 0.5, 2)), f32Tensor("scales", []int64{4}, []float32{1, 1, 2, 2}),
			}
		},
		outs: []string{"y", "mid"},
	},
	{
		// ISNet's pattern: fp16 weights behind Cast(to=float), a linear
		// Resize to a size computed by Shape/Slice/Concat, MaxPool, Concat,
		// and nodes out of topological order.
		name: "isnet pattern",
		build: func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			w := g.Op("Cast", []string{"w16"}, castAttr(onnxpb.TensorProto_FLOAT))
			b := g.Op("Cast", []string{"b16"}, castAttr(onnxpb.TensorProto_FLOAT))
			c := g.Op("Relu", []string{g.Op("Conv", []string{"xc", w, b}, onnxgraph.AttrInts("pads", 1, 1, 1, 1))})
			p := g.Op("MaxPool", []string{c}, onnxgraph.AttrInts("kernel_shape", 2, 2), onnxgraph.AttrInts("strides", 2, 2))
			sh := g.Op("Shape", []string{c})
			hw := g.Op("Slice", []string{sh, g.Ints(2), g.Ints(4), g.Ints(0)})
			size := g.Op("Concat", []string{g.Ints(1, 4), hw}, onnxgraph.AttrInt("axis", 0))
			pf := g.Op("Cast", []string{p}, castAttr(onnxpb.TensorProto_FLOAT)) // the publisher kept Resize in float32
			r := g.Op("Resize", []string{pf, "", "", size}, onnxgraph.AttrString("mode", "linear"),
				onnxgraph.AttrString("coordinate_transformation_mode", "half_pixel"))
			r16 := g.Op("Cast", []string{r}, castAttr(onnxpb.TensorProto_FLOAT16))
			r32 := g.Op("Cast", []string{r16}, castAttr(onnxpb.TensorProto_FLOAT))
			cat := g.Op("Concat", []string{r32, c}, onnxgraph.AttrInt("axis", 1))
			s := g.Op("Sigmoid", []string{g.Op("Conv", []string{cat, "w2"})})
			g.OpTo("Identity", []string{s}, []string{"y"})
			g.OpTo("Add", []string{s, g.Op("Constant", nil, &onnxpb.AttributeProto{Name: proto.String("value_float"),
				Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(-0.25)})}, []string{"z"})
			// Out of order, as ISNet's converter appended its input Cast.
			g.OpTo("Cast", []string{"x"}, []string{"xc"}, castAttr(onnxpb.TensorProto_FLOAT))
			return []*onnxpb.TensorProto{
				f16Tensor("w16", []int64{4, 3, 3, 3}, wave(4*3*3*3, 0.4, 3)), f16Tensor("b16", []int64{4}, wave(4, 0.1, 4)),
				f32Tensor("w2", []int64{1, 8, 1, 1}, wave(8, 0.6, 5)),
			}
		},
		outs: []string{"y", "z"},
	},
	{
		// The compact Real-ESRGAN body: PRelu, DepthToSpace, a nearest
		// ×2 of the input added back, then a bicubic ×0.5 (the ×2 build).
		name: "compact upscaler",
		build: func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			c := g.Op("PRelu", []string{g.Op("Conv", []string{"x", "w1", "b1"}, onnxgraph.AttrInts("pads", 1, 1, 1, 1)), "slope"})
			d := g.Op("DepthToSpace", []string{g.Op("Conv", []string{c, "w2"})}, onnxgraph.AttrInt("blocksize", 2), onnxgraph.AttrString("mode", "CRD"))
			up := g.Op("Resize", []string{"x", "", "s2"}, onnxgraph.AttrString("mode", "nearest"),
				onnxgraph.AttrString("coordinate_transformation_mode", "asymmetric"), onnxgraph.AttrString("nearest_mode", "floor"))
			sum := g.Op("Add", []string{d, up})
			g.OpTo("Resize", []string{sum, "", "s05"}, []string{"y"}, onnxgraph.AttrString("mode", "cubic"),
				onnxgraph.AttrString("coordinate_transformation_mode", "half_pixel"), onnxgraph.AttrFloat("cubic_coeff_a", -0.75))
			return []*onnxpb.TensorProto{
				f32Tensor("w1", []int64{8, 3, 3, 3}, wave(8*3*3*3, 0.3, 6)), f32Tensor("b1", []int64{8}, wave(8, 0.1, 7)),
				f32Tensor("slope", []int64{8, 1, 1}, wave(8, 0.25, 8)), f32Tensor("w2", []int64{12, 8, 1, 1}, wave(12*8, 0.3, 9)),
				f32Tensor("s2", []int64{4}, []float32{1, 1, 2, 2}), f32Tensor("s05", []int64{4}, []float32{1, 1, 0.5, 0.5}),
			}
		},
		outs: []string{"y"},
	},
}

// writeCase writes a case's float32 graph at opset op and returns its path.
func writeCase(t *testing.T, c fp16Case, opset int64) string {
	t.Helper()
	g := onnxgraph.New("t")
	g.Input("x", onnxpb.TensorProto_FLOAT, 1, 3, 8, 8)
	inits := c.build(g)
	for _, o := range c.outs {
		g.Output(o, onnxpb.TensorProto_FLOAT)
	}
	m := g.Model(inits, "test", "")
	m.OpsetImport[0].Version = proto.Int64(opset)
	b, err := onnxgraph.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFP16Model(t *testing.T, p string) *onnxpb.ModelProto {
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

// The converted graphs keep float32 edges and opset, hold float16 weights
// except Resize's scales, have one Cast per edge and none on weights, and a
// second pass changes nothing; the bytes are the same every time.
func TestFloat16ComputeGraph(t *testing.T) {
	for _, c := range fp16Cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeCase(t, c, 15)
			p2 := writeCase(t, c, 15)
			for _, path := range []string{p, p2} {
				if changed, err := Float16Compute(path); err != nil || !changed {
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
			if v := m.OpsetImport[0].GetVersion(); v != 15 {
				t.Errorf("opset %d, want 15 kept", v)
			}
			for _, v := range append(append([]*onnxpb.ValueInfoProto(nil), g.Input...), g.Output...) {
				if e := v.GetType().GetTensorType().GetElemType(); e != fp32 {
					t.Errorf("%s is %s, want float32", v.GetName(), elemName(e))
				}
			}
			if len(g.ValueInfo) != 0 {
				t.Error("value_info kept")
			}
			isInit := map[string]bool{}
			for _, in := range g.Initializer {
				isInit[in.GetName()] = true
				if e := in.GetDataType(); e != fp32 && e != fp16 {
					continue // Slice's starts, Concat's sizes
				}
				want := fp16
				if in.GetName() == "scales" || in.GetName() == "s2" || in.GetName() == "s05" {
					want = fp32
				}
				if in.GetDataType() != want {
					t.Errorf("initialiser %s is %s, want %s", in.GetName(), elemName(in.GetDataType()), elemName(want))
				}
			}
			casts := 0
			for _, n := range g.Node {
				switch n.GetOpType() {
				case "Cast":
					casts++
					if isInit[n.Input[0]] {
						t.Errorf("a Cast of weight %s is left", n.Input[0])
					}
				case "Constant":
					if typ, _ := constantType(n); typ == fp32 {
						t.Errorf("Constant %s stayed float32", n.GetName())
					}
				}
			}
			if want := 1 + len(c.outs); casts != want {
				t.Errorf("%d Cast nodes, want %d (one per graph edge)", casts, want)
			}
			if first := g.Node[0]; first.GetOpType() != "Cast" || first.Input[0] != "x" {
				t.Errorf("first node %v, want the input's Cast", first)
			}
			for i, o := range c.outs {
				n := g.Node[len(g.Node)-len(c.outs)+i]
				if to, _ := castTo(n); n.GetOpType() != "Cast" || n.Output[0] != o || to != fp32 {
					t.Errorf("output %s made by %v", o, n)
				}
			}
			if changed, err := Float16Compute(p); err != nil || changed {
				t.Errorf("second pass: changed %v, %v", changed, err)
			}
		})
	}
}

// Models it cannot convert safely are refused and left as they were.
func TestFloat16ComputeRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(g *onnxgraph.Graph) []*onnxpb.TensorProto
	}{
		{"unknown op", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Erf", []string{"x"}, []string{"y"})
			return nil
		}},
		{"contrib domain", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.DomainOpTo(onnxgraph.MicrosoftDomain, "FastGelu", []string{"x"}, []string{"y"})
			return nil
		}},
		{"computed scales", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			s := g.Op("Cast", []string{g.Op("Shape", []string{"x"})}, castAttr(onnxpb.TensorProto_FLOAT))
			g.OpTo("Resize", []string{"x", "", s}, []string{"y"}, onnxgraph.AttrString("mode", "nearest"))
			return nil
		}},
		{"scales also a weight", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			r := g.Op("Resize", []string{"x", "", "s"}, onnxgraph.AttrString("mode", "nearest"))
			g.OpTo("Mul", []string{r, "s"}, []string{"y"})
			return []*onnxpb.TensorProto{f32Tensor("s", []int64{4}, []float32{1, 1, 2, 2})}
		}},
		{"output is an input", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.Output("x", onnxpb.TensorProto_FLOAT)
			return nil
		}},
		{"integer shape arithmetic in float", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			// Shape → Cast(float) → Mul(k) → Cast(int64) → Reshape: in
			// float16 that arithmetic is exact only up to 2048.
			sf := g.Op("Cast", []string{g.Op("Shape", []string{"x"})}, castAttr(onnxpb.TensorProto_FLOAT))
			s := g.Op("Cast", []string{g.Op("Mul", []string{sf, "k"})}, castAttr(onnxpb.TensorProto_INT64))
			g.OpTo("Reshape", []string{"x", s}, []string{"y"})
			return []*onnxpb.TensorProto{f32Tensor("k", []int64{4}, []float32{1, 1, 1, 1})}
		}},
		{"Cast without input", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			c := g.Op("Cast", nil, castAttr(onnxpb.TensorProto_FLOAT))
			g.OpTo("Add", []string{"x", c}, []string{"y"})
			return nil
		}},
		{"Cast without output", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Cast", []string{"x"}, nil, castAttr(onnxpb.TensorProto_FLOAT))
			g.OpTo("Relu", []string{"x"}, []string{"y"})
			return nil
		}},
		{"Constant without output", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Constant", nil, nil, &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
				T: f32Tensor("", nil, []float32{0.5})})
			g.OpTo("Relu", []string{"x"}, []string{"y"})
			return nil
		}},
		{"Shape without output", func(g *onnxgraph.Graph) []*onnxpb.TensorProto {
			g.OpTo("Shape", []string{"x"}, nil)
			g.OpTo("Relu", []string{"x"}, []string{"y"})
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := onnxgraph.New("t")
			g.Input("x", onnxpb.TensorProto_FLOAT, 1, 3, 8, 8)
			inits := c.build(g)
			if c.name != "output is an input" {
				g.Output("y", onnxpb.TensorProto_FLOAT)
			}
			b, _ := onnxgraph.Marshal(g.Model(inits, "test", ""))
			p := filepath.Join(t.TempDir(), "m.onnx")
			os.WriteFile(p, b, 0o644)
			changed, err := Float16Compute(p)
			if !errors.Is(err, ErrFloat16) || changed {
				t.Fatalf("changed %v, err %v; want ErrFloat16", changed, err)
			}
			t.Log(err)
			if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
				t.Error("the refused file was changed")
			}
		})
	}
}

// An older export lists its initialisers among the graph inputs too: the
// converted weights are declared float16 there as well.
func TestFloat16ComputeInitialiserInputs(t *testing.T) {
	g := onnxgraph.New("t")
	g.Input("x", onnxpb.TensorProto_FLOAT, 1, 3, 8, 8)
	g.Input("w", onnxpb.TensorProto_FLOAT, 4, 3, 3, 3)
	g.Input("scales", onnxpb.TensorProto_FLOAT, 4)
	r := g.Op("Resize", []string{g.Op("Conv", []string{"x", "w"}), "", "scales"}, onnxgraph.AttrString("mode", "nearest"))
	g.OpTo("Relu", []string{r}, []string{"y"})
	g.Output("y", onnxpb.TensorProto_FLOAT)
	b, err := onnxgraph.Marshal(g.Model([]*onnxpb.TensorProto{
		f32Tensor("w", []int64{4, 3, 3, 3}, wave(4*3*3*3, 0.4, 0)), f32Tensor("scales", []int64{4}, []float32{1, 1, 2, 2}),
	}, "test", ""))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := Float16Compute(p); err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	m := readFP16Model(t, p)
	inits := map[string]int32{}
	for _, x := range m.Graph.Initializer {
		inits[x.GetName()] = x.GetDataType()
	}
	want := map[string]int32{"x": fp32, "w": fp16, "scales": fp32}
	for _, in := range m.Graph.Input {
		e := in.GetType().GetTensorType().GetElemType()
		if e != want[in.GetName()] {
			t.Errorf("input %s declared %s, want %s", in.GetName(), elemName(e), elemName(want[in.GetName()]))
		}
		if d, ok := inits[in.GetName()]; ok && d != e {
			t.Errorf("initialiser %s is %s but its input says %s", in.GetName(), elemName(d), elemName(e))
		}
	}
}
