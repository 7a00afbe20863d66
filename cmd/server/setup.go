package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights"
)

// The ONNX Runtime CPU library, from the onnxruntime-node npm package.
const (
	ortVersion = "1.30.0"
	ortSHA256  = "ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23" // libonnxruntime.so.1
)

var ortPackage = fetch.Artifact{
	Name:   "onnxruntime-node-" + ortVersion + ".tgz",
	URL:    fetch.DefaultNPMRegistry + "/onnxruntime-node/-/onnxruntime-node-" + ortVersion + ".tgz",
	SHA256: "6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75",
	Size:   113507888,
}

// bundledORT is where setup puts the pinned library.
func bundledORT(c *Config) string {
	return filepath.Join(c.CacheDir, "onnxruntime-"+ortVersion, "libonnxruntime.so.1")
}

// ortLibrary is the library serve loads: the user's, or the pinned one.
func ortLibrary(c *Config) string {
	if c.ORTLibrary != "" {
		return c.ORTLibrary
	}
	return bundledORT(c)
}

func fetcher(c *Config, log *slog.Logger) *fetch.Client {
	return &fetch.Client{Dir: filepath.Join(c.CacheDir, "packages"), NPMRegistry: c.NPMRegistry,
		Log: func(msg string, args ...any) { log.Info(msg, args...) }}
}

// installORT fetches and verifies the pinned CPU library unless present.
func installORT(ctx context.Context, c *Config, log *slog.Logger) (string, error) {
	dst := bundledORT(c)
	if fetch.VerifyFile(dst, ortSHA256) == nil {
		return dst, nil
	}
	tgz, err := fetcher(c, log).Get(ctx, ortPackage)
	if err != nil {
		return "", err
	}
	if err := fetch.ExtractTarGz(tgz, map[string]string{"package/bin/napi-v6/linux/x64/libonnxruntime.so.1": dst}); err != nil {
		return "", err
	}
	if err := fetch.VerifyFile(dst, ortSHA256); err != nil {
		os.Remove(dst)
		return "", err
	}
	log.Info("installed ONNX Runtime", "version", ortVersion, "path", dst)
	return dst, nil
}

// Test assets: real photographs from the scikit-image wheel on PyPI.
var testWheel = fetch.Artifact{
	Name:   "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
	URL:    "https://files.pythonhosted.org/packages/dd/9b/9fb556463a34d9842491d72a421942c8baff4281025859c84fcdb5e7e602/scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
	SHA256: "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
	Size:   14785376,
}

var testImages = map[string]string{
	"astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
	"chelsea.png":   "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
	"coffee.png":    "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
	"rocket.jpg":    "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
	"camera.png":    "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
	"logo.png":      "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
}

func installTestAssets(ctx context.Context, c *Config, dir string, log *slog.Logger) error {
	ok := true
	for name, sum := range testImages {
		if fetch.VerifyFile(filepath.Join(dir, name), sum) != nil {
			ok = false
		}
	}
	if ok {
		return nil
	}
	whl, err := fetcher(c, log).Get(ctx, testWheel)
	if err != nil {
		return err
	}
	want := map[string]string{}
	for name := range testImages {
		want["skimage/data/"+name] = filepath.Join(dir, name)
	}
	if err := fetch.ExtractZip(whl, want); err != nil {
		return err
	}
	for name, sum := range testImages {
		if err := fetch.VerifyFile(filepath.Join(dir, name), sum); err != nil {
			return err
		}
	}
	log.Info("installed test photographs", "dir", dir)
	return nil
}

func setupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var models, testDir string
	c, _, err := parse("setup", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&models, "models", "default", "models to install: default, all, or a comma list of catalog names")
		fs.StringVar(&testDir, "test-assets", "", "also put the pinned test photographs in this directory")
	})
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	if c.ORTLibrary == "" {
		if _, err := installORT(ctx, c, log); err != nil {
			return fmt.Errorf("install ONNX Runtime: %w", err)
		}
	}
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return err
	}
	for _, r := range pickRecipes(models) {
		if _, err := store.Get(r.Name); err == nil {
			if err := store.Verify(r.Name); err == nil {
				continue
			} else {
				log.Warn("reinstalling model that failed verification", "model", r.Name, "err", err)
			}
		} else if !errors.Is(err, weights.ErrNotInstalled) {
			return err
		}
		log.Info("installing model", "model", r.Name)
		if err := r.Install(ctx, store, fetcher(c, log)); err != nil {
			return fmt.Errorf("install %s: %w", r.Name, err)
		}
	}
	if testDir != "" {
		// The upscaler install tests rebuild every model from these packages.
		for _, a := range weights.UpscalePackages() {
			if _, err := fetcher(c, log).Get(ctx, a); err != nil {
				return fmt.Errorf("test assets: %w", err)
			}
		}
		if err := installTestAssets(ctx, c, testDir, log); err != nil {
			return fmt.Errorf("test assets: %w", err)
		}
	}
	fmt.Fprintln(stdout, "setup complete: data in", c.DataDir)
	return nil
}

func pickRecipes(spec string) []weights.Recipe {
	var out []weights.Recipe
	names := map[string]bool{}
	for _, n := range strings.Split(spec, ",") {
		names[strings.TrimSpace(n)] = true
	}
	for _, r := range weights.Catalog() {
		if names["all"] || (names["default"] && r.Default) || names[r.Name] {
			out = append(out, r)
		}
	}
	return out
}
