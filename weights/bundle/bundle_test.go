package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/falocal/falocal/weights"
)

// addModel puts a model of the given files (name → content) in s.
func addModel(t *testing.T, s *weights.Store, name string, files map[string][]byte) weights.Manifest {
	t.Helper()
	m := weights.Manifest{Name: name, Pipeline: "rembg", Serves: []string{"rembg"}, Params: map[string]string{"size": "1024"}}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		src := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(src, files[n], 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := s.AddBlob(src, n, n, "fp32", "")
		if err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, f)
	}
	if err := s.Put(m); err != nil {
		t.Fatal(err)
	}
	m, err := s.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type fixture struct {
	src     *weights.Store
	models  []weights.Manifest
	lib     string // a stand-in runtime library
	pub     ed25519.PublicKey
	priv    ed25519.PrivateKey
	signed  []byte // signed bundle of both models and the library
	options CreateOptions
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	src, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	shared := randBytes(3, 20_000)
	a := addModel(t, src, "model-a", map[string][]byte{"model.onnx": randBytes(1, 300_000), "config.json": shared})
	b := addModel(t, src, "model-b", map[string][]byte{"model.onnx": randBytes(2, 100_000), "config.json": shared})
	lib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(lib, randBytes(4, 50_000), 0o755); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{src: src, models: []weights.Manifest{a, b}, lib: lib, pub: pub, priv: priv}
	f.options = CreateOptions{Store: src, Models: f.models, FalocalVersion: "test", Sign: priv,
		Runtime: []RuntimeFile{{Runtime: Runtime{Kind: "cpu", Version: "1.30.0", Path: "onnxruntime-1.30.0/libonnxruntime.so.1"}, Src: lib}}}
	f.signed = f.create(t, f.options)
	return f
}

