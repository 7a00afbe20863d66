// Package ct2 reads CTranslate2's binary model format (model.bin), the format
// of every faster-whisper model, as the first step of importing such a model
// into ONNX.
//
// The layout follows CTranslate2's writer (python/ctranslate2/specs/
// model_spec.py, ModelSpec._serialize) and loader (src/models/model.cc,
// Model::load). All integers are little-endian:
//
//	u32 binary_version                       1 … 6
//	if version >= 2: string spec, u32 spec_revision   (else spec "", revision 1)
//	u32 num_variables
//	num_variables × {
//	    string name
//	    u8     rank
//	    u32    dims[rank]
//	    version >= 4: u8 type_id, u32 num_bytes
//	    version <  4: u8 item_size (4 float32, 2 int16, 1 int8), u32 num_items
//	    u8     data[num_bytes]               raw little-endian values
//	}
//	if version >= 3: u32 num_aliases, num_aliases × { string alias, string target }
//
// where string is a u16 length that counts a trailing NUL, then that many
// bytes ending in the NUL. Versions 4, 5 and 6 share one layout: 5 only marks
// that quantised values were rounded (not truncated) before the cast, and 6
// that the model directory carries a config.json.
//
// Read checks every byte: the version, each string's length and terminator,
// each type id, that each payload size equals the shape's element count times
// the type's size, that no name repeats, that each alias names a variable,
// and that the file ends exactly after the aliases.
package ct2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// MinBinaryVersion and MaxBinaryVersion bound the binary versions Read
// accepts: every version CTranslate2's own loader reads (its
// current_binary_version is 6 since CTranslate2 3.0; faster-whisper's models
// are version 5 or 6).
const (
	MinBinaryVersion = 1
	MaxBinaryVersion = 6
)

// DType is a variable's element type. The values equal CTranslate2's own
// type ids (enum DataType in include/ctranslate2/types.h), which is what
// binary versions 4 and later store.
type DType uint8

const (
	Float32 DType = iota
	Int8
	Int16
	Int32
	Float16
	BFloat16
)

var dtypeNames = [...]string{"float32", "int8", "int16", "int32", "float16", "bfloat16"}
var dtypeSizes = [...]int{4, 1, 2, 4, 2, 2}

// String returns CTranslate2's name for the type ("float16"), or
// "dtype(N)" for an unknown id.
func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the byte size of one element, 0 for an unknown type.
func (d DType) Size() int {
	if int(d) < len(dtypeSizes) {
		return dtypeSizes[d]
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return d == Float32 || d == Float16 || d == BFloat16 }

// Tensor is one stored variable.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64 // empty for a scalar
	Data  []byte  // raw little-endian bytes as stored
}

// NumElements is the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Model is a parsed model.bin.
type Model struct {
	BinaryVersion int
	Spec          string // e.g. "WhisperSpec"; "" for binary version 1
	SpecRevision  int
	// Tensors holds every variable as stored, including the "<name>_scale"
	// of quantised weights and scalars such as "encoder/num_heads".
	Tensors map[string]*Tensor
	// Aliases maps an alias to its target as stored (binary version 3 and
	// later); Tensor resolves them.
	Aliases map[string]string
}

// FormatError describes a malformed model.bin: what is wrong, at which byte
// offset the faulty field starts, and in which variable or alias.
type FormatError struct {
	Offset int64
	Where  string // e.g. `variable 12 "decoder/layer_0/ffn/linear_0/weight"`, "header", `alias 0`
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("ct2: %s at offset %d: %s", e.Where, e.Offset, e.Msg)
}

// Open reads the model.bin at path. Tensor data is read straight into each
// tensor's own buffer, so the model costs about its file size in memory.
func Open(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ct2: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ct2: %w", err)
	}
	m, err := Read(bufio.NewReaderSize(f, 1<<20), st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Read parses a model.bin of size bytes from r. It refuses a stream that
// ends before size bytes, a file whose fields end before size (trailing
// bytes), and a stream that goes on past size.
func Read(r io.Reader, size int64) (*Model, error) {
	if size < 0 {
		return nil, fmt.Errorf("ct2: negative size %d", size)
	}
	d := &decoder{r: r, size: size, where: "header"}
	return d.model()
}

type decoder struct {
	r     io.Reader
	off   int64
	size  int64
	where string
	buf   [8]byte
}

func (d *decoder) fail(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Where: d.where, Msg: fmt.Sprintf(format, args...)}
}

