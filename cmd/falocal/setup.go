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

func setupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var models string
	c, _, err := parse("setup", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&models, "models", "default", "models to install: default, all, or a comma list of catalog names")
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
		if m, err := store.Get(r.Name); err == nil {
			if r.Outdated(m) {
				log.Info("reinstalling model installed by an older falocal", "model", r.Name)
			} else if err := store.Verify(r.Name); err == nil {
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
