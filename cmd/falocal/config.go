package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/engine"
)

// Config is the server's whole configuration: flags, each with an
// environment variable and a -config file key of the same meaning. Nothing
// else reads the environment. Precedence: flag > environment > file >
// built-in default.
type Config struct {
	ConfigFile     string
	Listen         string
	DataDir        string
	CacheDir       string
	ORTLibrary     string
	Providers      string
	ModelProviders string // per model: name=list;…
	CUDAOptions    string // key=value,…
	Threads        int
	Sessions       int
	DeviceID       int
	TRTCacheDir    string
	FP16           bool
	RequestTimeout time.Duration
	MaxBodyBytes   int64
	MaxInputBytes  int64
	MaxPixels      int64
	MaxUpscale     int64

	// Compute budgets (0 = the pipeline's default, -1 = no limit).
	MaxUpscaleWork   int64
	MaxDiffusionWork int64

	AllowFetch     string
	Preload        string // "", false: none; true, all: every endpoint's default model; else endpoint ids
	Retention      time.Duration
	Keys           string
	Workers        int
	MaxQueued      int
	WebhookHosts   string
	MaxUploadBytes int64
	MinFreeDisk    int64
	Storage        string // "" = <data-dir>/files; s3://bucket/prefix?endpoint=…
	Queue          string // "" = <data-dir>/queue.db; postgres://…
	Role           string // both, api, worker
	Node           string // name in the fleet
	WebhookKey     string // "" = <data-dir>/webhook-ed25519.pem
	RembgModel     string
	UpscaleModels  string // comma-separated
	WhisperModel   string
	WizperModel    string
	MaxAudio       time.Duration
	NPMRegistry    string
	LogLevel       string
	LogFormat      string
	AuditLog       string // file of one JSON line per completed request; "" = none
	// Serving core: residency, batching, shutdown.
	MemoryBudget     string // bytes, with an optional unit, or a percentage of RAM; "" = 75% of RAM
	KeepAlive        string // duration; 0 = unload after use; -1 = never
	BatchMax         int
	BatchDelay       time.Duration
	Batch            string // per-model overrides: name:max[:delay],…
	ModelConcurrency int
	DrainTimeout     time.Duration
	// Connections: how many, and how long one may idle or stall.
	MaxConns    int // 0 = sized for the open-file limit
	IdleTimeout time.Duration
	BodyTimeout time.Duration
	BodyMinRate int64

	envErrs  []string    // environment values that did not parse
	fileErrs []string    // file values of the wrong type
	file     *configFile // the -config file, nil without one
	// Where each shared flag's value came from: flag, env, file or
	// default; and each one's environment variable.
	sources map[string]string
	envs    map[string]string

	// Parsed by validate.
	memoryBudget   int64
	keepAlive      time.Duration
	keepAlives     map[string]time.Duration // per model
	batchModels    map[string]batchSetting
	modelProviders map[string]providerSetting
	cudaOptions    map[string]string
	preload        bool     // anything to preload
	preloadIDs     []string // the endpoints to preload; none = all
}

// preloadFlag lets -preload stand alone, as a boolean flag does, or carry a
// list of endpoint ids (-preload=fal-ai/whisper,...).
type preloadFlag struct{ p *string }

func (f preloadFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}
func (f preloadFlag) Set(v string) error { *f.p = v; return nil }
func (f preloadFlag) IsBoolFlag() bool   { return true }

type batchSetting struct {
	max   int
	delay time.Duration
}