// read fills p with the next len(p) bytes, the field named what.
func (d *decoder) read(p []byte, what string) error {
	if n := int64(len(p)); n > d.size-d.off {
		return d.fail(d.off, "truncated: %s (%s) runs past the end of the %d-byte file", what, plural(n, "byte"), d.size)
	}
	n, err := io.ReadFull(d.r, p)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return d.fail(d.off, "truncated: the input ended at offset %d, inside %s, before the %d bytes its size declares", d.off+int64(n), what, d.size)
		}
		return d.fail(d.off, "reading %s: %v", what, err)
	}
	d.off += int64(n)
	return nil
}

func (d *decoder) u8(what string) (uint8, error) {
	err := d.read(d.buf[:1], what)
	return d.buf[0], err
}

func (d *decoder) u16(what string) (uint16, error) {
	err := d.read(d.buf[:2], what)
	return binary.LittleEndian.Uint16(d.buf[:2]), err
}

func (d *decoder) u32(what string) (uint32, error) {
	err := d.read(d.buf[:4], what)
	return binary.LittleEndian.Uint32(d.buf[:4]), err
}

// str reads a CTranslate2 string: a u16 length counting a trailing NUL, then
// the bytes and the NUL.
func (d *decoder) str(what string) (string, error) {
	at := d.off
	n, err := d.u16(what + " length")
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", d.fail(at, "%s has length 0 (a string's length counts its NUL terminator)", what)
	}
	b := make([]byte, n)
	if err := d.read(b, what); err != nil {
		return "", err
	}
	if b[n-1] != 0 {
		return "", d.fail(at+2, "%s of %d bytes does not end in a NUL", what, n)
	}
	s := b[:n-1]
	if i := strings.IndexByte(string(s), 0); i >= 0 {
		return "", d.fail(at+2+int64(i), "%s %q holds a NUL before its end", what, s)
	}
	return string(s), nil
}

func (d *decoder) model() (*Model, error) {
	m := &Model{Tensors: map[string]*Tensor{}, Aliases: map[string]string{}}
	v, err := d.u32("binary version")
	if err != nil {
		return nil, err
	}
	if v < MinBinaryVersion || v > MaxBinaryVersion {
		return nil, d.fail(0, "unsupported binary version %d (this reader knows %d to %d)", v, MinBinaryVersion, MaxBinaryVersion)
	}
	m.BinaryVersion = int(v)
	m.SpecRevision = 1
	if v >= 2 {
		if m.Spec, err = d.str("spec name"); err != nil {
			return nil, err
		}
		rev, err := d.u32("spec revision")
		if err != nil {
			return nil, err
		}
		m.SpecRevision = int(rev)
	}
	n, err := d.u32("variable count")
	if err != nil {
		return nil, err
	}
	// Size the map by n only as far as the bytes left could hold that many
	// variables (the smallest record is 10 bytes): n is not yet trusted.
	m.Tensors = make(map[string]*Tensor, min(int64(n), (d.size-d.off)/10))
	for i := uint32(0); i < n; i++ {
		d.where = fmt.Sprintf("variable %d of %d", i, n)
		at := d.off
		t, err := d.variable(m.BinaryVersion)
		if err != nil {
			return nil, err
		}
		if _, dup := m.Tensors[t.Name]; dup {
			return nil, d.fail(at, "variable %q appears twice", t.Name)
		}
		m.Tensors[t.Name] = t
	}
	if v >= 3 {
		d.where = "aliases"
		na, err := d.u32("alias count")
		if err != nil {
			return nil, err
		}
		for i := uint32(0); i < na; i++ {
			d.where = fmt.Sprintf("alias %d of %d", i, na)
			at := d.off
			alias, err := d.str("alias name")
			if err != nil {
				return nil, err
			}
			d.where = fmt.Sprintf("alias %d of %d %q", i, na, alias)
			target, err := d.str("alias target")
			if err != nil {
				return nil, err
			}
			if alias == "" {
				return nil, d.fail(at, "empty alias name")
			}
			if _, dup := m.Tensors[alias]; dup {
				return nil, d.fail(at, "alias %q repeats a variable's name", alias)
			}
			if _, dup := m.Aliases[alias]; dup {
				return nil, d.fail(at, "alias %q appears twice", alias)
			}
			_, isVar := m.Tensors[target]
			_, isAlias := m.Aliases[target]
			if !isVar && !isAlias {
				return nil, d.fail(at, "alias %q names %q, which is no variable", alias, target)
			}
			m.Aliases[alias] = target
		}
	}
	d.where = "end of model"
	if d.off < d.size {
		return nil, d.fail(d.off, "%d trailing bytes after the last field (the file is %d bytes)", d.size-d.off, d.size)
	}
	var one [1]byte
	if k, _ := io.ReadFull(d.r, one[:]); k > 0 {
		return nil, d.fail(d.off, "the input goes on past its declared size of %d bytes", d.size)
	}
	return m, nil
}

