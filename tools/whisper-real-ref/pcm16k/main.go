// Command pcm16k writes a recording as the Whisper pipeline hears it: decoded
// and resampled to 16 kHz mono by pipelines/whisper/audio, as little-endian
// float32 samples. The reference generators read clips that are not 16 kHz
// 16-bit WAV through it, so that the reference and the pipeline transcribe
// the same samples.
//
//	go run ./tools/whisper-real-ref/pcm16k IN OUT.f32
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/falocal/falocal/pipelines/whisper/audio"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: pcm16k IN OUT.f32")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "pcm16k:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	a, err := audio.Decode(b, 0)
	if err != nil {
		return err
	}
	pcm := a.Mono16k()
	buf := make([]byte, 4*len(pcm))
	for i, v := range pcm {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return os.WriteFile(out, buf, 0o644)
}
