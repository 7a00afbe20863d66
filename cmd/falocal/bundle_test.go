package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

// runCmd runs the falocal command line in process.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// treeListing describes every file under dirs (path, mode, size, SHA-256 of
// small files, link target), to show a refused install changed nothing.
func treeListing(t *testing.T, dirs ...string) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			st, err := os.Lstat(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %v %d", p, st.Mode(), st.Size())
			if st.Mode().IsRegular() && st.Size() < 1<<20 {
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(&b, " %x", sha256.Sum256(data))
			}
			if st.Mode()&os.ModeSymlink != 0 {
				l, _ := os.Readlink(p)
				b.WriteString(" -> " + l)
			}
			b.WriteString("\n")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// smallStore is a store of made-up models of two pipelines.
func smallStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []struct{ name, pipeline string }{{"seg-a", "rembg"}, {"up-b", "upscale"}, {"up-c", "upscale"}} {
		src := filepath.Join(t.TempDir(), "model.onnx")
		if err := os.WriteFile(src, bytes.Repeat([]byte{byte(i), 1, 2, 3}, 10_000+i), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := s.AddBlob(src, "model", "model.onnx", "fp32", "")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(weights.Manifest{Name: m.name, Pipeline: m.pipeline, Files: []weights.File{f}}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func storeNames(t *testing.T, dir string) []string {
	t.Helper()
	s, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range all {
		if err := s.Verify(m.Name); err != nil {
			t.Error(err)
		}
		out = append(out, m.Name)
	}
	return out
}

// TestBundleCommands drives keygen, create, inspect and install through the
// command line over a made-up store.
func TestBundleCommands(t *testing.T) {
	src := smallStore(t)
	work := t.TempDir()
	key := filepath.Join(work, "site")
	if _, e, code := runCmd(t, "bundle", "keygen", "-o", key); code != 0 {
		t.Fatal(e)
	}
	for p, want := range map[string]os.FileMode{key: 0o600, key + ".pub": 0o644} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %v", p, err, want)
		}
	}
	if _, e, code := runCmd(t, "bundle", "keygen", "-o", key); code == 0 || !strings.Contains(e, "exists") {
		t.Errorf("keygen over an existing key: %d %s", code, e)
	}
	other := filepath.Join(work, "other")
	runCmd(t, "bundle", "keygen", "-o", other)

	signed := filepath.Join(work, "site.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", signed, "-sign", key, "-data-dir", src); code != 0 {
		t.Fatal(e)
	}
	unsigned := filepath.Join(work, "unsigned.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", unsigned, "-models", "seg-a", "-data-dir", src); code != 0 {
		t.Fatal(e)
	}

	out, e, code := runCmd(t, "bundle", "inspect", signed, "-trust", key+".pub")
	if code != 0 {
		t.Fatal(e)
	}
	for _, want := range []string{"format 1", "signature verified", "model    seg-a (rembg", "model    up-c (upscale"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}

	t.Run("inspect -verify", func(t *testing.T) {
		out, e, code := runCmd(t, "bundle", "inspect", "-verify", signed)
		if code != 0 || !strings.Contains(out, "all 3 files match the manifest") || !strings.Contains(out, "signed (not checked") {
			t.Errorf("inspect -verify: %d %s %s", code, out, e)
		}
		data, _ := os.ReadFile(signed)
		cut := filepath.Join(t.TempDir(), "cut.falb")
		os.WriteFile(cut, data[:len(data)*3/4], 0o644)
		if out, e, code := runCmd(t, "bundle", "inspect", cut, "-verify"); code == 0 || !strings.Contains(e, "truncated") {
			t.Errorf("inspect -verify of a truncated bundle: %d %s %s", code, out, e)
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		b := filepath.Join(t.TempDir(), "esrgan.falb")
		if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-endpoints", "fal-ai/esrgan", "-data-dir", src); code != 0 {
			t.Fatal(e)
		}
		data := t.TempDir()
		if _, e, code := runCmd(t, "bundle", "install", b, "-data-dir", data, "-cache-dir", t.TempDir()); code != 0 {
			t.Fatal(e)
		}
		if got := storeNames(t, data); !slices.Equal(got, []string{"up-b", "up-c"}) {
			t.Errorf("fal-ai/esrgan bundled %v", got)
		}
		if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-endpoints", "fal-ai/nope", "-data-dir", src); code == 0 || !strings.Contains(e, `endpoint "fal-ai/nope"`) {
			t.Errorf("unknown endpoint: %d %s", code, e)
		}
		// a known endpoint (by its prefix) with no model installed for it
		if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-endpoints", "fal-ai/flux/dev", "-data-dir", src); code == 0 || !strings.Contains(e, "no installed model to bundle") {
			t.Errorf("fal-ai/flux/dev without diffusion models: %d %s", code, e)
		}
	})

	refusals := []struct {
		name, file, trust, want string
	}{
		{"another key", signed, other + ".pub", "signature does not verify"},
		{"unsigned with -trust", unsigned, key + ".pub", "not signed"},
		{"a private key as the trusted key", signed, key, "not a PEM PUBLIC KEY"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			data := smallStore(t) // a store with models of its own
			before := treeListing(t, data)
			_, e, code := runCmd(t, "bundle", "install", r.file, "-trust", r.trust, "-data-dir", data)
			if code == 0 || !strings.Contains(e, r.want) {
				t.Errorf("exit %d, %s; want a failure saying %q", code, e, r.want)
			}
			if after := treeListing(t, data); after != before {
				t.Errorf("the store changed:\n%s\n%s", before, after)
			}
		})
	}

	t.Run("install", func(t *testing.T) {
		data := t.TempDir()
		// the file first and the flags after it, as the docs write it
		out, e, code := runCmd(t, "bundle", "install", signed, "-trust", key+".pub", "-data-dir", data, "-cache-dir", t.TempDir())
		if code != 0 {
			t.Fatal(e)
		}
		if !strings.Contains(out, "installed") || !strings.Contains(e, "signature verified") {
			t.Errorf("output %q %q", out, e)
		}
		if got := storeNames(t, data); !slices.Equal(got, []string{"seg-a", "up-b", "up-c"}) {
			t.Errorf("installed %v", got)
		}
		// unsigned, no -trust: installed, with a warning that says so
		data = t.TempDir()
		_, e, code = runCmd(t, "bundle", "install", unsigned, "-data-dir", data)
		if code != 0 || !strings.Contains(e, "unsigned") {
			t.Errorf("unsigned install: %d %s", code, e)
		}
	})
}

