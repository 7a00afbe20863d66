package whisperonnx

import (
	"fmt"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// ONNX versions written: IR 8 with opset 17 (LayerNormalization), which
// every ONNX Runtime since 1.14 loads.
const (
	IRVersion = onnxgraph.IRVersion
	Opset     = onnxgraph.Opset
)

// weight is an initializer whose values load on demand, so that a large
// model is written one tensor at a time: float32 values (load), or int8
// ones as bytes (loadInt8) for the weights of quantised linear layers.
type weight struct {
	name     string
	dims     []int64
	load     func() ([]float32, error)
	loadInt8 func() ([]byte, error)
}

func (w *weight) elem() onnxpb.TensorProto_DataType {
	if w.loadInt8 != nil {
		return onnxpb.TensorProto_INT8
	}
	return onnxpb.TensorProto_FLOAT
}

func (w *weight) elemSize() int64 {
	if w.loadInt8 != nil {
		return 1
	}
	return 4
}

func (w *weight) count() int64 {
	n := int64(1)
	for _, d := range w.dims {
		n *= d
	}
	return n
}

func (w *weight) bytes() int64 { return w.count() * w.elemSize() }

// data loads the weight's raw little-endian bytes, checked against its shape.
func (w *weight) data() ([]byte, error) {
	var b []byte
	if w.loadInt8 != nil {
		var err error
		if b, err = w.loadInt8(); err != nil {
			return nil, err
		}
	} else {
		v, err := w.load()
		if err != nil {
			return nil, err
		}
		b = f32Bytes(v)
	}
	if int64(len(b)) != w.bytes() {
		return nil, fmt.Errorf("%d values for shape %v", int64(len(b))/w.elemSize(), w.dims)
	}
	return b, nil
}

// graph builds one ONNX graph; the model's weights are kept apart from its
// constants (shapes, scalars) so that writeGroup can place them.
type graph struct {
	*onnxgraph.Graph
	weights []*weight // the model's weights, in first-use order
	used    map[string]bool
}

func newGraph(name string) *graph {
	return &graph{Graph: onnxgraph.New(name), used: map[string]bool{}}
}

// dim is a tensor dimension: an int (fixed) or a string (symbolic).
type dim = onnxgraph.Dim

func (g *graph) input(name string, elem onnxpb.TensorProto_DataType, dims ...dim) string {
	return g.Input(name, elem, dims...)
}

func (g *graph) output(name string, elem onnxpb.TensorProto_DataType, dims ...dim) {
	g.Output(name, elem, dims...)
}

// w registers a weight with the graph and returns its name.
func (g *graph) w(w *weight) string {
	if !g.used[w.name] {
		g.used[w.name] = true
		g.weights = append(g.weights, w)
	}
	return w.name
}

type attr = onnxgraph.Attr

var (
	attrInt   = onnxgraph.AttrInt
	attrInts  = onnxgraph.AttrInts
	attrFloat = onnxgraph.AttrFloat
)

// opTo adds a node whose outputs are named outs.
func (g *graph) opTo(typ string, ins, outs []string, attrs ...attr) { g.OpTo(typ, ins, outs, attrs...) }

// opN adds a node with n fresh outputs.
func (g *graph) opN(typ string, ins []string, n int, attrs ...attr) []string {
	return g.OpN(typ, ins, n, attrs...)
}

// op adds a node with one fresh output.
func (g *graph) op(typ string, ins []string, attrs ...attr) string { return g.Op(typ, ins, attrs...) }

// ints is an int64 vector constant.
func (g *graph) ints(v ...int64) string { return g.Ints(v...) }

// int64Scalar is an int64 scalar constant.
func (g *graph) int64Scalar(v int64) string { return g.Int64Scalar(v) }

// scalar is a float32 scalar constant.
func (g *graph) scalar(v float32) string { return g.Scalar(v) }

// model wraps the graph with initializers as given.
func (g *graph) model(inits []*onnxpb.TensorProto, doc string) *onnxpb.ModelProto {
	return g.Model(inits, "whisperonnx", doc)
}

func f32Bytes(v []float32) []byte { return onnxgraph.F32Bytes(v) }
