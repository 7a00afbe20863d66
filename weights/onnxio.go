package weights

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNXIO lists the graph input and output names of an ONNX file. It reads
// the protobuf as a stream and skips everything else, so a multi-gigabyte
// model costs a few reads, not its size in memory. Pipelines use it to
// adapt to export variants (e.g. whether a decoder takes cache_position).
func ONNXIO(path string) (inputs, outputs []string, err error) {
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
		// GraphProto: input is field 11, output field 12 (ValueInfoProto, name = 1)
		return true, walk(r, n, func(num protowire.Number, n int64) (bool, error) {
			if num != 11 && num != 12 {
				return false, nil
			}
			var name string
			err := walk(r, n, func(num protowire.Number, n int64) (bool, error) {
				if num != 1 {
					return false, nil
				}
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil {
					return true, err
				}
				name = string(b)
				return true, nil
			})
			if num == 11 {
				inputs = append(inputs, name)
			} else {
				outputs = append(outputs, name)
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

// walk visits the fields of a message of size bytes. visit reports whether
// it consumed a length-delimited field's n bytes; otherwise walk skips them.
func walk(r *countingReader, size int64, visit func(num protowire.Number, n int64) (bool, error)) error {
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
			_, vn, err := readVarint(r)
			if err != nil {
				return err
			}
			size -= int64(vn)
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
			done, err := visit(num, n)
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
