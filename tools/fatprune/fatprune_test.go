package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A synthetic fatbin entry: label names it in the test cases.
type tEntry struct {
	label   string
	kind    uint16
	arch    uint32
	hdr     uint32 // entry header size: 64, or 112 as sm_100+ cubins have
	flags   uint64
	payload int // bytes before the padding to 8
}

// built records where an entry's payload landed, relative to the fatbin
// buffer: off and the padded length.
type built struct {
	off, n int
}

const (
	fl64Linux = 0x11
	flZstd    = 0x8000
	flOld     = 0x2000
)

// buildFatbin lays the containers out as nvcc does: container header, then
// entry header, payload, zero padding to 8, and so on; gap zero bytes
// between containers. Payload and header tail bytes are never zero, so a
// zeroed run always shows.
func buildFatbin(t *testing.T, containers [][]tEntry, gap int, at map[string]built) []byte {
	t.Helper()
	le := binary.LittleEndian
	var buf []byte
	seed := byte(1)
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			seed = seed*31 + 7
			if seed == 0 {
				seed = 1
			}
			b[i] = seed
		}
		return b
	}
	for ci, c := range containers {
		if ci > 0 {
			buf = append(buf, make([]byte, gap)...)
		}
		start := len(buf)
		hdr := make([]byte, 16)
		le.PutUint32(hdr, fatbinMagic)
		le.PutUint16(hdr[4:], 1)
		le.PutUint16(hdr[6:], 16)
		buf = append(buf, hdr...)
		for _, e := range c {
			padded := (e.payload + 7) &^ 7
			h := make([]byte, e.hdr)
			copy(h[64:], fill(int(e.hdr)-64))
			le.PutUint16(h, e.kind)
			le.PutUint16(h[2:], 0x0101)
			le.PutUint32(h[4:], e.hdr)
			le.PutUint64(h[8:], uint64(padded))
			le.PutUint32(h[16:], uint32(e.payload))
			le.PutUint16(h[24:], 8)
			le.PutUint16(h[26:], 1)
			le.PutUint32(h[28:], e.arch)
			le.PutUint64(h[40:], e.flags)
			le.PutUint64(h[56:], uint64(e.payload*9))
			buf = append(buf, h...)
			at[e.label] = built{off: len(buf), n: padded}
			buf = append(buf, fill(e.payload)...)
			buf = append(buf, make([]byte, padded-e.payload)...)
		}
		le.PutUint64(buf[start+8:], uint64(len(buf)-start-16))
	}
	return buf
}

type tSection struct {
	name string
	data []byte
}

