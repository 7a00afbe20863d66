package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights"
	"github.com/falocal/falocal/weights/bundle"
)

// endpointPipelines says which installed models an endpoint can use: every
// model of these pipelines (Whisper's batched mode also needs the VAD).
var endpointPipelines = map[string][]string{
	"fal-ai/imageutils/rembg": {"rembg"},
	"fal-ai/birefnet":         {"rembg"},
	"fal-ai/birefnet/v2":      {"rembg"},
	"fal-ai/esrgan":           {"upscale"},
	"fal-ai/whisper":          {"whisper", "vad"},
	"fal-ai/wizper":           {"whisper", "vad"},
	// A key ending in "/" is a prefix: every endpoint under it.
	"fal-ai/kokoro/":              {"kokoro"},
	"fal-ai/flux/":                {"diffusion"},
	"fal-ai/fast-sdxl":            {"diffusion"},
	"fal-ai/fast-sdxl/":           {"diffusion"},
	"fal-ai/stable-diffusion-v15": {"diffusion"},
	"fal-ai/fast-turbo-diffusion": {"diffusion"},
}

func bundleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: falocal bundle create|keygen|install|inspect [flags] [file]"
	if len(args) == 0 {
		return errors.New(usage)
	}
	sub, args := args[0], args[1:]
	var out, models, endpoints, withRuntime, sign, trust, binary string
	var withBinary, verify bool
	flags := func(fs *flag.FlagSet) {
		switch sub {
		case "create":
			fs.StringVar(&out, "o", "", "the bundle file to write (e.g. site.falb)")
			fs.StringVar(&models, "models", "", "installed models to bundle, comma-separated (default: all installed)")
			fs.StringVar(&endpoints, "endpoints", "", "bundle every installed model these endpoints can use, comma-separated (e.g. fal-ai/whisper)")
			fs.StringVar(&withRuntime, "with-runtime", "", "also bundle ONNX Runtime: cpu (the library setup installed), cuda (the GPU build -ort-library names, with its provider libraries), or cpu,cuda")
			fs.BoolVar(&withBinary, "with-binary", false, "also bundle this falocal binary")
			fs.StringVar(&sign, "sign", "", "sign with this Ed25519 private key file ('falocal bundle keygen')")
		case "keygen":
			fs.StringVar(&out, "o", "", "write the private key to this file (mode 0600) and the public key to it plus .pub")
		case "install", "inspect":
			fs.StringVar(&trust, "trust", "", "Ed25519 public key file: refuse a bundle it has not signed")
		}
		if sub == "inspect" {
			fs.BoolVar(&verify, "verify", false, "also read every file and check its size and SHA-256 (nothing is written)")
		}
		if sub == "install" {
			fs.StringVar(&binary, "install-binary", "", "write the bundle's falocal binary to this path")
		}
	}
	c, fs, err := parse("bundle "+sub, args, stderr, flags)
	if err != nil {
		return err
	}
	// The bundle file may come before the flags: install site.falb -trust k.pub.
	// They are parsed again with the file last, not just the rest parsed, so
	// that a -config among them is read (parse reads the file it names).
	pos := fs.Args()
	if len(pos) > 1 {
		again := slices.Concat(args[:len(args)-len(pos)], pos[1:], pos[:1])
		if c, fs, err = parse("bundle "+sub, again, stderr, flags); err != nil {
			return err
		}
		pos = fs.Args()
	}
	log := newLogger(c, stderr)
	switch sub {
	case "keygen":
		if out == "" || len(pos) > 0 {
			return errors.New("usage: falocal bundle keygen -o NAME")
		}
		return keygen(out, stdout)
	case "create":
		if out == "" || len(pos) > 0 {
			return errors.New("usage: falocal bundle create -o FILE [-models a,b | -endpoints id,…] [-with-runtime cpu|cuda|cpu,cuda [-ort-library GPU-LIB]] [-with-binary] [-sign KEY]")
		}
		start := time.Now()
		m, err := createBundle(ctx, c, out, models, endpoints, withRuntime, withBinary, sign)
		if err != nil {
			return err
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		log.Info("bundle written", "file", out, "models", len(m.Models), "files", len(m.Files),
			"content_bytes", m.Size(), "bundle_bytes", st.Size(), "signed", sign != "", "seconds", time.Since(start).Seconds())
		fmt.Fprintf(stdout, "wrote %s: %d models, %d files, %.1f MB (%.1f MB of content)\n", out, len(m.Models), len(m.Files),
			float64(st.Size())/1e6, float64(m.Size())/1e6)
		return nil
	case "install", "inspect":
		if len(pos) != 1 {
			return fmt.Errorf("usage: falocal bundle %s FILE [-trust PUBKEY]", sub)
		}
		var key ed25519.PublicKey
		if trust != "" {
			if key, err = readPublicKey(trust); err != nil {
				return err
			}
		}
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		if sub == "inspect" {
			b, err := bundle.Open(ctxReader{ctx, f}, key)
			if err != nil {
				return fmt.Errorf("%s: %w", pos[0], err)
			}
			defer b.Close()
			printBundle(stdout, b.Manifest, b.Signature != nil, key != nil)
			if verify {
				// Each hashes every file; reading is all this needs.
				if err := b.Each(func(bundle.Entry, io.Reader) error { return nil }); err != nil {
					return fmt.Errorf("%s: %w", pos[0], err)
				}
				fmt.Fprintf(stdout, "all %d files match the manifest\n", len(b.Manifest.Files))
			}
			return nil
		}
		err = installBundle(c, ctxReader{ctx, f}, pos[0], key, binary, stdout, log)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: install interrupted; nothing was installed", pos[0])
		}
		return err
	}
	return fmt.Errorf("unknown bundle command %q; %s", sub, usage)
}

