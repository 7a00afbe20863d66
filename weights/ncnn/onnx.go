package ncnn

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// ONNX versions the converter writes: IR 8 with the default opset 17, which
// every ONNX Runtime since 1.14 loads.
const (
	IRVersion = 8
	Opset     = 17
)

// Value names of the converted graph.
const (
	InputName  = "input"
	OutputName = "output"
)

// Options tunes the conversion.
type Options struct {
	Name          string            // graph name
	DocString     string            // model doc string
	InputChannels int               // when the Input layer does not say; default 3
	Metadata      map[string]string // written as the model's metadata_props
}

// Info describes a converted model.
type Info struct {
	InChannels, OutChannels int
	// ScaleH and ScaleW are the output/input size ratios: Interp scales and
	// PixelShuffle factors multiplied, strides divided.
	ScaleH, ScaleW float64
	Params         int64
	Nodes          int
}

// blob is what the converter knows about an ncnn blob.
type blob struct {
	name           string // ONNX value name
	c              int    // channels
	scaleH, scaleW float64
}

type converter struct {
	g     *Graph
	blobs map[string]blob
	nodes []*onnxpb.NodeProto
	inits []*onnxpb.TensorProto
}

// ToONNX converts a loaded graph to a serialized ONNX ModelProto whose one
// input is "input" float32 [N,C,H,W] and one output is "output".
func ToONNX(g *Graph, opt Options) ([]byte, Info, error) {
	m, info, err := Convert(g, opt)
	if err != nil {
		return nil, info, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return b, info, err
}

// Convert builds the ONNX ModelProto of a loaded graph.
func Convert(g *Graph, opt Options) (*onnxpb.ModelProto, Info, error) {
	var info Info
	cv := &converter{g: g, blobs: map[string]blob{}}
	for _, l := range g.Layers {
		if err := l.check(); err != nil {
			return nil, info, err
		}
		if err := cv.layer(l, opt); err != nil {
			return nil, info, err
		}
	}
	in, out := cv.blobs[g.Input], cv.blobs[g.Output]
	if out.name != OutputName {
		return nil, info, fmt.Errorf("ncnn: output blob %s is not written by a node", g.Output)
	}
	info = Info{InChannels: in.c, OutChannels: out.c, ScaleH: out.scaleH, ScaleW: out.scaleW,
		Params: g.ParamCount(), Nodes: len(cv.nodes)}
	name := opt.Name
	if name == "" {
		name = "ncnn"
	}
	graph := &onnxpb.GraphProto{
		Name:        proto.String(name),
		Node:        cv.nodes,
		Initializer: cv.inits,
		Input:       []*onnxpb.ValueInfoProto{valueInfo(InputName, "N", int64(in.c), "H", "W")},
		Output:      []*onnxpb.ValueInfoProto{valueInfo(OutputName, "N", int64(out.c), "H_out", "W_out")},
	}
	m := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		ProducerName:    proto.String("falocal weights/ncnn"),
		ProducerVersion: proto.String("1"),
		Graph:           graph,
	}
	if opt.DocString != "" {
		m.DocString = proto.String(opt.DocString)
	}
	for _, k := range slices.Sorted(maps.Keys(opt.Metadata)) {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(opt.Metadata[k])})
	}
	return m, info, nil
}

// valueName is the ONNX name of an ncnn blob written by a node.
func (cv *converter) valueName(b string) string {
	switch b {
	case cv.g.Output:
		return OutputName
	case cv.g.Input:
		return InputName
	}
	return "blob:" + b
}

func (cv *converter) in(l *Layer, i int) blob { return cv.blobs[l.Inputs[i]] }

// def records the output blob of layer l and returns its ONNX name.
func (cv *converter) def(l *Layer, b blob) string {
	b.name = cv.valueName(l.Outputs[0])
	cv.blobs[l.Outputs[0]] = b
	return b.name
}

func (cv *converter) node(op, name string, inputs []string, output string, attrs ...*onnxpb.AttributeProto) {
	cv.nodes = append(cv.nodes, &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name),
		Input: inputs, Output: []string{output}, Attribute: attrs})
}

