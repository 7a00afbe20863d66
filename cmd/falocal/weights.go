package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion"
	"github.com/falocal/falocal/weights"
)

func weightsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: falocal weights list|verify|install|remove|import|export|convert [flags] [names]")
	}
	sub, args := args[0], args[1:]
	var imp importArgs
	var exportDir, precision, convName string
	c, fs, err := parse("weights "+sub, args, stderr, func(fs *flag.FlagSet) {
		if sub == "convert" {
			fs.StringVar(&precision, "precision", "fp16", "what the copy computes in: fp16 (for GPUs' tensor cores) or fp32")
			fs.StringVar(&convName, "name", "", "the copy's name (default: NAME-fp16 or NAME-fp32)")
		}
		if sub == "import" {
			imp.bind(fs)
		}
		if sub == "export" {
			fs.StringVar(&exportDir, "o", "", "folder to write the model's files into, under their own names")
		}
	})
	if err != nil {
		return err
	}
	names := fs.Args()
	if (sub == "export" || sub == "convert") && len(names) > 0 { // the name may come before the flags
		if err := fs.Parse(names[1:]); err != nil {
			return err
		}
		names = append(names[:1:1], fs.Args()...)
	}
	log := newLogger(c, stderr)
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		all, err := store.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPIPELINE\tSIZE\tDTYPE\tMEMORY\tSERVES")
		for _, m := range all {
			var size int64
			var dtypes []string
			for _, f := range m.Files {
				size += f.Size
				dtypes = append(dtypes, f.DType)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f MB\t%s\t%.1f GB\t%s\n", m.Name, m.Pipeline, float64(size)/1e6,
				strings.Join(dtypes, ","), float64(m.MemoryBytes)/1e9, strings.Join(m.Serves, "; "))
		}
		tw.Flush()
		fmt.Fprintln(stdout, "\navailable to install:")
		for _, r := range weights.Catalog() {
			fmt.Fprintf(stdout, "  %s — %s\n", r.Name, r.Description)
		}
		return nil
	case "verify":
		if len(names) == 0 {
			all, err := store.List()
			if err != nil {
				return err
			}
			for _, m := range all {
				names = append(names, m.Name)
			}
		}
		bad := 0
		for _, n := range names {
			if err := store.Verify(n); err != nil {
				fmt.Fprintf(stdout, "FAIL %s: %v\n", n, err)
				bad++
				continue
			}
			fmt.Fprintf(stdout, "ok   %s\n", n)
		}
		if bad > 0 {
			return fmt.Errorf("%d model(s) failed verification", bad)
		}
		return nil
	case "install":
		if len(names) == 0 {
			return fmt.Errorf("name the models to install (see 'falocal weights list')")
		}
		for _, n := range names {
			r, ok := weights.Lookup(n)
			if !ok {
				return fmt.Errorf("no model %q in the catalog", n)
			}
			if err := r.Install(ctx, store, fetcher(c, log)); err != nil {
				return fmt.Errorf("install %s: %w", n, err)
			}
			fmt.Fprintln(stdout, "installed", n)
		}
		return nil
	case "remove":
		for _, n := range names {
			if err := store.Remove(n); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "removed", n)
		}
		return nil
	case "export":
		if len(names) != 1 || exportDir == "" {
			return fmt.Errorf("usage: falocal weights export -o DIR NAME")
		}
		n, err := exportModel(store, names[0], exportDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "exported %s: %d files into %s\n", names[0], n, exportDir)
		return nil
	case "convert":
		if len(names) != 1 {
			return fmt.Errorf("usage: falocal weights convert [-precision fp16|fp32] [-name NEW] NAME")
		}
		m, err := store.Convert(names[0], precision, convName)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "converted %s: %s computes in %s (%s)\n", names[0], m.Name, precision, m.Files[0].SHA256)
		return nil
	case "import":
		m, err := imp.run(ctx, c, log, store)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "imported %s (%s)\n", m.Name, m.Pipeline)
		return nil
	}
	return fmt.Errorf("unknown weights command %q", sub)
}