func createBundle(ctx context.Context, c *Config, out, models, endpoints, withRuntime string, withBinary bool, sign string) (*bundle.Manifest, error) {
	if models != "" && endpoints != "" {
		return nil, errors.New("give -models or -endpoints, not both")
	}
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return nil, err
	}
	picked, err := pickBundleModels(store, models, endpoints)
	if err != nil {
		return nil, err
	}
	o := bundle.CreateOptions{Store: store, Models: picked, FalocalVersion: version}
	kinds := map[string]bool{}
	for _, k := range strings.Split(withRuntime, ",") {
		if k = strings.TrimSpace(k); k == "" && withRuntime == "" {
			continue
		}
		if k != "cpu" && k != "cuda" || kinds[k] {
			return nil, fmt.Errorf("-with-runtime %q: give cpu, cuda or cpu,cuda", withRuntime)
		}
		kinds[k] = true
	}
	if kinds["cpu"] {
		lib := bundledORT(c)
		if err := fetch.VerifyFile(lib, ortSHA256); err != nil {
			return nil, fmt.Errorf("-with-runtime cpu bundles the ONNX Runtime %s library setup installs, %s: %w (run 'falocal setup' first)", ortVersion, lib, err)
		}
		rel, err := filepath.Rel(c.CacheDir, lib)
		if err != nil {
			return nil, err
		}
		o.Runtime = append(o.Runtime, bundle.RuntimeFile{Runtime: bundle.Runtime{Kind: "cpu", Version: ortVersion, Path: filepath.ToSlash(rel)}, Src: lib})
	}
	if kinds["cuda"] {
		if c.ORTLibrary == "" {
			return nil, errors.New("-with-runtime cuda bundles the ONNX Runtime GPU build this machine runs: give its library with -ort-library (or $FALOCAL_ORT_LIBRARY), e.g. -ort-library /opt/onnxruntime/lib/libonnxruntime.so.1")
		}
		r, err := gpuRuntime(c.ORTLibrary)
		if err != nil {
			return nil, err
		}
		o.Runtime = append(o.Runtime, r)
	}
	if withBinary {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if sign != "" {
		if o.Sign, err = readPrivateKey(sign); err != nil {
			return nil, err
		}
	}
	tmp := out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	m, err := bundle.Create(ctxWriter{ctx, f}, o)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return m, nil
}

var (
	// the library and its soname links; the version is the file's name
	ortLibName      = regexp.MustCompile(`^libonnxruntime\.so(\.[0-9]+)*$`)
	ortVersionName  = regexp.MustCompile(`^libonnxruntime\.so\.([0-9]+\.[0-9]+\.[0-9]+)$`)
	ortProviderName = regexp.MustCompile(`^libonnxruntime_providers_[A-Za-z0-9_]+\.so$`)
)