// buildELF writes a minimal little-endian ELF64 shared object: the
// sections' bytes one after another (8-aligned), .shstrtab, then the
// section header table. It returns each section's file offset.
func buildELF(t *testing.T, secs []tSection) ([]byte, map[string]int) {
	t.Helper()
	le := binary.LittleEndian
	secs = append(secs, tSection{name: ".shstrtab"})
	strtab := []byte{0}
	nameOff := make([]int, len(secs))
	for i, s := range secs {
		nameOff[i] = len(strtab)
		strtab = append(strtab, s.name...)
		strtab = append(strtab, 0)
	}
	secs[len(secs)-1].data = strtab
	out := make([]byte, 64)
	offs := map[string]int{}
	fileOff := make([]int, len(secs))
	for i, s := range secs {
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
		fileOff[i] = len(out)
		offs[s.name] = len(out)
		out = append(out, s.data...)
	}
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	shoff := len(out)
	out = append(out, make([]byte, 64)...) // the null section
	for i, s := range secs {
		sh := make([]byte, 64)
		le.PutUint32(sh, uint32(nameOff[i]))
		typ, flags := uint32(1), uint64(2) // PROGBITS, ALLOC
		if i == len(secs)-1 {
			typ, flags = 3, 0 // STRTAB
		}
		le.PutUint32(sh[4:], typ)
		le.PutUint64(sh[8:], flags)
		le.PutUint64(sh[24:], uint64(fileOff[i]))
		le.PutUint64(sh[32:], uint64(len(s.data)))
		le.PutUint64(sh[48:], 8)
		out = append(out, sh...)
	}
	copy(out, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(out[16:], 3)  // ET_DYN
	le.PutUint16(out[18:], 62) // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[54:], 56)
	le.PutUint16(out[58:], 64)
	le.PutUint16(out[60:], uint16(len(secs)+1))
	le.PutUint16(out[62:], uint16(len(secs)))
	return out, offs
}

// fixture: two .nv_fatbin containers with a gap, a __nv_relfatbin one, and
// a .text section that carries a fatbin-looking header fatprune must not
// touch.
func fixture(t *testing.T) (lib []byte, payload map[string]built) {
	t.Helper()
	fat, rel := map[string]built{}, map[string]built{}
	nv := buildFatbin(t, [][]tEntry{
		{
			{"a75", kindELF, 75, 64, fl64Linux | flZstd, 101},
			{"a80", kindELF, 80, 64, fl64Linux | flZstd, 96},
			{"a90", kindELF, 90, 64, fl64Linux | flZstd | 0x100000, 203},
			{"a120", kindELF, 120, 112, fl64Linux | flZstd | 0x1100000, 77},
			{"p90", kindPTX, 90, 64, fl64Linux | flOld, 55},
		},
		{
			{"b90", kindELF, 90, 64, fl64Linux, 64},
			{"q75", kindPTX, 75, 64, fl64Linux, 33},
			{"q120", kindPTX, 120, 80, fl64Linux | flZstd, 41},
		},
		{
			{"c120", kindELF, 120, 112, fl64Linux | flZstd, 19},
		},
	}, 8, fat)
	relfat := buildFatbin(t, [][]tEntry{{
		{"r86", kindELF, 86, 64, fl64Linux | flZstd, 29},
		{"r90", kindELF, 90, 64, fl64Linux | flZstd, 31},
	}}, 0, rel)
	text := append(bytes.Repeat([]byte{0x90}, 40), nv[:64]...) // a container header and entry, not in a fatbin section
	lib, offs := buildELF(t, []tSection{{".text", text}, {".nv_fatbin", nv}, {"__nv_relfatbin", relfat}, {".data", []byte("data")}})
	payload = map[string]built{}
	for k, v := range fat {
		payload[k] = built{off: offs[".nv_fatbin"] + v.off, n: v.n}
	}
	for k, v := range rel {
		payload[k] = built{off: offs["__nv_relfatbin"] + v.off, n: v.n}
	}
	return lib, payload
}

func writeLib(t *testing.T, lib []byte) (in, out string) {
	t.Helper()
	dir := t.TempDir()
	in = filepath.Join(dir, "lib.so")
	if err := os.WriteFile(in, lib, 0o755); err != nil {
		t.Fatal(err)
	}
	return in, filepath.Join(dir, "out.so")
}

func TestPrune(t *testing.T) {
	all := []string{"a75", "a80", "a90", "a120", "p90", "b90", "q75", "q120", "c120", "r86", "r90"}
	for _, tc := range []struct {
		name string
		args []string
		keep []string // labels whose payload survives; all others are zeroed
	}{
		{"sm_90", []string{"-keep", "sm_90"}, []string{"a90", "b90", "r90"}},
		{"sm_90a is arch 90", []string{"-keep", "sm_90a"}, []string{"a90", "b90", "r90"}},
		{"sm_90 and its PTX", []string{"-keep", "sm_90,compute_90"}, []string{"a90", "b90", "r90", "p90"}},
		{"PTX for JIT", []string{"-keep", "sm_90", "-ptx-jit"}, []string{"a90", "b90", "r90", "p90", "q75"}},
		{"PTX only", []string{"-keep", "compute_75"}, []string{"q75"}},
		{"two archs", []string{"-keep", " sm_75 , sm_120 ", "-allow-empty"}, []string{"a75", "a120", "c120"}},
		{"two archs and their PTX", []string{"-keep", "sm_75,sm_120", "-ptx-jit"}, []string{"a75", "a120", "c120", "p90", "q75", "q120"}},
		{"sm_86 keeps sm_80 cubins", []string{"-keep", "sm_86", "-ptx-jit"}, []string{"a80", "r86", "q75"}},
		{"sm_89 keeps sm_80 and sm_86", []string{"-keep", "sm_89", "-ptx-jit"}, []string{"a80", "r86", "q75"}},
		{"sm_80 keeps no sm_86", []string{"-keep", "sm_80", "-ptx-jit"}, []string{"a80", "q75"}},
		{"sm_121 keeps sm_120", []string{"-keep", "sm_121", "-ptx-jit"}, []string{"a120", "c120", "p90", "q75", "q120"}},
		{"everything", []string{"-keep", "sm_75,sm_80,sm_86,sm_90,sm_120,compute_75,compute_90,compute_120"}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib, payload := fixture(t)
			in, out := writeLib(t, lib)
			var stdout bytes.Buffer
			if err := run(append(tc.args, "-in", in, "-out", out), &stdout); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(lib)
			kept := map[string]bool{}
			for _, l := range tc.keep {
				kept[l] = true
			}
			var zeroed int
			for _, l := range all {
				b := payload[l]
				if !kept[l] {
					clear(want[b.off : b.off+b.n])
					zeroed += b.n
				}
				if bytes.Equal(lib[b.off:b.off+b.n], make([]byte, b.n)) {
					t.Fatalf("fixture: payload %s is all zero", l)
				}
			}
			if len(got) != len(lib) {
				t.Fatalf("size %d, want %d", len(got), len(lib))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("byte %#x is %#x, want %#x (input %#x)", i, got[i], want[i], lib[i])
				}
			}
			if !strings.Contains(stdout.String(), "zeroed "+strconv.Itoa(len(all)-len(tc.keep))+" entries, "+strconv.Itoa(zeroed)+" bytes") {
				t.Errorf("report does not say %d entries, %d bytes zeroed:\n%s", len(all)-len(tc.keep), zeroed, stdout.String())
			}
			if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("out mode %v %v, want the input's 0755", st.Mode(), err)
			}
		})
	}
}

