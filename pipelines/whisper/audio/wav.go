package audio

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// WAVE format tags (the codec field of the fmt chunk).
const (
	wavPCM        = 0x0001
	wavFloat      = 0x0003
	wavALaw       = 0x0006
	wavMuLaw      = 0x0007
	wavExtensible = 0xFFFE
)

// The KSDATAFORMAT_SUBTYPE GUIDs of WAVE_FORMAT_EXTENSIBLE are the format
// tag followed by this fixed suffix.
var ksSubtypeSuffix = []byte{0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71}

type wavFormat struct {
	tag        uint16
	channels   int
	rate       int
	blockAlign int
	bits       int
}

func decodeWAV(data []byte, limit time.Duration) (*Audio, error) {
	// RIFF header: "RIFF", size, "WAVE". The RIFF size is ignored: streaming
	// writers leave it 0 or 0xFFFFFFFF, and the chunks say enough.
	pos := 12
	var fmtc *wavFormat
	for {
		if pos+8 > len(data) {
			if fmtc == nil {
				return nil, fmt.Errorf("%w: WAV: no fmt chunk", ErrCorrupt)
			}
			return nil, fmt.Errorf("%w: WAV: no data chunk", ErrCorrupt)
		}
		id := string(data[pos : pos+4])
		size := int64(binary.LittleEndian.Uint32(data[pos+4:]))
		body := pos + 8
		switch id {
		case "fmt ":
			if size > int64(len(data)-body) {
				return nil, fmt.Errorf("%w: WAV: truncated fmt chunk", ErrCorrupt)
			}
			f, err := parseWAVFormat(data[body : body+int(size)])
			if err != nil {
				return nil, err
			}
			fmtc = f
		case "data":
			if fmtc == nil {
				return nil, fmt.Errorf("%w: WAV: data chunk before fmt chunk", ErrCorrupt)
			}
			// 0 and 0xFFFFFFFF mark a streamed WAV whose length was never
			// filled in; a size past the end is a truncated file. Either
			// way the samples run to the end of what we have.
			end := int64(len(data))
			if size != 0 && size != 0xFFFFFFFF && int64(body)+size < end {
				end = int64(body) + size
			}
			return decodeWAVData(data[body:end], fmtc, limit)
		}
		// Chunks are padded to even length.
		next := int64(body) + size + size&1
		if next > int64(len(data)) {
			return nil, fmt.Errorf("%w: WAV: chunk %q runs past the end", ErrCorrupt, id)
		}
		pos = int(next)
	}
}

func parseWAVFormat(b []byte) (*wavFormat, error) {
	if len(b) < 16 {
		return nil, fmt.Errorf("%w: WAV: fmt chunk of %d bytes", ErrCorrupt, len(b))
	}
	f := &wavFormat{
		tag:        binary.LittleEndian.Uint16(b[0:]),
		channels:   int(binary.LittleEndian.Uint16(b[2:])),
		rate:       int(binary.LittleEndian.Uint32(b[4:])),
		blockAlign: int(binary.LittleEndian.Uint16(b[12:])),
		bits:       int(binary.LittleEndian.Uint16(b[14:])),
	}
	if f.tag == wavExtensible {
		// cbSize(2) validBits(2) channelMask(4) subformat GUID(16).
		if len(b) < 40 {
			return nil, fmt.Errorf("%w: WAV: short WAVE_FORMAT_EXTENSIBLE header", ErrCorrupt)
		}
		guid := b[24:40]
		if string(guid[2:]) != string(ksSubtypeSuffix) {
			return nil, &UnsupportedError{Format: "WAV with a non-standard codec GUID"}
		}
		f.tag = binary.LittleEndian.Uint16(guid)
	}
	if err := checkFormat("WAV", f.rate, f.channels); err != nil {
		return nil, err
	}
	var width int // bytes per sample in the container
	switch f.tag {
	case wavPCM:
		// Samples narrower than their container (20-bit in 24, 12-bit in
		// 16) are left-justified, so the container width decides.
		width = (f.bits + 7) / 8
		if width < 1 || width > 4 {
			return nil, &UnsupportedError{Format: fmt.Sprintf("%d-bit PCM WAV", f.bits)}
		}
	case wavFloat:
		width = f.bits / 8
		if f.bits != 32 && f.bits != 64 {
			return nil, &UnsupportedError{Format: fmt.Sprintf("%d-bit float WAV", f.bits)}
		}
	case wavALaw, wavMuLaw:
		width = 1
	default:
		return nil, &UnsupportedError{Format: fmt.Sprintf("WAV with codec 0x%04x (compressed)", f.tag)}
	}
	// Writers disagree about blockAlign for odd layouts; the container width
	// is what the data actually uses, so trust it when blockAlign is absent
	// and refuse a blockAlign that cannot hold one sample per channel.
	if f.blockAlign == 0 {
		f.blockAlign = width * f.channels
	}
	if f.blockAlign < width*f.channels {
		return nil, fmt.Errorf("%w: WAV: block align %d for %d channels of %d bytes", ErrCorrupt, f.blockAlign, f.channels, width)
	}
	f.bits = width * 8
	return f, nil
}