// gpuRuntime gathers the GPU build of ONNX Runtime that lib belongs to:
// every libonnxruntime.so* and libonnxruntime_providers_*.so in its
// directory, since ORT loads the providers from beside itself. Links into
// the directory travel as links, the files they name as files; a link to
// a file elsewhere travels as a file of its own name. Nothing here loads a
// library: this machine need not have a GPU, and loading the CUDA provider
// would need one.
func gpuRuntime(lib string) (bundle.RuntimeFile, error) {
	dir := filepath.Dir(lib)
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: the -ort-library directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return bundle.RuntimeFile{}, err
	}
	ours := func(n string) bool { return ortLibName.MatchString(n) || ortProviderName.MatchString(n) }
	type file struct{ name, src string }
	var files []file
	links := map[string]string{} // link name → file name
	for _, e := range ents {
		n := e.Name()
		if !ours(n) {
			continue
		}
		src, err := filepath.EvalSymlinks(filepath.Join(dir, n))
		if err != nil {
			return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: %w", err)
		}
		if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() {
			return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: %s is not a file", filepath.Join(dir, n))
		}
		if t := filepath.Base(src); filepath.Dir(src) == real && t != n && ours(t) {
			links[n] = t
			continue
		}
		files = append(files, file{n, src})
	}
	base := filepath.Base(lib)
	name := base
	if t, ok := links[base]; ok {
		name = t
	}
	libIdx, cuda := -1, false
	for i, f := range files {
		if f.name == name {
			libIdx = i
		}
		cuda = cuda || f.name == "libonnxruntime_providers_cuda.so"
	}
	if libIdx < 0 || !ortLibName.MatchString(name) {
		return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: -ort-library %s is not a libonnxruntime.so file", lib)
	}
	if !cuda {
		return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: %s is not a GPU build of ONNX Runtime: it has no libonnxruntime_providers_cuda.so beside %s", dir, base)
	}
	// The GPU build carries no pin and the only version probe loads the
	// library, so the version is read from the file's name.
	v := ortVersionName.FindStringSubmatch(name)
	for _, f := range files {
		// a copied soname file: the one versioned file beside it names it
		if w := ortVersionName.FindStringSubmatch(f.name); w != nil && name != f.name && !ortVersionName.MatchString(name) {
			if v != nil && v[1] != w[1] {
				return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: %s holds ONNX Runtime %s and %s: give a directory of one build", dir, v[1], w[1])
			}
			v = w
		}
	}
	if v == nil {
		return bundle.RuntimeFile{}, fmt.Errorf("-with-runtime cuda: cannot tell the ONNX Runtime version of %s from its name (want libonnxruntime.so.<major>.<minor>.<patch> in %s)", lib, dir)
	}
	d := "onnxruntime-gpu-" + v[1] + "/"
	r := bundle.RuntimeFile{Runtime: bundle.Runtime{Kind: "cuda", Version: v[1], Path: d + name}, Src: files[libIdx].src}
	for i, f := range files {
		if i != libIdx {
			r.Libs = append(r.Libs, d+f.name)
			r.LibSrcs = append(r.LibSrcs, f.src)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(links)) {
		r.Links = append(r.Links, bundle.Link{Path: d + n, Target: links[n]})
	}
	return r, nil
}

func pickBundleModels(store *weights.Store, models, endpoints string) ([]weights.Manifest, error) {
	all, err := store.List()
	if err != nil {
		return nil, err
	}
	var picked []weights.Manifest
	switch {
	case models != "":
		for _, n := range strings.Split(models, ",") {
			m, err := store.Get(strings.TrimSpace(n))
			if err != nil {
				return nil, err
			}
			picked = append(picked, m)
		}
	case endpoints != "":
		var pipes []string
		for _, id := range strings.Split(endpoints, ",") {
			id = strings.TrimSpace(id)
			p, ok := endpointPipelines[id]
			for k, v := range endpointPipelines {
				if !ok && strings.HasSuffix(k, "/") && strings.HasPrefix(id, k) {
					p, ok = v, true
				}
			}
			if !ok {
				known := slices.Sorted(func(yield func(string) bool) {
					for k := range endpointPipelines {
						if !yield(k) {
							return
						}
					}
				})
				return nil, fmt.Errorf("endpoint %q: bundle knows %s (or use -models)", id, strings.Join(known, ", "))
			}
			pipes = append(pipes, p...)
		}
		for _, m := range all {
			if slices.Contains(pipes, m.Pipeline) {
				picked = append(picked, m)
			}
		}
	default:
		picked = all
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("no installed model to bundle in %s", store.Dir())
	}
	return picked, nil
}

