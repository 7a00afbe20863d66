package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/api/localtls"
	"github.com/falocal/falocal/api/webhook"
	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/pipelines"
	_ "github.com/falocal/falocal/pipelines/diffusion"
	_ "github.com/falocal/falocal/pipelines/kokoro"
	_ "github.com/falocal/falocal/pipelines/rembg"
	_ "github.com/falocal/falocal/pipelines/upscale"
	_ "github.com/falocal/falocal/pipelines/whisper"
	"github.com/falocal/falocal/weights"
)

// openRuntime loads ONNX Runtime and settles the providers to use.
func openRuntime(c *Config, log *slog.Logger) (engine.Runtime, []engine.Provider, error) {
	lib := ortLibrary(c)
	if _, err := os.Stat(lib); err != nil {
		return nil, nil, fmt.Errorf("ONNX Runtime library %s not found: run 'falocal setup' (or 'make run'), or point -ort-library at your own build", lib)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: lib, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	info := rt.Info()
	providers := info.Providers
	if c.Providers != "auto" {
		if providers, err = engine.ParseProviders(c.Providers); err != nil {
			return nil, nil, err
		}
	}
	log.Info("onnx runtime", "library", info.Library, "version", info.Version,
		"available_providers", info.Providers, "using", providers)
	for p, why := range info.Unavailable {
		log.Info("execution provider not in this library", "provider", p, "reason", why)
	}
	return rt, providers, nil
}

// newSessionPolicy is the session settings of the flags.
func newSessionPolicy(c *Config, providers []engine.Provider) sessionPolicy {
	trt := c.TRTCacheDir
	if trt == "" {
		trt = filepath.Join(c.CacheDir, "tensorrt")
	}
	return sessionPolicy{providers: providers, threads: c.threads(), deviceID: c.DeviceID, trtCache: trt,
		fp16: c.FP16, cuda: c.cudaOptions, models: c.modelProviders}
}

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	c, fs, err := parse("serve", args, stderr, nil)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// -preload is also a boolean flag: a list must follow it with '='.
		return fmt.Errorf("serve: unexpected argument %q (endpoints to preload go as -preload=ID,ID)", fs.Arg(0))
	}
	log := newLogger(c, stderr)

	rt, providers, err := openRuntime(c, log)
	if err != nil {
		return err
	}
	info := rt.Info()

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
	sessions := newSessionPolicy(c, providers)
	pcfg := pipelines.Config{
		SessionsPerModel: c.Sessions,
		MaxInputBytes:    c.MaxInputBytes, MaxPixels: c.MaxPixels, MaxUpscalePixels: c.MaxUpscale,
		MaxAudioDuration: c.MaxAudio,
		MaxUpscaleWork:   c.MaxUpscaleWork,
		MaxDiffusionWork: c.MaxDiffusionWork,
		Models:           map[string]string{},
	}
	if c.WhisperModel != "" {
		pcfg.Models["whisper"] = c.WhisperModel
	}
	if c.WizperModel != "" {
		pcfg.Models["wizper"] = c.WizperModel
	}
	if c.RembgModel != "" {
		pcfg.Models["rembg"] = c.RembgModel
		pcfg.Models["birefnet:General Use (Light)"] = c.RembgModel
	}
	if err := pinUpscalers(pcfg.Models, list(c.UpscaleModels), installed, log); err != nil {
		return err
	}
	pcfg.Batch = engine.BatchConfig{MaxBatch: c.BatchMax, MaxDelay: c.BatchDelay}
	pcfg.BatchModels = map[string]engine.BatchConfig{}
	for name, b := range c.batchModels {
		d := b.delay
		if d < 0 {
			d = c.BatchDelay
		}
		pcfg.BatchModels[name] = engine.BatchConfig{MaxBatch: b.max, MaxDelay: d}
	}
	pcfg.ModelConcurrency = c.ModelConcurrency
	pcfg.KeepAliveModels = c.keepAlives
	if c.Workers < c.BatchMax {
		log.Warn("fewer workers than -batch-max: batches cannot fill", "workers", c.Workers, "batch_max", c.BatchMax)
	}
	// One scheduler for the device the provider list puts first: TensorRT
	// and CUDA both run on CUDA device N.
	device := "cpu"
	if slices.ContainsFunc(providers, func(p engine.Provider) bool { return p != engine.CPU }) {
		device = fmt.Sprintf("cuda:%d", c.DeviceID)
	}
	for name, m := range c.modelProviders {
		gpu := slices.ContainsFunc(m.Providers, func(p engine.Provider) bool { return p != engine.CPU })
		if gpu != (device != "cpu") {
			log.Warn("-model-providers puts a model on another device than -providers: it is still counted against the "+device+" memory budget",
				"model", name, "providers", m.Providers)
		}
		if !slices.ContainsFunc(installed, func(m weights.Manifest) bool { return m.Name == name }) {
			log.Warn("-model-providers names a model that is not installed", "model", name)
		}
	}
	// One registry per server: what /metrics serves, recorded on by the
	// API, the residency scheduler, the model pools and the GPU pool.
	m := metrics.New()
	budget, g := setupGPU(c, device, log, m)
	if g != nil {
		defer func() {
			if err := g.close(); err != nil {
				log.Warn("closing the GPU memory pool", "err", err)
			}
		}()
	}
	res := engine.NewResidency(budget, c.keepAlive, device, log)
	res.UseMetrics(m)
	if g != nil {
		res.UseDevice(g.pool)
	}
	log.Info("model residency", "device", device, "memory_budget", budget, "keep_alive", c.keepAlive,
		"batch_max", c.BatchMax, "batch_delay", c.BatchDelay)
	reg, err := pipelines.Build(pipelines.Deps{Store: store, Runtime: rt, Ops: engine.CPUOps(), Log: log, Config: pcfg,
		Session: sessions.spec, Residency: res})
	if err != nil {
		return err
	}
	defer reg.Close()
	defer res.Close()
	if err := reg.CanWarm(c.preloadIDs...); err != nil {
		return fmt.Errorf("-preload: %w", err)
	}

	fstore, err := openFiles(ctx, c, log)
	if err != nil {
		return err
	}
	if err := checkExposure(c.Listen, c.keys()); err != nil {
		return err
	}
	ca, err := localtls.LoadOrCreateCA(filepath.Join(c.DataDir, "tls"))
	if err != nil {
		return err
	}
	keyPath := c.WebhookKey
	if keyPath == "" {
		keyPath = filepath.Join(c.DataDir, "webhook-ed25519.pem")
	}
	signer, err := webhook.LoadOrCreate(keyPath)
	if err != nil {
		return fmt.Errorf("-webhook-key: %w", err)
	}
	// The audit log outlives the server: it closes once the last request
	// has completed (closeSrv returned).
	var audit *os.File
	if c.AuditLog != "" {
		if audit, err = os.OpenFile(c.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err != nil {
			return fmt.Errorf("-audit-log: %w", err)
		}
		defer audit.Close()
	}
	// what the playground's home page and /healthz show of the card: asked
	// once, nvidia-smi is slow
	var gpus map[string]any
	if device != "cpu" {
		if r, err := probeGPU(ctx); err == nil {
			gpus = map[string]any{"gpus": r.gpus, "driver": r.driver, "cuda": r.cuda}
			if g != nil {
				gpus["pool_total_bytes"] = g.total
			}
		} else {
			log.Warn("nvidia-smi could not describe the GPU", "err", err)
		}
	}
	hooks := list(c.WebhookHosts)
	fl := newFleetFacts(reg, res, log)
	srv, err := api.Open(api.Config{
		Registry: reg, Files: fstore, Logger: log,
		MaxBodyBytes: c.MaxBodyBytes, MaxInputBytes: c.MaxInputBytes, MaxUploadBytes: c.MaxUploadBytes,
		RequestTimeout: c.RequestTimeout, AllowFetch: c.allowFetch(), Keys: c.keys(), Metrics: m,
		QueueDB: filepath.Join(c.DataDir, "queue.db"), Workers: c.Workers, MaxQueued: c.MaxQueued,
		SharedQueue: c.Queue, Role: c.Role, Node: c.Node, CanRun: fl.canRun, Resident: fl.resident,
		NodeInfo: func() map[string]any {
			n := map[string]any{"device": device, "memory_budget_bytes": budget, "memory_used_bytes": res.Used()}
			if gpus != nil {
				n["gpu"] = gpus
			}
			return n
		},
		Webhooks: &webhook.Deliverer{Signer: signer, Log: log, Allowed: func(h string) bool {
			return isLoopbackHost(h) || hostListed(hooks, h)
		}},
		CACert: ca.CertPEM(), LocalOnly: len(c.keys()) == 0, Preloading: c.preload && c.Role != "api",
		Audit: auditWriter(audit),
		Health: func() map[string]any {
			h := map[string]any{"version": version, "onnxruntime": map[string]any{
				"library": info.Library, "version": info.Version, "providers": providers},
				"device": device, "memory_budget_bytes": budget}
			if gpus != nil {
				h["gpu"] = gpus
			}
			return h
		},
	})
	if err != nil {
		if c.Queue != "" {
			return fmt.Errorf("-queue: %w", err)
		}
		return err
	}
	// Sweeps use the queue database: they stop before it closes.
	sweepCtx, stopSweeps := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() { defer close(swept); srv.RunSweeps(sweepCtx, c.Retention) }()
	// Backups read the queue database: the admin socket closes before it.
	admin, err := startAdmin(c.DataDir, srv, log)
	if err != nil {
		log.Warn("no admin socket: 'falocal queue backup' cannot copy the queue while this server runs", "err", err)
	}
	closeSrv := func(ctx context.Context) error {
		if admin != nil {
			admin.stop(ctx)
		}
		stopSweeps()
		<-swept
		return srv.Close(ctx)
	}

	inner, err := net.Listen("tcp", c.Listen)
	if err != nil {
		closeSrv(context.Background())
		return err
	}
	// One port speaks plain HTTP and TLS (for fal's host names, certificates
	// from the local CA), and serves as an HTTPS proxy that terminates
	// CONNECTs to fal's hosts itself: it never dials out. No connection may
	// hold the server: at most -max-conns are open, a request's head must
	// arrive within headerTimeout, its body keep arriving (-body-timeout,
	// -body-min-rate), and a keep-alive connection (or tunnel) is closed
	// after -idle-timeout without a request.
	maxConns := c.MaxConns
	if maxConns == 0 {
		maxConns = autoMaxConns(log)
	}
	ln := ca.Listen(api.LimitConns(inner, maxConns, log))
	handler := api.BodyDeadlines(srv.Handler(), c.BodyTimeout, c.BodyMinRate)
	hs := &http.Server{
		Handler: ca.ProxyWith(handler, api.IsFalHost,
			localtls.ProxyOptions{ReadHeaderTimeout: headerTimeout, IdleTimeout: c.IdleTimeout}),
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       c.IdleTimeout,
	}
	log.Info("serving", "addr", inner.Addr().String(), "endpoints", reg.IDs(), "ca_cert", ca.CertPath(),
		"auth", len(c.keys()) > 0, "max_conns", maxConns)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if c.preload && c.Role != "api" {
		// Serve at once (liveness), ready once the preloads are done.
		go func() {
			t0 := time.Now()
			if err := reg.Warm(ctx, c.preloadIDs...); err != nil {
				if ctx.Err() != nil {
					return
				}
				if len(c.preloadIDs) > 0 {
					log.Error("preload failed; /readyz stays 503", "err", err)
					return
				}
				// Preloading everything installed: what failed will answer
				// its own error on use; the rest is ready.
				log.Warn("some models did not preload", "err", err)
			}
			log.Info("models preloaded", "took", time.Since(t0))
			srv.SetReady(true)
		}()
	}
	select {
	case err := <-errc:
		closeSrv(context.Background())
		return err
	case <-ctx.Done():
	}
	// Drain: take no new work (queued requests stay on disk for the next
	// start), stop accepting connections, let running requests finish
	// within the timeout; what is still running then is queued again.
	log.Info("shutting down: draining")
	srv.Drain()
	hctx, hcancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer hcancel()
	if err := hs.Shutdown(hctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("http shutdown", "err", err)
	}
	// The same deadline: in-flight work gets -drain-timeout in all. Close
	// waits for webhook deliveries to be recorded before the queue
	// database closes.
	return closeSrv(hctx)
}

