package kernels

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var paramType = map[byte]string{'p': ".u64", 'i': ".u32", 'f': ".f32"}

// entryRE matches a PTX kernel header and its parameter list.
var entryRE = regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(\s*([^)]*)\)`)

func TestPTXEntries(t *testing.T) {
	mods := PTX()
	want := map[string]Entry{}
	for _, e := range Entries() {
		if _, dup := want[e.Name]; dup {
			t.Errorf("entry %s listed twice", e.Name)
		}
		want[e.Name] = e
		if _, ok := mods[e.Module]; !ok {
			t.Errorf("entry %s: no embedded module %q", e.Name, e.Module)
		}
	}
	seen := map[string]bool{}
	for mod, src := range mods {
		if !strings.Contains(src, "\n.target sm_80\n") {
			t.Errorf("%s.ptx does not target sm_80", mod)
		}
		// ISA 8.0 is what every CUDA 12 driver can JIT (tools/cuda/
		// requirements.txt pins NVRTC 12.0 for it); a newer .version
		// raises the minimum driver, which must be a deliberate change.
		if !strings.Contains(src, "\n.version 8.0\n") {
			t.Errorf("%s.ptx is not PTX ISA 8.0", mod)
		}
		if !strings.Contains(src, "\n.address_size 64\n") {
			t.Errorf("%s.ptx is not 64-bit", mod)
		}
		for _, m := range entryRE.FindAllStringSubmatch(src, -1) {
			name := m[1]
			seen[name] = true
			e, ok := want[name]
			if !ok {
				t.Errorf("%s.ptx: entry %s missing from Entries", mod, name)
				continue
			}
			if e.Module != mod {
				t.Errorf("entry %s is in %s.ptx, Entries says %s", name, mod, e.Module)
			}
			var got []string
			for p := range strings.SplitSeq(m[2], ",") {
				if f := strings.Fields(p); len(f) > 0 {
					if len(f) != 3 || f[0] != ".param" {
						t.Errorf("%s: unexpected parameter %q (struct or aligned parameters are not allowed)", name, p)
						continue
					}
					got = append(got, f[1])
				}
			}
			if len(got) != len(e.Params) {
				t.Errorf("%s: %d parameters in PTX, Entries says %d (%s)", name, len(got), len(e.Params), e.Params)
				continue
			}
			for i := range got {
				if pt := paramType[e.Params[i]]; got[i] != pt {
					t.Errorf("%s parameter %d: PTX type %s, want %s for %q", name, i, got[i], pt, e.Params[i])
				}
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("entry %s not found as .visible .entry %s( in the PTX", name, name)
		}
	}
}

// TestPTXUpToDate fails when a .cu file or a .ptx file no longer matches
// ptx/SOURCES.sha256, that is when a kernel was edited without running
// tools/cuda/build-ptx.sh (make kernels), or the PTX was edited by hand.
func TestPTXUpToDate(t *testing.T) {
	sums, err := ptxFS.ReadFile("ptx/SOURCES.sha256")
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(sums)))
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SOURCES.sha256: malformed line %q", sc.Text())
		}
		recorded[file] = sum
	}
	cus, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	if len(cus) == 0 {
		t.Fatal("no *.cu files next to the test")
	}
	var wantFiles []string
	for _, cu := range cus {
		b, err := os.ReadFile(cu)
		if err != nil {
			t.Fatal(err)
		}
		ptxName := "ptx/" + strings.TrimSuffix(cu, ".cu") + ".ptx"
		wantFiles = append(wantFiles, cu, ptxName)
		checkSum(t, recorded, cu, b)
		p, err := ptxFS.ReadFile(ptxName)
		if err != nil {
			t.Errorf("%s has no embedded %s: run make kernels", cu, ptxName)
			continue
		}
		checkSum(t, recorded, ptxName, p)
	}
	for f := range recorded {
		if !slices.Contains(wantFiles, f) {
			t.Errorf("SOURCES.sha256 lists %s, which has no matching .cu/.ptx pair: run make kernels", f)
		}
	}
	for mod := range PTX() {
		if _, err := os.Stat(mod + ".cu"); err != nil {
			t.Errorf("embedded ptx/%s.ptx has no %s.cu: run make kernels", mod, mod)
		}
	}
}

func checkSum(t *testing.T, recorded map[string]string, name string, b []byte) {
	t.Helper()
	h := sha256.Sum256(b)
	got := hex.EncodeToString(h[:])
	switch want, ok := recorded[name]; {
	case !ok:
		t.Errorf("%s is not in ptx/SOURCES.sha256: run make kernels", name)
	case got != want:
		t.Errorf("%s has sha256 %s, ptx/SOURCES.sha256 says %s: run make kernels", name, got, want)
	}
}