func installBundle(c *Config, f io.Reader, name string, key ed25519.PublicKey, binary string, stdout io.Writer, log *slog.Logger) error {
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := bundle.Install(f, store, bundle.InstallOptions{Trust: key, CacheDir: c.CacheDir, Binary: binary})
	if err != nil {
		return fmt.Errorf("%s: %w (nothing was installed)", name, err)
	}
	switch {
	case res.Verified:
		log.Info("bundle signature verified", "file", name)
	case res.Signed:
		log.Warn("bundle is signed but its signature was not checked: give -trust PUBKEY to check it", "file", name)
	default:
		log.Warn("bundle is unsigned: its contents match its own manifest, but nothing proves who made it", "file", name)
	}
	var gpuLib string
	for _, r := range res.Manifest.Runtime {
		if r.Kind == "cpu" && r.Version != ortVersion {
			log.Warn("the bundle's ONNX Runtime is not the version this falocal loads by default: point -ort-library at it",
				"bundled", r.Version, "path", filepath.Join(c.CacheDir, filepath.FromSlash(r.Path)), "want", ortVersion)
		}
		if r.Kind == "cuda" {
			gpuLib = filepath.Join(c.CacheDir, filepath.FromSlash(r.Path))
		}
	}
	var names []string
	for _, m := range res.Manifest.Models {
		names = append(names, m.Name)
	}
	log.Info("bundle installed", "file", name, "models", names, "written", res.Written, "skipped", res.Skipped,
		"seconds", time.Since(start).Seconds())
	fmt.Fprintf(stdout, "installed %s: %s into %s (%d files written, %d already present)\n", name,
		strings.Join(names, ", "), c.DataDir, res.Written, res.Skipped)
	if gpuLib != "" {
		// serve loads the pinned CPU build unless told otherwise
		fmt.Fprintf(stdout, "installed the ONNX Runtime GPU build; serve uses it with -ort-library %s\n", gpuLib)
		if c.ConfigFile != "" {
			fmt.Fprintf(stdout, "or in %s: ort-library = %s\n", c.ConfigFile, strconv.Quote(gpuLib))
		} else {
			fmt.Fprintf(stdout, "or FALOCAL_ORT_LIBRARY=%s, or ort-library = %s in a -config file\n", gpuLib, strconv.Quote(gpuLib))
		}
		fmt.Fprintln(stdout, "CUDA and cuDNN are not in the bundle: they come with the site's NVIDIA driver and CUDA libraries (or the nvidia/cuda image)")
	}
	return nil
}

func printBundle(w io.Writer, m *bundle.Manifest, signed, verified bool) {
	sig := "unsigned"
	if verified {
		sig = "signed, signature verified"
	} else if signed {
		sig = "signed (not checked: give -trust PUBKEY)"
	}
	fmt.Fprintf(w, "format %d, made %s by falocal %s on %s/%s, %s\n", m.Format, m.Created.Format(time.RFC3339),
		m.FalocalVersion, m.GOOS, m.GOARCH, sig)
	fmt.Fprintf(w, "%d files, %.1f MB\n", len(m.Files), float64(m.Size())/1e6)
	for _, man := range m.Models {
		var size int64
		for _, f := range man.Files {
			size += f.Size
		}
		fmt.Fprintf(w, "model    %s (%s, %d files, %.1f MB)\n", man.Name, man.Pipeline, len(man.Files), float64(size)/1e6)
	}
	for _, r := range m.Runtime {
		switch r.Kind {
		case "cuda":
			fmt.Fprintf(w, "runtime  cuda ONNX Runtime %s, the site's own GPU build (no pin: checked against this manifest only): %s\n", r.Version, r.Path)
		default:
			fmt.Fprintf(w, "runtime  %s ONNX Runtime %s: %s\n", r.Kind, r.Version, r.Path)
		}
		for _, l := range r.Libs {
			fmt.Fprintf(w, "         + %s\n", l)
		}
		for _, l := range r.Links {
			fmt.Fprintf(w, "         link %s -> %s\n", l.Path, l.Target)
		}
	}
	if m.Binary != "" {
		fmt.Fprintf(w, "binary   %s\n", m.Binary)
	}
	for _, e := range m.Files {
		fmt.Fprintf(w, "file     %s %d %s\n", e.Path, e.Size, e.SHA256)
	}
}

func keygen(name string, stdout io.Writer) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pp, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	// O_EXCL: never overwrite a key that may already have signed bundles.
	write := func(p string, mode os.FileMode, block *pem.Block) error {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		err = pem.Encode(f, block)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if err := write(name, 0o600, &pem.Block{Type: "PRIVATE KEY", Bytes: pk}); err != nil {
		return err
	}
	if err := write(name+".pub", 0o644, &pem.Block{Type: "PUBLIC KEY", Bytes: pp}); err != nil {
		os.Remove(name)
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (private, keep it on the connected side) and %s.pub (copy it to the sites)\n", name, name)
	return nil
}

func readPEM(p, typ string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s: not a PEM %s ('falocal bundle keygen' makes them)", p, typ)
	}
	return blk.Bytes, nil
}

func readPrivateKey(p string) (ed25519.PrivateKey, error) {
	b, err := readPEM(p, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, want an Ed25519 key", p, k)
	}
	return ek, nil
}

func readPublicKey(p string) (ed25519.PublicKey, error) {
	b, err := readPEM(p, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, want an Ed25519 key", p, k)
	}
	return ek, nil
}

// ctxReader and ctxWriter stop a bundle's stream when the command is
// interrupted (SIGINT, SIGTERM), so that it ends through the same clean-up
// as any other failure.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
