package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

// linkedCache is a cache directory whose packages and runtime library are
// links to the downloaded ones: setup finds everything there, and a file
// it replaced would replace the link, never the shared file.
func linkedCache(t *testing.T) string {
	t.Helper()
	lib := testenv.ORTLibrary(t)
	pkgs := os.Getenv("FALOCAL_TEST_PACKAGES")
	if pkgs == "" {
		pkgs = filepath.Join(filepath.Dir(filepath.Dir(lib)), "packages")
	}
	ents, err := os.ReadDir(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	os.MkdirAll(filepath.Join(cache, "packages"), 0o755)
	for _, e := range ents {
		if err := os.Symlink(filepath.Join(pkgs, e.Name()), filepath.Join(cache, "packages", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	dst := bundledORT(&Config{CacheDir: cache})
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Symlink(lib, dst); err != nil {
		t.Fatal(err)
	}
	return cache
}

// linkedStore is a data directory with copies of the installed manifests
// and links to their blobs.
func linkedStore(t *testing.T) string {
	t.Helper()
	real := testenv.DataDir(t)
	data := t.TempDir()
	for _, d := range []string{"manifests", "blobs"} {
		ents, err := os.ReadDir(filepath.Join(real, d))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(data, d), 0o755)
		for _, e := range ents {
			src, dst := filepath.Join(real, d, e.Name()), filepath.Join(data, d, e.Name())
			if d == "blobs" {
				err = os.Symlink(src, dst)
			} else if b, rerr := os.ReadFile(src); rerr != nil {
				err = rerr
			} else {
				err = os.WriteFile(dst, b, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return data
}

// TestSetupSummary runs setup against the filled download cache, so that
// nothing is downloaded, and reads its summary and log lines.
func TestSetupSummary(t *testing.T) {
	cache := linkedCache(t)
	var defaults []string
	for _, r := range weights.Catalog() {
		if r.Default {
			defaults = append(defaults, r.Name)
		}
	}
	fresh := t.TempDir()
	for _, tc := range []struct {
		name    string
		data    string
		args    []string
		want    []string // in the summary, in order
		logs    []string // in the log
		models  []string // verified in the store afterwards
		nomodel string   // a line the summary must not have
	}{
		{
			name: "installs from the cache",
			data: fresh,
			args: []string{"-models", "silero-vad,misaki-en"},
			want: []string{"setup complete", "ONNX Runtime 1.30.0: already present", "/onnxruntime-1.30.0/libonnxruntime.so.1",
				"models (store " + fresh + "):", "silero-vad  1.2 MiB", "installed", "misaki-en", "installed",
				"2 model(s)", "downloaded: 0 B", "data dir:   " + fresh, "cache dir:  " + cache, "next: 'falocal serve'"},
			logs:   []string{`msg="installing model" name=silero-vad`, `msg="installing model silero-vad: done"`, `msg="installing model misaki-en: done"`},
			models: []string{"silero-vad", "misaki-en"},
		},
		{
			name: "again: nothing to do",
			data: fresh,
			args: []string{"-models", "silero-vad,misaki-en"},
			want: []string{"silero-vad", "already present", "misaki-en", "already present", "downloaded: 0 B"},
			// verified, not installed again
			nomodel: "installing model",
			models:  []string{"silero-vad", "misaki-en"},
		},
		{
			name:    "own runtime library",
			data:    fresh,
			args:    []string{"-models", "silero-vad", "-ort-library", testenv.ORTLibrary(t)},
			want:    []string{"ONNX Runtime 1.30.0: your own (-ort-library)", testenv.ORTLibrary(t), "1 model(s)"},
			nomodel: "installing",
		},
		{
			name:    "the default models, installed",
			data:    linkedStore(t),
			want:    append([]string{"ONNX Runtime 1.30.0: already present"}, defaults...),
			nomodel: "installing model",
			models:  defaults,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"-data-dir", tc.data, "-cache-dir", cache}, tc.args...)
			if err := setupCmd(context.Background(), args, &out, &errb); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			inOrder(t, "summary", out.String(), tc.want)
			inOrder(t, "log", errb.String(), tc.logs)
			if strings.Contains(errb.String(), "\r") {
				t.Errorf("a log that is not a terminal has redraws: %q", errb.String())
			}
			if tc.nomodel != "" && strings.Contains(errb.String(), tc.nomodel) {
				t.Errorf("log has %q:\n%s", tc.nomodel, errb.String())
			}
			if strings.Contains(tc.name, "default") && strings.Count(out.String(), "already present") != len(defaults)+1 {
				t.Errorf("not all %d default models already present:\n%s", len(defaults), out.String())
			}
			s, err := weights.Open(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.models {
				if err := s.Verify(m); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestSetupDownload installs the runtime library from a registry (a local
// one serving the pinned package): the log has one line at the start and
// one at the end of the download, and the summary counts its bytes.
func TestSetupDownload(t *testing.T) {
	pkg := filepath.Join(filepath.Dir(filepath.Dir(testenv.ORTLibrary(t))), "packages", ortPackage.Name)
	if p := os.Getenv("FALOCAL_TEST_PACKAGES"); p != "" {
		pkg = filepath.Join(p, ortPackage.Name)
	}
	if _, err := os.Stat(pkg); err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/"+ortPackage.Name) {
			http.ServeFile(w, r, pkg)
			return
		}
		http.NotFound(w, r)
	}))
	defer reg.Close()
	cache, data := t.TempDir(), t.TempDir()
	var out, errb bytes.Buffer
	err := setupCmd(context.Background(), []string{"-data-dir", data, "-cache-dir", cache, "-npm-registry", reg.URL, "-models", ""}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	inOrder(t, "summary", out.String(), []string{"ONNX Runtime 1.30.0: installed", bundledORT(&Config{CacheDir: cache}),
		"none named by -models", "downloaded: 108.2 MiB"})
	inOrder(t, "log", errb.String(), []string{
		"msg=downloading file=" + ortPackage.Name + " url=" + reg.URL + "/onnxruntime-node/", "bytes=113507888",
		"msg=downloaded file=" + ortPackage.Name + " bytes=113507888", "rate=",
		`msg="installed ONNX Runtime"`, `msg="installing ONNX Runtime 1.30.0: done"`,
	})
	if n := strings.Count(errb.String(), "file="+ortPackage.Name); n != 2 {
		t.Errorf("%d log lines name the download, want 2:\n%s", n, errb.String())
	}
}

// A -models name that is not in the catalog stops setup before it
// installs anything.
func TestSetupUnknownModel(t *testing.T) {
	data, cache := t.TempDir(), t.TempDir()
	var out, errb bytes.Buffer
	err := setupCmd(context.Background(), []string{"-data-dir", data, "-cache-dir", cache, "-models", "silero-vad, whisper-bas"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `no model "whisper-bas" in the catalog`) {
		t.Errorf("err %v", err)
	}
	if ents, _ := os.ReadDir(cache); len(ents) > 0 {
		t.Errorf("setup wrote %v into the cache", ents)
	}
}

// inOrder checks that s holds each of want, in order.
func inOrder(t *testing.T, what, s string, want []string) {
	t.Helper()
	rest := s
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s lacks %q (in order):\n%s", what, w, s)
			return
		}
		rest = rest[i+len(w):]
	}
}
