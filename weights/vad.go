package weights

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/falocal/falocal/internal/fetch"
)

// Silero VAD (voice activity detection, MIT) as faster-whisper ships it:
// faster_whisper/assets/silero_vad_v6.onnx, the model its VAD
// (faster_whisper/vad.py) runs to cut audio at silences. It differs from
// silero-vad's own silero_vad.onnx (one call per 512-sample chunk, state
// [2,B,128], sr input): this export takes all the chunks of a recording at
// once, input [N,576] (64 samples of context + 512 new ones per chunk), and
// runs its LSTM over them in order, h and c [1,1,128] carried between calls;
// it gives speech_probs [N]. pipelines/whisper/vad.go runs it.

// vadWheel is faster-whisper 1.2.1 (MIT) from PyPI, which holds the model.
var vadWheel = fetch.Artifact{
	Name:   "faster_whisper-1.2.1-py3-none-any.whl",
	URL:    "https://files.pythonhosted.org/packages/05/99/49ee85903dee060d9f08297b4a342e5e0bcfca2f027a07b4ee0a38ab13f9/faster_whisper-1.2.1-py3-none-any.whl",
	SHA256: "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7",
	Size:   1118909,
}

// The VAD model file inside the wheel, pinned.
const (
	vadModelFile  = "silero_vad_v6.onnx"
	vadMember     = "faster_whisper/assets/" + vadModelFile
	vadModelSHA   = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"
	vadModelSize  = 1245151
	vadMemory     = 256 << 20 // a run of 10,000 chunks (320 s) peaks at about 160 MB
	vadSourceNote = "faster-whisper 1.2.1 wheel, " + vadMember
)

// installVAD extracts Silero VAD from the faster-whisper wheel and checks it.
func installVAD(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error {
	whl, err := fc.Get(ctx, vadWheel)
	if err != nil {
		return err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, vadModelFile)
	if err := fetch.ExtractZip(whl, map[string]string{vadMember: dst}); err != nil {
		return err
	}
	sum, size, err := fetch.HashFile(dst)
	if err != nil {
		return err
	}
	if sum != vadModelSHA || size != vadModelSize {
		return fmt.Errorf("%w: %s is %d bytes with SHA-256 %s, want %d bytes, %s", ErrCorrupt, vadMember, size, sum, vadModelSize, vadModelSHA)
	}
	file, err := s.AddBlob(dst, "model", vadModelFile, "fp32", vadModelSHA)
	if err != nil {
		return err
	}
	return s.Put(Manifest{
		Name: r.Name, Pipeline: r.Pipeline, Description: r.Description,
		Files: []File{file}, MemoryBytes: vadMemory, Source: vadSourceNote,
	})
}
