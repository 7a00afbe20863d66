package whisperonnx

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
)

// dataAlign aligns each weight in an external data file, so that ONNX
// Runtime can map it in place.
const dataAlign = 4096

// writeGroup writes graphs that share weights to files in dir. Weights go
// inline, or (by mode and size) once into the shared external data file
// data, which every graph of the group references. It returns the files
// written and the number of weight values.
func writeGroup(dir, data string, graphs []*graph, files []string, mode ExternalMode, doc string) ([]string, int64, error) {
	var all []*weight
	seen := map[string]bool{}
	var size, params int64
	for _, g := range graphs {
		for _, w := range g.weights {
			if !seen[w.name] {
				seen[w.name] = true
				all = append(all, w)
				size += w.bytes()
				params += w.count()
			}
		}
	}
	external := mode == ExternalAlways || (mode == ExternalAuto && size > ExternalThreshold)
	var written []string
	protos := map[string]*onnxpb.TensorProto{}
	if external {
		f, err := os.Create(filepath.Join(dir, data))
		if err != nil {
			return nil, 0, err
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		var off int64
		for _, w := range all {
			b, err := w.data()
			if err != nil {
				f.Close()
				return nil, 0, fmt.Errorf("whisperonnx: %s: %w", w.name, err)
			}
			if pad := (dataAlign - off%dataAlign) % dataAlign; pad > 0 {
				if _, err := bw.Write(make([]byte, pad)); err != nil {
					f.Close()
					return nil, 0, err
				}
				off += pad
			}
			if _, err := bw.Write(b); err != nil {
				f.Close()
				return nil, 0, err
			}
			protos[w.name] = &onnxpb.TensorProto{
				Name: proto.String(w.name), Dims: w.dims, DataType: proto.Int32(int32(w.elem())),
				DataLocation: onnxpb.TensorProto_EXTERNAL.Enum(),
				ExternalData: []*onnxpb.StringStringEntryProto{
					{Key: proto.String("location"), Value: proto.String(data)},
					{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(off, 10))},
					{Key: proto.String("length"), Value: proto.String(strconv.FormatInt(int64(len(b)), 10))},
				},
			}
			off += int64(len(b))
		}
		if err := bw.Flush(); err != nil {
			f.Close()
			return nil, 0, err
		}
		if err := f.Close(); err != nil {
			return nil, 0, err
		}
		written = append(written, data)
	} else {
		for _, w := range all {
			b, err := w.data()
			if err != nil {
				return nil, 0, fmt.Errorf("whisperonnx: %s: %w", w.name, err)
			}
			protos[w.name] = &onnxpb.TensorProto{
				Name: proto.String(w.name), Dims: w.dims, DataType: proto.Int32(int32(w.elem())),
				RawData: b,
			}
		}
	}
	for i, g := range graphs {
		inits := make([]*onnxpb.TensorProto, len(g.weights))
		for j, w := range g.weights {
			inits[j] = protos[w.name]
		}
		b, err := onnxgraph.Marshal(g.model(inits, doc))
		if err != nil {
			return nil, 0, fmt.Errorf("whisperonnx: %s: %w", files[i], err)
		}
		if err := os.WriteFile(filepath.Join(dir, files[i]), b, 0o644); err != nil {
			return nil, 0, err
		}
		written = append(written, files[i])
	}
	return written, params, nil
}