func (cv *converter) init(name string, shape []int64, data []float32) string {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	cv.inits = append(cv.inits, &onnxpb.TensorProto{Name: proto.String(name), Dims: shape,
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw})
	return name
}

func (cv *converter) scalar(name string, v float32) string { return cv.init(name, nil, []float32{v}) }

func (cv *converter) arity(l *Layer, in, out int) error {
	if (in >= 0 && len(l.Inputs) != in) || len(l.Outputs) != out {
		return fmt.Errorf("%w: %s %s has %d inputs and %d outputs", ErrFormat, l.Type, l.Name, len(l.Inputs), len(l.Outputs))
	}
	return nil
}

func (cv *converter) layer(l *Layer, opt Options) error {
	p := l.Params
	switch l.Type {
	case "Input":
		c, _ := p.Int(2, 0)
		if c == 0 {
			c = opt.InputChannels
		}
		if c == 0 {
			c = 3
		}
		cv.blobs[l.Outputs[0]] = blob{name: InputName, c: c, scaleH: 1, scaleW: 1}

	case "Split":
		src := cv.in(l, 0)
		for _, o := range l.Outputs {
			if o == cv.g.Output {
				b := src
				b.name = OutputName
				cv.node("Identity", l.Name, []string{src.name}, OutputName)
				cv.blobs[o] = b
				continue
			}
			cv.blobs[o] = src
		}

	case "Convolution":
		if err := cv.arity(l, 1, 1); err != nil {
			return err
		}
		x := cv.in(l, 0)
		if len(l.Weights) == 0 || l.Weights[0].Role != "weight" {
			return fmt.Errorf("ncnn: Convolution %s has no weights loaded", l.Name)
		}
		w := l.Weights[0]
		if int(w.Shape[1]) != x.c {
			return fmt.Errorf("%w: Convolution %s: weights expect %d input channels, blob %s has %d", ErrFormat, l.Name, w.Shape[1], l.Inputs[0], x.c)
		}
		kw, _ := p.Int(1, 0)
		kh, _ := p.Int(11, kw)
		dw, _ := p.Int(2, 1)
		dh, _ := p.Int(12, dw)
		sw, _ := p.Int(3, 1)
		sh, _ := p.Int(13, sw)
		pl, _ := p.Int(4, 0)
		pt, _ := p.Int(14, pl)
		pr, _ := p.Int(15, pl)
		pb, _ := p.Int(16, pt)
		if sw < 1 || sh < 1 || dw < 1 || dh < 1 {
			return fmt.Errorf("%w: Convolution %s: stride %dx%d, dilation %dx%d", ErrFormat, l.Name, sh, sw, dh, dw)
		}
		inputs := []string{x.name, cv.init(l.Name+".weight", w.Shape, w.Data)}
		if len(l.Weights) > 1 {
			b := l.Weights[1]
			inputs = append(inputs, cv.init(l.Name+".bias", b.Shape, b.Data))
		}
		y := blob{c: int(w.Shape[0]), scaleH: x.scaleH / float64(sh), scaleW: x.scaleW / float64(sw)}
		out := cv.def(l, y)
		act, _ := p.Int(9, 0)
		convOut := out
		if act != 0 {
			convOut = out + "/conv"
		}
		cv.node("Conv", l.Name, inputs, convOut,
			attrInts("kernel_shape", kh, kw), attrInts("strides", sh, sw), attrInts("dilations", dh, dw),
			attrInts("pads", pt, pl, pb, pr), attrInt("group", 1))
		switch act {
		case 1:
			cv.node("Relu", l.Name+"/relu", []string{convOut}, out)
		case 2:
			ap, err := p.Floats(10)
			if err != nil {
				return err
			}
			var slope float32
			if len(ap) > 0 {
				slope = ap[0]
			}
			cv.node("LeakyRelu", l.Name+"/leakyrelu", []string{convOut}, out, attrFloat("alpha", slope))
		case 4:
			cv.node("Sigmoid", l.Name+"/sigmoid", []string{convOut}, out)
		}

	case "PReLU":
		if err := cv.arity(l, 1, 1); err != nil {
			return err
		}
		x := cv.in(l, 0)
		if len(l.Weights) == 0 {
			return fmt.Errorf("ncnn: PReLU %s has no slopes loaded", l.Name)
		}
		s := l.Weights[0]
		if n := len(s.Data); n != 1 && n != x.c {
			return fmt.Errorf("%w: PReLU %s has %d slopes for %d channels", ErrFormat, l.Name, n, x.c)
		}
		out := cv.def(l, x)
		cv.node("PRelu", l.Name, []string{x.name, cv.init(l.Name+".slope", s.Shape, s.Data)}, out)

	case "Eltwise":
		if err := cv.arity(l, -1, 1); err != nil {
			return err
		}
		op, _ := p.Int(0, 0)
		coeffs, err := p.Floats(1)
		if err != nil {
			return err
		}
		if len(l.Inputs) < 2 {
			return fmt.Errorf("%w: Eltwise %s has %d inputs", ErrFormat, l.Name, len(l.Inputs))
		}
		if len(coeffs) != 0 && (op != 1 || len(coeffs) != len(l.Inputs)) {
			return &UnsupportedError{Layer: l.Name, Type: l.Type, Param: 1, Value: p.text(1), Why: "coefficients must be one per input of a sum"}
		}
		first, err := cv.same(l)
		if err != nil {
			return err
		}
		var names []string
		for i := range l.Inputs {
			x := cv.in(l, i)
			if len(coeffs) > 0 && coeffs[i] != 1 {
				k := cv.scalar(fmt.Sprintf("%s.coeff%d", l.Name, i), coeffs[i])
				scaled := fmt.Sprintf("%s/scaled%d", cv.valueName(l.Outputs[0]), i)
				cv.node("Mul", fmt.Sprintf("%s/mul%d", l.Name, i), []string{x.name, k}, scaled)
				names = append(names, scaled)
				continue
			}
			names = append(names, x.name)
		}
		out := cv.def(l, first)
		if op != 0 {
			onnxOp := []string{"", "Sum", "Max"}[op]
			if onnxOp == "Sum" && len(names) == 2 {
				onnxOp = "Add"
			}
			cv.node(onnxOp, l.Name, names, out)
			return nil
		}
		// A product: ONNX Mul is binary, so chain it.
		acc := names[0]
		for i := 1; i < len(names); i++ {
			dst := out
			if i < len(names)-1 {
				dst = fmt.Sprintf("%s/prod%d", out, i)
			}
			cv.node("Mul", fmt.Sprintf("%s/mul%d", l.Name, i), []string{acc, names[i]}, dst)
			acc = dst
		}

	case "BinaryOp":
		op, _ := p.Int(0, 0)
		withScalar, _ := p.Int(1, 0)
		onnxOp := []string{"Add", "Sub", "Mul", "Div"}[op]
		if withScalar != 0 {
			if err := cv.arity(l, 1, 1); err != nil {
				return err
			}
			b, err := p.Float(2, 0)
			if err != nil {
				return err
			}
			x := cv.in(l, 0)
			out := cv.def(l, x)
			cv.node(onnxOp, l.Name, []string{x.name, cv.scalar(l.Name+".b", b)}, out)
			return nil
		}
		if err := cv.arity(l, 2, 1); err != nil {
			return err
		}
		first, err := cv.same(l)
		if err != nil {
			return err
		}
		out := cv.def(l, first)
		cv.node(onnxOp, l.Name, []string{cv.in(l, 0).name, cv.in(l, 1).name}, out)

	case "Concat":
		if err := cv.arity(l, -1, 1); err != nil {
			return err
		}
		y := cv.in(l, 0)
		y.c = 0
		var names []string
		for i := range l.Inputs {
			x := cv.in(l, i)
			if x.scaleH != y.scaleH || x.scaleW != y.scaleW {
				return fmt.Errorf("%w: Concat %s joins blobs of different sizes", ErrFormat, l.Name)
			}
			y.c += x.c
			names = append(names, x.name)
		}
		out := cv.def(l, y)
		cv.node("Concat", l.Name, names, out, attrInt("axis", 1))

	case "Interp":
		if err := cv.arity(l, 1, 1); err != nil {
			return err
		}
		typ, _ := p.Int(0, 0)
		hs, err1 := p.Float(1, 1)
		ws, err2 := p.Float(2, 1)
		if err1 != nil || err2 != nil || hs <= 0 || ws <= 0 {
			return fmt.Errorf("%w: Interp %s: scales %q, %q", ErrFormat, l.Name, p.text(1), p.text(2))
		}
		align, _ := p.Int(6, 0)
		ctm := "half_pixel"
		if align != 0 {
			ctm = "align_corners"
		}
		attrs := []*onnxpb.AttributeProto{}
		switch typ {
		case 1: // ncnn nearest: sx = floor(dx · w/outw)
			attrs = append(attrs, attrString("mode", "nearest"), attrString("coordinate_transformation_mode", "asymmetric"),
				attrString("nearest_mode", "floor"))
		case 2:
			attrs = append(attrs, attrString("mode", "linear"), attrString("coordinate_transformation_mode", ctm))
		case 3: // ncnn bicubic: a = -0.75, edge pixels replicated
			attrs = append(attrs, attrString("mode", "cubic"), attrString("coordinate_transformation_mode", ctm),
				attrFloat("cubic_coeff_a", -0.75), attrInt("exclude_outside", 0))
		}
		x := cv.in(l, 0)
		scales := cv.init(l.Name+".scales", []int64{4}, []float32{1, 1, hs, ws})
		out := cv.def(l, blob{c: x.c, scaleH: x.scaleH * float64(hs), scaleW: x.scaleW * float64(ws)})
		cv.node("Resize", l.Name, []string{x.name, "", scales}, out, attrs...)

	case "PixelShuffle":
		if err := cv.arity(l, 1, 1); err != nil {
			return err
		}
		r, _ := p.Int(0, 1)
		mode, _ := p.Int(1, 0)
		x := cv.in(l, 0)
		if x.c%(r*r) != 0 {
			return fmt.Errorf("%w: PixelShuffle %s: %d channels do not divide by %d²", ErrFormat, l.Name, x.c, r)
		}
		out := cv.def(l, blob{c: x.c / (r * r), scaleH: x.scaleH * float64(r), scaleW: x.scaleW * float64(r)})
		// ncnn mode 0 is PyTorch's PixelShuffle, ONNX's CRD; mode 1 is DCR.
		cv.node("DepthToSpace", l.Name, []string{x.name}, out, attrInt("blocksize", r),
			attrString("mode", []string{"CRD", "DCR"}[mode]))

	default:
		return &UnsupportedError{Layer: l.Name, Type: l.Type}
	}
	return nil
}