func (d *decoder) variable(version int) (*Tensor, error) {
	at := d.off
	name, err := d.str("name")
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, d.fail(at, "empty variable name")
	}
	d.where += fmt.Sprintf(" %q", name)
	rank, err := d.u8("rank")
	if err != nil {
		return nil, err
	}
	t := &Tensor{Name: name, Shape: make([]int64, rank)}
	for j := range t.Shape {
		dim, err := d.u32(fmt.Sprintf("dimension %d of %d", j, rank))
		if err != nil {
			return nil, err
		}
		t.Shape[j] = int64(dim)
	}
	typeAt := d.off
	var numBytes int64
	if version >= 4 {
		id, err := d.u8("type id")
		if err != nil {
			return nil, err
		}
		if int(id) >= len(dtypeNames) {
			return nil, d.fail(typeAt, "unknown type id %d (CTranslate2 knows 0 to %d: %s)", id, len(dtypeNames)-1, strings.Join(dtypeNames[:], ", "))
		}
		t.DType = DType(id)
		nb, err := d.u32("payload size")
		if err != nil {
			return nil, err
		}
		numBytes = int64(nb)
	} else {
		// Before version 4 the file held the item size, not the type, and
		// CTranslate2 maps it back this way (so float16 reads as int16).
		width, err := d.u8("item size")
		if err != nil {
			return nil, err
		}
		switch width {
		case 4:
			t.DType = Float32
		case 2:
			t.DType = Int16
		case 1:
			t.DType = Int8
		default:
			return nil, d.fail(typeAt, "unknown item size %d (binary version %d knows 1, 2 and 4)", width, version)
		}
		items, err := d.u32("item count")
		if err != nil {
			return nil, err
		}
		numBytes = int64(items) * int64(width)
	}
	// The element count times the item size must equal the payload size;
	// the product saturates so that a hostile shape cannot overflow it.
	want := int64(t.DType.Size())
	for _, dim := range t.Shape {
		if dim == 0 {
			want = 0
			break
		}
	}
	for _, dim := range t.Shape {
		if want != 0 && dim > maxPayload/want {
			want = maxPayload + 1
			break
		}
		want *= dim
	}
	if want != numBytes {
		need := fmt.Sprint(want)
		if want > maxPayload {
			need = "more than 2^34"
		}
		return nil, d.fail(typeAt, "shape %v of %s needs %s bytes, but the payload size is %d", t.Shape, t.DType, need, numBytes)
	}
	if numBytes > d.size-d.off {
		return nil, d.fail(d.off, "truncated: payload (%d bytes) runs past the end of the %d-byte file (%d bytes left)", numBytes, d.size, d.size-d.off)
	}
	t.Data = make([]byte, numBytes)
	if err := d.read(t.Data, "payload"); err != nil {
		return nil, err
	}
	return t, nil
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// maxPayload bounds a variable's payload: version 4 and later store its size
// in a u32, earlier ones the item count (of at most 4 bytes each).
const maxPayload = int64(math.MaxUint32) * 4