func (f *fixture) create(t *testing.T, o CreateOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Create(&buf, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listing describes every file under the given folders (path, mode, size,
// SHA-256, link target), to show an install left them as they were.
func listing(t *testing.T, dirs ...string) string {
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
			if st.Mode().IsRegular() {
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(&b, " %x", sha256.Sum256(data))
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

// target is a store and cache directory to install into, the store
// already holding one model of its own, so that "untouched" is not just
// "empty".
func target(t *testing.T) (*weights.Store, string) {
	t.Helper()
	s, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addModel(t, s, "resident", map[string][]byte{"model.onnx": randBytes(9, 10_000)})
	// a cache directory that does not exist yet: the install makes it
	return s, filepath.Join(t.TempDir(), "cache", "falocal")
}

func modelNames(t *testing.T, s *weights.Store) []string {
	t.Helper()
	all, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range all {
		out = append(out, m.Name)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	b, err := Open(bytes.NewReader(f.signed), f.pub)
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	b.Close()
	// the shared config.json travels once
	if len(m.Files) != 4 || len(m.Models) != 2 || m.Format != Format || m.GOOS != runtime.GOOS || m.FalocalVersion != "test" {
		t.Fatalf("manifest: %d files, %d models, format %d, %s, version %q", len(m.Files), len(m.Models), m.Format, m.GOOS, m.FalocalVersion)
	}

	store, cache := target(t)
	bin := filepath.Join(t.TempDir(), "falocal")
	res, err := Install(bytes.NewReader(f.signed), store, InstallOptions{Trust: f.pub, CacheDir: cache, Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Signed || !res.Verified || res.Written != 4 || res.Skipped != 0 {
		t.Errorf("result %+v, want signed, verified, 4 written", res)
	}
	if got := modelNames(t, store); !slices.Equal(got, []string{"model-a", "model-b", "resident"}) {
		t.Errorf("models %v", got)
	}
	for _, want := range f.models {
		if err := store.Verify(want.Name); err != nil {
			t.Error(err)
		}
		got, _ := store.Get(want.Name)
		if !slices.Equal(got.Files, want.Files) || got.Params["size"] != "1024" || !slices.Equal(got.Serves, want.Serves) {
			t.Errorf("%s: installed %+v, want %+v", want.Name, got, want)
		}
	}
	lib, _ := os.ReadFile(f.lib)
	got, err := os.ReadFile(filepath.Join(cache, "onnxruntime-1.30.0", "libonnxruntime.so.1"))
	if err != nil || !bytes.Equal(got, lib) {
		t.Errorf("runtime library not installed where setup puts it: %v", err)
	}
	if _, err := os.Stat(bin); err == nil {
		t.Error("a bundle without a binary wrote one")
	}
	if ents, _ := os.ReadDir(filepath.Join(store.Dir(), "tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}

	// Again: every blob is there already.
	res, err = Install(bytes.NewReader(f.signed), store, InstallOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified || !res.Signed || res.Skipped != 3 || res.Written != 1 {
		t.Errorf("second install %+v, want 3 blobs skipped, unverified", res)
	}
}

func TestBinary(t *testing.T) {
	f := newFixture(t)
	exe := filepath.Join(t.TempDir(), "falocal")
	if err := os.WriteFile(exe, randBytes(7, 5000), 0o755); err != nil {
		t.Fatal(err)
	}
	o := f.options
	o.Binary, o.Runtime = exe, nil
	data := f.create(t, o)
	store, _ := target(t)
	dst := filepath.Join(t.TempDir(), "bin", "falocal")
	if _, err := Install(bytes.NewReader(data), store, InstallOptions{Trust: f.pub, Binary: dst}); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(exe)
	got, err := os.ReadFile(dst)
	st, _ := os.Stat(dst)
	if err != nil || !bytes.Equal(got, want) || st.Mode().Perm() != 0o755 {
		t.Errorf("binary not installed as made: %v", err)
	}
}

// rewrite decodes a bundle, lets edit change each member (returning nil
// drops it) and encodes it again.
func rewrite(t *testing.T, data []byte, edit func(name string, body []byte) []byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw, _ := zstd.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body = edit(hdr.Name, body)
		if body == nil {
			continue
		}
		hdr.Size = int64(len(body))
		tw.WriteHeader(hdr)
		tw.Write(body)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

func editManifest(t *testing.T, body []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, _ := json.MarshalIndent(m, "", "  ")
	return b
}

func TestTampered(t *testing.T) {
	f := newFixture(t)
	other := f.create(t, CreateOptions{Store: f.src, Models: f.models[1:], Sign: f.priv})
	unsigned := f.options
	unsigned.Sign = nil
	unsignedData := f.create(t, unsigned)
	wrongPub, wrongPriv, _ := ed25519.GenerateKey(nil)
	lastBlob := ""
	{
		b, _ := Open(bytes.NewReader(f.signed), nil)
		for _, e := range b.Manifest.Files {
			if strings.HasPrefix(e.Path, "blobs/") {
				lastBlob = e.Path
			}
		}
		b.Close()
	}
	manifestOf := func(data []byte) []byte {
		var m []byte
		rewrite(t, data, func(n string, body []byte) []byte {
			if n == ManifestName {
				m = body
			}
			return body
		})
		return m
	}

	cases := []struct {
		name  string
		data  []byte
		trust ed25519.PublicKey
		want  string
	}{
		{"flipped byte in the last blob", rewrite(t, f.signed, func(n string, b []byte) []byte {
			if n == lastBlob {
				b[len(b)/2] ^= 1
			}
			return b
		}), f.pub, lastBlob + " (model-b/model.onnx) failed verification"},
		{"flipped byte in the runtime library, unsigned", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if strings.HasPrefix(n, "runtime/") {
				b[0] ^= 0x80
			}
			return b
		}), nil, "runtime/onnxruntime-1.30.0/libonnxruntime.so.1 failed verification"},
		{"edited manifest, signed", rewrite(t, f.signed, func(n string, b []byte) []byte {
			if n == ManifestName {
				return bytes.Replace(b, []byte(`"size": "1024"`), []byte(`"size": "4096"`), 1)
			}
			return b
		}), f.pub, "signature does not verify"},
		{"swapped manifest, not checked by a key", rewrite(t, f.signed, func(n string, b []byte) []byte {
			if n == ManifestName {
				return manifestOf(other)
			}
			return b
		}), nil, "found where the manifest lists"},
		{"swapped manifest and its signature", rewrite(t, f.signed, func(n string, b []byte) []byte {
			if n == ManifestName {
				return manifestOf(other)
			}
			if n == SignatureName {
				return ed25519.Sign(f.priv, manifestOf(other))
			}
			return b
		}), f.pub, "found where the manifest lists"},
		{"wrong trusted key", f.signed, wrongPub, "signature does not verify"},
		{"signature by another key", rewrite(t, f.signed, func(n string, b []byte) []byte {
			if n == SignatureName {
				return ed25519.Sign(wrongPriv, manifestOf(f.signed))
			}
			return b
		}), f.pub, "signature does not verify"},
		{"unsigned with a trusted key", unsignedData, f.pub, "not signed"},
		{"truncated", f.signed[:len(f.signed)*2/3], f.pub, "truncated"},
		{"truncated in the head", f.signed[:200], nil, "truncated"},
		{"missing member", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if n == lastBlob {
				return nil
			}
			return b
		}), nil, "found where the manifest lists " + lastBlob},
		{"extra member", withExtra(t, unsignedData), nil, "runtime/evil.so is not in the manifest"},
		{"another format version", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if n == ManifestName {
				return editManifest(t, b, func(m map[string]any) { m["format"] = 2 })
			}
			return b
		}), nil, "bundle format version 2; this falocal reads version 1"},
		{"another architecture's runtime", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if n == ManifestName {
				return editManifest(t, b, func(m map[string]any) { m["goarch"] = "riscv64" })
			}
			return b
		}), nil, "/riscv64; this machine is " + runtime.GOOS + "/" + runtime.GOARCH},
		{"member escaping the cache directory", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if n == ManifestName {
				return bytes.ReplaceAll(b, []byte(`onnxruntime-1.30.0/libonnxruntime.so.1`), []byte(`../../etc/libonnxruntime.so.1`))
			}
			return b
		}), nil, "bad member path"},
		{"model name escaping the store", rewrite(t, unsignedData, func(n string, b []byte) []byte {
			if n == ManifestName {
				return bytes.Replace(b, []byte(`"name": "model-b"`), []byte(`"name": "../model-b"`), 1)
			}
			return b
		}), nil, `bad or repeated model name "../model-b"`},
		{"not a bundle", []byte("hello, this is not zstd"), nil, "not a falocal bundle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store, cache := target(t)
			cacheParent := filepath.Dir(filepath.Dir(cache))
			before := listing(t, store.Dir(), cacheParent)
			_, err := Install(bytes.NewReader(c.data), store, InstallOptions{Trust: c.trust, CacheDir: cache})
			if err == nil {
				t.Fatal("installed")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want one with %q", err, c.want)
			}
			if after := listing(t, store.Dir(), cacheParent); after != before {
				t.Errorf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// withExtra appends a member the manifest does not list.
func withExtra(t *testing.T, data []byte) []byte {
	t.Helper()
	return rewriteAppend(t, data, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "runtime/evil.so", Size: 4, Mode: 0o755, Typeflag: tar.TypeReg})
		tw.Write([]byte("evil"))
	})
}

func rewriteAppend(t *testing.T, data []byte, tail func(*tar.Writer)) []byte {
	t.Helper()
	zr, _ := zstd.NewReader(bytes.NewReader(data))
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw, _ := zstd.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(hdr)
		io.Copy(tw, tr)
	}
	tail(tw)
	tw.Close()
	zw.Close()
	return out.Bytes()
}

func TestCreateRefusesCorruptSource(t *testing.T) {
	f := newFixture(t)
	blob := filepath.Join(f.src.Dir(), "blobs", "sha256-"+f.models[0].Files[0].SHA256)
	data, _ := os.ReadFile(blob)
	data[0] ^= 1
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Create(io.Discard, f.options)
	if !errors.Is(err, weights.ErrCorrupt) || !strings.Contains(err.Error(), "model-a/") {
		t.Errorf("err %v, want the store's ErrCorrupt naming model-a", err)
	}
}

func TestSignatureCoversManifestBytes(t *testing.T) {
	f := newFixture(t)
	b, err := Open(bytes.NewReader(f.signed), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !ed25519.Verify(f.pub, manifestBytes(t, f.signed), b.Signature) {
		t.Error("the signature is not over MANIFEST.json's bytes")
	}
}

func manifestBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, _ := zstd.NewReader(bytes.NewReader(data))
	defer zr.Close()
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName {
		t.Fatalf("first member %v %v", hdr, err)
	}
	b, _ := io.ReadAll(tr)
	return b
}

// gpuRuntime is a stand-in for a site's GPU build: the library and two
// provider libraries, with the soname links.
func gpuRuntime(t *testing.T) RuntimeFile {
	t.Helper()
	dir := t.TempDir()
	names := []string{"libonnxruntime.so.1.30.0", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"}
	var srcs []string
	for i, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, randBytes(uint64(20+i), 4000+i), 0o755); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, p)
	}
	d := "onnxruntime-gpu-1.30.0/"
	return RuntimeFile{Runtime: Runtime{Kind: "cuda", Version: "1.30.0", Path: d + names[0],
		Libs:  []string{d + names[1], d + names[2]},
		Links: []Link{{d + "libonnxruntime.so.1", names[0]}, {d + "libonnxruntime.so", names[0]}}},
		Src: srcs[0], LibSrcs: srcs[1:]}
}

