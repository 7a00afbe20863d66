// Command emucheck runs the CUDA kernels of kernels/*.cu under the host
// emulator (tools/cuda/emu, built by tools/cuda/emu/check.sh) on random
// inputs and compares every output with the kernels.CPU reference: bit for
// bit, except log10 (libm and Go differ in the last ulp) and NaN payloads.
// It checks the CUDA C logic and the argument order of kernels.Entries
// without a GPU; it says nothing about the PTX or the driver.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/falocal/falocal/kernels"
)

func main() {
	emu := flag.String("emu", "", "path to the emulator binary")
	flag.Parse()
	dir, err := os.MkdirTemp("", "emucheck")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	r := &runner{emu: *emu, dir: dir, sig: map[string]string{}}
	for _, e := range kernels.Entries() {
		r.sig[e.Name] = e.Params
	}
	c := &checker{r: r, rng: rand.New(rand.NewPCG(8, 8))}
	c.image()
	c.resize()
	c.compose()
	c.blend()
	c.convert()
	c.step()
	c.mel()
	for _, name := range sortedKeys(r.sig) {
		if !r.used[name] {
			c.errorf("%s: no emulator check", name)
		}
	}
	if c.failed > 0 {
		fmt.Fprintf(os.Stderr, "emucheck: %d failures\n", c.failed)
		os.Exit(1)
	}
	fmt.Printf("emucheck: %d launches, all match the CPU reference\n", r.launches)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "emucheck:", err)
	os.Exit(1)
}

func sortedKeys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	for i := range k { // tiny: insertion sort keeps the imports down
		for j := i; j > 0 && k[j] < k[j-1]; j-- {
			k[j], k[j-1] = k[j-1], k[j]
		}
	}
	return k
}

// buf is a device pointer argument: the bytes of a Go slice, copied back
// into it after the launch.
type buf struct{ b []byte }

func bytesOf[T any](s []T) *buf {
	var z T
	if len(s) == 0 {
		return &buf{}
	}
	return &buf{unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))}
}

type runner struct {
	emu      string
	dir      string
	sig      map[string]string
	used     map[string]bool
	launches int
}

// launch runs one kernel with n threads (kernels/cuda's launch count: the
// element count for one-thread-per-element kernels). Arguments: *buf (nil
// for a null pointer), int (C int, checked to fit) or float32.
func (r *runner) launch(name string, n int, args ...any) error {
	if r.used == nil {
		r.used = map[string]bool{}
	}
	r.used[name] = true
	r.launches++
	var spec strings.Builder
	fmt.Fprintf(&spec, "kernel %s %d\n", name, n)
	var kinds []byte
	var files []string
	for i, a := range args {
		switch v := a.(type) {
		case *buf:
			kinds = append(kinds, 'p')
			if v == nil {
				spec.WriteString("p -\n")
				files = append(files, "")
				continue
			}
			f := filepath.Join(r.dir, fmt.Sprintf("arg%d", i))
			if err := os.WriteFile(f, v.b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(&spec, "p %s\n", f)
			files = append(files, f)
		case int:
			if v != int(int32(v)) {
				return fmt.Errorf("%s: argument %d = %d overflows C int", name, i, v)
			}
			kinds = append(kinds, 'i')
			fmt.Fprintf(&spec, "i %d\n", v)
			files = append(files, "")
		case float32:
			kinds = append(kinds, 'f')
			fmt.Fprintf(&spec, "f %08x\n", math.Float32bits(v))
			files = append(files, "")
		default:
			return fmt.Errorf("%s: argument %d has Go type %T", name, i, a)
		}
	}
	if want := r.sig[name]; string(kinds) != want {
		return fmt.Errorf("%s: arguments %s, kernels.Entries says %s", name, kinds, want)
	}
	cmd := exec.Command(r.emu)
	cmd.Stdin = strings.NewReader(spec.String())
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: emulator: %w", name, err)
	}
	for i, f := range files {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dst := args[i].(*buf).b
		if len(b) != len(dst) {
			return errors.New("emulator changed a buffer's size")
		}
		copy(dst, b)
	}
	return nil
}
