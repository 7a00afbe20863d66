package whisperonnx_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/weights"
	"github.com/falocal/falocal/weights/ct2"
	"github.com/falocal/falocal/weights/whisperonnx"
	"github.com/falocal/falocal/weights/whisperonnx/whisperonnxtest"
)

const tinyMultiDir = "../../pipelines/whisper/testdata/tiny-multi"

// The export has optimum's files, graph inputs and outputs, and a
// config.json whose fields the pipeline reads equal the original's.
func TestLayout(t *testing.T) {
	m, err := whisperonnxtest.FromOptimum(tinyMultiDir, whisperonnxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ct2cfg := []byte(`{"alignment_heads": [[1, 0], [1, 1]], "suppress_ids": [1, 2], "suppress_ids_begin": [220, 50257], "lang_ids": [50259, 50260]}`)
	info, err := whisperonnx.FromCT2(m, dir, whisperonnx.Options{CT2Config: ct2cfg})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json", "generation_config.json"}
	if !slices.Equal(info.Files, want) {
		t.Errorf("files %v, want %v", info.Files, want)
	}
	// the same inputs and outputs as optimum's, less the with-past
	// decoder's cache_position (its positions come from the cache length)
	for _, f := range want[:3] {
		gi, gotOut, err := weights.ONNXIO(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		ri, refOut, err := weights.ONNXIO(filepath.Join(tinyMultiDir, f))
		if err != nil {
			t.Fatal(err)
		}
		ri = slices.DeleteFunc(ri, func(s string) bool { return s == "cache_position" })
		// and the decoders' extra last output, the alignment heads' cross-attention
		if f != whisperonnx.EncoderFile {
			if n := len(gotOut); n == 0 || gotOut[n-1] != whisperonnx.CrossAttentionsOutput {
				t.Errorf("%s: outputs %v do not end with %s", f, gotOut, whisperonnx.CrossAttentionsOutput)
			} else {
				gotOut = gotOut[:n-1]
			}
		}
		if !slices.Equal(gi, ri) || !slices.Equal(gotOut, refOut) {
			t.Errorf("%s: inputs %v outputs %v, optimum %v %v", f, gi, gotOut, ri, refOut)
		}
	}
	read := func(p string) map[string]any {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	got, ref := read(filepath.Join(dir, "config.json")), read(filepath.Join(tinyMultiDir, "config.json"))
	for _, k := range []string{"d_model", "decoder_attention_heads", "decoder_layers", "decoder_ffn_dim", "encoder_attention_heads",
		"encoder_layers", "encoder_ffn_dim", "num_mel_bins", "vocab_size", "max_target_positions", "max_source_positions",
		"model_type", "architectures", "activation_function", "bos_token_id", "eos_token_id", "decoder_start_token_id", "pad_token_id"} {
		if fmt.Sprint(got[k]) != fmt.Sprint(ref[k]) {
			t.Errorf("config.json %s = %v, optimum has %v", k, got[k], ref[k])
		}
	}
	gen := read(filepath.Join(dir, "generation_config.json"))
	if fmt.Sprint(gen["alignment_heads"]) != "[[1 0] [1 1]]" || fmt.Sprint(gen["begin_suppress_tokens"]) != "[220 50257]" || gen["is_multilingual"] != true {
		t.Errorf("generation_config.json: %v", gen)
	}
	if info.Params == 0 {
		t.Error("no parameters counted")
	}
}

func TestRejects(t *testing.T) {
	good := func() *ct2.Model {
		m, err := whisperonnxtest.FromOptimum(tinyMultiDir, whisperonnxtest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cases := map[string]func(m *ct2.Model){
		"other spec":      func(m *ct2.Model) { m.Spec = "TransformerSpec" },
		"no embeddings":   func(m *ct2.Model) { delete(m.Tensors, "decoder/embeddings/weight") },
		"no conv2":        func(m *ct2.Model) { delete(m.Tensors, "encoder/conv2/weight") },
		"no heads":        func(m *ct2.Model) { delete(m.Tensors, "decoder/num_heads") },
		"relu":            func(m *ct2.Model) { m.Tensors["decoder/activation"].Data = []byte{0} },
		"scaled embed":    func(m *ct2.Model) { m.Tensors["decoder/scale_embeddings"].Data = []byte{1} },
		"no ffn weight":   func(m *ct2.Model) { delete(m.Tensors, "decoder/layer_1/ffn/linear_1/weight") },
		"no projection":   func(m *ct2.Model) { delete(m.Aliases, "decoder/projection/weight") },
		"odd head counts": func(m *ct2.Model) { m.Tensors["encoder/num_heads"].Data = []byte{3, 0} },
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			m := good()
			breakIt(m)
			_, err := whisperonnx.FromCT2(m, t.TempDir(), whisperonnx.Options{})
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "whisperonnx") {
				t.Errorf("error does not say where it comes from: %v", err)
			}
			t.Log(err)
		})
	}
}