// same checks that an elementwise layer's inputs agree in channels and size
// (ncnn would broadcast; the converter does not guess) and returns the first.
func (cv *converter) same(l *Layer) (blob, error) {
	first := cv.in(l, 0)
	for i := 1; i < len(l.Inputs); i++ {
		x := cv.in(l, i)
		if x.c != first.c || x.scaleH != first.scaleH || x.scaleW != first.scaleW {
			return blob{}, &UnsupportedError{Layer: l.Name, Type: l.Type,
				Why: fmt.Sprintf("broadcast between %s (%d ch, ×%g) and %s (%d ch, ×%g)", l.Inputs[0], first.c, first.scaleH, l.Inputs[i], x.c, x.scaleH)}
		}
	}
	return first, nil
}

func valueInfo(name, n string, c int64, h, w string) *onnxpb.ValueInfoProto {
	dim := func(p string) *onnxpb.TensorShapeProto_Dimension {
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: p}}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
				dim(n), {Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: c}}, dim(h), dim(w)}},
		}}},
	}
}

func attrInts(name string, v ...int) *onnxpb.AttributeProto {
	ints := make([]int64, len(v))
	for i, x := range v {
		ints[i] = int64(x)
	}
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: ints}
}

func attrInt(name string, v int) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(v))}
}

func attrFloat(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func attrString(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}