func TestGPURuntime(t *testing.T) {
	f := newFixture(t)
	gpu := gpuRuntime(t)
	o := f.options
	o.Sign = nil
	o.Runtime = append(slices.Clone(o.Runtime), gpu)
	data := f.create(t, o)

	store, cache := target(t)
	if _, err := Install(bytes.NewReader(data), store, InstallOptions{CacheDir: cache}); err != nil {
		t.Fatal(err)
	}
	srcs := append([]string{gpu.Src}, gpu.LibSrcs...)
	for i, p := range gpu.Files() {
		want, _ := os.ReadFile(srcs[i])
		dst := filepath.Join(cache, filepath.FromSlash(p))
		st, err := os.Lstat(dst)
		got, _ := os.ReadFile(dst)
		if err != nil || !st.Mode().IsRegular() || !bytes.Equal(got, want) {
			t.Errorf("%s not installed as a file with the bundled bytes: %v", p, err)
		}
	}
	for _, l := range gpu.Links {
		if got, err := os.Readlink(filepath.Join(cache, filepath.FromSlash(l.Path))); err != nil || got != l.Target {
			t.Errorf("link %s → %q (%v), want → %s", l.Path, got, err, l.Target)
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "onnxruntime-1.30.0", "libonnxruntime.so.1")); err != nil {
		t.Errorf("the CPU library beside it: %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(cache, ".bundle-*")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
	// again over itself: the links are replaced, not refused
	if _, err := Install(bytes.NewReader(data), store, InstallOptions{CacheDir: cache}); err != nil {
		t.Fatal(err)
	}

	cuda := "runtime/" + gpu.Libs[1]
	withLinks := func(links []any) []byte {
		return rewrite(t, data, func(n string, b []byte) []byte {
			if n == ManifestName {
				return editManifest(t, b, func(m map[string]any) {
					rt := m["runtime"].([]any)
					rt[1].(map[string]any)["links"] = links
				})
			}
			return b
		})
	}
	link := func(p, target string) any { return map[string]any{"path": p, "target": target} }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"flipped byte in the CUDA provider", rewrite(t, data, func(n string, b []byte) []byte {
			if n == cuda {
				b[len(b)-1] ^= 1
			}
			return b
		}), cuda + " failed verification"},
		{"provider library missing from the manifest", rewrite(t, data, func(n string, b []byte) []byte {
			if n == ManifestName {
				return editManifest(t, b, func(m map[string]any) {
					files := m["files"].([]any)
					m["files"] = slices.DeleteFunc(files, func(e any) bool { return e.(map[string]any)["path"] == cuda })
				})
			}
			return b
		}), gpu.Libs[1] + " is not among the bundle's files"},
		{"link pointing out of the cache directory", withLinks([]any{link("onnxruntime-gpu-1.30.0/libonnxruntime.so.1", "../../../etc/passwd")}), "bad link"},
		{"link pointing by absolute path", withLinks([]any{link("onnxruntime-gpu-1.30.0/libonnxruntime.so.1", "/etc/passwd")}), "bad link"},
		{"link placed in another folder", withLinks([]any{link("onnxruntime-1.30.0/libonnxruntime.so.1", "libonnxruntime.so.1.30.0")}), "bad link"},
		{"link over a bundled file", withLinks([]any{link(gpu.Libs[1], "libonnxruntime.so.1.30.0")}), "bad link"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store, cache := target(t)
			// a cache directory that holds a runtime already
			if err := os.MkdirAll(filepath.Join(cache, "onnxruntime-gpu-1.30.0"), 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(cache, filepath.FromSlash(gpu.Libs[1])), []byte("old"), 0o755)
			os.Symlink("libonnxruntime_providers_cuda.so", filepath.Join(cache, "onnxruntime-gpu-1.30.0", "libonnxruntime.so.1"))
			before := listing(t, store.Dir(), cache)
			_, err := Install(bytes.NewReader(c.data), store, InstallOptions{CacheDir: cache})
			if err == nil {
				t.Fatal("installed")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want one with %q", err, c.want)
			}
			if after := listing(t, store.Dir(), cache); after != before {
				t.Errorf("the store or cache changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