func TestReportTable(t *testing.T) {
	lib, _ := fixture(t)
	in, out := writeLib(t, lib)
	var stdout bytes.Buffer
	if err := run([]string{"-keep", "sm_90", "-in", in, "-out", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	s := stdout.String()
	for _, want := range []*[2]string{
		{"elf", "sm_90  3  2  304  keep"},
		{"elf", "sm_120  2  2  104  zero"},
		{"ptx", "compute_90  1  1  56  zero"},
		{"containers", "containers 4, padding 16 bytes"},
		{"note", "note: 1 containers keep no entry"},
	} {
		if !strings.Contains(strings.Join(strings.Fields(s), "  "), strings.Join(strings.Fields(want[1]), "  ")) {
			t.Errorf("report lacks %s line %q:\n%s", want[0], want[1], s)
		}
	}
}

func TestCheckWritesNothing(t *testing.T) {
	lib, _ := fixture(t)
	in, _ := writeLib(t, lib)
	var stdout bytes.Buffer
	if err := run([]string{"-check", "-v", "-in", in}, &stdout); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout.String(), "fatbin "); n != 11 {
		t.Errorf("%d entry lines, want 11:\n%s", n, stdout.String())
	}
	ents, _ := os.ReadDir(filepath.Dir(in))
	if len(ents) != 1 {
		t.Errorf("check left %d files", len(ents))
	}
	got, _ := os.ReadFile(in)
	if !bytes.Equal(got, lib) {
		t.Error("check changed its input")
	}
}

func TestRefuses(t *testing.T) {
	le := binary.LittleEndian
	// Offsets into the fixture's .nv_fatbin: container 0 starts at 0, its
	// first entry at 16.
	nvOff := func(lib []byte) int {
		return bytes.Index(lib[200:], []byte{0x50, 0xed, 0x55, 0xba}) + 200
	}
	for _, tc := range []struct {
		name    string
		corrupt func(lib []byte) []byte
		args    []string
		err     string
	}{
		{"unknown magic", func(lib []byte) []byte { lib[nvOff(lib)] = 0x51; return lib }, nil, "not a fatbin container"},
		{"container version", func(lib []byte) []byte { le.PutUint16(lib[nvOff(lib)+4:], 2); return lib }, nil, "container version 2"},
		{"entry past its container", func(lib []byte) []byte {
			p := nvOff(lib) + 16
			le.PutUint64(lib[p+8:], le.Uint64(lib[p+8:])+4096)
			return lib
		}, nil, "runs past its container"},
		{"container past the section", func(lib []byte) []byte {
			p := nvOff(lib)
			le.PutUint64(lib[p+8:], le.Uint64(lib[p+8:])+1<<20)
			return lib
		}, nil, "runs past the section's end"},
		{"entries short of the container's end", func(lib []byte) []byte {
			p := nvOff(lib)
			le.PutUint64(lib[p+8:], le.Uint64(lib[p+8:])+8)
			return lib
		}, nil, "too few for an entry header"},
		{"short entry header", func(lib []byte) []byte { le.PutUint32(lib[nvOff(lib)+16+4:], 32); return lib }, nil, "entry header size 32"},
		{"unknown entry kind", func(lib []byte) []byte { le.PutUint16(lib[nvOff(lib)+16:], 7); return lib }, nil, "entry kind 0x7"},
		{"no fatbin section", func(lib []byte) []byte {
			i := bytes.Index(lib, []byte(".nv_fatbin\x00"))
			j := bytes.Index(lib, []byte("__nv_relfatbin\x00"))
			lib[i+1], lib[j] = 'x', 'x'
			return lib
		}, nil, "no .nv_fatbin"},
		{"not an ELF", func(lib []byte) []byte { lib[1] = 'X'; return lib }, nil, "bad magic"},
		{"keeps nothing", func(lib []byte) []byte { return lib }, []string{"-keep", "sm_50"}, "keeps none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib, _ := fixture(t)
			in, out := writeLib(t, tc.corrupt(lib))
			args := tc.args
			if args == nil {
				args = []string{"-keep", "sm_90"}
			}
			err := run(append(args, "-in", in, "-out", out), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
			ents, _ := os.ReadDir(filepath.Dir(in))
			if len(ents) != 1 {
				t.Errorf("a refused run left %d files beside the input", len(ents))
			}
		})
	}
}

func TestParseKeep(t *testing.T) {
	k, err := parseKeep("sm_90a, compute_80,sm_120f", false)
	if err != nil || !k.SM[90] || !k.SM[120] || !k.Compute[80] || len(k.SM) != 2 || len(k.Compute) != 1 {
		t.Errorf("got %+v, %v", k, err)
	}
	for _, bad := range []string{"", "90", "sm_", "sm_x", "compute_9x0", ",", "lto_90"} {
		if _, err := parseKeep(bad, false); err == nil {
			t.Errorf("parseKeep(%q) accepted", bad)
		}
	}
}

// TestLostContainers: -keep must not strip a container of the only entries
// a kept card could load. Container 0 is the case a reviewer found: an
// sm_80 cubin and compute_80 PTX, which an sm_86 card loads (the cubin) and
// an sm_90 card JITs (the PTX); container 1 holds sm_120 code only;
// container 2 sm_86 and sm_90 cubins; container 3 an sm_80 cubin only.
func TestLostContainers(t *testing.T) {
	all := []string{"x80", "y80", "x120", "x86", "x90", "z80"}
	build := func(t *testing.T) ([]byte, map[string]built) {
		fat := map[string]built{}
		nv := buildFatbin(t, [][]tEntry{
			{{"x80", kindELF, 80, 64, fl64Linux | flZstd, 90}, {"y80", kindPTX, 80, 64, fl64Linux | flOld, 40}},
			{{"x120", kindELF, 120, 112, fl64Linux | flZstd, 30}},
			{{"x86", kindELF, 86, 64, fl64Linux | flZstd, 50}, {"x90", kindELF, 90, 64, fl64Linux | flZstd, 60}},
			{{"z80", kindELF, 80, 64, fl64Linux | flZstd, 20}},
		}, 0, fat)
		lib, offs := buildELF(t, []tSection{{".nv_fatbin", nv}})
		for k, v := range fat {
			fat[k] = built{off: offs[".nv_fatbin"] + v.off, n: v.n}
		}
		return lib, fat
	}
	for _, tc := range []struct {
		name string
		args []string
		keep []string // labels kept when it writes
		err  string   // or what the refusal says
		lost string   // a line the report must hold
	}{
		{"sm_86 keeps the sm_80 cubins", []string{"-keep", "sm_86"}, []string{"x80", "x86", "z80"}, "", ""},
		{"sm_89 as well", []string{"-keep", "sm_89"}, []string{"x80", "x86", "z80"}, "", ""},
		{"sm_90 would lose the PTX", []string{"-keep", "sm_90"}, nil, "leaves 1 containers with no entry", ""},
		{"sm_90 with -ptx-jit", []string{"-keep", "sm_90", "-ptx-jit"}, []string{"y80", "x90"}, "", ""},
		{"sm_90 with compute_80", []string{"-keep", "sm_90,compute_80"}, []string{"y80", "x90"}, "", ""},
		{"sm_90 with -allow-empty", []string{"-keep", "sm_90", "-allow-empty"}, []string{"x90"}, "", "lost: 1 containers"},
		{"sm_120 would lose the PTX", []string{"-keep", "sm_120"}, nil, "leaves 1 containers", ""},
		{"sm_120 with -ptx-jit", []string{"-keep", "sm_120", "-ptx-jit"}, []string{"y80", "x120"}, "", ""},
		{"sm_86,sm_120: sm_120 would lose the PTX", []string{"-keep", "sm_86,sm_120"}, nil, "leaves 1 containers", ""},
		{"sm_86,sm_120 with -ptx-jit", []string{"-keep", "sm_86,sm_120", "-ptx-jit"}, []string{"x80", "y80", "x86", "x120", "z80"}, "", ""},
		{"sm_75 runs nothing here", []string{"-keep", "sm_75"}, nil, "keeps none", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib, payload := build(t)
			in, out := writeLib(t, lib)
			var stdout bytes.Buffer
			err := run(append(tc.args, "-in", in, "-out", out), &stdout)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				if ents, _ := os.ReadDir(filepath.Dir(in)); len(ents) != 1 {
					t.Errorf("a refused run left %d files beside the input", len(ents))
				}
				// -check reports the same without refusing.
				stdout.Reset()
				if err := run(append(tc.args, "-check", "-in", in), &stdout); err != nil {
					t.Fatalf("-check: %v", err)
				}
				if strings.Contains(tc.err, "leaves") && !strings.Contains(stdout.String(), "lost: 1 containers") {
					t.Errorf("-check does not report the lost container:\n%s", stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.lost != "" && !strings.Contains(stdout.String(), tc.lost) {
				t.Errorf("report lacks %q:\n%s", tc.lost, stdout.String())
			}
			if tc.lost == "" && strings.Contains(stdout.String(), "lost:") {
				t.Errorf("report says something is lost:\n%s", stdout.String())
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			kept := map[string]bool{}
			for _, l := range tc.keep {
				kept[l] = true
			}
			for _, l := range all {
				b := payload[l]
				zero := bytes.Equal(got[b.off:b.off+b.n], make([]byte, b.n))
				if kept[l] == zero {
					t.Errorf("%s: zeroed %v, want %v", l, zero, !kept[l])
				}
			}
		})
	}
}
