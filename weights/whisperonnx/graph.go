package whisperonnx

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// ONNX versions written: IR 8 with opset 17 (LayerNormalization), which
// every ONNX Runtime since 1.14 loads.
const (
	IRVersion = 8
	Opset     = 17
)

// weight is a float32 initializer whose values load on demand, so that a
// large model is written one tensor at a time.
type weight struct {
	name string
	dims []int64
	load func() ([]float32, error)
}

func (w *weight) bytes() int64 {
	n := int64(4)
	for _, d := range w.dims {
		n *= d
	}
	return n
}

// graph builds one ONNX graph.
type graph struct {
	name    string
	nodes   []*onnxpb.NodeProto
	consts  []*onnxpb.TensorProto // small initializers (shapes, scalars)
	weights []*weight             // the model's weights, in first-use order
	used    map[string]bool
	inputs  []*onnxpb.ValueInfoProto
	outputs []*onnxpb.ValueInfoProto
	seq     int
	cache   map[string]string // constant key → name
}

func newGraph(name string) *graph {
	return &graph{name: name, used: map[string]bool{}, cache: map[string]string{}}
}

// dim is a tensor dimension: an int (fixed) or a string (symbolic).
type dim any

func valueInfo(name string, elem onnxpb.TensorProto_DataType, dims ...dim) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
		case string:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}})
		default:
			panic(fmt.Sprintf("dimension %v", d))
		}
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: shape}}}}
}

func (g *graph) input(name string, elem onnxpb.TensorProto_DataType, dims ...dim) string {
	g.inputs = append(g.inputs, valueInfo(name, elem, dims...))
	return name
}

func (g *graph) output(name string, elem onnxpb.TensorProto_DataType, dims ...dim) {
	g.outputs = append(g.outputs, valueInfo(name, elem, dims...))
}

// w registers a weight with the graph and returns its name.
func (g *graph) w(w *weight) string {
	if !g.used[w.name] {
		g.used[w.name] = true
		g.weights = append(g.weights, w)
	}
	return w.name
}

type attr = *onnxpb.AttributeProto

func attrInt(name string, v int64) attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v ...int64) attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrFloat(name string, v float32) attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// opTo adds a node whose outputs are named outs.
func (g *graph) opTo(typ string, ins, outs []string, attrs ...attr) {
	g.seq++
	g.nodes = append(g.nodes, &onnxpb.NodeProto{
		OpType: proto.String(typ), Name: proto.String(fmt.Sprintf("%s_%d", typ, g.seq)),
		Input: ins, Output: outs, Attribute: attrs,
	})
}

// opN adds a node with n fresh outputs.
func (g *graph) opN(typ string, ins []string, n int, attrs ...attr) []string {
	outs := make([]string, n)
	for i := range outs {
		outs[i] = fmt.Sprintf("/%s_%d/out%d", typ, g.seq+1, i)
	}
	g.opTo(typ, ins, outs, attrs...)
	return outs
}

// op adds a node with one fresh output.
func (g *graph) op(typ string, ins []string, attrs ...attr) string {
	return g.opN(typ, ins, 1, attrs...)[0]
}

func (g *graph) constTensor(t *onnxpb.TensorProto) string {
	g.seq++
	t.Name = proto.String(fmt.Sprintf("/const_%d", g.seq))
	g.consts = append(g.consts, t)
	return t.GetName()
}

// ints is an int64 vector constant.
func (g *graph) ints(v ...int64) string {
	key := fmt.Sprint("i", v)
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	n := g.constTensor(&onnxpb.TensorProto{Dims: []int64{int64(len(v))}, DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
	g.cache[key] = n
	return n
}

// int64Scalar is an int64 scalar constant.
func (g *graph) int64Scalar(v int64) string {
	key := fmt.Sprint("si", v)
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := binary.LittleEndian.AppendUint64(nil, uint64(v))
	n := g.constTensor(&onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
	g.cache[key] = n
	return n
}

// scalar is a float32 scalar constant.
func (g *graph) scalar(v float32) string {
	key := fmt.Sprint("f", math.Float32bits(v))
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
	n := g.constTensor(&onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw})
	g.cache[key] = n
	return n
}

// model wraps the graph with initializers as given.
func (g *graph) model(inits []*onnxpb.TensorProto, doc string) *onnxpb.ModelProto {
	return &onnxpb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		ProducerName:    proto.String("falocal"),
		ProducerVersion: proto.String("whisperonnx"),
		DocString:       proto.String(doc),
		Graph: &onnxpb.GraphProto{
			Name:        proto.String(g.name),
			Node:        g.nodes,
			Initializer: append(append([]*onnxpb.TensorProto(nil), g.consts...), inits...),
			Input:       g.inputs,
			Output:      g.outputs,
		},
	}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
