package weights

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/weights/onnxpb"
)

// rewriteONNX is how the graph rewrites (DynamicBatch, Float32IO,
// Float16Compute) change an ONNX file in place: it parses the model, hands
// its graph to edit, and, when edit reports a change, writes the result
// beside the file and renames it over. It reports whether anything changed;
// the file is untouched on error or without change. Weights in external
// data files are not read (edit sees their TensorProtos only).
func rewriteONNX(path string, edit func(m *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error)) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return false, fmt.Errorf("%s: not an ONNX model: %w", path, err)
	}
	g := m.GetGraph()
	if g == nil {
		return false, fmt.Errorf("%s: no graph", path)
	}
	changed, err := edit(&m, g)
	if err != nil || !changed {
		return false, err
	}
	nb, err := proto.Marshal(&m)
	if err != nil {
		return false, err
	}
	tmp := path + ".partial"
	if err := os.WriteFile(tmp, nb, 0o644); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}

// ONNXIO lists the graph input and output names of an ONNX file (see
// ONNXSignature).
func ONNXIO(path string) (inputs, outputs []string, err error) {
	in, out, err := ONNXSignature(path)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range in {
		inputs = append(inputs, v.Name)
	}
	for _, v := range out {
		outputs = append(outputs, v.Name)
	}
	return inputs, outputs, nil
}

// ValueInfo is a graph input or output as the file declares it.
type ValueInfo struct {
	Name string
	// Elem is the ONNX element type (onnxpb.TensorProto_DataType: 1 float,
	// 7 int64, 10 float16, ...); 0 when not a tensor.
	Elem int32
	// Dims are the declared dimensions, -1 where dynamic (named or
	// unnamed): empty for a scalar, nil when the file declares no shape.
	// DimNames has the symbolic names ("" for fixed or unnamed dimensions).
	Dims     []int64
	DimNames []string
}

// Rank is the number of declared dimensions.
func (v ValueInfo) Rank() int { return len(v.Dims) }

