package onnxgraph

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// WriteFile writes m to path. With data set, the initializers that
// external selects (all, when nil) move to the file data beside path, one
// after another, and reference it by its relative name as ONNX external
// data does (location, offset, length); m is changed accordingly.
func WriteFile(path string, m *onnxpb.ModelProto, data string, external func(*onnxpb.TensorProto) bool) error {
	if data != "" {
		if err := writeExternal(filepath.Join(filepath.Dir(path), data), data, m, external); err != nil {
			return err
		}
	}
	b, err := Marshal(m)
	if err != nil {
		return fmt.Errorf("onnxgraph: %s: %w", path, err)
	}
	return os.WriteFile(path, b, 0o644)
}

func writeExternal(path, location string, m *onnxpb.ModelProto, external func(*onnxpb.TensorProto) bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	var off int64
	for _, t := range m.GetGraph().GetInitializer() {
		if external != nil && !external(t) {
			continue
		}
		if t.RawData == nil {
			f.Close()
			return fmt.Errorf("onnxgraph: initializer %s has no raw data to move", t.GetName())
		}
		if _, err := bw.Write(t.RawData); err != nil {
			f.Close()
			return err
		}
		n := int64(len(t.RawData))
		t.RawData = nil
		t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		t.ExternalData = []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String(location)},
			{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(off, 10))},
			{Key: proto.String("length"), Value: proto.String(strconv.FormatInt(n, 10))},
		}
		off += n
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