// bindFlags defines the flags on fs with defaults taken from the environment.
func bindFlags(fs *flag.FlagSet, c *Config) {
	home, _ := os.UserHomeDir()
	dataDef := filepath.Join(home, ".local", "share", "falocal")
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		dataDef = filepath.Join(x, "falocal")
	}
	cacheDef := filepath.Join(home, ".cache", "falocal")
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		cacheDef = filepath.Join(x, "falocal")
	}
	c.sources, c.envs = map[string]string{}, map[string]string{}
	// setting replaces a built-in default by the file's value, then the
	// environment's: fromFile and fromEnv take the raw value and say
	// whether it parsed; want says what would have.
	setting := func(name, env, want string, fromFile func(any) bool, fromEnv func(string) bool) {
		c.envs[name], c.sources[name] = env, "default"
		if v, ok := c.file.value(name); ok {
			if fromFile(v) {
				c.sources[name] = "file"
			} else {
				got := tomlType(v)
				if s, ok := v.(string); ok {
					got = strconv.Quote(s)
				}
				c.fileErrs = append(c.fileErrs, fmt.Sprintf("%s: want %s, got %s", c.file.where(name), want, got))
			}
		}
		if v, ok := os.LookupEnv(env); ok {
			if fromEnv(v) {
				c.sources[name] = "env"
			} else {
				c.envErrs = append(c.envErrs, env+"="+v+": want "+want)
			}
		}
	}
	str := func(p *string, name, env, def, usage string) {
		setting(name, env, "a string",
			func(v any) bool {
				s, ok := v.(string)
				if ok {
					def = s
				}
				return ok
			},
			func(v string) bool { def = v; return true })
		fs.StringVar(p, name, def, usage+" ($"+env+")")
	}
	num := func(p *int64, name, env string, def int64, usage string) {
		setting(name, env, "an integer",
			func(v any) bool {
				n, ok := v.(int64)
				if ok {
					def = n
				}
				return ok
			},
			func(v string) bool {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					def = n
				}
				return err == nil
			})
		fs.Int64Var(p, name, def, usage+" ($"+env+")")
	}
	integer := func(p *int, name, env string, def int, usage string) {
		setting(name, env, "an integer",
			func(v any) bool {
				n, ok := v.(int64)
				if ok && int64(int(n)) == n {
					def = int(n)
					return true
				}
				return false
			},
			func(v string) bool {
				n, err := strconv.Atoi(v)
				if err == nil {
					def = n
				}
				return err == nil
			})
		fs.IntVar(p, name, def, usage+" ($"+env+")")
	}
	boolean := func(p *bool, name, env string, def bool, usage string) {
		setting(name, env, "true or false",
			func(v any) bool {
				b, ok := v.(bool)
				if ok {
					def = b
				}
				return ok
			},
			func(v string) bool {
				b, err := strconv.ParseBool(v)
				if err == nil {
					def = b
				}
				return err == nil
			})
		fs.BoolVar(p, name, def, usage+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		set := func(v string) bool {
			d, err := time.ParseDuration(v)
			if err == nil {
				def = d
			}
			return err == nil
		}
		setting(name, env, "a duration such as 90s or 10m",
			func(v any) bool { s, ok := v.(string); return ok && set(s) }, set)
		fs.DurationVar(p, name, def, usage+" ($"+env+")")
	}
	ortDef := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH")
	// -config is read before the flags are bound (parse): its own key in
	// the file would be circular, so the file cannot set it.
	fs.StringVar(&c.ConfigFile, "config", os.Getenv("FALOCAL_CONFIG"), "TOML file of settings, one per line, named as the shared flags (max-conns = 100); flags and the environment override it ($FALOCAL_CONFIG)")
	c.envs["config"], c.sources["config"] = "FALOCAL_CONFIG", "default"
	if _, ok := os.LookupEnv("FALOCAL_CONFIG"); ok {
		c.sources["config"] = "env"
	}
	str(&c.Listen, "listen", "FALOCAL_LISTEN", "127.0.0.1:8080", "address to serve on")
	str(&c.DataDir, "data-dir", "FALOCAL_DATA_DIR", dataDef, "model store and files")
	str(&c.CacheDir, "cache-dir", "FALOCAL_CACHE_DIR", cacheDef, "downloaded registry packages and the ONNX Runtime library")
	str(&c.ORTLibrary, "ort-library", "FALOCAL_ORT_LIBRARY", ortDef, "libonnxruntime to load (default: the pinned CPU build that setup installs; also $ONNXRUNTIME_SHARED_LIBRARY_PATH)")
	str(&c.Providers, "providers", "FALOCAL_PROVIDERS", "auto", "execution providers in priority order: auto, or a list of tensorrt,cuda,cpu")
	str(&c.ModelProviders, "model-providers", "FALOCAL_MODEL_PROVIDERS", "", "per-model providers, ';'-separated name=list, e.g. 'isnet-general-use=cuda,cpu; flux-dev=tensorrt:fp32,cuda,cpu' (tensorrt:fp16 or tensorrt:fp32 overrides -fp16 for that model)")
	str(&c.CUDAOptions, "cuda-options", "FALOCAL_CUDA_OPTIONS", "", "extra ONNX Runtime CUDA provider options, comma-separated key=value, e.g. cudnn_conv_algo_search=HEURISTIC,prefer_nhwc=1 (device_id comes from -device)")
	integer(&c.Threads, "threads", "FALOCAL_THREADS", 0, "intra-op threads per session (0 = cores / sessions)")
	integer(&c.Sessions, "sessions", "FALOCAL_SESSIONS", 1, "sessions per model that may run at once")
	integer(&c.DeviceID, "device", "FALOCAL_DEVICE", 0, "GPU index for CUDA/TensorRT")
	str(&c.TRTCacheDir, "trt-cache", "FALOCAL_TRT_CACHE", "", "TensorRT engine cache directory (default: <cache-dir>/tensorrt)")
	boolean(&c.FP16, "fp16", "FALOCAL_FP16", true, "let TensorRT build fp16 engines")
	dur(&c.RequestTimeout, "request-timeout", "FALOCAL_REQUEST_TIMEOUT", 10*time.Minute, "longest a request may run once started, sync or queued")
	num(&c.MaxBodyBytes, "max-body-bytes", "FALOCAL_MAX_BODY_BYTES", 64<<20, "largest request body")
	num(&c.MaxInputBytes, "max-input-bytes", "FALOCAL_MAX_INPUT_BYTES", 48<<20, "largest input file")
	num(&c.MaxPixels, "max-pixels", "FALOCAL_MAX_PIXELS", 25_000_000, "largest decoded input image, in pixels")
	num(&c.MaxUpscale, "max-upscale-pixels", "FALOCAL_MAX_UPSCALE_PIXELS", 64<<20, "largest upscaled output image, in pixels (bigger requests get a 413)")
	num(&c.MaxUpscaleWork, "max-upscale-work", "FALOCAL_MAX_UPSCALE_WORK", 128<<20, "most one upscale may compute, in model-native pixels: input pixels × the network's scale² (×4 for RealESRGAN_x4plus, whatever the requested scale), tile overlaps included (bigger requests get a 413; -1 = no limit)")
	num(&c.MaxDiffusionWork, "max-diffusion-work", "FALOCAL_MAX_DIFFUSION_WORK", 200<<20, "most one image generation may compute, in pixel-steps: num_inference_steps × the pixels the model generates × num_images (bigger requests get a 422; -1 = no limit)")
	str(&c.AllowFetch, "allow-fetch", "FALOCAL_ALLOW_FETCH", "", "comma-separated hosts (or *.domain) whose URLs may be fetched as inputs, on their default port, or host:port for another; none by default")
	setting("preload", "FALOCAL_PRELOAD", "true, false or a string of endpoint ids", func(v any) bool {
		switch v := v.(type) {
		case bool:
			c.Preload = strconv.FormatBool(v)
		case string:
			c.Preload = v
		default:
			return false
		}
		return true
	}, func(v string) bool { c.Preload = v; return true })
	fs.Var(preloadFlag{&c.Preload}, "preload", "load models at start instead of on first use: -preload alone loads every endpoint's default model, -preload=fal-ai/whisper,fal-ai/flux/schnell those endpoints' ($FALOCAL_PRELOAD)")
	dur(&c.Retention, "retention", "FALOCAL_RETENTION", 7*24*time.Hour, "how long finished requests, their results and files (outputs and uploads) stay fetchable")
	str(&c.Keys, "keys", "FALOCAL_KEYS", "", "accepted API keys, comma-separated key_id:key_secret; without keys the server only listens on loopback")
	integer(&c.Workers, "workers", "FALOCAL_WORKERS", 4, "requests (sync and queued) that run at once (at least -batch-max, or batches cannot fill)")
	integer(&c.MaxQueued, "max-queued", "FALOCAL_MAX_QUEUED", 10000, "requests that may wait in the queue (0 = no limit)")
	str(&c.WebhookHosts, "webhook-hosts", "FALOCAL_WEBHOOK_HOSTS", "", "hosts (or *.domain) that may receive fal_webhook posts, besides loopback")
	num(&c.MaxUploadBytes, "max-upload-bytes", "FALOCAL_MAX_UPLOAD_BYTES", 1<<30, "largest uploaded file")
	num(&c.MinFreeDisk, "min-free-disk", "FALOCAL_MIN_FREE_DISK", 512<<20, "bytes the data directory's disk keeps free: below that, uploads, runs and submissions get a 507 until space returns (0 = no check)")
	str(&c.Storage, "storage", "FALOCAL_STORAGE", "", "where files (outputs and uploads) are kept: empty for <data-dir>/files, or a bucket of an S3-compatible service, s3://bucket/prefix?endpoint=host:port&region=name&secure=false (endpoint default s3.amazonaws.com, secure default true), with the credentials of $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY ($AWS_SESSION_TOKEN if set); servers that share a bucket serve each other's files (docs/serving.md)")
	str(&c.Queue, "queue", "FALOCAL_QUEUE", "", "where the request queue lives: empty for <data-dir>/queue.db (this server's own), or a PostgreSQL database shared by every server of a fleet, postgres://user:password@host:5432/db?sslmode=… (docs/scale-out.md)")
	str(&c.Role, "role", "FALOCAL_ROLE", "both", "what this server does with a shared -queue: api (takes requests, runs none, loads no model), worker (runs requests; serves only /healthz, /readyz, /metrics and /fleet) or both")
	str(&c.Node, "node", "FALOCAL_NODE", "", "this server's name in the fleet view (default: host name and process id)")
	str(&c.WebhookKey, "webhook-key", "FALOCAL_WEBHOOK_KEY", "", "Ed25519 private key (PEM) that signs fal_webhook posts, created if missing: empty for <data-dir>/webhook-ed25519.pem; every server of a fleet needs the same key")
	str(&c.RembgModel, "rembg-model", "FALOCAL_REMBG_MODEL", "", "installed model used by imageutils/rembg and BiRefNet 'General Use (Light)' (default: the one whose manifest serves them)")
	str(&c.UpscaleModels, "upscale-model", "FALOCAL_UPSCALE_MODEL", "", "installed upscalers, comma-separated, that serve the fal-ai/esrgan models their manifests name ahead of others serving the same, e.g. realesrgan-x4plus-fp16 (default: the first installed by name)")
	str(&c.WhisperModel, "whisper-model", "FALOCAL_WHISPER_MODEL", "", "installed Whisper model used by fal-ai/whisper (default: the first installed)")
	str(&c.WizperModel, "wizper-model", "FALOCAL_WIZPER_MODEL", "", "installed Whisper model used by fal-ai/wizper (default: the whisper model)")
	dur(&c.MaxAudio, "max-audio-duration", "FALOCAL_MAX_AUDIO_DURATION", 4*time.Hour, "longest audio input (longer inputs get a 413)")
	str(&c.NPMRegistry, "npm-registry", "FALOCAL_NPM_REGISTRY", "https://registry.npmjs.org", "npm registry that setup downloads from")
	str(&c.MemoryBudget, "memory-budget", "FALOCAL_MEMORY_BUDGET", "", "memory the loaded models may take: bytes with an optional unit (8GiB, 512MiB), a percentage of RAM (60%), or 0 for no limit (default 75% of RAM); idle models are evicted least recently used first")
	str(&c.KeepAlive, "keep-alive", "FALOCAL_KEEP_ALIVE", "5m", "how long an idle model stays loaded: a duration, 0 to unload right after use, -1 for never; per model after a comma, e.g. 5m,isnet-general-use=-1")
	integer(&c.BatchMax, "batch-max", "FALOCAL_BATCH_MAX", 4, "dynamic batching: most rows (requests) one model run holds, for models whose batch dimension is dynamic (1 = off)")
	dur(&c.BatchDelay, "batch-delay", "FALOCAL_BATCH_DELAY", 5*time.Millisecond, "dynamic batching: longest a request waits for others to batch with")
	str(&c.Batch, "batch", "FALOCAL_BATCH", "", "per-model batching, comma-separated [model=]name:max[:delay], e.g. model=realesrgan-x4fast:8:10ms")
	integer(&c.ModelConcurrency, "model-concurrency", "FALOCAL_MODEL_CONCURRENCY", 0, "runs of one model at once across its files (0 = as many as -sessions allows)")
	dur(&c.DrainTimeout, "drain-timeout", "FALOCAL_DRAIN_TIMEOUT", 30*time.Second, "on SIGTERM, how long running requests get to finish (queued ones stay on disk)")
	integer(&c.MaxConns, "max-conns", "FALOCAL_MAX_CONNS", 0, "open connections at most; one more is answered 503 and closed (0 = half the open-file limit, at most 8192)")
	dur(&c.IdleTimeout, "idle-timeout", "FALOCAL_IDLE_TIMEOUT", time.Minute, "how long a keep-alive connection may wait for its next request")
	dur(&c.BodyTimeout, "body-timeout", "FALOCAL_BODY_TIMEOUT", 30*time.Second, "longest wait for the next bytes of a request body; a body that stalls is cut with a 408")
	num(&c.BodyMinRate, "body-min-rate", "FALOCAL_BODY_MIN_RATE", 1024, "bytes per second below which a request body is cut once -body-timeout has passed (0 = no minimum)")
	str(&c.LogLevel, "log-level", "FALOCAL_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "FALOCAL_LOG_FORMAT", "text", "text or json")
	str(&c.AuditLog, "audit-log", "FALOCAL_AUDIT_LOG", "", "file the server appends one JSON line to per completed request, sync or queued: time, request id, key id (never the secret), endpoint, status, queue and run durations, request and response sizes (docs/serving.md#audit-log)")
}

func (c *Config) threads() int {
	if c.Threads > 0 {
		return c.Threads
	}
	n := runtime.NumCPU() / max(1, c.Sessions)
	return max(1, n)
}

func (c *Config) allowFetch() []string { return list(c.AllowFetch) }

func (c *Config) keys() []string { return list(c.Keys) }

func list(s string) []string {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func (c *Config) validate() error {
	if len(c.envErrs) > 0 {
		return fmt.Errorf("bad environment: %s", strings.Join(c.envErrs, "; "))
	}
	if len(c.fileErrs) > 0 {
		return fmt.Errorf("bad config file: %s", strings.Join(c.fileErrs, "; "))
	}
	if err := c.file.checkUnused(); err != nil {
		return err
	}
	if c.Retention <= 0 {
		return fmt.Errorf("-retention must be positive")
	}
	if c.Sessions < 1 {
		return fmt.Errorf("-sessions must be at least 1")
	}
	if c.Workers < 1 {
		return fmt.Errorf("-workers must be at least 1")
	}
	for _, k := range c.keys() {
		if id, secret, ok := strings.Cut(k, ":"); !ok || id == "" || secret == "" {
			return fmt.Errorf("-keys: %q is not key_id:key_secret", k)
		}
	}
	if c.MaxInputBytes <= 0 || c.MaxBodyBytes <= 0 || c.MaxPixels <= 0 {
		return fmt.Errorf("size limits must be positive")
	}
	var err error
	if c.memoryBudget, err = parseBudget(c.MemoryBudget, physicalMemory()); err != nil {
		return fmt.Errorf("-memory-budget: %w", err)
	}
	c.keepAlive, c.keepAlives = 5*time.Minute, map[string]time.Duration{}
	for _, item := range list(c.KeepAlive) {
		name, v, perModel := strings.Cut(item, "=")
		if !perModel {
			v = name
		}
		d, err := parseKeepAlive(v)
		if err != nil {
			return fmt.Errorf("-keep-alive: %w", err)
		}
		if perModel {
			c.keepAlives[strings.TrimSpace(name)] = d
		} else {
			c.keepAlive = d
		}
	}
	if c.BatchMax < 1 {
		return fmt.Errorf("-batch-max must be at least 1 (1 turns batching off)")
	}
	if c.BatchDelay < 0 {
		return fmt.Errorf("-batch-delay must not be negative")
	}
	if c.batchModels, err = parseBatch(c.Batch); err != nil {
		return fmt.Errorf("-batch: %w", err)
	}
	if v := strings.TrimSpace(c.Preload); v == "" {
	} else if b, err := strconv.ParseBool(v); err == nil {
		c.preload = b
	} else if strings.EqualFold(v, "all") {
		c.preload = true
	} else {
		c.preload, c.preloadIDs = true, list(v)
	}
	if c.modelProviders, err = parseModelProviders(c.ModelProviders); err != nil {
		return fmt.Errorf("-model-providers: %w", err)
	}
	if c.cudaOptions, err = parseCUDAOptions(c.CUDAOptions); err != nil {
		return fmt.Errorf("-cuda-options: %w", err)
	}
	if c.ModelConcurrency < 0 {
		return fmt.Errorf("-model-concurrency must not be negative")
	}
	if c.DrainTimeout <= 0 {
		return fmt.Errorf("-drain-timeout must be positive")
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("-max-conns must not be negative (0 sizes it for the open-file limit)")
	}
	if c.IdleTimeout <= 0 || c.BodyTimeout <= 0 {
		return fmt.Errorf("-idle-timeout and -body-timeout must be positive")
	}
	if c.BodyMinRate < 0 {
		return fmt.Errorf("-body-min-rate must not be negative (0 = no minimum)")
	}
	if c.MinFreeDisk < 0 {
		return fmt.Errorf("-min-free-disk must not be negative")
	}
	if c.Storage != "" {
		if _, err := files.ParseS3URL(c.Storage); err != nil {
			return fmt.Errorf("-storage: %w", err)
		}
	}
	if c.Queue != "" && !strings.HasPrefix(c.Queue, "postgres://") && !strings.HasPrefix(c.Queue, "postgresql://") {
		// The value is not echoed: it may hold a password.
		return fmt.Errorf("-queue: want a postgres:// URL (or nothing, for <data-dir>/queue.db)")
	}
	switch c.Role {
	case "both":
	case "api", "worker":
		if c.Queue == "" {
			return fmt.Errorf("-role %s needs a shared -queue postgres://…: with a queue of its own, no other server could take or run its requests", c.Role)
		}
	default:
		return fmt.Errorf("-role: want api, worker or both, not %q", c.Role)
	}
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}

// parseBudget reads a memory budget: "" (75% of ram), "0" (no limit), a
// percentage of ram, or bytes with an optional unit.
func parseBudget(s string, ram int64) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return ram / 4 * 3, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, fmt.Errorf("%q: want a percentage in (0, 100]", s)
		}
		if ram <= 0 {
			return 0, fmt.Errorf("%q: the machine's memory is unknown; give bytes", s)
		}
		return int64(float64(ram) * f / 100), nil
	}
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q: want bytes with an optional unit (e.g. 8GiB), a percentage of RAM, or 0", s)
	}
	return int64(f * float64(mult)), nil
}

