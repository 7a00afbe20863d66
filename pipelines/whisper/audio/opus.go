package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pion/opus"
	"github.com/pion/opus/pkg/oggreader"
)

// Opus always runs at 48 kHz internally; decoding there and resampling with
// our own filter keeps every format on the same 16 kHz path.
const opusRate = 48000

// decodeOggOpus decodes a single-stream (mono or stereo) Ogg Opus file, as
// RFC 7845 describes: drop the encoder's pre-skip, apply the output gain and
// cut the tail to the last granule position.
func decodeOggOpus(data []byte, limit time.Duration) (*Audio, error) {
	r, h, err := oggreader.NewWith(bytes.NewReader(data))
	if err != nil {
		return nil, corrupt("Ogg Opus", err)
	}
	ch := int(h.Channels)
	if ch > 2 || (h.ChannelMap != 0 && r.ChannelMapping().StreamCount != 1) {
		return nil, &UnsupportedError{Format: fmt.Sprintf("multichannel Ogg Opus (%d channels)", ch)}
	}
	if ch < 1 {
		return nil, fmt.Errorf("%w: Ogg Opus: %d channels", ErrCorrupt, ch)
	}
	preSkip := int64(h.PreSkip)
	last, ok := lastGranule(data)
	if err := overLimit(last-preSkip, opusRate, limit); ok && err != nil {
		return nil, err
	}
	dec, err := opus.NewDecoderWithOutput(opusRate, ch)
	if err != nil {
		return nil, corrupt("Ogg Opus", err)
	}
	gain := float32(math.Pow(10, float64(int16(h.OutputGain))/(20*256)))

	most := maxSamples(opusRate, ch, limit)
	out := make([]float32, 0, prealloc(last, ch, most))
	buf := make([]float32, 5760*ch) // 120 ms, the longest Opus packet
	granule := int64(-1)
	for {
		pkt, page, err := r.ParseNextPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(out) > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return nil, corrupt("Ogg Opus", err)
		}
		if bytes.HasPrefix(pkt, []byte("OpusTags")) || len(pkt) == 0 {
			continue
		}
		n, err := dec.DecodeToFloat32(pkt, buf)
		if err != nil {
			return nil, corrupt("Ogg Opus", err)
		}
		out = append(out, buf[:n*ch]...)
		if most > 0 && len(out) > most {
			return nil, tooLongErr(limit)
		}
		if page != nil {
			granule = int64(page.GranulePosition)
		}
	}
	if int64(len(out)/ch) <= preSkip {
		return nil, ErrEmpty
	}
	out = out[int(preSkip)*ch:]
	// The final granule position marks where the real audio ends; the rest
	// of the last packet is encoder padding.
	if end := granule - preSkip; granule >= 0 && end >= 0 && end*int64(ch) < int64(len(out)) {
		out = out[:end*int64(ch)]
	}
	if gain != 1 {
		for i := range out {
			out[i] *= gain
		}
	}
	return &Audio{Samples: out, Rate: opusRate, Channels: ch}, nil
}

// lastGranule reads the granule position of the last Ogg page that belongs
// to the first page's stream, without decoding anything.
func lastGranule(data []byte) (int64, bool) {
	if len(data) < 27 {
		return 0, false
	}
	serial := binary.LittleEndian.Uint32(data[14:18])
	for i := bytes.LastIndex(data, []byte("OggS")); i >= 0; i = bytes.LastIndex(data[:i], []byte("OggS")) {
		if i+27 <= len(data) && data[i+4] == 0 && binary.LittleEndian.Uint32(data[i+14:]) == serial {
			g := int64(binary.LittleEndian.Uint64(data[i+6:]))
			if g >= 0 {
				return g, true
			}
		}
	}
	return 0, false
}
