package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Config is the server's whole configuration: flags, each with an
// environment variable of the same meaning. Nothing else reads the environment.
type Config struct {
	Listen         string
	DataDir        string
	CacheDir       string
	ORTLibrary     string
	Providers      string
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
	AllowFetch     string
	Preload        bool
	Retention      time.Duration
	Keys           string
	Workers        int
	MaxQueued      int
	WebhookHosts   string
	MaxUploadBytes int64
	RembgModel     string
	WhisperModel   string
	WizperModel    string
	MaxAudio       time.Duration
	NPMRegistry    string
	LogLevel       string
	LogFormat      string

	envErrs []string // environment values that did not parse
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
	str := func(p *string, name, env, def, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ($"+env+")")
	}
	num := func(p *int64, name, env string, def int64, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				def = n
			} else {
				c.envErrs = append(c.envErrs, env+"="+v+": want an integer")
			}
		}
		fs.Int64Var(p, name, def, usage+" ($"+env+")")
	}
	integer := func(p *int, name, env string, def int, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			if n, err := strconv.Atoi(v); err == nil {
				def = n
			} else {
				c.envErrs = append(c.envErrs, env+"="+v+": want an integer")
			}
		}
		fs.IntVar(p, name, def, usage+" ($"+env+")")
	}
	boolean := func(p *bool, name, env string, def bool, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			if b, err := strconv.ParseBool(v); err == nil {
				def = b
			} else {
				c.envErrs = append(c.envErrs, env+"="+v+": want true or false")
			}
		}
		fs.BoolVar(p, name, def, usage+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			if d, err := time.ParseDuration(v); err == nil {
				def = d
			} else {
				c.envErrs = append(c.envErrs, env+"="+v+": want a duration such as 90s or 10m")
			}
		}
		fs.DurationVar(p, name, def, usage+" ($"+env+")")
	}
	ortDef := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH")
	str(&c.Listen, "listen", "FALOCAL_LISTEN", "127.0.0.1:8080", "address to serve on")
	str(&c.DataDir, "data-dir", "FALOCAL_DATA_DIR", dataDef, "model store and files")
	str(&c.CacheDir, "cache-dir", "FALOCAL_CACHE_DIR", cacheDef, "downloaded registry packages and the ONNX Runtime library")
	str(&c.ORTLibrary, "ort-library", "FALOCAL_ORT_LIBRARY", ortDef, "libonnxruntime to load (default: the pinned CPU build that setup installs; also $ONNXRUNTIME_SHARED_LIBRARY_PATH)")
	str(&c.Providers, "providers", "FALOCAL_PROVIDERS", "auto", "execution providers in priority order: auto, or a list of tensorrt,cuda,cpu")
	integer(&c.Threads, "threads", "FALOCAL_THREADS", 0, "intra-op threads per session (0 = cores / sessions)")
	integer(&c.Sessions, "sessions", "FALOCAL_SESSIONS", 1, "sessions per model that may run at once")
	integer(&c.DeviceID, "device", "FALOCAL_DEVICE", 0, "GPU index for CUDA/TensorRT")
	str(&c.TRTCacheDir, "trt-cache", "FALOCAL_TRT_CACHE", "", "TensorRT engine cache directory (default: <cache-dir>/tensorrt)")
	boolean(&c.FP16, "fp16", "FALOCAL_FP16", true, "let TensorRT build fp16 engines")
	dur(&c.RequestTimeout, "request-timeout", "FALOCAL_REQUEST_TIMEOUT", 10*time.Minute, "longest a sync request may run")
	num(&c.MaxBodyBytes, "max-body-bytes", "FALOCAL_MAX_BODY_BYTES", 64<<20, "largest request body")
	num(&c.MaxInputBytes, "max-input-bytes", "FALOCAL_MAX_INPUT_BYTES", 48<<20, "largest input file")
	num(&c.MaxPixels, "max-pixels", "FALOCAL_MAX_PIXELS", 25_000_000, "largest decoded input image, in pixels")
	num(&c.MaxUpscale, "max-upscale-pixels", "FALOCAL_MAX_UPSCALE_PIXELS", 64<<20, "largest upscaled output image, in pixels (bigger requests get a 413)")
	str(&c.AllowFetch, "allow-fetch", "FALOCAL_ALLOW_FETCH", "", "comma-separated hosts (or *.domain) whose URLs may be fetched as inputs; none by default")
	boolean(&c.Preload, "preload", "FALOCAL_PRELOAD", false, "load the default models at start instead of on first use")
	dur(&c.Retention, "retention", "FALOCAL_RETENTION", 7*24*time.Hour, "how long finished requests, their results and files (outputs and uploads) stay fetchable")
	str(&c.Keys, "keys", "FALOCAL_KEYS", "", "accepted API keys, comma-separated key_id:key_secret; without keys the server only listens on loopback")
	integer(&c.Workers, "workers", "FALOCAL_WORKERS", 2, "requests (sync and queued) that run at once")
	integer(&c.MaxQueued, "max-queued", "FALOCAL_MAX_QUEUED", 10000, "requests that may wait in the queue (0 = no limit)")
	str(&c.WebhookHosts, "webhook-hosts", "FALOCAL_WEBHOOK_HOSTS", "", "hosts (or *.domain) that may receive fal_webhook posts, besides loopback")
	num(&c.MaxUploadBytes, "max-upload-bytes", "FALOCAL_MAX_UPLOAD_BYTES", 1<<30, "largest uploaded file")
	str(&c.RembgModel, "rembg-model", "FALOCAL_REMBG_MODEL", "", "installed model used by imageutils/rembg and BiRefNet 'General Use (Light)' (default: the one whose manifest serves them)")
	str(&c.WhisperModel, "whisper-model", "FALOCAL_WHISPER_MODEL", "", "installed Whisper model used by fal-ai/whisper (default: the first installed)")
	str(&c.WizperModel, "wizper-model", "FALOCAL_WIZPER_MODEL", "", "installed Whisper model used by fal-ai/wizper (default: the whisper model)")
	dur(&c.MaxAudio, "max-audio-duration", "FALOCAL_MAX_AUDIO_DURATION", 4*time.Hour, "longest audio input (longer inputs get a 413)")
	str(&c.NPMRegistry, "npm-registry", "FALOCAL_NPM_REGISTRY", "https://registry.npmjs.org", "npm registry that setup downloads from")
	str(&c.LogLevel, "log-level", "FALOCAL_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "FALOCAL_LOG_FORMAT", "text", "text or json")
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
	return nil
}