// parseKeepAlive reads a keep-alive: a duration, 0, or -1 (any negative
// value) for never.
func parseKeepAlive(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		switch {
		case n < 0:
			return -1, nil
		case n == 0:
			return 0, nil
		}
		return 0, fmt.Errorf("%q: want a duration with a unit (5m), 0 or -1", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration (5m), 0 or -1", s)
	}
	if d < 0 {
		d = -1
	}
	return d, nil
}

// parseBatch reads per-model batching: [model=]name:max[:delay],…
func parseBatch(s string) (map[string]batchSetting, error) {
	out := map[string]batchSetting{}
	for _, item := range list(s) {
		spec := strings.TrimPrefix(item, "model=")
		parts := strings.Split(spec, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
			return nil, fmt.Errorf("%q: want [model=]name:max[:delay]", item)
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: max must be a positive integer", item)
		}
		b := batchSetting{max: n, delay: -1}
		if len(parts) == 3 {
			if b.delay, err = time.ParseDuration(parts[2]); err != nil || b.delay < 0 {
				return nil, fmt.Errorf("%q: bad delay %q", item, parts[2])
			}
		}
		out[parts[0]] = b
	}
	return out, nil
}

// cudaOptionKey is how ONNX Runtime names its provider options.
var cudaOptionKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// parseCUDAOptions reads "key=value,…". ONNX Runtime checks the names and
// values when a session opens on CUDA; device_id is -device's.
func parseCUDAOptions(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range list(s) {
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || v == "":
			return nil, fmt.Errorf("%q: want key=value", item)
		case !cudaOptionKey.MatchString(k):
			return nil, fmt.Errorf("%q: %q is not an ONNX Runtime option name", item, k)
		case k == "device_id":
			return nil, fmt.Errorf("%q: the GPU is chosen with -device", item)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%q: %s named twice", item, k)
		}
		out[k] = v
	}
	return out, nil
}