// ONNXSignature reads the graph inputs and outputs of an ONNX file with
// their declared element types and shapes. It reads the protobuf as a
// stream and skips everything else, so a multi-gigabyte model costs a few
// reads, not its size in memory. Pipelines use it to adapt to export
// variants (e.g. a scalar or per-row timestep) before any session opens.
func ONNXSignature(path string) (inputs, outputs []ValueInfo, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	r := &countingReader{r: bufio.NewReaderSize(f, 1<<16), f: f}
	// ModelProto: graph is field 7
	err = walk(r, st.Size(), func(num protowire.Number, n int64) (bool, error) {
		if num != 7 {
			return false, nil
		}
		// GraphProto: input is field 11, output field 12
		return true, walk(r, n, func(num protowire.Number, n int64) (bool, error) {
			if num != 11 && num != 12 {
				return false, nil
			}
			v, err := readValueInfo(r, n)
			if num == 11 {
				inputs = append(inputs, v)
			} else {
				outputs = append(outputs, v)
			}
			return true, err
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(inputs) == 0 {
		return nil, nil, fmt.Errorf("%s: no graph inputs (not an ONNX model?)", path)
	}
	return inputs, outputs, nil
}

// readValueInfo reads a ValueInfoProto: name = 1, type = 2 (TypeProto:
// tensor_type = 1 → elem_type = 1, shape = 2 → dim = 1 → dim_value = 1,
// dim_param = 2).
func readValueInfo(r *countingReader, n int64) (ValueInfo, error) {
	var v ValueInfo
	readString := func(n int64) (string, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return string(b), err
	}
	err := walkAll(r, n, func(num protowire.Number, typ protowire.Type, x uint64, n int64) (bool, error) {
		switch {
		case num == 1 && typ == protowire.BytesType:
			s, err := readString(n)
			v.Name = s
			return true, err
		case num == 2 && typ == protowire.BytesType: // TypeProto
			return true, walkAll(r, n, func(num protowire.Number, typ protowire.Type, _ uint64, n int64) (bool, error) {
				if num != 1 || typ != protowire.BytesType { // tensor_type only
					return false, nil
				}
				return true, walkAll(r, n, func(num protowire.Number, typ protowire.Type, x uint64, n int64) (bool, error) {
					switch {
					case num == 1 && typ == protowire.VarintType:
						v.Elem = int32(x)
					case num == 2 && typ == protowire.BytesType: // TensorShapeProto
						v.Dims, v.DimNames = []int64{}, []string{}
						return true, walkAll(r, n, func(num protowire.Number, typ protowire.Type, _ uint64, n int64) (bool, error) {
							if num != 1 || typ != protowire.BytesType {
								return false, nil
							}
							d, name := int64(-1), ""
							err := walkAll(r, n, func(num protowire.Number, typ protowire.Type, x uint64, n int64) (bool, error) {
								switch {
								case num == 1 && typ == protowire.VarintType:
									d = int64(x)
								case num == 2 && typ == protowire.BytesType:
									s, err := readString(n)
									name = s
									return true, err
								}
								return false, nil
							})
							v.Dims = append(v.Dims, d)
							v.DimNames = append(v.DimNames, name)
							return true, err
						})
					}
					return false, nil
				})
			})
		}
		return false, nil
	})
	return v, err
}

// countingReader reads through a buffer and skips by seeking.
type countingReader struct {
	r *bufio.Reader
	f *os.File
}

func (c *countingReader) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *countingReader) ReadByte() (byte, error)    { return c.r.ReadByte() }

func (c *countingReader) skip(n int64) error {
	if n <= int64(c.r.Buffered()) {
		_, err := c.r.Discard(int(n))
		return err
	}
	n -= int64(c.r.Buffered())
	c.r.Discard(c.r.Buffered())
	if _, err := c.f.Seek(n, io.SeekCurrent); err != nil {
		return err
	}
	c.r.Reset(c.f)
	return nil
}

var errBadProto = errors.New("malformed protobuf")

// walk visits the length-delimited fields of a message of size bytes.
// visit reports whether it consumed a field's n bytes; otherwise walk
// skips them.
func walk(r *countingReader, size int64, visit func(num protowire.Number, n int64) (bool, error)) error {
	return walkAll(r, size, func(num protowire.Number, typ protowire.Type, _ uint64, n int64) (bool, error) {
		if typ != protowire.BytesType {
			return false, nil
		}
		return visit(num, n)
	})
}

// walkAll visits every field of a message of size bytes: varints with
// their value x, length-delimited fields with their length n (visit
// reports whether it consumed the n bytes; otherwise walkAll skips them).
func walkAll(r *countingReader, size int64, visit func(num protowire.Number, typ protowire.Type, x uint64, n int64) (bool, error)) error {
	for size > 0 {
		tag, tn, err := readVarint(r)
		if err != nil {
			return err
		}
		size -= int64(tn)
		num, typ := protowire.DecodeTag(tag)
		var n int64
		switch typ {
		case protowire.VarintType:
			x, vn, err := readVarint(r)
			if err != nil {
				return err
			}
			size -= int64(vn)
			if _, err := visit(num, typ, x, 0); err != nil {
				return err
			}
			continue
		case protowire.Fixed64Type:
			n = 8
		case protowire.Fixed32Type:
			n = 4
		case protowire.BytesType:
			l, ln, err := readVarint(r)
			if err != nil {
				return err
			}
			size -= int64(ln)
			n = int64(l)
			if n > size {
				return errBadProto
			}
			done, err := visit(num, typ, 0, n)
			if err != nil {
				return err
			}
			if done {
				size -= n
				continue
			}
		default:
			return errBadProto
		}
		if n > size {
			return errBadProto
		}
		if err := r.skip(n); err != nil {
			return err
		}
		size -= n
	}
	if size != 0 {
		return errBadProto
	}
	return nil
}

func readVarint(r io.ByteReader) (uint64, int, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && i > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, i, err
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 10, errBadProto
}
