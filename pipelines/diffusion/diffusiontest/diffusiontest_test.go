package diffusiontest_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines/diffusion/diffusiontest"
	"github.com/falocal/falocal/pipelines/diffusion/scheduler"
	"github.com/falocal/falocal/pipelines/diffusion/tokenizer"
)

func write(t *testing.T, o diffusiontest.Options) string {
	t.Helper()
	dir := t.TempDir()
	if err := diffusiontest.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	return dir
}

func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := tokenizer.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestTokenizers loads the tokenizers written with the tokenizer package.
func TestTokenizers(t *testing.T) {
	v := diffusiontest.CLIPVocab()
	if len(v) != 512+9+2 || v["<|endoftext|>"] != len(v)-1 || v["!"] != 0 || v["!</w>"] != 256 {
		t.Fatalf("vocabulary of %d, <|endoftext|> %d", len(v), v["<|endoftext|>"])
	}
	sdxl := write(t, diffusiontest.Options{Family: diffusiontest.SDXL})
	for _, c := range []struct {
		dir string
		pad int
	}{{"tokenizer", v["<|endoftext|>"]}, {"tokenizer_2", 0}} {
		tok, err := tokenizer.LoadCLIP(files(t, filepath.Join(sdxl, c.dir)))
		if err != nil {
			t.Fatal(err)
		}
		got := tok.Encode("A photo of a cat, dog!")
		want := []int{v["<|startoftext|>"], v["a</w>"], v["photo</w>"], v["of</w>"], v["a</w>"], v["cat</w>"], v[",</w>"], v["dog</w>"]}
		if c.dir == "tokenizer_2" {
			want = append(want, 0) // "!" is the pad token, special
		} else {
			want = append(want, v["!</w>"])
		}
		want = append(want, v["<|endoftext|>"])
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", c.dir, got, want)
		}
		if tok.Pad != c.pad {
			t.Errorf("%s: pad %d, want %d", c.dir, tok.Pad, c.pad)
		}
		if p := tok.EncodePadded("cat", diffusiontest.CLIPLength); len(p) != diffusiontest.CLIPLength || p[3] != int64(c.pad) {
			t.Errorf("%s: padded %v", c.dir, p)
		}
	}

	flux := write(t, diffusiontest.Options{Family: diffusiontest.Flux})
	t5, err := tokenizer.LoadT5(files(t, filepath.Join(flux, "tokenizer_2")))
	if err != nil {
		t.Fatal(err)
	}
	got := t5.EncodePadded("a photo of a Cat€", diffusiontest.T5MaxLength)
	// ▁a ▁photo ▁of ▁a ▁ C a t <unk> </s> <pad>...
	want := []int64{4, 5, 6, 4, 3, 38, 10, 29, 2, 1, 0, 0, 0, 0, 0, 0}
	if !slices.Equal(got, want) {
		t.Errorf("T5: %v, want %v", got, want)
	}
	var tc struct {
		ModelMaxLength int `json:"model_max_length"`
	}
	b, err := os.ReadFile(filepath.Join(flux, "tokenizer_2", "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tc); err != nil || tc.ModelMaxLength != diffusiontest.T5MaxLength {
		t.Errorf("tokenizer_config.json: %s (%v)", b, err)
	}
}

// TestSchedulers parses the scheduler configs written.
func TestSchedulers(t *testing.T) {
	for _, c := range []struct {
		o     diffusiontest.Options
		class string
	}{
		{diffusiontest.Options{Family: diffusiontest.SD}, "EulerDiscreteScheduler"},
		{diffusiontest.Options{Family: diffusiontest.SDXL}, "EulerDiscreteScheduler"},
		{diffusiontest.Options{Family: diffusiontest.Flux}, scheduler.ClassFlowMatch},
		{diffusiontest.Options{Family: diffusiontest.Flux, Guidance: true}, scheduler.ClassFlowMatch},
	} {
		b, err := os.ReadFile(filepath.Join(write(t, c.o), "scheduler", "scheduler_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := scheduler.FromJSON(b, "")
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if s.Config().ClassName != c.class {
			t.Errorf("%s: class %s, want %s", c.o.Family, s.Config().ClassName, c.class)
		}
	}
}

// TestOptionsChecked: options that do not fit the family are errors.
func TestOptionsChecked(t *testing.T) {
	for _, o := range []diffusiontest.Options{
		{},
		{Family: "sd3"},
		{Family: diffusiontest.SD, Guidance: true},
		{Family: diffusiontest.SDXL, IDsInt64: true},
		{Family: diffusiontest.Flux, TimestepCond: 8},
		{Family: diffusiontest.Flux, FixedSize: [2]int{64, 40}},
		{Family: diffusiontest.SD, FixedSize: [2]int{64, 60}},
		{Family: diffusiontest.SD, FixedSize: [2]int{64, 64}, RunsOnlyAt: [2]int{64, 64}},
		{Family: diffusiontest.SD, ContribOp: "Attention"},
	} {
		if err := diffusiontest.Write(t.TempDir(), o); err == nil || !strings.HasPrefix(err.Error(), "diffusiontest: ") {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