// headerTimeout bounds the arrival of a request's head (and a TLS
// handshake).
const headerTimeout = 30 * time.Second

// autoMaxConns is -max-conns sized for the open-file limit: half of it (the
// rest is for models, files, the queue's database and connections being
// refused), at least 16, at most 8192.
func autoMaxConns(log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("open-file limit unknown; -max-conns defaults to 1024", "err", err)
		return 1024
	}
	return int(min(max(lim.Cur/2, 16), 8192))
}

// checkExposure refuses to serve beyond loopback without API keys.
func checkExposure(listen string, keys []string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if len(keys) == 0 && !isLoopbackHost(host) {
		return fmt.Errorf("refusing to listen on %s without API keys: set -keys key_id:key_secret (FALOCAL_KEYS), or listen on 127.0.0.1", listen)
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func hostListed(hosts []string, h string) bool {
	h = strings.ToLower(h)
	for _, a := range hosts {
		a = strings.ToLower(a)
		if h == a || (strings.HasPrefix(a, "*.") && strings.HasSuffix(h, a[1:])) {
			return true
		}
	}
	return false
}

// auditWriter is the API's audit writer: nil (none) without a file, not a
// nil *os.File in an interface.
func auditWriter(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

// openFiles opens the file store: the data directory's files/, whose disk
// the -min-free-disk guard watches, or the -storage bucket.
func openFiles(ctx context.Context, c *Config, log *slog.Logger) (*files.Store, error) {
	if c.Storage == "" {
		fstore, err := files.Open(filepath.Join(c.DataDir, "files"))
		if err != nil {
			return nil, err
		}
		fstore.Space = &files.SpaceGuard{Dir: c.DataDir, Min: c.MinFreeDisk}
		return fstore, nil
	}
	sc, err := files.ParseS3URL(c.Storage)
	if err != nil {
		return nil, fmt.Errorf("-storage: %w", err)
	}
	sc.AccessKey, sc.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	sc.SessionToken = os.Getenv("AWS_SESSION_TOKEN")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fstore, err := files.OpenS3Store(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("-storage: %w", err)
	}
	log.Info("files on S3-compatible storage", "bucket", sc.String())
	return fstore, nil
}

// pinUpscalers makes each named upscaler serve the fal model names its
// manifest lists (an fp16 build beside its fp32 sibling, say). One that is
// not installed is warned about, as the other model flags' are refused on
// first use; one that is no upscaler is an error.
func pinUpscalers(pins map[string]string, names []string, installed []weights.Manifest, log *slog.Logger) error {
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		i := slices.IndexFunc(installed, func(m weights.Manifest) bool { return m.Name == name })
		if i < 0 {
			log.Warn("-upscale-model names a model that is not installed", "model", name)
			continue
		}
		m := installed[i]
		if m.Pipeline != "upscale" || len(m.Serves) == 0 {
			return fmt.Errorf("-upscale-model: %s is not an upscaler (pipeline %s)", name, m.Pipeline)
		}
		for _, key := range m.Serves {
			if prev, ok := pins[key]; ok {
				return fmt.Errorf("-upscale-model: %s and %s both serve %s", prev, name, strings.TrimPrefix(key, "esrgan:"))
			}
			pins[key] = name
		}
	}
	return nil
}
