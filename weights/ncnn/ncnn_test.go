package ncnn

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// binWriter builds a .bin the way ncnn's tools write one.
type binWriter struct{ b []byte }

func (w *binWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }

func (w *binWriter) fp32(v ...float32) {
	for _, x := range v {
		w.u32(math.Float32bits(x))
	}
}

// fp16 writes tagged half-precision weights padded to 4 bytes. The values
// must be exact in fp16.
func (w *binWriter) fp16(v ...float32) {
	w.u32(tagFP16)
	for _, x := range v {
		w.b = binary.LittleEndian.AppendUint16(w.b, toFP16(x))
	}
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

// toFP16 handles the normal, exactly representable values the tests use.
func toFP16(f float32) uint16 {
	if f == 0 {
		return 0
	}
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b>>23)&0xff) - 127 + 15
	return sign | uint16(exp)<<10 | uint16((b>>13)&0x3ff)
}

// tiny is a graph with every supported layer: RRDB-style dense block,
// scaled residual, PReLU, pixel shuffle and both resize kinds.
const tiny = `7767517
11 13
Input            in        0 1 data 0=8 1=8 2=3
Split            split     1 2 data d0 d1
Convolution      conv1     1 1 d0 c1 0=4 1=3 4=1 5=1 6=108 9=2 -23310=1,2.000000e-01
Split            split1    1 2 c1 c1a c1b
Concat           cat       2 1 d1 c1a cat 0=0
Convolution      conv2     1 1 cat c2 0=4 1=1 5=0 6=28
Eltwise          add       2 1 c2 c1b e 0=1 -23301=2,2.000000e-01,1.000000e+00
PReLU            prelu     1 1 e p 0=4
Convolution      conv3     1 1 p c3 0=12 1=1 5=1 6=48
PixelShuffle     ps        1 1 c3 ps 0=2
Interp           up        1 1 ps output 0=3 1=7.500000e-01 2=7.500000e-01
`

func tinyBin() []byte {
	var w binWriter
	conv1 := make([]float32, 108)
	for i := range conv1 {
		conv1[i] = float32(i%7) / 8
	}
	w.fp16(conv1...)
	w.fp32(1, 2, 3, 4) // conv1 bias
	conv2 := make([]float32, 28)
	for i := range conv2 {
		conv2[i] = -float32(i%5) / 4
	}
	w.fp16(conv2...)           // conv2: no bias
	w.fp32(0.1, 0.2, 0.3, 0.4) // prelu slopes, untagged
	conv3 := make([]float32, 48)
	for i := range conv3 {
		conv3[i] = float32(i) / 64
	}
	w.u32(tagFP32) // fp32 weights behind a zero tag
	w.fp32(conv3...)
	w.fp32(make([]float32, 12)...)
	return w.b
}

func TestLoadTiny(t *testing.T) {
	g, err := Load(strings.NewReader(tiny), tinyBin())
	if err != nil {
		t.Fatal(err)
	}
	if g.Input != "data" || g.Output != "output" {
		t.Errorf("input %q output %q", g.Input, g.Output)
	}
	if n := g.ParamCount(); n != 108+4+28+4+48+12 {
		t.Errorf("ParamCount = %d", n)
	}
	c1 := g.Layers[2]
	if w := c1.Weights[0]; !w.FP16 || w.Data[6] != 0.75 || len(w.Shape) != 4 || w.Shape[0] != 4 || w.Shape[1] != 3 || w.Shape[2] != 3 {
		t.Errorf("conv1 weight %v fp16=%v data[6]=%v", w.Shape, w.FP16, w.Data[6])
	}
	if b := c1.Weights[1]; b.Role != "bias" || b.Data[3] != 4 {
		t.Errorf("conv1 bias %+v", b)
	}
	if s := g.Layers[7].Weights[0]; s.Role != "slope" || s.Data[1] != float32(0.2) {
		t.Errorf("prelu %+v", s)
	}
	if a, _ := c1.Params.Floats(10); len(a) != 1 || a[0] != float32(0.2) {
		t.Errorf("activation params %v", a)
	}
}