// importArgs records a user's own ONNX file, e.g. a BiRefNet export:
//
//	falocal weights import -name my-x4 -pipeline upscale -file RealESRGAN_x4_wdn.onnx -serves esrgan:RealESRGAN_x4_wdn_v3 -param scale=4
//	falocal weights import -name birefnet-portrait -pipeline rembg -file BiRefNet-portrait.onnx \
//	  -serves 'birefnet:Portrait' -param size=1024 -param mean=0.485,0.456,0.406 \
//	  -param std=0.229,0.224,0.225 -param scale=255 -param activation=sigmoid
type importArgs struct {
	name, pipeline, file, dir, dtype string
	computeType                      string
	serves, params                   multi
	memory                           int64
	check                            bool
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func (a *importArgs) bind(fs *flag.FlagSet) {
	fs.StringVar(&a.name, "name", "", "model name in the store")
	fs.StringVar(&a.pipeline, "pipeline", "rembg", "pipeline that runs it")
	fs.StringVar(&a.file, "file", "", "ONNX file to import (copied into the store)")
	fs.StringVar(&a.dir, "dir", "", "directory of a multi-file export to import whole, e.g. optimum's Whisper export")
	fs.StringVar(&a.dtype, "dtype", "fp32", "weight type, for the record")
	fs.StringVar(&a.computeType, "compute-type", "default", "whisper, faster-whisper directories: linear layers' weight type: default (int8 stays int8, the rest float32), float32, or int8 (quantised per row)")
	fs.Var(&a.serves, "serves", "what it serves, e.g. 'rembg' or 'birefnet:Portrait' (repeatable)")
	fs.Var(&a.params, "param", "pipeline setting key=value (repeatable): input, output, size, mean, std, scale, activation")
	fs.Int64Var(&a.memory, "memory", 0, "resident memory estimate in bytes (default: 4x the file size + 1 GiB)")
	fs.BoolVar(&a.check, "check", true, "diffusion: load every component and run a one-step generation at two sizes before recording the model")
}

func (a *importArgs) run(ctx context.Context, c *Config, log *slog.Logger, store *weights.Store) (weights.Manifest, error) {
	if a.dir != "" {
		return a.runDir(ctx, c, log, store)
	}
	if a.name == "" || a.file == "" {
		return weights.Manifest{}, fmt.Errorf("import needs -name and -file (or -dir)")
	}
	// Defaults are what the usual exports of each family expect: BiRefNet
	// (ImageNet normalisation, logits) and Real-ESRGAN (RGB 0..1, x4).
	params := map[string]string{"input": "input", "output": "output"}
	switch a.pipeline {
	case "rembg":
		maps.Copy(params, map[string]string{"size": "1024", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225",
			"scale": "255", "activation": "sigmoid"})
	case "upscale":
		maps.Copy(params, map[string]string{"scale": "4", "tile_pad": "10"})
	}
	for _, kv := range a.params {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return weights.Manifest{}, fmt.Errorf("-param %q: want key=value", kv)
		}
		params[k] = v
	}
	tmp, err := store.TempDir()
	if err != nil {
		return weights.Manifest{}, err
	}
	defer os.RemoveAll(tmp)
	cp := filepath.Join(tmp, "model.onnx")
	if err := copyPath(a.file, cp); err != nil {
		return weights.Manifest{}, err
	}
	f, err := store.AddBlob(cp, "model", filepath.Base(a.file), a.dtype, "")
	if err != nil {
		return weights.Manifest{}, err
	}
	mem := a.memory
	if mem == 0 {
		mem = 4*f.Size + 1<<30
	}
	m := weights.Manifest{Name: a.name, Pipeline: a.pipeline, Files: []weights.File{f}, MemoryBytes: mem,
		Serves: a.serves, Params: params, Source: "imported from " + a.file}
	return m, store.Put(m)
}

