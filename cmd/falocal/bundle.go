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
	"os"
	"path/filepath"
	"slices"
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
	c, fs, err := parse("bundle "+sub, args, stderr, func(fs *flag.FlagSet) {
		switch sub {
		case "create":
			fs.StringVar(&out, "o", "", "the bundle file to write (e.g. site.falb)")
			fs.StringVar(&models, "models", "", "installed models to bundle, comma-separated (default: all installed)")
			fs.StringVar(&endpoints, "endpoints", "", "bundle every installed model these endpoints can use, comma-separated (e.g. fal-ai/whisper)")
			fs.StringVar(&withRuntime, "with-runtime", "", "also bundle the ONNX Runtime library setup installed: cpu")
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
	})
	if err != nil {
		return err
	}
	// The bundle file may come before the flags: install site.falb -trust k.pub.
	pos := fs.Args()
	if len(pos) > 0 {
		if err := fs.Parse(pos[1:]); err != nil {
			return err
		}
		pos = append([]string{pos[0]}, fs.Args()...)
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
			return errors.New("usage: falocal bundle create -o FILE [-models a,b | -endpoints id,…] [-with-runtime cpu] [-with-binary] [-sign KEY]")
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
	switch withRuntime {
	case "":
	case "cpu":
		lib := bundledORT(c)
		if err := fetch.VerifyFile(lib, ortSHA256); err != nil {
			return nil, fmt.Errorf("-with-runtime cpu bundles the ONNX Runtime %s library setup installs, %s: %w (run 'falocal setup' first)", ortVersion, lib, err)
		}
		rel, err := filepath.Rel(c.CacheDir, lib)
		if err != nil {
			return nil, err
		}
		o.Runtime = []bundle.RuntimeFile{{Runtime: bundle.Runtime{Kind: "cpu", Version: ortVersion, Path: filepath.ToSlash(rel)}, Src: lib}}
	default:
		return nil, fmt.Errorf("-with-runtime %q: only cpu can be bundled", withRuntime)
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
	for _, r := range res.Manifest.Runtime {
		if r.Kind == "cpu" && r.Version != ortVersion {
			log.Warn("the bundle's ONNX Runtime is not the version this falocal loads by default: point -ort-library at it",
				"bundled", r.Version, "path", filepath.Join(c.CacheDir, filepath.FromSlash(r.Path)), "want", ortVersion)
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
		fmt.Fprintf(w, "runtime  %s ONNX Runtime %s: %s\n", r.Kind, r.Version, r.Path)
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
