package ct2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/falocal/falocal/internal/testenv"
)

// A synthetic model.bin, written the way CTranslate2's ModelSpec._serialize
// writes one (python/ctranslate2/specs/model_spec.py).

type synthVar struct {
	name  string
	shape []uint32
	dtype uint8 // type id (version >= 4) or item size (version < 4)
	data  []byte
	// size overrides the stored payload size (version >= 4, bytes) or item
	// count (version < 4) when set.
	size *uint32
}

type synthFile struct {
	version  uint32
	spec     string
	revision uint32
	vars     []synthVar
	aliases  [][2]string
}

type writer struct{ bytes.Buffer }

func (w *writer) u8(v uint8)   { w.WriteByte(v) }
func (w *writer) u16(v uint16) { w.Write(binary.LittleEndian.AppendUint16(nil, v)) }
func (w *writer) u32(v uint32) { w.Write(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *writer) str(s string) { w.u16(uint16(len(s) + 1)); w.WriteString(s); w.u8(0) }

func (f synthFile) bytes() []byte {
	var w writer
	w.u32(f.version)
	if f.version >= 2 {
		w.str(f.spec)
		w.u32(f.revision)
	}
	w.u32(uint32(len(f.vars)))
	for _, v := range f.vars {
		w.str(v.name)
		w.u8(uint8(len(v.shape)))
		for _, d := range v.shape {
			w.u32(d)
		}
		w.u8(v.dtype)
		switch {
		case v.size != nil:
			w.u32(*v.size)
		case f.version >= 4:
			w.u32(uint32(len(v.data)))
		default:
			w.u32(uint32(len(v.data)) / uint32(v.dtype))
		}
		w.Write(v.data)
	}
	if f.version >= 3 {
		w.u32(uint32(len(f.aliases)))
		for _, a := range f.aliases {
			w.str(a[0])
			w.str(a[1])
		}
	}
	return w.Bytes()
}

func le[T any](vals ...T) []byte {
	var b []byte
	for _, v := range vals {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

func f16(v ...uint16) []byte { return le(v...) }
func u32p(v uint32) *uint32  { return &v }

// fullFile holds every type, quantised weights with each kind of scale,
// scalars, a string, an empty tensor and an alias of a quantised weight.
func fullFile(version uint32) synthFile {
	return synthFile{
		version: version, spec: "WhisperSpec", revision: 3,
		vars: []synthVar{
			{name: "f32", shape: []uint32{2, 3}, dtype: 0, data: le[float32](1, -2, 0.5, 3, 4, -0.25)},
			// 1, -2, 0.5, +Inf, 2^-24 (smallest subnormal), -0
			{name: "f16", shape: []uint32{6}, dtype: 4, data: f16(0x3c00, 0xc000, 0x3800, 0x7c00, 0x0001, 0x8000)},
			{name: "bf16", shape: []uint32{2}, dtype: 5, data: f16(0x3f80, 0xc040)}, // 1, -3
			{name: "i32", shape: []uint32{2}, dtype: 3, data: le[int32](7, -8)},
			// int8 linear weight, per-row float32 scale: w = q / s
			{name: "lin/weight", shape: []uint32{2, 3}, dtype: 1, data: le[int8](127, -64, 0, 10, 20, -30)},
			{name: "lin/weight_scale", shape: []uint32{2}, dtype: 0, data: le[float32](127, 10)},
			// int8 conv weight [out, in, k], scale per output channel, float16 scale
			{name: "conv/weight", shape: []uint32{2, 2, 2}, dtype: 1, data: le[int8](1, 2, 3, 4, -4, -8, 12, 16)},
			{name: "conv/weight_scale", shape: []uint32{2}, dtype: 4, data: f16(0x3800, 0x4400)}, // 0.5, 4
			// int16 weight with one scalar scale
			{name: "i16/weight", shape: []uint32{2, 2}, dtype: 2, data: le[int16](1024, -2048, 512, 0)},
			{name: "i16/weight_scale", shape: nil, dtype: 0, data: le[float32](1024)},
			{name: "enc/num_heads", shape: nil, dtype: 2, data: le[int16](6)},
			{name: "dec/activation", shape: nil, dtype: 1, data: le[int8](3)},
			{name: "dec/alignment_layer", shape: nil, dtype: 2, data: le[int16](-1)},
			{name: "big", shape: nil, dtype: 3, data: le[int32](-100000)},
			{name: "str", shape: []uint32{5}, dtype: 1, data: []byte("hello")},
			{name: "empty", shape: []uint32{0, 4}, dtype: 4, data: nil},
		},
		aliases: [][2]string{{"proj/weight", "lin/weight"}, {"proj2/weight", "proj/weight"}},
	}
}

func read(t *testing.T, b []byte) *Model {
	t.Helper()
	m, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReadAllTypes(t *testing.T) {
	for _, version := range []uint32{4, 5, 6} {
		m := read(t, fullFile(version).bytes())
		if m.BinaryVersion != int(version) || m.Spec != "WhisperSpec" || m.SpecRevision != 3 {
			t.Fatalf("header %d %q %d", m.BinaryVersion, m.Spec, m.SpecRevision)
		}
		if len(m.Tensors) != 16 || len(m.Aliases) != 2 {
			t.Fatalf("%d tensors, %d aliases", len(m.Tensors), len(m.Aliases))
		}
		for name, want := range map[string]DType{"f32": Float32, "f16": Float16, "bf16": BFloat16, "i32": Int32,
			"lin/weight": Int8, "i16/weight": Int16, "conv/weight_scale": Float16} {
			if got := m.Tensors[name].DType; got != want {
				t.Errorf("%s: dtype %v, want %v", name, got, want)
			}
		}
		if s := m.Tensors["conv/weight"].Shape; !slices.Equal(s, []int64{2, 2, 2}) {
			t.Errorf("conv shape %v", s)
		}
		if s := m.Tensors["enc/num_heads"].Shape; len(s) != 0 {
			t.Errorf("scalar shape %v", s)
		}
	}
	m := read(t, fullFile(6).bytes())

	floats := map[string][]float32{
		"f32":        {1, -2, 0.5, 3, 4, -0.25},
		"f16":        {1, -2, 0.5, float32(math.Inf(1)), 1.0 / (1 << 24), float32(math.Copysign(0, -1))},
		"bf16":       {1, -3},
		"lin/weight": {1, -64.0 / 127, 0, 1, 2, -3},
		// row 0 / 0.5, row 1 / 4
		"conv/weight":  {2, 4, 6, 8, -1, -2, 3, 4},
		"i16/weight":   {1, -2, 0.5, 0},
		"proj/weight":  {1, -64.0 / 127, 0, 1, 2, -3}, // alias of an int8 weight: its scale follows
		"proj2/weight": {1, -64.0 / 127, 0, 1, 2, -3},
		"empty":        {},
	}
	for name, want := range floats {
		got, shape, err := m.Float32(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.EqualFunc(got, want, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
		tt, _ := m.Tensor(name)
		if !slices.Equal(shape, tt.Shape) {
			t.Errorf("%s: shape %v, want %v", name, shape, tt.Shape)
		}
	}
	ints := map[string]int64{"enc/num_heads": 6, "dec/activation": 3, "dec/alignment_layer": -1, "big": -100000}
	for name, want := range ints {
		if got, err := m.Int(name); err != nil || got != want {
			t.Errorf("Int(%s) = %d, %v; want %d", name, got, err, want)
		}
	}
	if s, err := m.String("str"); err != nil || s != "hello" {
		t.Errorf("String = %q, %v", s, err)
	}

	// Aliases resolve, chains and quantisation scales included.
	for alias, target := range map[string]string{"proj/weight": "lin/weight", "proj2/weight": "lin/weight",
		"proj/weight_scale": "lin/weight_scale", "lin/weight": "lin/weight"} {
		tt, ok := m.Tensor(alias)
		if !ok || tt.Name != target {
			t.Errorf("Tensor(%s) = %v, %v; want %s", alias, tt, ok, target)
		}
	}
	if _, ok := m.Tensor("proj/weight_zero"); ok {
		t.Error("Tensor resolved a _zero that does not exist")
	}
	if _, ok := m.Tensor("nothing"); ok {
		t.Error("Tensor found a missing name")
	}
	if got := m.Names(); len(got) != 16 || !slices.IsSorted(got) {
		t.Errorf("Names = %v", got)
	}

	// Errors name the variable.
	bad := synthFile{version: 6, spec: "S", revision: 1, vars: []synthVar{
		{name: "noscale", shape: []uint32{2}, dtype: 1, data: []byte{1, 2}},
		{name: "rows/weight", shape: []uint32{2, 2}, dtype: 1, data: []byte{1, 2, 3, 4}},
		{name: "rows/weight_scale", shape: []uint32{3}, dtype: 0, data: le[float32](1, 2, 3)},
		{name: "zero/weight", shape: []uint32{2, 1}, dtype: 1, data: []byte{1, 2}},
		{name: "zero/weight_scale", shape: []uint32{2}, dtype: 0, data: le[float32](1, 0)},
		{name: "intscale/weight", shape: []uint32{1}, dtype: 1, data: []byte{1}},
		{name: "intscale/weight_scale", shape: []uint32{1}, dtype: 1, data: []byte{1}},
		{name: "i32", shape: []uint32{1}, dtype: 3, data: le[int32](1)},
		{name: "vec", shape: []uint32{2}, dtype: 2, data: le[int16](1, 2)},
		{name: "fscalar", dtype: 0, data: le[float32](1)},
	}}
	bm := read(t, bad.bytes())
	for name, msg := range map[string]string{
		"noscale":         `"noscale" is int8 but the model has no "noscale_scale"`,
		"rows/weight":     `"rows/weight" of shape [2 2]: its scale "rows/weight_scale" has 3 values`,
		"zero/weight":     `"zero/weight": its scale "zero/weight_scale" holds 0 at index 1`,
		"intscale/weight": `"intscale/weight_scale" is int8, not a float type`,
		"i32":             `"i32" is int32, which has no float value`,
		"missing":         `no variable "missing"`,
	} {
		if _, _, err := bm.Float32(name); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Float32(%s) error %v, want %q", name, err, msg)
		}
	}
	for name, msg := range map[string]string{
		"vec":     `"vec" of shape [2] is no scalar`,
		"fscalar": `"fscalar" is float32, not an integer`,
		"missing": `no variable "missing"`,
	} {
		if _, err := bm.Int(name); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Int(%s) error %v, want %q", name, err, msg)
		}
	}
}

func TestDTypeString(t *testing.T) {
	want := []string{"float32", "int8", "int16", "int32", "float16", "bfloat16", "dtype(6)"}
	for i, w := range want {
		if got := DType(i).String(); got != w {
			t.Errorf("DType(%d) = %q, want %q", i, got, w)
		}
	}
}

func TestHalfToFloat32(t *testing.T) {
	// Every finite half round-trips through float32 → half by truncation of
	// the exact value; check against the definition instead.
	for h := 0; h < 1<<16; h++ {
		got := HalfToFloat32(uint16(h))
		e, mant := (h>>10)&0x1f, h&0x3ff
		var want float64
		switch {
		case e == 0x1f && mant == 0:
			want = math.Inf(1)
		case e == 0x1f:
			if !math.IsNaN(float64(got)) {
				t.Fatalf("%#04x: %v, want NaN", h, got)
			}
			continue
		case e == 0:
			want = math.Ldexp(float64(mant), -24)
		default:
			want = math.Ldexp(float64(mant|0x400), e-25)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("%#04x: %v, want %v", h, got, want)
		}
	}
}

// TestOldVersions: versions 1 to 3 store the item size, not the type, and
// CTranslate2 maps it back (4 float32, 2 int16, 1 int8); version 1 has no
// spec, version 3 adds aliases.
func TestOldVersions(t *testing.T) {
	for _, v := range []uint32{1, 2, 3} {
		m := read(t, oldFile(v).bytes())
		wantSpec, wantRev := "TransformerSpec", 2
		if v == 1 {
			wantSpec, wantRev = "", 1
		}
		if m.BinaryVersion != int(v) || m.Spec != wantSpec || m.SpecRevision != wantRev {
			t.Errorf("v%d: header %d %q %d", v, m.BinaryVersion, m.Spec, m.SpecRevision)
		}
		if m.Tensors["w"].DType != Float32 || m.Tensors["h"].DType != Int16 || m.Tensors["n"].DType != Int8 {
			t.Errorf("v%d: dtypes %v %v %v", v, m.Tensors["w"].DType, m.Tensors["h"].DType, m.Tensors["n"].DType)
		}
		if got, _, err := m.Float32("w"); err != nil || !slices.Equal(got, []float32{1, 2}) {
			t.Errorf("v%d: w = %v, %v", v, got, err)
		}
		if n, err := m.Int("n"); err != nil || n != 5 {
			t.Errorf("v%d: n = %d, %v", v, n, err)
		}
		if _, ok := m.Tensor("a"); ok != (v >= 3) {
			t.Errorf("v%d: alias resolved %v", v, ok)
		}
	}
}

// oldFile is a model in binary version 1, 2 or 3, whose variables carry an
// item size instead of a type id.
func oldFile(v uint32) synthFile {
	f := synthFile{version: v, spec: "TransformerSpec", revision: 2, vars: []synthVar{
		{name: "w", shape: []uint32{2}, dtype: 4, data: le[float32](1, 2)},
		{name: "h", shape: []uint32{2}, dtype: 2, data: le[int16](3, 4)},
		{name: "n", dtype: 1, data: []byte{5}},
	}}
	if v >= 3 {
		f.aliases = [][2]string{{"a", "w"}}
	}
	return f
}

// TestMalformed: each malformation is refused with an error that says what
// is wrong and where.
func TestMalformed(t *testing.T) {
	small := func() synthFile {
		return synthFile{version: 6, spec: "WhisperSpec", revision: 3, vars: []synthVar{
			{name: "a", shape: []uint32{2}, dtype: 0, data: le[float32](1, 2)},
			{name: "b", shape: []uint32{3}, dtype: 4, data: f16(1, 2, 3)},
		}, aliases: [][2]string{{"c", "a"}}}
	}
	good := small().bytes()
	// Offsets in good: version 0, spec 4 (2+12), revision 18, count 22,
	// variable a at 26: name 26 (2+2), rank 30, dim 31, type 35, size 36,
	// payload 40..48; variable b at 48: name 48, rank 52, dim 53, type 57,
	// size 58, payload 62..68; alias count 68, alias c at 72, target at 76,
	// end 80.
	if len(good) != 80 {
		t.Fatalf("good file is %d bytes; the offsets below assume 80", len(good))
	}
	mutate := func(f func(*synthFile)) []byte {
		s := small()
		f(&s)
		return s.bytes()
	}
	patch := func(off int, b ...byte) []byte {
		c := slices.Clone(good)
		copy(c[off:], b)
		return c
	}
	cases := []struct {
		name string
		data []byte
		size int64 // -1: len(data)
		want []string
	}{
		{"empty", nil, -1, []string{"header at offset 0", "truncated: binary version"}},
		{"version 0", patch(0, 0), -1, []string{"offset 0", "unsupported binary version 0"}},
		{"version 7", patch(0, 7), -1, []string{"offset 0", "unsupported binary version 7"}},
		{"spec length 0", patch(4, 0, 0), -1, []string{"header at offset 4", "spec name has length 0"}},
		{"spec without NUL", patch(17, 'x'), -1, []string{"header at offset 6", "spec name of 12 bytes does not end in a NUL"}},
		{"spec length past the end", patch(4, 0xff, 0xff), -1, []string{"header at offset 6", "truncated: spec name (65535 bytes) runs past the end of the 80-byte file"}},
		{"name length past the end", patch(48, 0xff, 0x00), -1, []string{`variable 1 of 2 at offset 50`, "truncated: name (255 bytes)"}},
		{"name with inner NUL", mutate(func(s *synthFile) { s.vars[1].name = "b\x00c" }), -1, []string{`variable 1 of 2 at offset 51`, `holds a NUL`}},
		{"empty name", mutate(func(s *synthFile) { s.vars[1].name = "" }), -1, []string{`variable 1 of 2 at offset 48`, `empty variable name`}},
		{"unknown type id", patch(57, 6), -1, []string{`variable 1 of 2 "b" at offset 57`, "unknown type id 6"}},
		{"type id 255", patch(35, 255), -1, []string{`variable 0 of 2 "a" at offset 35`, "unknown type id 255"}},
		{"payload size disagrees", patch(58, 7), -1, []string{`variable 1 of 2 "b" at offset 57`, "shape [3] of float16 needs 6 bytes, but the payload size is 7"}},
		{"shape disagrees", patch(53, 4), -1, []string{`variable 1 of 2 "b" at offset 57`, "shape [4] of float16 needs 8 bytes, but the payload size is 6"}},
		{"shape overflows", mutate(func(s *synthFile) {
			s.vars[1].shape = []uint32{math.MaxUint32, math.MaxUint32, math.MaxUint32, 2}
		}), -1, []string{`variable 1 of 2 "b"`, "needs more than 2^34 bytes"}},
		{"payload past the end", mutate(func(s *synthFile) {
			s.vars[1].shape, s.vars[1].size = []uint32{1000}, u32p(2000)
		}), -1, []string{`variable 1 of 2 "b" at offset 62`, "truncated: payload (2000 bytes) runs past the end of the 80-byte file (18 bytes left)"}},
		{"rank past the end", good[:52], -1, []string{`variable 1 of 2 "b" at offset 52`, "truncated: rank (1 byte)"}},
		{"dimension past the end", good[:55], -1, []string{`variable 1 of 2 "b" at offset 53`, "truncated: dimension 0 of 1 (4 bytes)"}},
		{"cut in a payload", good[:65], -1, []string{`variable 1 of 2 "b" at offset 62`, "truncated: payload (6 bytes) runs past the end of the 65-byte file (3 bytes left)"}},
		{"more variables than stored", patch(22, 3)[:68], -1, []string{`variable 2 of 3 at offset 68`, "truncated: name length (2 bytes)"}},
		{"duplicate variable", mutate(func(s *synthFile) { s.vars[1].name = "a" }), -1, []string{`variable 1 of 2 "a" at offset 48`, `variable "a" appears twice`}},
		{"no alias count", good[:68], -1, []string{"aliases at offset 68", "truncated: alias count (4 bytes)"}},
		{"alias of nothing", mutate(func(s *synthFile) { s.aliases[0][1] = "zz" }), -1, []string{`alias 0 of 1 "c" at offset 72`, `alias "c" names "zz", which is no variable`}},
		{"alias names a variable", mutate(func(s *synthFile) { s.aliases[0][0] = "b" }), -1, []string{`alias 0 of 1 "b" at offset 72`, `alias "b" repeats a variable's name`}},
		{"alias twice", mutate(func(s *synthFile) { s.aliases = append(s.aliases, [2]string{"c", "b"}) }), -1, []string{`alias 1 of 2 "c"`, `alias "c" appears twice`}},
		{"alias target cut", good[:78], -1, []string{`alias 0 of 1 "c" at offset 78`, "truncated: alias target (2 bytes)"}},
		{"trailing bytes", append(slices.Clone(good), 0, 0, 0), -1, []string{"end of model at offset 80", "3 trailing bytes", "83 bytes"}},
		{"input past its size", good, 79, []string{"at offset 78", "truncated: alias target (2 bytes) runs past the end of the 79-byte file"}},
		{"input longer than its size", append(slices.Clone(good), 1), 80, []string{"end of model at offset 80", "goes on past its declared size of 80 bytes"}},
		{"input shorter than its size", good[:70], 80, []string{"aliases at offset 68", "truncated: the input ended at offset 70, inside alias count, before the 80 bytes its size declares"}},
		{"negative size", good, -5, []string{"negative size"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			size := c.size
			if size == -1 {
				size = int64(len(c.data))
			}
			m, err := Read(bytes.NewReader(c.data), size)
			if err == nil {
				t.Fatalf("read a malformed file: %d variables", len(m.Tensors))
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	// Version 3's item size: an unknown width is refused.
	old := synthFile{version: 3, spec: "S", revision: 1, vars: []synthVar{
		{name: "x", shape: []uint32{1}, dtype: 3, data: []byte{1, 2, 3}},
	}}
	if _, err := Read(bytes.NewReader(old.bytes()), int64(len(old.bytes()))); err == nil ||
		!strings.Contains(err.Error(), `variable 0 of 1 "x" at offset 25: unknown item size 3 (binary version 3 knows 1, 2 and 4)`) {
		t.Errorf("item size 3: %v", err)
	}

	// A failing reader's error comes through with its offset.
	boom := errors.New("boom")
	_, err := Read(io.MultiReader(bytes.NewReader(good[:30]), iotest.ErrReader(boom)), 80)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != 30 || !strings.Contains(err.Error(), "reading rank: boom") {
		t.Errorf("reader error: %v", err)
	}
}

func TestOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(p, fullFile(6).bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(p)
	if err != nil || len(m.Tensors) != 16 {
		t.Fatalf("Open: %v", err)
	}
	if err := os.WriteFile(p, fullFile(6).bytes()[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p+": ct2: ") || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("Open of a cut file: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none.bin")); err == nil {
		t.Error("Open of a missing file succeeded")
	}
}

// TestTinyEn reads the real faster-whisper tiny.en (Systran/faster-whisper-tiny.en).
func TestTinyEn(t *testing.T) {
	m, err := Open(testenv.Asset(t, "whisper/tiny.en-ct2/model.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if m.BinaryVersion != 6 || m.Spec != "WhisperSpec" || m.SpecRevision != 3 {
		t.Errorf("header: version %d, spec %q revision %d", m.BinaryVersion, m.Spec, m.SpecRevision)
	}
	if len(m.Tensors) != 148 || len(m.Aliases) != 1 {
		t.Errorf("%d variables, %d aliases; want 148 and 1", len(m.Tensors), len(m.Aliases))
	}
	const d, ff, vocab, layers = 384, 1536, 51864, 4
	want := map[string][]int64{
		"encoder/conv1/weight":                 {d, 80, 3},
		"encoder/conv1/bias":                   {d},
		"encoder/conv2/weight":                 {d, d, 3},
		"encoder/conv2/bias":                   {d},
		"encoder/position_encodings/encodings": {1500, d},
		"encoder/layer_norm/gamma":             {d},
		"encoder/layer_norm/beta":              {d},
		"decoder/embeddings/weight":            {vocab, d},
		"decoder/position_encodings/encodings": {448, d},
		"decoder/layer_norm/gamma":             {d},
		"decoder/layer_norm/beta":              {d},
	}
	common := map[string][]int64{
		"self_attention/layer_norm/gamma": {d},
		"self_attention/layer_norm/beta":  {d},
		"self_attention/linear_0/weight":  {3 * d, d}, // fused QKV
		"self_attention/linear_0/bias":    {3 * d},
		"self_attention/linear_1/weight":  {d, d},
		"self_attention/linear_1/bias":    {d},
		"ffn/layer_norm/gamma":            {d},
		"ffn/layer_norm/beta":             {d},
		"ffn/linear_0/weight":             {ff, d},
		"ffn/linear_0/bias":               {ff},
		"ffn/linear_1/weight":             {d, ff},
		"ffn/linear_1/bias":               {d},
	}
	cross := map[string][]int64{
		"attention/layer_norm/gamma": {d},
		"attention/layer_norm/beta":  {d},
		"attention/linear_0/weight":  {d, d}, // Q
		"attention/linear_0/bias":    {d},
		"attention/linear_1/weight":  {2 * d, d}, // fused KV
		"attention/linear_1/bias":    {2 * d},
		"attention/linear_2/weight":  {d, d},
		"attention/linear_2/bias":    {d},
	}
	for i := range layers {
		for k, s := range common {
			want["encoder/layer_"+itoa(i)+"/"+k] = s
			want["decoder/layer_"+itoa(i)+"/"+k] = s
		}
		for k, s := range cross {
			want["decoder/layer_"+itoa(i)+"/"+k] = s
		}
	}
	for name, shape := range want {
		tt, ok := m.Tensors[name]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		if tt.DType != Float16 || !slices.Equal(tt.Shape, shape) {
			t.Errorf("%s: %v %v, want float16 %v", name, tt.DType, tt.Shape, shape)
			continue
		}
		v, _, err := m.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		var sumsq float64
		for j, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("%s[%d] = %v", name, j, x)
			}
			sumsq += float64(x) * float64(x)
		}
		if sumsq == 0 && !strings.HasSuffix(name, "bias") {
			t.Errorf("%s is all zeros", name)
		}
	}
	scalars := map[string]int64{"encoder/num_heads": 6, "decoder/num_heads": 6, "decoder/activation": 3,
		"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alignment_layer": -1}
	for name, wantV := range scalars {
		if got, err := m.Int(name); err != nil || got != wantV {
			t.Errorf("Int(%s) = %d, %v; want %d", name, got, err, wantV)
		}
	}
	// The rest are the scalars above and a few more flags.
	if n := len(m.Tensors) - len(want); n != 9 {
		t.Errorf("%d variables besides the weights, want 9", n)
	}
	if tgt := m.Aliases["decoder/projection/weight"]; tgt != "decoder/embeddings/weight" {
		t.Errorf("alias target %q", tgt)
	}
	proj, ok := m.Tensor("decoder/projection/weight")
	if !ok || proj != m.Tensors["decoder/embeddings/weight"] {
		t.Error("decoder/projection/weight does not resolve to the embeddings")
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

// FuzzRead: no input makes Read or the accessors panic, and what Read
// accepts is consistent.
func FuzzRead(f *testing.F) {
	f.Add(fullFile(6).bytes())
	f.Add(oldFile(1).bytes())
	f.Add(oldFile(3).bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for name, tt := range m.Tensors {
			if int64(len(tt.Data)) != tt.NumElements()*int64(tt.DType.Size()) {
				t.Fatalf("%s: %d bytes for %v %v", name, len(tt.Data), tt.DType, tt.Shape)
			}
			m.Float32(name)
			m.Int(name)
			m.String(name)
		}
		for alias := range m.Aliases {
			if _, ok := m.Tensor(alias); !ok {
				t.Fatalf("alias %s does not resolve", alias)
			}
			m.Float32(alias + "_scale")
		}
	})
}
