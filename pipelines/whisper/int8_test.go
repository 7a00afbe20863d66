//go:build cgo

package whisper

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// The real tiny.en quantised to int8 at import (faster-whisper's
// compute_type "int8": int8 linear layers with per-row scales, run as ONNX
// Runtime's DynamicQuantizeMatMul) is stored in under half the bytes and
// transcribes real speech about as well as the float32 conversion of the
// same model.bin: over jfk and the LibriVox and cards clips (greedy), its
// word error rate against the human transcripts is at most float32's +
// 0.03 (3 words in 114; quantised activations change a word or two, e.g.
// "coldhearted" for "cold-hearted").
func TestRealInt8(t *testing.T) {
	var ref realRef
	if err := json.Unmarshal(pipelinetest.ReadFile(t, filepath.Join("testdata", "real", "whisper-tiny.en.json")), &ref); err != nil {
		t.Fatal(err)
	}
	human := realHuman(t, &ref)
	src := filepath.Dir(testenv.Asset(t, "whisper/tiny.en-ct2/model.bin"))
	d := tinyDeps(t)
	size := map[string]int64{}
	for _, ct := range []string{"float32", "int8"} {
		man, err := d.Store.ImportWhisperCT2(src, weights.Manifest{Name: "tiny.en-" + ct, Params: map[string]string{"compute_type": ct}})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range man.Files {
			size[ct] += f.Size
		}
	}
	if size["int8"]*2 > size["float32"] {
		t.Errorf("int8 model %d bytes, float32 %d", size["int8"], size["float32"])
	}
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	fm := loadInstalled(t, d, models, "tiny.en-float32")
	qm := loadInstalled(t, d, models, "tiny.en-int8")

	var words, errF, errQ float64
	var tab strings.Builder
	for _, c := range ref.Clips {
		if c.Name == "long" {
			continue // its clips are among the others
		}
		pcm := realAudio(t, &ref, c.Name)
		hw := realWords(human[c.Name])
		opt := TranscribeOptions{Options: Options{Language: "en"}, Temperatures: []float64{0}}
		f, err := fm.Transcribe(t.Context(), pcm, opt)
		if err != nil {
			t.Fatal(err)
		}
		q, err := qm.Transcribe(t.Context(), pcm, opt)
		if err != nil {
			t.Fatal(err)
		}
		wf := pipelinetest.WordErrorRate(hw, realWords(f.Text))
		wq := pipelinetest.WordErrorRate(hw, realWords(q.Text))
		n := float64(len(hw))
		words, errF, errQ = words+n, errF+wf*n, errQ+wq*n
		fmt.Fprintf(&tab, "%-52s float32 %.3f int8 %.3f %q\n", c.Name, wf, wq, q.Text)
	}
	t.Logf("word error rate per clip:\n%s", tab.String())
	t.Logf("%d words: float32 %.4f, int8 %.4f; sizes float32 %d, int8 %d bytes", int(words), errF/words, errQ/words, size["float32"], size["int8"])
	if words == 0 {
		t.Fatal("no clips")
	}
	if errQ/words > errF/words+0.03 {
		t.Errorf("int8 word error rate %.4f, float32 %.4f", errQ/words, errF/words)
	}
}
