// Package audio turns uploaded audio files into the 16 kHz mono samples that
// Whisper consumes. It is pure Go: WAV is parsed here, FLAC, MP3 and Ogg
// Vorbis and Ogg Opus go through pure-Go decoders, and the resampler is our
// own.
package audio

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Audio is decoded PCM, interleaved float32 in [-1,1].
type Audio struct {
	Samples  []float32
	Rate     int
	Channels int
}

// Duration is the playing time of the samples.
func (a *Audio) Duration() time.Duration {
	if a == nil || a.Rate <= 0 || a.Channels <= 0 {
		return 0
	}
	frames := int64(len(a.Samples) / a.Channels)
	return time.Duration(frames) * time.Second / time.Duration(a.Rate)
}

// SupportedFormats are the containers Decode reads ("ogg": Vorbis or Opus).
var SupportedFormats = []string{"wav", "flac", "mp3", "ogg"}

var (
	// ErrUnknownFormat: the bytes are not a recognised audio file.
	ErrUnknownFormat = errors.New("audio: unrecognised file format (supported: WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus)")
	// ErrEmpty: the file decodes to no samples.
	ErrEmpty = errors.New("audio: no audio samples")
	// ErrTooLong: the audio exceeds the duration limit (wrapped with it).
	ErrTooLong = errors.New("audio: too long")
	// ErrCorrupt: a recognised file that cannot be decoded (wrapped with detail).
	ErrCorrupt = errors.New("audio: corrupt file")
)

// UnsupportedError reports a recognised audio format that cannot be decoded
// here (AAC, Opus in WebM, …), so callers can tell users what to convert to.
type UnsupportedError struct {
	Format string // e.g. "AAC (MP4/M4A)"
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("audio: %s is not supported; supported formats: WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus", e.Format)
}

// recovered counts decoder panics turned into errors (the tests report it).
var recovered atomic.Int64

// Sample rates outside this range are refused: they are not real audio and
// would make the resampler's filter absurdly long.
const (
	minRate     = 1000
	maxRate     = 768000
	maxChannels = 32
)

// Decode detects the container by its magic bytes and decodes it. With
// maxDuration > 0, longer audio is refused with ErrTooLong, from the header
// where the format declares its length, before decoding.
func Decode(data []byte, maxDuration time.Duration) (a *Audio, err error) {
	if len(data) == 0 {
		return nil, ErrEmpty
	}
	// The third-party decoders were not written for hostile input; a panic
	// in one of them must become an error, not take down the server.
	defer func() {
		if r := recover(); r != nil {
			recovered.Add(1)
			a, err = nil, fmt.Errorf("%w: decoder failed: %v", ErrCorrupt, r)
		}
	}()
	f := sniff(data)
	if n := id3Len(data); n > 0 {
		// ID3v2 tags front MP3s mostly, but also FLAC and AAC files; what
		// follows the tag decides. Junk after a tag is left to the MP3
		// decoder, which resynchronises on frame headers.
		if n >= len(data) {
			return nil, fmt.Errorf("%w: ID3 tag runs past the end of the file", ErrCorrupt)
		}
		data = data[n:]
		if f = sniff(data); f == "" {
			f = "mp3"
		}
	}
	switch f {
	case "wav":
		a, err = decodeWAV(data, maxDuration)
	case "flac":
		a, err = decodeFLAC(data, maxDuration)
	case "mp3":
		a, err = decodeMP3(data, maxDuration)
	case "vorbis":
		a, err = decodeVorbis(data, maxDuration)
	case "opus":
		a, err = decodeOggOpus(data, maxDuration)
	case "":
		return nil, ErrUnknownFormat
	default:
		return nil, &UnsupportedError{Format: f}
	}
	if err != nil {
		return nil, err
	}
	if len(a.Samples) < a.Channels || a.Channels == 0 {
		return nil, ErrEmpty
	}
	// Headers can understate the length; the decoders stop near the limit,
	// this settles it exactly.
	if err := overLimit(int64(len(a.Samples)/a.Channels), a.Rate, maxDuration); err != nil {
		return nil, err
	}
	return a, nil
}

func tooLong(frames int64, rate int, limit time.Duration) bool {
	return limit > 0 && rate > 0 && float64(frames)/float64(rate) > limit.Seconds()
}

// TooLongError is ErrTooLong with the audio's length where it is known.
type TooLongError struct {
	Length time.Duration // 0: unknown (decoding stopped at the limit)
	Limit  time.Duration
}

func (e *TooLongError) Error() string {
	if e.Length > 0 {
		return fmt.Sprintf("%v: %s, over the limit of %s", ErrTooLong, e.Length, e.Limit)
	}
	return fmt.Sprintf("%v: longer than the limit of %s", ErrTooLong, e.Limit)
}

// Is makes a *TooLongError match ErrTooLong.
func (e *TooLongError) Is(target error) bool { return target == ErrTooLong }

func tooLongErr(limit time.Duration) error { return &TooLongError{Limit: limit} }

// overLimit is the error for frames at rate over the limit, or nil.
func overLimit(frames int64, rate int, limit time.Duration) error {
	if !tooLong(frames, rate, limit) {
		return nil
	}
	return &TooLongError{Length: time.Duration(float64(frames) / float64(rate) * float64(time.Second)).Round(time.Millisecond), Limit: limit}
}

// maxSamples is the interleaved sample count past which decoding stops
// (one second of slack so that rounding never refuses audio at the limit);
// 0 means no limit.
func maxSamples(rate, channels int, limit time.Duration) int {
	if limit <= 0 {
		return 0
	}
	return int((limit.Seconds() + 1) * float64(rate) * float64(channels))
}

