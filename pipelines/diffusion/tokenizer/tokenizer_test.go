package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// vectorFile is what tools/diffusion-ref/tokenizer_vectors.py writes.
type vectorFile struct {
	Meta    map[string]any `json:"meta"`
	Vectors []struct {
		Prompt    string  `json:"prompt"`
		Fixed     string  `json:"fixed"` // ftfy.fix_text(prompt), CLIP vectors only
		Raw       []int   `json:"raw"`
		PadEOT77  []int64 `json:"pad_eot_77"`
		PadBang77 []int64 `json:"pad_bang_77"`
		Pad512    []int64 `json:"pad_512"`
		Pad256    []int64 `json:"pad_256"`
	} `json:"vectors"`
}

func readVectors(t *testing.T, name string) vectorFile {
	t.Helper()
	var v vectorFile
	if err := json.Unmarshal(readTestdata(t, name), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) < 50 {
		t.Fatalf("%s: only %d vectors", name, len(v.Vectors))
	}
	return v
}

// readTestdata returns testdata/name, uncompressed when it ends in .gz.
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// gunzipTo writes testdata/src (gzip) uncompressed to dir/dst and returns its path.
func gunzipTo(t *testing.T, src, dir, dst string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", src))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, dst)
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeCLIPFolder lays out a diffusers tokenizer folder (vocab.json, merges.txt,
// special_tokens_map.json) built from OpenCLIP's merges the way Hugging Face's conversion does.
func writeCLIPFolder(t *testing.T, dir, pad string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "bpe_simple_vocab_16e6.txt.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	merges, err := readMerges(zr, 49152-256-2, true)
	if err != nil {
		t.Fatal(err)
	}
	vocab := map[string]int{}
	for _, r := range vocabByteOrder() {
		vocab[string(r)] = len(vocab)
	}
	for _, r := range vocabByteOrder() {
		vocab[string(r)+"</w>"] = len(vocab)
	}
	var mt strings.Builder
	mt.WriteString("#version: 0.2\n")
	for _, m := range merges {
		vocab[m[0]+m[1]] = len(vocab)
		mt.WriteString(m[0] + " " + m[1] + "\n")
	}
	vocab[clipBOS] = len(vocab)
	vocab[clipEOS] = len(vocab)
	vb, _ := json.Marshal(vocab)
	st, _ := json.Marshal(map[string]any{"bos_token": clipBOS, "eos_token": clipEOS, "unk_token": clipEOS,
		"pad_token": map[string]any{"content": pad, "lstrip": false}})
	files := map[string]string{
		"vocab.json":              filepath.Join(dir, "vocab.json"),
		"merges.txt":              filepath.Join(dir, "merges.txt"),
		"special_tokens_map.json": filepath.Join(dir, "special_tokens_map.json"),
	}
	for name, data := range map[string][]byte{"vocab.json": vb, "merges.txt": []byte(mt.String()), "special_tokens_map.json": st} {
		if err := os.WriteFile(files[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// TestCLIPVectors checks every reference prompt (transformers 4's Python CLIPTokenizer with
// ftfy): fixText against ftfy.fix_text, then the ids of all three ways of loading CLIP, raw and
// padded to 77 with either pad token.
func TestCLIPVectors(t *testing.T) {
	v := readVectors(t, "clip_vectors.json.gz")
	if len(v.Vectors) < 150 || v.Meta["ftfy"] == nil {
		t.Fatalf("clip_vectors.json.gz: %d vectors, ftfy %v", len(v.Vectors), v.Meta["ftfy"])
	}
	dir := t.TempDir()
	sd15 := writeCLIPFolder(t, mkdir(t, dir, "tokenizer"), "<|endoftext|>")
	sdxl2 := writeCLIPFolder(t, mkdir(t, dir, "tokenizer_2"), "!")
	eot, err := LoadCLIP(sd15)
	if err != nil {
		t.Fatal(err)
	}
	bang, err := LoadCLIP(sdxl2)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := LoadCLIP(map[string]string{"bpe_simple_vocab_16e6.txt.gz": filepath.Join("testdata", "bpe_simple_vocab_16e6.txt.gz")})
	if err != nil {
		t.Fatal(err)
	}
	if eot.Pad != 49407 || bang.Pad != 0 || gz.Pad != 0 || eot.BOS != 49406 || eot.EOS != 49407 {
		t.Fatalf("special ids: eot %+v bang %+v gz %+v", eot.Pad, bang.Pad, gz.Pad)
	}
	failed := 0
	for i, c := range v.Vectors {
		ok := t.Run(fmt.Sprintf("%03d", i), func(t *testing.T) {
			if got := fixText(c.Prompt); got != c.Fixed {
				t.Errorf("fixText(%q) = %q, want %q", c.Prompt, got, c.Fixed)
			}
			if got := eot.Encode(c.Prompt); !slices.Equal(got, c.Raw) {
				t.Errorf("Encode(%q): %s", c.Prompt, diff(got, c.Raw))
			}
			if got := gz.Encode(c.Prompt); !slices.Equal(got, c.Raw) {
				t.Errorf("gz Encode(%q): %s", c.Prompt, diff(got, c.Raw))
			}
			if got := eot.EncodePadded(c.Prompt, 77); !slices.Equal(got, c.PadEOT77) {
				t.Errorf("EncodePadded(%q) pad <|endoftext|>: %s", c.Prompt, diff(got, c.PadEOT77))
			}
			if got := bang.EncodePadded(c.Prompt, 77); !slices.Equal(got, c.PadBang77) {
				t.Errorf("EncodePadded(%q) pad !: %s", c.Prompt, diff(got, c.PadBang77))
			}
		})
		if !ok {
			failed++
		}
	}
	t.Logf("%d/%d CLIP vectors match", len(v.Vectors)-failed, len(v.Vectors))
}

// TestFixTextVectors checks fixText against ftfy.fix_text on every HTML5 entity (as written and
// in capitals) and on 3000 random strings of mojibake, entities and control characters.
func TestFixTextVectors(t *testing.T) {
	var v struct {
		Meta    map[string]any `json:"meta"`
		Vectors []struct {
			Prompt string `json:"prompt"`
			Fixed  string `json:"fixed"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(readTestdata(t, "ftfy_vectors.json.gz"), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) < 3000 || v.Meta["ftfy"] == nil {
		t.Fatalf("ftfy_vectors.json.gz: %d vectors, ftfy %v", len(v.Vectors), v.Meta["ftfy"])
	}
	failed := 0
	for i, c := range v.Vectors {
		if got := fixText(c.Prompt); got != c.Fixed {
			if failed++; failed <= 20 {
				t.Errorf("%04d fixText(%q) = %q, want %q", i, c.Prompt, got, c.Fixed)
			}
		}
	}
	t.Logf("%d/%d fix_text vectors match", len(v.Vectors)-failed, len(v.Vectors))
}

// diff describes where got and want part, briefly.
func diff[T int | int64](got, want []T) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("len %d/%d, first difference at %d: got %v want %v", len(got), len(want), i,
				got[max(0, i-2):min(len(got), i+4)], want[max(0, i-2):min(len(want), i+4)])
		}
	}
	return fmt.Sprintf("len %d, want %d", len(got), len(want))
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestT5Vectors(t *testing.T) {
	v := readVectors(t, "t5_vectors.json.gz")
	dir := t.TempDir()
	loaders := map[string]map[string]string{
		"tokenizer.json":    {"tokenizer.json": gunzipTo(t, "t5_tokenizer.json.gz", dir, "tokenizer.json")},
		"spiece.model":      {"spiece.model": gunzipTo(t, "t5_spiece.model.gz", dir, "spiece.model")},
		"tokenizer.json.gz": {"tokenizer.json.gz": filepath.Join("testdata", "t5_tokenizer.json.gz")},
	}
	for name, files := range loaders {
		t.Run(name, func(t *testing.T) {
			tok, err := LoadT5(files)
			if err != nil {
				t.Fatal(err)
			}
			if tok.EOS != 1 || tok.Pad != 0 || tok.Unk != 2 {
				t.Fatalf("special ids: eos %d pad %d unk %d", tok.EOS, tok.Pad, tok.Unk)
			}
			for i, c := range v.Vectors {
				if got := tok.Encode(c.Prompt); !slices.Equal(got, c.Raw) {
					t.Errorf("%02d Encode(%q): %s", i, c.Prompt, diff(got, c.Raw))
				}
				if got := tok.EncodePadded(c.Prompt, 512); !slices.Equal(got, c.Pad512) {
					t.Errorf("%02d EncodePadded(%q, 512): %s", i, c.Prompt, diff(got, c.Pad512))
				}
				if got := tok.EncodePadded(c.Prompt, 256); !slices.Equal(got, c.Pad256) {
					t.Errorf("%02d EncodePadded(%q, 256): %s", i, c.Prompt, diff(got, c.Pad256))
				}
			}
		})
	}
}

// TestFuzzVectors compares raw ids for random strings: CLIP (clip_fuzz_vectors.json.gz, 1200
// strings, both pad tokens) and T5 (fuzz_vectors.json.gz, the first 200 of them).
func TestFuzzVectors(t *testing.T) {
	var clip, t5v struct {
		Vectors []struct {
			Prompt   string `json:"prompt"`
			CLIPEOT  []int  `json:"clip_eot"`
			CLIPBang []int  `json:"clip_bang"`
			T5       []int  `json:"t5"`
		} `json:"vectors"`
	}
	for name, v := range map[string]any{"clip_fuzz_vectors.json.gz": &clip, "fuzz_vectors.json.gz": &t5v} {
		if err := json.Unmarshal(readTestdata(t, name), v); err != nil {
			t.Fatal(err)
		}
	}
	if len(clip.Vectors) < 1000 || len(t5v.Vectors) < 100 {
		t.Fatalf("only %d CLIP and %d T5 vectors", len(clip.Vectors), len(t5v.Vectors))
	}
	dir := t.TempDir()
	eot, err := LoadCLIP(writeCLIPFolder(t, mkdir(t, dir, "tokenizer"), "<|endoftext|>"))
	if err != nil {
		t.Fatal(err)
	}
	bang, err := LoadCLIP(writeCLIPFolder(t, mkdir(t, dir, "tokenizer_2"), "!"))
	if err != nil {
		t.Fatal(err)
	}
	t5, err := LoadT5(map[string]string{"tokenizer.json.gz": filepath.Join("testdata", "t5_tokenizer.json.gz")})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clip.Vectors {
		if got := eot.Encode(c.Prompt); !slices.Equal(got, c.CLIPEOT) {
			t.Errorf("%03d CLIP Encode(%q): %s", i, c.Prompt, diff(got, c.CLIPEOT))
		}
		if got := bang.Encode(c.Prompt); !slices.Equal(got, c.CLIPBang) {
			t.Errorf("%03d CLIP pad ! Encode(%q): %s", i, c.Prompt, diff(got, c.CLIPBang))
		}
	}
	for i, c := range t5v.Vectors {
		if got := t5.Encode(c.Prompt); !slices.Equal(got, c.T5) {
			t.Errorf("%03d T5 Encode(%q): %s", i, c.Prompt, diff(got, c.T5))
		}
	}
}

func TestFilesAndErrors(t *testing.T) {
	dir := t.TempDir()
	writeCLIPFolder(t, dir, "!")
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadCLIP(files)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.EncodePadded("a photo of a cat", 8); !slices.Equal(got, []int64{49406, 320, 1125, 539, 320, 2368, 49407, 0}) {
		t.Errorf("EncodePadded: %v", got)
	}
	if got := c.EncodePadded("a photo of a cat", 4); !slices.Equal(got, []int64{49406, 320, 1125, 49407}) {
		t.Errorf("EncodePadded truncated: %v", got)
	}
	if _, err := LoadCLIP(map[string]string{"merges.txt": files["merges.txt"]}); err == nil {
		t.Error("LoadCLIP without vocab.json: no error")
	}
	if _, err := LoadT5(map[string]string{"vocab.json": files["vocab.json"]}); err == nil {
		t.Error("LoadT5 without a model: no error")
	}
	if _, err := LoadT5(map[string]string{"tokenizer.json": files["vocab.json"]}); err == nil {
		t.Error("LoadT5 on a CLIP vocab.json: no error")
	}
}

func BenchmarkCLIPEncode(b *testing.B) {
	c, err := LoadCLIP(map[string]string{"bpe_simple_vocab_16e6.txt.gz": filepath.Join("testdata", "bpe_simple_vocab_16e6.txt.gz")})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c.EncodePadded("(masterpiece:1.2), a breathtaking landscape, golden hour, 8k, trending on artstation", 77)
	}
}

func BenchmarkT5Encode(b *testing.B) {
	t5, err := LoadT5(map[string]string{"tokenizer.json.gz": filepath.Join("testdata", "t5_tokenizer.json.gz")})
	if err != nil {
		b.Fatal(err)
	}
	prompt := strings.Repeat("a breathtaking panoramic landscape of an ancient elven city, ", 20)
	for b.Loop() {
		t5.EncodePadded(prompt, 512)
	}
}

// TestFixTextExamples shows what fixText does to a few prompts (each matches ftfy.fix_text).
func TestFixTextExamples(t *testing.T) {
	for in, want := range map[string]string{
		"fish &amp; chips &EACUTE;":  "fish & chips É",
		"<b>&amp;</b>":               "<b>&amp;</b>", // a "<": taken for HTML, entities stay
		"cafÃ© doesnâ€™t":            "café doesn't",
		"Ã\u00a0 bientÃ´t":           "à bientôt",
		"ÐœÐ¾Ñ\u0081ÐºÐ²Ð°":          "Москва",
		"ＬＯＵＤ\u3000ｶﾀｶﾅ":             "LOUD カタカナ",
		"“ﬁne” ‘ﬂour’":               `"fine" 'flour'`,
		"a\r\nb\u2028c\x1b[1md\x00e": "a\nb\ncde",
		"café Zürich 東京 😀":           "café Zürich 東京 😀",
	} {
		if got := fixText(in); got != want {
			t.Errorf("fixText(%q) = %q, want %q", in, got, want)
		}
	}
}
