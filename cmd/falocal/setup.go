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
	"text/tabwriter"

	"github.com/falocal/falocal/api/files"
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

// installORT fetches, extracts and verifies the pinned CPU library.
func installORT(ctx context.Context, c *Config, fc *fetch.Client, log *slog.Logger) error {
	dst := bundledORT(c)
	tgz, err := fc.Get(ctx, ortPackage)
	if err != nil {
		return err
	}
	if err := fetch.ExtractTarGz(tgz, map[string]string{"package/bin/napi-v6/linux/x64/libonnxruntime.so.1": dst}); err != nil {
		return err
	}
	if err := fetch.VerifyFile(dst, ortSHA256); err != nil {
		os.Remove(dst)
		return err
	}
	log.Info("installed ONNX Runtime", "version", ortVersion, "path", dst)
	return nil
}

// setupResult is what setup did, for its summary.
type setupResult struct {
	ortPath, ortVersion, ortState string
	models                        []setupModel
	downloaded                    int64
}

type setupModel struct {
	name, state string
	size        int64
}

func setupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var models string
	c, _, err := parse("setup", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&models, "models", "default", "models to install: default, all, or a comma list of catalog names")
	})
	if err != nil {
		return err
	}
	// On a terminal the log goes through the progress display, above its
	// status line; JSON logs are for machines, so they get plain lines.
	tty := isTerminal(stderr) && c.LogFormat != "json"
	var log *slog.Logger
	var prog *progress
	if tty {
		prog = newProgress(stderr, true, nil)
		log = newLogger(c, prog)
	} else {
		log = newLogger(c, stderr)
		prog = newProgress(stderr, false, log)
	}
	res, err := setup(ctx, c, models, prog, log)
	prog.close()
	if err != nil {
		return err
	}
	printSetupSummary(stdout, c, res)
	return nil
}

// setup installs the runtime library and the models that spec names,
// showing its progress on prog.
func setup(ctx context.Context, c *Config, spec string, prog *progress, log *slog.Logger) (*setupResult, error) {
	recipes, err := pickRecipes(spec)
	if err != nil {
		return nil, err
	}
	fc := fetcher(c, log)
	fc.Log, fc.Progress = nil, prog.track // prog tells of each download
	res := &setupResult{}
	if c.ORTLibrary == "" {
		res.ortPath, res.ortVersion, res.ortState = bundledORT(c), ortVersion, "already present"
		if fetch.VerifyFile(res.ortPath, ortSHA256) != nil {
			prog.begin("installing", "ONNX Runtime "+ortVersion)
			err := installORT(ctx, c, fc, log)
			prog.end(err)
			if err != nil {
				return nil, fmt.Errorf("install ONNX Runtime: %w", err)
			}
			res.ortState = "installed"
		}
	} else {
		res.ortPath, res.ortState = c.ORTLibrary, "your own (-ort-library)"
		// Loaded only for its version: serve (and doctor) say more when
		// it fails.
		if rt, _, err := openRuntime(c, slog.New(slog.DiscardHandler)); err != nil {
			res.ortState += ", which does not load: " + err.Error()
		} else {
			res.ortVersion = rt.Info().Version
		}
	}
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return nil, err
	}
	for _, r := range recipes {
		state := "installed"
		if m, err := store.Get(r.Name); err == nil {
			if r.Outdated(m) {
				log.Info("reinstalling model installed by an older falocal", "model", r.Name)
				state = "reinstalled (was older)"
			} else if err := store.Verify(r.Name); err == nil {
				res.models = append(res.models, setupModel{r.Name, "already present", modelSize(m)})
				continue
			} else {
				log.Warn("reinstalling model that failed verification", "model", r.Name, "err", err)
				state = "reinstalled (failed verification)"
			}
		} else if !errors.Is(err, weights.ErrNotInstalled) {
			return nil, err
		}
		prog.begin("installing model", r.Name)
		err := r.Install(ctx, store, fc)
		prog.end(err)
		if err != nil {
			return nil, fmt.Errorf("install %s: %w", r.Name, err)
		}
		m, err := store.Get(r.Name)
		if err != nil {
			return nil, err
		}
		res.models = append(res.models, setupModel{r.Name, state, modelSize(m)})
	}
	res.downloaded = prog.downloadedBytes()
	return res, nil
}

func modelSize(m weights.Manifest) int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// printSetupSummary tells what is installed, where, and what to run next.
func printSetupSummary(w io.Writer, c *Config, r *setupResult) {
	fmt.Fprintln(w, "setup complete")
	ver := r.ortVersion
	if ver == "" {
		ver = "version unknown"
	}
	fmt.Fprintf(w, "\nONNX Runtime %s: %s\n  %s\n", ver, r.ortState, r.ortPath)
	store := c.DataDir
	if abs, err := filepath.Abs(store); err == nil {
		store = abs
	}
	fmt.Fprintf(w, "\nmodels (store %s):\n", store)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	var total int64
	for _, m := range r.models {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", m.name, files.HumanBytes(m.size), m.state)
		total += m.size
	}
	tw.Flush()
	if len(r.models) == 0 {
		fmt.Fprintln(w, "  none named by -models")
	}
	fmt.Fprintf(w, "  %d model(s), %s\n", len(r.models), files.HumanBytes(total))
	fmt.Fprintf(w, "\ndownloaded: %s\ndata dir:   %s\ncache dir:  %s\n", files.HumanBytes(r.downloaded), c.DataDir, c.CacheDir)
	fmt.Fprintln(w, "\nnext: 'falocal serve' to serve the API ('falocal doctor' checks this machine first)")
}

// pickRecipes reads -models: default, all, or catalog names, comma
// separated. A name not in the catalog is an error, not a silent no-op.
func pickRecipes(spec string) ([]weights.Recipe, error) {
	var out []weights.Recipe
	names := map[string]bool{}
	for _, n := range strings.Split(spec, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names[n] = true
		}
	}
	for n := range names {
		if _, ok := weights.Lookup(n); !ok && n != "all" && n != "default" {
			return nil, fmt.Errorf("-models: no model %q in the catalog ('falocal weights list' lists them)", n)
		}
	}
	for _, r := range weights.Catalog() {
		if names["all"] || (names["default"] && r.Default) || names[r.Name] {
			out = append(out, r)
		}
	}
	return out, nil
}
