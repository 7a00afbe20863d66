package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/pipelines"
	_ "github.com/falocal/falocal/pipelines/rembg"
	"github.com/falocal/falocal/weights"
)

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	c, _, err := parse("serve", args, stderr, nil)
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)

	lib := ortLibrary(c)
	if _, err := os.Stat(lib); err != nil {
		return fmt.Errorf("ONNX Runtime library %s not found: run 'falocal setup' (or 'make run'), or point -ort-library at your own build", lib)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: lib, Logger: log})
	if err != nil {
		return err
	}
	info := rt.Info()
	providers := info.Providers
	if c.Providers != "auto" {
		if providers, err = engine.ParseProviders(c.Providers); err != nil {
			return err
		}
	}
	log.Info("onnx runtime", "library", info.Library, "version", info.Version,
		"available_providers", info.Providers, "using", providers)
	for p, why := range info.Unavailable {
		log.Info("execution provider not in this library", "provider", p, "reason", why)
	}

	store, err := weights.Open(c.DataDir)
	if err != nil {
		return err
	}
	installed, err := store.List()
	if err != nil {
		return err
	}
	for _, m := range installed {
		log.Info("model installed", "name", m.Name, "pipeline", m.Pipeline, "serves", m.Serves)
	}
	if len(installed) == 0 {
		log.Warn("no models installed: run 'falocal setup'", "data_dir", c.DataDir)
	}
	trt := c.TRTCacheDir
	if trt == "" {
		trt = filepath.Join(c.CacheDir, "tensorrt")
	}
	pcfg := pipelines.Config{
		Providers: providers, IntraOpThreads: c.threads(), SessionsPerModel: c.Sessions,
		DeviceID: c.DeviceID, TensorRTCacheDir: trt, FP16: c.FP16,
		MaxInputBytes: c.MaxInputBytes, MaxPixels: c.MaxPixels,
		Models: map[string]string{},
	}
	if c.RembgModel != "" {
		pcfg.Models["rembg"] = c.RembgModel
		pcfg.Models["birefnet:General Use (Light)"] = c.RembgModel
	}
	reg, err := pipelines.Build(pipelines.Deps{Store: store, Runtime: rt, Ops: engine.CPUOps(), Log: log, Config: pcfg})
	if err != nil {
		return err
	}
	defer reg.Close()
	if c.Preload {
		if err := reg.Warm(ctx); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		log.Info("models preloaded")
	}

	fstore, err := files.Open(filepath.Join(c.DataDir, "files"))
	if err != nil {
		return err
	}
	go sweepFiles(ctx, fstore, c.FileRetention, log)

	srv := api.New(api.Config{
		Registry: reg, Files: fstore, Logger: log,
		MaxBodyBytes: c.MaxBodyBytes, MaxInputBytes: c.MaxInputBytes, RequestTimeout: c.RequestTimeout,
		AllowFetch: c.allowFetch(),
		Health: func() map[string]any {
			return map[string]any{"version": version, "onnxruntime": map[string]any{
				"library": info.Library, "version": info.Version, "providers": providers}}
		},
	})
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	log.Info("serving", "addr", ln.Addr().String(), "endpoints", reg.IDs())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func sweepFiles(ctx context.Context, fs *files.Store, keep time.Duration, log interface {
	Info(string, ...any)
}) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		if n, err := fs.Sweep(time.Now().Add(-keep)); err == nil && n > 0 {
			log.Info("expired files removed", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
