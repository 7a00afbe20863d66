package whisper

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// zlibCase is one vector from tools/whisper-ref/zlib_vectors.py: the input
// (as text, base64, or zlib-packed base64 for large redundant inputs) and
// CPython's len(zlib.compress(input)).
type zlibCase struct {
	Name string  `json:"name"`
	S    *string `json:"s"`
	B64  *string `json:"b64"`
	Z    *string `json:"z"`
	Len  int     `json:"len"`
	Size int     `json:"size"`
}

func (c zlibCase) input(t testing.TB) []byte {
	switch {
	case c.S != nil:
		return []byte(*c.S)
	case c.B64 != nil:
		b, err := base64.StdEncoding.DecodeString(*c.B64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case c.Z != nil:
		// Only a container: inflating is independent of the code under test.
		packed, err := base64.StdEncoding.DecodeString(*c.Z)
		if err != nil {
			t.Fatal(err)
		}
		r, err := zlib.NewReader(bytes.NewReader(packed))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("case %q has no input", c.Name)
	return nil
}

func loadZlibCases(t testing.TB) []zlibCase {
	raw := pipelinetest.ReadFile(t, "testdata/zlib_sizes.json")
	var doc struct {
		Version string     `json:"zlib_runtime_version"`
		Cases   []zlibCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) < 1000 {
		t.Fatalf("only %d cases", len(doc.Cases))
	}
	return doc.Cases
}

func TestZlibSizeVectors(t *testing.T) {
	cases := loadZlibCases(t)
	fails := 0
	for i, c := range cases {
		in := c.input(t)
		if len(in) != c.Len {
			t.Fatalf("case %d (%s): decoded %d bytes, want %d", i, c.Name, len(in), c.Len)
		}
		if got := zlibSize(in); got != c.Size {
			fails++
			if fails <= 20 {
				t.Errorf("case %d (%s, %d bytes): zlibSize = %d, CPython zlib = %d",
					i, c.Name, len(in), got, c.Size)
			}
		}
	}
	if fails > 0 {
		t.Errorf("%d of %d cases differ", fails, len(cases))
	}
}

// TestZlibSizeTable pins a few hand-checked values so a broken vector file
// cannot hide a regression.
func TestZlibSizeTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 8},  // 78 9c 03 00 + adler
		{"a", 9}, // fixed block: 3 + 8 + 7 bits
		{"hello world", 19},
		{strings.Repeat("you ", 100), 17},
		{strings.Repeat("a", 1000), 17},
	} {
		if got := zlibSize([]byte(tc.in)); got != tc.want {
			t.Errorf("zlibSize(%.20q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestZlibSizeScrub checks that scrub leaves a pooled deflater all zero, the
// state reset relies on, for inputs on both sides of the window-size cutoff.
func TestZlibSizeScrub(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 100, 32767, 32768, 32769, 70000} {
		in := make([]byte, n)
		for i := range in {
			in[i] = byte(i*i>>3 ^ i>>7)
		}
		d := &zDeflater{}
		d.ltree = newZTree(zLCodes, zStaticL[:], zExtraLBits[:], zLiterals+1, zMaxBits)
		d.dtree = newZTree(zDCodes, zStaticD[:], zExtraDBits[:], 0, zMaxBits)
		d.bltree = newZTree(zBLCodes, nil, zExtraBLBits[:], 0, zMaxBLBits)
		d.reset(in)
		d.deflateSlow()
		d.scrub(in)
		if d.window != [zWindowSize]byte{} || d.prev != [zWSize]uint16{} || d.head != [zHashSize]uint16{} {
			t.Errorf("n=%d: state not zero after scrub", n)
		}
	}
}

func BenchmarkZlibSize(b *testing.B) {
	text := []byte(strings.Repeat(" And so my fellow Americans, ask not what your country can do for you.", 4))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		zlibSize(text)
	}
}