// TestBundleRuntime bundles the pinned ONNX Runtime library and installs it
// where setup puts it; a library that is not the pinned one is refused.
func TestBundleRuntime(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	cache := t.TempDir()
	dst := filepath.Join(cache, "onnxruntime-"+ortVersion, "libonnxruntime.so.1")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Symlink(lib, dst); err != nil {
		t.Fatal(err)
	}
	src := smallStore(t)
	b := filepath.Join(t.TempDir(), "rt.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-models", "seg-a", "-with-runtime", "cpu", "-data-dir", src, "-cache-dir", cache); code != 0 {
		t.Fatal(e)
	}
	newCache := t.TempDir()
	if _, e, code := runCmd(t, "bundle", "install", b, "-data-dir", t.TempDir(), "-cache-dir", newCache); code != 0 {
		t.Fatal(e)
	}
	c := &Config{CacheDir: newCache}
	st, err := os.Lstat(bundledORT(c))
	if err != nil || !st.Mode().IsRegular() {
		t.Fatalf("library not installed as a file where setup puts it: %v", err)
	}
	want, _ := os.ReadFile(lib)
	got, _ := os.ReadFile(bundledORT(c))
	if !bytes.Equal(got, want) {
		t.Error("installed library differs")
	}

	os.Remove(dst)
	os.WriteFile(dst, []byte("not onnxruntime"), 0o755)
	if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-with-runtime", "cpu", "-data-dir", src, "-cache-dir", cache); code == 0 || !strings.Contains(e, "run 'falocal setup' first") {
		t.Errorf("a wrong library was bundled: %d %s", code, e)
	}
	if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-with-runtime", "cpu,rocm", "-data-dir", src, "-cache-dir", cache); code == 0 || !strings.Contains(e, "give cpu, cuda or cpu,cuda") {
		t.Errorf("-with-runtime cpu,rocm: %d %s", code, e)
	}
}