func TestBinMustBeConsumedExactly(t *testing.T) {
	bin := tinyBin()
	for name, b := range map[string][]byte{
		"extra bytes": append(append([]byte(nil), bin...), 0, 0, 0, 0),
		"truncated":   bin[:len(bin)-4],
		"empty":       nil,
	} {
		if _, err := Load(strings.NewReader(tiny), b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
	// int8 and table-quantised weights are refused by name.
	for tag, want := range map[uint32]string{tagInt8: "int8", 0x12345678: "0x12345678"} {
		b := append([]byte(nil), bin...)
		binary.LittleEndian.PutUint32(b, tag)
		_, err := Load(strings.NewReader(tiny), b)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "conv1") {
			t.Errorf("tag %#x: err = %v", tag, err)
		}
	}
}

func TestUnsupportedIsNamed(t *testing.T) {
	head := "7767517\n2 2\nInput in 0 1 data\n"
	for _, tc := range []struct{ layer, want string }{
		{"ConvolutionDepthWise dw 1 1 data out 0=3 1=3 6=27 7=3", "unsupported layer type ConvolutionDepthWise (layer dw)"},
		{"Deconvolution deconv 1 1 data out 0=3 1=4 6=144", "unsupported layer type Deconvolution (layer deconv)"},
		{"Pooling pool 1 1 data out 0=0 1=2", "unsupported layer type Pooling (layer pool)"},
		{"Convolution c 1 1 data out 0=3 1=3 4=-233 6=81", "Convolution param 4=-233 (layer c): negative padding"},
		{"Convolution c 1 1 data out 0=3 1=3 6=81 8=1", "Convolution param 8=1 (layer c): int8"},
		{"Convolution c 1 1 data out 0=3 1=3 6=81 9=5", "Convolution param 9=5 (layer c): activation"},
		{"Convolution c 1 1 data out 0=3 1=3 6=81 7=1", "Convolution param 7=1 (layer c)"},
		{"Interp i 1 1 data out 0=1 3=64 4=64", "Interp param 3=64 (layer i): fixed output size"},
		{"Interp i 1 1 data out 0=4 1=2.0 2=2.0", "Interp param 0=4 (layer i)"},
		{"Concat cat 1 1 data out 0=1", "Concat param 0=1 (layer cat)"},
		{"BinaryOp pow 1 1 data out 0=6 1=1 2=2.0", "BinaryOp param 0=6 (layer pow)"},
		{"Eltwise e 1 1 data out 0=3", "Eltwise param 0=3 (layer e)"},
		{"PixelShuffle ps 1 1 data out 0=2 1=2", "PixelShuffle param 1=2 (layer ps)"},
	} {
		g, err := ParseParam(strings.NewReader(head + tc.layer + "\n"))
		if err == nil {
			err = g.LoadWeights(make([]byte, 4096))
		}
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n  err = %v\n want … %s …", tc.layer, err, tc.want)
		}
	}
	// Elementwise layers do not guess at ncnn's broadcasting.
	g, err := ParseParam(strings.NewReader("7767517\n4 5\nInput in 0 1 data\nSplit s 1 2 data a b\n" +
		"Convolution c 1 1 a c 0=4 1=1 6=12\nBinaryOp add 2 1 b c out 0=0\n"))
	if err != nil {
		t.Fatal(err)
	}
	var w binWriter
	w.fp16(make([]float32, 12)...)
	if err := g.LoadWeights(w.b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ToONNX(g, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "broadcast") {
		t.Errorf("broadcast: %v", err)
	}
}

func TestMalformedParam(t *testing.T) {
	for name, p := range map[string]string{
		"magic":        "7767518\n1 1\nInput in 0 1 data\n",
		"layer count":  "7767517\n2 1\nInput in 0 1 data\n",
		"blob count":   "7767517\n1 2\nInput in 0 1 data\n",
		"unknown blob": "7767517\n2 2\nInput in 0 1 data\nSplit s 1 1 nope x\n",
		"read twice":   "7767517\n3 3\nInput in 0 1 data\nSplit s 1 1 data x\nSplit t 1 1 data y\n",
		"bad array":    "7767517\n2 2\nInput in 0 1 data\nEltwise e 1 1 data x 0=1 -23301=3,1.0\n",
		"no input":     "7767517\n1 1\nSplit s 0 1 x\n",
	} {
		if _, err := ParseParam(strings.NewReader(p)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFP16(t *testing.T) {
	for h, want := range map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x3555: 0.333251953125, 0x7bff: 65504,
		0x0001: 1.0 / (1 << 24), 0x8200: -float32(512) / (1 << 24), 0x7c00: float32(math.Inf(1)),
	} {
		if got := fp16ToFloat32(h); got != want {
			t.Errorf("fp16 %#04x = %v, want %v", h, got, want)
		}
	}
	if !math.IsNaN(float64(fp16ToFloat32(0x7e00))) {
		t.Error("0x7e00 is not NaN")
	}
}

func attr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

func TestConvertTiny(t *testing.T) {
	g, err := Load(strings.NewReader(tiny), tinyBin())
	if err != nil {
		t.Fatal(err)
	}
	b, info, err := ToONNX(g, Options{Name: "tiny", Metadata: map[string]string{"scale": "1.5"}})
	if err != nil {
		t.Fatal(err)
	}
	if info.InChannels != 3 || info.OutChannels != 3 || info.ScaleH != 1.5 || info.ScaleW != 1.5 || info.Params != g.ParamCount() {
		t.Errorf("info %+v", info)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.GetIrVersion() != IRVersion || m.GetOpsetImport()[0].GetVersion() != Opset || m.GetMetadataProps()[0].GetValue() != "1.5" {
		t.Errorf("header: ir %d opset %v meta %v", m.GetIrVersion(), m.GetOpsetImport(), m.GetMetadataProps())
	}
	gr := m.GetGraph()
	if in := gr.GetInput()[0]; in.GetName() != InputName ||
		in.GetType().GetTensorType().GetShape().GetDim()[1].GetDimValue() != 3 ||
		in.GetType().GetTensorType().GetShape().GetDim()[2].GetDimParam() != "H" {
		t.Errorf("input %v", in)
	}
	if gr.GetOutput()[0].GetName() != OutputName {
		t.Errorf("output %v", gr.GetOutput()[0])
	}
	var ops []string
	byOp := map[string]*onnxpb.NodeProto{}
	for _, n := range gr.GetNode() {
		ops = append(ops, n.GetOpType())
		byOp[n.GetOpType()] = n
	}
	want := "Conv LeakyRelu Concat Conv Mul Add PRelu Conv DepthToSpace Resize"
	if got := strings.Join(ops, " "); got != want {
		t.Errorf("nodes %s\n want %s", got, want)
	}
	if a := attr(byOp["LeakyRelu"], "alpha"); a.GetF() != float32(0.2) {
		t.Errorf("alpha %v", a)
	}
	if a := attr(byOp["DepthToSpace"], "mode"); string(a.GetS()) != "CRD" {
		t.Errorf("pixel shuffle mode %q", a.GetS())
	}
	r := byOp["Resize"]
	if string(attr(r, "mode").GetS()) != "cubic" || attr(r, "cubic_coeff_a").GetF() != -0.75 ||
		string(attr(r, "coordinate_transformation_mode").GetS()) != "half_pixel" || r.GetInput()[1] != "" {
		t.Errorf("resize %v", r)
	}
	if got := attr(gr.GetNode()[0], "pads").GetInts(); len(got) != 4 || got[0] != 1 || got[3] != 1 {
		t.Errorf("pads %v", got)
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, x := range gr.GetInitializer() {
		inits[x.GetName()] = x
	}
	w := inits["conv1.weight"]
	if d := w.GetDims(); len(d) != 4 || d[0] != 4 || d[1] != 3 || d[2] != 3 || d[3] != 3 || w.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		t.Errorf("conv1.weight dims %v type %d", d, w.GetDataType())
	}
	if v := math.Float32frombits(binary.LittleEndian.Uint32(w.GetRawData()[4*6:])); v != 0.75 {
		t.Errorf("conv1.weight[6] = %v", v)
	}
	if d := inits["prelu.slope"].GetDims(); len(d) != 3 || d[0] != 4 || d[1] != 1 {
		t.Errorf("slope dims %v", d)
	}
	if _, ok := inits["conv2.bias"]; ok {
		t.Error("conv2 has no bias term")
	}
	// The scaled residual: 0.2·c2, then the unscaled skip added.
	mul := byOp["Mul"]
	if c := inits[mul.GetInput()[1]]; len(c.GetDims()) != 0 || math.Float32frombits(binary.LittleEndian.Uint32(c.GetRawData())) != float32(0.2) {
		t.Errorf("coefficient %v", c)
	}
	if add := byOp["Add"]; add.GetInput()[0] != mul.GetOutput()[0] {
		t.Errorf("add inputs %v", add.GetInput())
	}
	// Deterministic: the same graph converts to the same bytes.
	b2, _, _ := ToONNX(g, Options{Name: "tiny", Metadata: map[string]string{"scale": "1.5"}})
	if string(b) != string(b2) {
		t.Error("conversion is not deterministic")
	}
}