func decodeWAVData(b []byte, f *wavFormat, limit time.Duration) (*Audio, error) {
	frames := len(b) / f.blockAlign
	if frames == 0 {
		return nil, ErrEmpty
	}
	if err := overLimit(int64(frames), f.rate, limit); err != nil {
		return nil, err
	}
	ch := f.channels
	out := make([]float32, frames*ch)
	width := f.bits / 8
	for i := 0; i < frames; i++ {
		fr := b[i*f.blockAlign:]
		for c := 0; c < ch; c++ {
			s := fr[c*width:]
			var v float32
			switch {
			case f.tag == wavMuLaw:
				v = float32(muLaw(s[0])) / 32768
			case f.tag == wavALaw:
				v = float32(aLaw(s[0])) / 32768
			case f.tag == wavFloat && width == 4:
				v = math.Float32frombits(binary.LittleEndian.Uint32(s))
			case f.tag == wavFloat:
				v = float32(math.Float64frombits(binary.LittleEndian.Uint64(s)))
			case width == 1: // 8-bit PCM is unsigned
				v = float32(int(s[0])-128) / 128
			case width == 2:
				v = float32(int16(binary.LittleEndian.Uint16(s))) / 32768
			case width == 3:
				x := int32(uint32(s[0])<<8|uint32(s[1])<<16|uint32(s[2])<<24) >> 8
				v = float32(x) / 8388608
			default:
				v = float32(float64(int32(binary.LittleEndian.Uint32(s))) / 2147483648)
			}
			if f.tag == wavFloat && (math.IsNaN(float64(v)) || math.IsInf(float64(v), 0)) {
				v = 0 // one NaN or Inf would poison the whole mel spectrogram
			}
			out[i*ch+c] = v
		}
	}
	return &Audio{Samples: out, Rate: f.rate, Channels: ch}, nil
}

// muLaw expands a G.711 µ-law byte to a 16-bit linear value (±32124).
func muLaw(b byte) int {
	u := ^b
	exp := uint(u>>4) & 7
	mag := ((int(u&0x0F) << 3) + 0x84) << exp
	mag -= 0x84
	if u&0x80 != 0 {
		return -mag
	}
	return mag
}

// aLaw expands a G.711 A-law byte to a 16-bit linear value (±32256).
func aLaw(b byte) int {
	a := b ^ 0x55
	exp := uint(a>>4) & 7
	mag := int(a&0x0F)<<4 + 8
	if exp > 0 {
		mag = (mag + 0x100) << (exp - 1)
	}
	if a&0x80 != 0 {
		return mag
	}
	return -mag
}