func corrupt(format string, err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLong) || errors.Is(err, ErrEmpty) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, format, err)
}

func checkFormat(format string, rate, channels int) error {
	if rate < minRate || rate > maxRate {
		return fmt.Errorf("%w: %s: sample rate %d Hz", ErrCorrupt, format, rate)
	}
	if channels < 1 || channels > maxChannels {
		return fmt.Errorf("%w: %s: %d channels", ErrCorrupt, format, channels)
	}
	return nil
}

// sniff names the format: one of wav, flac, mp3, vorbis, opus (decodable), a
// human-readable name for recognised but undecodable audio, or "".
func sniff(b []byte) string {
	has := func(off int, s string) bool {
		return len(b) >= off+len(s) && string(b[off:off+len(s)]) == s
	}
	switch {
	case has(0, "RIFF") && has(8, "WAVE"):
		return "wav"
	case has(0, "RIFF") && has(8, "AVI "):
		return "AVI video"
	case (has(0, "RIFX") || has(0, "RF64") || has(0, "BW64")) && has(8, "WAVE"):
		return "big-endian or 64-bit WAV (RIFX/RF64)"
	case has(0, "fLaC"):
		return "flac"
	case has(0, "OggS"):
		return sniffOgg(b)
	case has(4, "ftyp"):
		return "AAC/ALAC in MP4 (M4A/MP4)"
	case has(0, "\x1a\x45\xdf\xa3"):
		return "WebM/Matroska (Opus/Vorbis in WebM)"
	case has(0, "FORM") && (has(8, "AIFF") || has(8, "AIFC")):
		return "AIFF"
	case has(0, "caff"):
		return "Core Audio (CAF)"
	case has(0, "#!AMR"):
		return "AMR"
	case has(0, "\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
		return "WMA/ASF"
	case has(0, ".snd"):
		return "Sun/NeXT AU"
	case has(0, "MAC "):
		return "Monkey's Audio (APE)"
	case has(0, "wvpk"):
		return "WavPack"
	}
	return sniffFrame(b)
}

// sniffFrame recognises raw MPEG audio and ADTS AAC by a valid frame header
// at the start (sync bits plus in-range fields).
func sniffFrame(b []byte) string {
	if len(b) < 4 || b[0] != 0xFF || b[1]&0xE0 != 0xE0 {
		return ""
	}
	if b[1]&0x06 == 0 { // layer 00 is ADTS AAC (12-bit sync, MPEG-2/4)
		if b[1]&0xF0 == 0xF0 && (b[2]>>2)&0x0F < 13 {
			return "AAC (ADTS)"
		}
		return ""
	}
	layer := (b[1] >> 1) & 3
	version := (b[1] >> 3) & 3
	bitrate := b[2] >> 4
	srate := (b[2] >> 2) & 3
	if version == 1 || bitrate == 0 || bitrate == 15 || srate == 3 {
		return ""
	}
	if layer != 1 {
		return "MPEG audio layer I/II (MP1/MP2)"
	}
	return "mp3"
}

// id3Len is the size of a leading ID3v2 tag, or 0.
func id3Len(b []byte) int {
	if len(b) < 10 || string(b[:3]) != "ID3" {
		return 0
	}
	for _, c := range b[6:10] {
		if c&0x80 != 0 {
			return 0
		}
	}
	n := 10 + (int(b[6])<<21 | int(b[7])<<14 | int(b[8])<<7 | int(b[9]))
	if b[5]&0x10 != 0 { // footer present
		n += 10
	}
	return n
}

// sniffOgg looks at the first packet of the first logical stream to tell the
// codec inside.
func sniffOgg(b []byte) string {
	// Page header: 27 bytes, then the segment table; the first packet starts
	// right after it.
	if len(b) < 27 {
		return "Ogg"
	}
	nseg := int(b[26])
	start := 27 + nseg
	if start > len(b) {
		return "Ogg"
	}
	p := b[start:]
	switch {
	case bytes.HasPrefix(p, []byte("\x01vorbis")):
		return "vorbis"
	case bytes.HasPrefix(p, []byte("OpusHead")):
		return "opus"
	case bytes.HasPrefix(p, []byte("\x7fFLAC")):
		return "FLAC in Ogg"
	case bytes.HasPrefix(p, []byte("Speex   ")):
		return "Speex"
	case bytes.HasPrefix(p, []byte("\x80theora")):
		return "Ogg video (Theora)"
	}
	return "Ogg (unknown codec)"
}

// Mono16k downmixes by averaging the channels and resamples to 16 kHz with a
// Kaiser-windowed sinc filter. It returns a new slice; 16 kHz mono input is
// copied unchanged.
func (a *Audio) Mono16k() []float32 {
	if a == nil || a.Channels <= 0 || a.Rate <= 0 {
		return nil
	}
	mono := downmix(a.Samples, a.Channels)
	if a.Rate == 16000 {
		return mono
	}
	return resample(mono, a.Rate, 16000)
}

// downmix always returns a new slice.
func downmix(x []float32, channels int) []float32 {
	n := len(x) / channels
	out := make([]float32, n)
	if channels == 1 {
		copy(out, x[:n])
		return out
	}
	inv := 1 / float32(channels)
	for i := range out {
		var s float32
		for _, v := range x[i*channels : (i+1)*channels] {
			s += v
		}
		out[i] = s * inv
	}
	return out
}