// fakeGPUBuild lays out a directory as ONNX Runtime's GPU release unpacks
// (the library, its soname links, the provider libraries) from small
// made-up files, with cuDNN beside it, which does not travel; cuda false
// leaves out the CUDA provider.
func fakeGPUBuild(t *testing.T, cuda bool) string {
	t.Helper()
	dir := t.TempDir()
	files := []string{"libonnxruntime.so.1.30.0", "libonnxruntime_providers_shared.so", "libcudnn.so.9"}
	if cuda {
		files = append(files, "libonnxruntime_providers_cuda.so")
	}
	for i, n := range files {
		if err := os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte{byte(i), 0x7f}, 3000+i), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"libonnxruntime.so.1": "libonnxruntime.so.1.30.0", "libonnxruntime.so": "libonnxruntime.so.1"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBundleGPURuntime(t *testing.T) {
	t.Setenv("FALOCAL_ORT_LIBRARY", "")
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", "")
	// a directory no flag or file names must not be the user's cache
	t.Setenv("FALOCAL_CACHE_DIR", "")
	os.Unsetenv("FALOCAL_CACHE_DIR") // set, even empty, it beats the config file
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cpuLib := testenv.ORTLibrary(t)
	cache := t.TempDir()
	dst := filepath.Join(cache, "onnxruntime-"+ortVersion, "libonnxruntime.so.1")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Symlink(cpuLib, dst); err != nil {
		t.Fatal(err)
	}
	src := smallStore(t)
	gpu := fakeGPUBuild(t, true)
	b := filepath.Join(t.TempDir(), "gpu.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-models", "seg-a", "-with-runtime", "cpu,cuda",
		"-ort-library", filepath.Join(gpu, "libonnxruntime.so.1"), "-data-dir", src, "-cache-dir", cache); code != 0 {
		t.Fatal(e)
	}

	out, e, code := runCmd(t, "bundle", "inspect", b)
	if code != 0 {
		t.Fatal(e)
	}
	for _, want := range []string{
		"runtime  cpu ONNX Runtime " + ortVersion + ": onnxruntime-" + ortVersion + "/libonnxruntime.so.1\n",
		"runtime  cuda ONNX Runtime 1.30.0, the site's own GPU build (no pin: checked against this manifest only): onnxruntime-gpu-1.30.0/libonnxruntime.so.1.30.0\n",
		"+ onnxruntime-gpu-1.30.0/libonnxruntime_providers_cuda.so\n",
		"+ onnxruntime-gpu-1.30.0/libonnxruntime_providers_shared.so\n",
		"link onnxruntime-gpu-1.30.0/libonnxruntime.so -> libonnxruntime.so.1.30.0\n",
		"link onnxruntime-gpu-1.30.0/libonnxruntime.so.1 -> libonnxruntime.so.1.30.0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "cudnn") {
		t.Errorf("cuDNN was bundled:\n%s", out)
	}

	// into an empty cache directory, through a config file that names it
	newCache := filepath.Join(t.TempDir(), "cache")
	cfg := filepath.Join(t.TempDir(), "falocal.toml")
	if err := os.WriteFile(cfg, []byte("cache-dir = "+strconv.Quote(newCache)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, e, code = runCmd(t, "bundle", "install", b, "-config", cfg, "-data-dir", t.TempDir())
	if code != 0 {
		t.Fatal(e)
	}
	lib := filepath.Join(newCache, "onnxruntime-gpu-1.30.0", "libonnxruntime.so.1.30.0")
	for _, want := range []string{"-ort-library " + lib + "\n", "or in " + cfg + ": ort-library = " + strconv.Quote(lib) + "\n", "CUDA and cuDNN are not in the bundle"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	for _, n := range []string{"libonnxruntime.so.1.30.0", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"} {
		want, _ := os.ReadFile(filepath.Join(gpu, n))
		p := filepath.Join(newCache, "onnxruntime-gpu-1.30.0", n)
		st, err := os.Lstat(p)
		got, _ := os.ReadFile(p)
		if err != nil || !st.Mode().IsRegular() || !bytes.Equal(got, want) {
			t.Errorf("%s not installed as a file with its bytes: %v", n, err)
		}
	}
	for _, n := range []string{"libonnxruntime.so.1", "libonnxruntime.so"} {
		if got, err := os.Readlink(filepath.Join(newCache, "onnxruntime-gpu-1.30.0", n)); err != nil || got != "libonnxruntime.so.1.30.0" {
			t.Errorf("%s → %q (%v), want → libonnxruntime.so.1.30.0", n, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(newCache, "onnxruntime-gpu-1.30.0", "libcudnn.so.9")); err == nil {
		t.Error("cuDNN was installed")
	}
	st, err := os.Lstat(bundledORT(&Config{CacheDir: newCache}))
	got, _ := os.ReadFile(bundledORT(&Config{CacheDir: newCache}))
	want, _ := os.ReadFile(cpuLib)
	if err != nil || !st.Mode().IsRegular() || !bytes.Equal(got, want) {
		t.Errorf("CPU library not installed as a file where setup puts it: %v", err)
	}

	// without a config file, the hint names the variable
	out, e, code = runCmd(t, "bundle", "install", b, "-data-dir", t.TempDir(), "-cache-dir", t.TempDir())
	if code != 0 || !strings.Contains(out, "or FALOCAL_ORT_LIBRARY=") {
		t.Errorf("install without a config file: %d %s\n%s", code, e, out)
	}

	noCUDA := fakeGPUBuild(t, false)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no -ort-library", nil, "give its library with -ort-library"},
		{"a CPU build", []string{"-ort-library", filepath.Join(noCUDA, "libonnxruntime.so.1")}, "is not a GPU build of ONNX Runtime: it has no libonnxruntime_providers_cuda.so"},
		{"no such directory", []string{"-ort-library", filepath.Join(t.TempDir(), "nowhere", "libonnxruntime.so.1")}, "the -ort-library directory"},
		{"a provider library", []string{"-ort-library", filepath.Join(gpu, "libonnxruntime_providers_cuda.so")}, "is not a libonnxruntime.so file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "x.falb")
			args := append([]string{"bundle", "create", "-o", out, "-with-runtime", "cuda", "-data-dir", src, "-cache-dir", cache}, c.args...)
			_, e, code := runCmd(t, args...)
			if code == 0 || !strings.Contains(e, c.want) {
				t.Errorf("exit %d, stderr %q, want one with %q", code, e, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a bundle was written")
			}
		})
	}
}
