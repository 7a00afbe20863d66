// Package onnxgraph builds ONNX graphs node by node: typed inputs and
// outputs with fixed or symbolic dimensions, nodes with fresh output names,
// deduplicated constants, and the ModelProto around them. The converters
// that write ONNX (whisperonnx) and the tiny test exports build on it.
package onnxgraph

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// ONNX versions written: IR 8 with opset 17 (LayerNormalization), which
// every ONNX Runtime since 1.14 loads.
const (
	IRVersion = 8
	Opset     = 17
)

// MicrosoftDomain is ONNX Runtime's contrib operator domain; nodes in it
// make Model import it at version 1.
const MicrosoftDomain = "com.microsoft"

// Dim is a tensor dimension: an int (fixed) or a string (symbolic).
type Dim = any

// Attr is a node attribute.
type Attr = *onnxpb.AttributeProto

// Graph is one ONNX graph under construction.
type Graph struct {
	name    string
	nodes   []*onnxpb.NodeProto
	consts  []*onnxpb.TensorProto // initializers, in creation order
	inputs  []*onnxpb.ValueInfoProto
	outputs []*onnxpb.ValueInfoProto
	seq     int
	cache   map[string]string // constant key → name
}

// New starts an empty graph.
func New(name string) *Graph {
	return &Graph{name: name, cache: map[string]string{}}
}

// ValueInfo describes a tensor of element type elem and shape dims.
func ValueInfo(name string, elem onnxpb.TensorProto_DataType, dims ...Dim) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
		case int64:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		case string:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}})
		default:
			panic(fmt.Sprintf("onnxgraph: dimension %v (%T)", d, d))
		}
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: shape}}}}
}

// Input declares a graph input and returns its name.
func (g *Graph) Input(name string, elem onnxpb.TensorProto_DataType, dims ...Dim) string {
	g.inputs = append(g.inputs, ValueInfo(name, elem, dims...))
	return name
}

// Output declares a graph output (a node must produce name).
func (g *Graph) Output(name string, elem onnxpb.TensorProto_DataType, dims ...Dim) {
	g.outputs = append(g.outputs, ValueInfo(name, elem, dims...))
}

// AttrInt is an integer attribute.
func AttrInt(name string, v int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// AttrInts is an integer list attribute.
func AttrInts(name string, v ...int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

// AttrFloat is a float attribute.
func AttrFloat(name string, v float32) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// AttrString is a string attribute.
func AttrString(name, v string) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// OpTo adds a node whose outputs are named outs; nodes are named
// "<type>_<n>".
func (g *Graph) OpTo(typ string, ins, outs []string, attrs ...Attr) {
	g.DomainOpTo("", typ, ins, outs, attrs...)
}

// DomainOpTo is OpTo for an operator of domain ("" is ONNX's own).
func (g *Graph) DomainOpTo(domain, typ string, ins, outs []string, attrs ...Attr) {
	g.seq++
	n := &onnxpb.NodeProto{
		OpType: proto.String(typ), Name: proto.String(fmt.Sprintf("%s_%d", typ, g.seq)),
		Input: ins, Output: outs, Attribute: attrs,
	}
	if domain != "" {
		n.Domain = proto.String(domain)
	}
	g.nodes = append(g.nodes, n)
}

// OpN adds a node with n fresh outputs.
func (g *Graph) OpN(typ string, ins []string, n int, attrs ...Attr) []string {
	return g.DomainOpN("", typ, ins, n, attrs...)
}

// DomainOpN is OpN for an operator of domain.
func (g *Graph) DomainOpN(domain, typ string, ins []string, n int, attrs ...Attr) []string {
	outs := make([]string, n)
	for i := range outs {
		outs[i] = fmt.Sprintf("/%s_%d/out%d", typ, g.seq+1, i)
	}
	g.DomainOpTo(domain, typ, ins, outs, attrs...)
	return outs
}

// Op adds a node with one fresh output and returns its name.
func (g *Graph) Op(typ string, ins []string, attrs ...Attr) string {
	return g.OpN(typ, ins, 1, attrs...)[0]
}

// DomainOp is Op for an operator of domain.
func (g *Graph) DomainOp(domain, typ string, ins []string, attrs ...Attr) string {
	return g.DomainOpN(domain, typ, ins, 1, attrs...)[0]
}

// Const adds t as an initializer named "/const_<n>" and returns the name.
func (g *Graph) Const(t *onnxpb.TensorProto) string {
	g.seq++
	t.Name = proto.String(fmt.Sprintf("/const_%d", g.seq))
	g.consts = append(g.consts, t)
	return t.GetName()
}

// Initializer adds t as an initializer under its own name and returns it.
func (g *Graph) Initializer(t *onnxpb.TensorProto) string {
	g.consts = append(g.consts, t)
	return t.GetName()
}

// Tensor is an initializer of element type elem with raw little-endian data.
func Tensor(name string, elem onnxpb.TensorProto_DataType, dims []int64, raw []byte) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(elem)), RawData: raw}
}

// Ints is an int64 vector constant (one per distinct value).
func (g *Graph) Ints(v ...int64) string {
	key := fmt.Sprint("i", v)
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	n := g.Const(&onnxpb.TensorProto{Dims: []int64{int64(len(v))}, DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
	g.cache[key] = n
	return n
}

// Int64Scalar is an int64 scalar constant.
func (g *Graph) Int64Scalar(v int64) string {
	key := fmt.Sprint("si", v)
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := binary.LittleEndian.AppendUint64(nil, uint64(v))
	n := g.Const(&onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
	g.cache[key] = n
	return n
}

// Scalar is a float32 scalar constant.
func (g *Graph) Scalar(v float32) string {
	key := fmt.Sprint("f", math.Float32bits(v))
	if n, ok := g.cache[key]; ok {
		return n
	}
	raw := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
	n := g.Const(&onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw})
	g.cache[key] = n
	return n
}

// Model wraps the graph: its initializers followed by inits, opset
// Opset of ONNX's domain and version 1 of every other domain its nodes
// use (in name order).
func (g *Graph) Model(inits []*onnxpb.TensorProto, producerVersion, doc string) *onnxpb.ModelProto {
	opsets := []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}}
	seen := map[string]bool{}
	var domains []string
	for _, n := range g.nodes {
		if d := n.GetDomain(); d != "" && !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	sort.Strings(domains)
	for _, d := range domains {
		opsets = append(opsets, &onnxpb.OperatorSetIdProto{Domain: proto.String(d), Version: proto.Int64(1)})
	}
	return &onnxpb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		OpsetImport:     opsets,
		ProducerName:    proto.String("falocal"),
		ProducerVersion: proto.String(producerVersion),
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

// Marshal serialises a model deterministically (the same model, the same
// bytes).
func Marshal(m *onnxpb.ModelProto) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// F32Bytes is v as little-endian float32s.
func F32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// F16Bytes is v as little-endian IEEE half floats (rounded to nearest even).
func F16Bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float16(x))
	}
	return b
}

// Float16 converts f to IEEE 754 half precision bits, rounding to nearest
// even; out of range values become infinities.
func Float16(f float32) uint16 {
	x := math.Float32bits(f)
	sign := uint16(x>>16) & 0x8000
	exp := int32(x>>23&0xff) - 127 + 15
	mant := x & 0x7fffff
	switch {
	case x&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 0x1f: // overflow or infinity
		return sign | 0x7c00
	case exp <= 0: // subnormal or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		h := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, up to infinity: still correct
	}
	return sign | uint16(h)
}

// Float16To32 converts IEEE half precision bits to a float32.
func Float16To32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