// Names returns every variable name, sorted.
func (m *Model) Names() []string {
	names := make([]string, 0, len(m.Tensors))
	for n := range m.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Resolve returns the stored variable a name refers to: the name itself, or
// an alias's target (following chains). As CTranslate2's loader does, an
// alias also stands for its target's "_scale" and "_zero" companions:
// "<alias>_scale" resolves to "<target>_scale" when that variable exists.
func (m *Model) Resolve(name string) (string, bool) {
	for range len(m.Aliases) + 1 {
		if _, ok := m.Tensors[name]; ok {
			return name, true
		}
		target, ok := m.Aliases[name]
		if !ok {
			break
		}
		name = target
	}
	for _, suffix := range []string{"_scale", "_zero"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if _, isAlias := m.Aliases[base]; !isAlias {
			continue
		}
		if target, ok := m.Resolve(base); ok {
			if _, ok := m.Tensors[target+suffix]; ok {
				return target + suffix, true
			}
		}
	}
	return "", false
}

// Tensor returns the variable name refers to, resolving aliases.
func (m *Model) Tensor(name string) (*Tensor, bool) {
	r, ok := m.Resolve(name)
	if !ok {
		return nil, false
	}
	return m.Tensors[r], true
}

// Float32 returns a variable's values as float32, with its shape: float32 as
// stored; float16 and bfloat16 widened; int8 and int16 dequantised with the
// variable "<name>_scale" as CTranslate2 does (its converter stores
// round(w * scale), so w = q / scale), where the scale is either one value
// for the whole tensor (int16) or one per outer row (int8: one per output
// row of a linear weight, one per output channel of a convolution) and may
// be float32, float16 or bfloat16.
func (m *Model) Float32(name string) ([]float32, []int64, error) {
	t, ok := m.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("ct2: no variable %q", name)
	}
	shape := append([]int64(nil), t.Shape...)
	switch t.DType {
	case Float32, Float16, BFloat16:
		return decodeFloat(t.DType, t.Data), shape, nil
	case Int8, Int16:
	default:
		return nil, nil, fmt.Errorf("ct2: variable %q is %s, which has no float value", name, t.DType)
	}
	scaleName := t.Name + "_scale"
	st, ok := m.Tensors[scaleName]
	if !ok {
		return nil, nil, fmt.Errorf("ct2: variable %q is %s but the model has no %q to dequantise it", name, t.DType, scaleName)
	}
	if !st.DType.IsFloat() {
		return nil, nil, fmt.Errorf("ct2: variable %q: its scale %q is %s, not a float type", name, scaleName, st.DType)
	}
	scale := decodeFloat(st.DType, st.Data)
	n := t.NumElements()
	row := n
	switch {
	case len(scale) == 1:
	case len(t.Shape) > 0 && int64(len(scale)) == t.Shape[0] && t.Shape[0] > 0:
		row = n / t.Shape[0]
	default:
		return nil, nil, fmt.Errorf("ct2: variable %q of shape %v: its scale %q has %d values, neither 1 nor one per row", name, t.Shape, scaleName, len(scale))
	}
	for i, s := range scale {
		if s == 0 || math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return nil, nil, fmt.Errorf("ct2: variable %q: its scale %q holds %v at index %d", name, scaleName, s, i)
		}
	}
	out := make([]float32, n)
	for i := range out {
		var q float32
		if t.DType == Int8 {
			q = float32(int8(t.Data[i]))
		} else {
			q = float32(int16(binary.LittleEndian.Uint16(t.Data[2*i:])))
		}
		s := scale[0]
		if row != n {
			s = scale[int64(i)/row]
		}
		out[i] = q / s
	}
	return out, shape, nil
}

// Int returns a scalar integer variable (int8, int16 or int32 with one
// element), such as "encoder/num_heads" or "decoder/activation".
func (m *Model) Int(name string) (int64, error) {
	t, ok := m.Tensor(name)
	if !ok {
		return 0, fmt.Errorf("ct2: no variable %q", name)
	}
	if t.NumElements() != 1 {
		return 0, fmt.Errorf("ct2: variable %q of shape %v is no scalar", name, t.Shape)
	}
	switch t.DType {
	case Int8:
		return int64(int8(t.Data[0])), nil
	case Int16:
		return int64(int16(binary.LittleEndian.Uint16(t.Data))), nil
	case Int32:
		return int64(int32(binary.LittleEndian.Uint32(t.Data))), nil
	}
	return 0, fmt.Errorf("ct2: variable %q is %s, not an integer", name, t.DType)
}

// String returns a string variable: CTranslate2's converter stores a string
// attribute as a rank-1 int8 array of its UTF-8 bytes.
func (m *Model) String(name string) (string, error) {
	t, ok := m.Tensor(name)
	if !ok {
		return "", fmt.Errorf("ct2: no variable %q", name)
	}
	if t.DType != Int8 || len(t.Shape) != 1 {
		return "", fmt.Errorf("ct2: variable %q is %s of shape %v, not a string (rank-1 int8)", name, t.DType, t.Shape)
	}
	return string(t.Data), nil
}

func decodeFloat(dt DType, b []byte) []float32 {
	switch dt {
	case Float32:
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out
	case Float16:
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out
	case BFloat16:
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
		return out
	}
	return nil
}

// HalfToFloat32 widens an IEEE 754 binary16 value exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		// Zero or subnormal: mant × 2^-24, exact in float32.
		f := float32(mant) / (1 << 24)
		return math.Float32frombits(sign | math.Float32bits(f))
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