// parseModelProviders reads "name=p1,p2,…; name2=…". A TensorRT entry may
// carry its precision: tensorrt:fp16 or tensorrt:fp32.
func parseModelProviders(s string) (map[string]providerSetting, error) {
	out := map[string]providerSetting{}
	for _, item := range strings.Split(s, ";") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, spec, ok := strings.Cut(item, "=")
		if name = strings.TrimSpace(name); !ok || name == "" {
			return nil, fmt.Errorf("%q: want name=providers", item)
		}
		var set providerSetting
		var names []string
		for _, p := range list(spec) {
			p, prec, hasPrec := strings.Cut(strings.ToLower(p), ":")
			if hasPrec {
				if p != string(engine.TensorRT) || (prec != "fp16" && prec != "fp32") {
					return nil, fmt.Errorf("%q: only tensorrt takes a precision, fp16 or fp32", item)
				}
				fp16 := prec == "fp16"
				set.FP16 = &fp16
			}
			names = append(names, p)
		}
		var err error
		if set.Providers, err = engine.ParseProviders(strings.Join(names, ",")); err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if len(set.Providers) == 0 {
			return nil, fmt.Errorf("%q: no providers", item)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%q: model %s named twice", item, name)
		}
		out[name] = set
	}
	return out, nil
}

// physicalMemory is the machine's RAM (0 when unknown).
var physicalMemory = engine.PhysicalMemory