// runDir imports a directory export whole; its files keep their names.
func (a *importArgs) runDir(ctx context.Context, c *Config, log *slog.Logger, store *weights.Store) (weights.Manifest, error) {
	if a.name == "" || a.file != "" {
		return weights.Manifest{}, fmt.Errorf("import -dir needs -name and no -file")
	}
	params := map[string]string{}
	for _, kv := range a.params {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return weights.Manifest{}, fmt.Errorf("-param %q: want key=value", kv)
		}
		params[k] = v
	}
	if a.computeType != "default" && !(a.pipeline == "whisper" && weights.IsCT2Dir(a.dir)) {
		return weights.Manifest{}, fmt.Errorf("-compute-type applies to a faster-whisper (CTranslate2) directory imported with -pipeline whisper")
	}
	if a.pipeline == "whisper" && weights.IsCT2Dir(a.dir) {
		// a faster-whisper (CTranslate2) model directory: converted to ONNX
		params["compute_type"] = a.computeType
		return store.ImportWhisperCT2(a.dir, weights.Manifest{Name: a.name, Pipeline: a.pipeline,
			Serves: a.serves, Params: params, Source: "imported from " + a.dir})
	}
	if check, ok := dirChecks[a.pipeline]; ok {
		if err := check(a.dir); err != nil {
			return weights.Manifest{}, err
		}
	}
	var prepare func(name, path string) error
	if a.pipeline == "diffusion" || a.pipeline == "kokoro" {
		// float16 graph inputs/outputs become float32 (Cast nodes at the
		// edges): the engine cannot take runtime-sized float16 outputs
		prepare = func(name, path string) error {
			if !strings.HasSuffix(name, ".onnx") {
				return nil
			}
			_, err := weights.Float32IO(path)
			return err
		}
	}
	files, err := store.AddDirWith(a.dir, a.dtype, prepare)
	if err != nil {
		return weights.Manifest{}, err
	}
	mem := a.memory
	if mem == 0 {
		// sessions hold about their weights once more in arena and working
		// buffers; the rest (tokenizer, configs) is small
		for _, f := range files {
			mem += 2 * f.Size
		}
		mem += 256 << 20
	}
	m := weights.Manifest{Name: a.name, Pipeline: a.pipeline, Files: files, MemoryBytes: mem,
		Serves: a.serves, Params: params, Source: "imported from " + a.dir}
	if a.pipeline == "diffusion" && a.check {
		limits, err := checkDiffusion(ctx, c, log, store, m)
		if err != nil {
			store.GC() // the copied files belong to no model
			return weights.Manifest{}, fmt.Errorf("%s was not imported: %w\n(-check=false imports it unchecked)", a.dir, err)
		}
		maps.Copy(m.Params, limits)
		log.Info("export checked", "model", m.Name, "sizes", cmp.Or(limits["sizes"], "any multiple of the model's grid"))
	}
	return m, store.Put(m)
}

// checkDiffusion runs diffusion.Check on a model about to be recorded,
// with the runtime and providers a server started with the same flags uses.
func checkDiffusion(ctx context.Context, c *Config, log *slog.Logger, store *weights.Store, m weights.Manifest) (map[string]string, error) {
	rt, providers, err := openRuntime(c, log)
	if err != nil {
		return nil, fmt.Errorf("checking the export needs ONNX Runtime: %w", err)
	}
	log.Info("checking the export: loading every component and generating at two small sizes", "model", m.Name)
	deps := pipelines.Deps{Store: store, Runtime: rt, Ops: engine.CPUOps(), Log: log,
		Config: pipelines.Config{SessionsPerModel: 1, Models: map[string]string{}}, Session: newSessionPolicy(c, providers).spec}
	return diffusion.Check(ctx, deps, m)
}

// dirChecks reject a directory that cannot be a model of the pipeline before
// anything is copied.
var dirChecks = map[string]func(dir string) error{
	"diffusion": func(dir string) error {
		has := func(n string) bool { _, err := os.Stat(filepath.Join(dir, n)); return err == nil }
		var missing []string
		if !has("unet/model.onnx") && !has("transformer/model.onnx") {
			missing = append(missing, "unet/model.onnx or transformer/model.onnx")
		}
		for _, n := range []string{"text_encoder/model.onnx", "vae_decoder/model.onnx",
			"scheduler/scheduler_config.json", "tokenizer/vocab.json"} {
			if !has(n) {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s is not a diffusers ONNX export (optimum layout): missing %s", dir, strings.Join(missing, ", "))
		}
		return nil
	},
	"kokoro": weights.CheckKokoroDir,
	"whisper": func(dir string) error {
		has := func(n string) bool { _, err := os.Stat(filepath.Join(dir, n)); return err == nil }
		var missing []string
		for _, n := range []string{"encoder_model.onnx", "config.json", "vocab.json"} {
			if !has(n) {
				missing = append(missing, n)
			}
		}
		if !has("decoder_model_merged.onnx") && !(has("decoder_model.onnx") && has("decoder_with_past_model.onnx")) {
			missing = append(missing, "decoder_model_merged.onnx (or decoder_model.onnx + decoder_with_past_model.onnx)")
		}
		if !has("added_tokens.json") && !has("tokenizer.json") {
			missing = append(missing, "added_tokens.json or tokenizer.json")
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s is not an optimum Whisper export: missing %s", dir, strings.Join(missing, ", "))
		}
		return nil
	},
}

func copyPath(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
