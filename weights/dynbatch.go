package weights

import (
	"fmt"

	"github.com/falocal/falocal/weights/onnxpb"
)

// DynamicBatch rewrites an ONNX file in place so that dim 0 of every graph
// input and output is the symbolic "batch": the engine's pool batches
// concurrent runs only for such models, and exports often pin it to 1 even
// when the network itself does not care. Every graph's value_info is
// dropped, since its fixed shapes would contradict a batch of more than one;
// ONNX Runtime re-derives them. It reports whether anything changed, and
// refuses a model whose dim 0 is fixed to anything but 1 (that is not a
// batch dimension). It cannot see a batch of 1 baked into the computation
// (a constant Reshape target, say): a caller runs the result at batch > 1
// once before trusting it.
func DynamicBatch(path string) (bool, error) {
	return rewriteONNX(path, func(_ *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error) {
		return dynamicBatch(path, g)
	})
}

func dynamicBatch(path string, g *onnxpb.GraphProto) (bool, error) {
	// Older exports list initialisers among the inputs too; those are
	// weights, not per-request values.
	isInit := map[string]bool{}
	for _, in := range g.Initializer {
		isInit[in.GetName()] = true
	}
	changed := false
	rewrite := func(kind string, v *onnxpb.ValueInfoProto) error {
		dims := v.GetType().GetTensorType().GetShape().GetDim()
		if len(dims) == 0 {
			return fmt.Errorf("%s: %s %q has no batch dimension (shape unknown or scalar)", path, kind, v.GetName())
		}
		d := dims[0]
		if _, fixed := d.Value.(*onnxpb.TensorShapeProto_Dimension_DimValue); !fixed {
			return nil // already symbolic (whatever its name) or unknown
		}
		if n := d.GetDimValue(); n != 1 {
			return fmt.Errorf("%s: %s %q has dim 0 fixed to %d, not a batch of 1", path, kind, v.GetName(), n)
		}
		d.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
		changed = true
		return nil
	}
	for _, in := range g.Input {
		if isInit[in.GetName()] {
			continue
		}
		if err := rewrite("input", in); err != nil {
			return false, err
		}
	}
	for _, out := range g.Output {
		if err := rewrite("output", out); err != nil {
			return false, err
		}
	}
	if changed {
		dropValueInfo(g)
	}
	return changed, nil
}

// dropValueInfo clears the intermediate shapes of g and of its subgraphs
// (If/Loop bodies carry their own).
func dropValueInfo(g *onnxpb.GraphProto) {
	g.ValueInfo = nil
	for _, n := range g.Node {
		for _, a := range n.Attribute {
			if a.G != nil {
				dropValueInfo(a.G)
			}
			for _, sg := range a.Graphs {
				dropValueInfo(sg)
			}
		}
	}
}
