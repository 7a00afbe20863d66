package audio

import "bytes"

// mp3DecoderDelay is the delay of MP3's synthesis filterbank, in samples:
// a decoder's output lags the encoder's input by it (LAME's gapless
// playback rules).
const mp3DecoderDelay = 529

// mp3Gapless reads the Xing/Info frame that LAME and most encoders write
// before the audio, and its LAME tag. The frame itself decodes to one
// frame of silence (go-mp3 emits it), the encoder adds `delay` samples
// before the audio and `padding` after it, and the decoder delays all by
// 529. skip is the number of leading samples per channel to drop and keep
// the number of real samples; ok is false when data has no such frame or
// tag, or the values do not fit the stream (then nothing is trimmed).
func mp3Gapless(data []byte) (skip, keep int, ok bool) {
	if len(data) < 4 || data[0] != 0xff || data[1]&0xe0 != 0xe0 {
		return 0, 0, false
	}
	version := (data[1] >> 3) & 3 // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
	layer := (data[1] >> 1) & 3   // 1: layer III
	if layer != 1 || version == 1 {
		return 0, 0, false
	}
	mono := data[3]>>6 == 3
	spf, side := 576, 17 // samples per frame and side-information bytes, MPEG-2/2.5
	if version == 3 {
		spf, side = 1152, 32
		if mono {
			side = 17
		}
	} else if mono {
		side = 9
	}
	x := 4 + side
	if data[1]&1 == 0 { // a CRC follows the header
		x += 2
	}
	if len(data) < x+8 || !(bytes.Equal(data[x:x+4], []byte("Xing")) || bytes.Equal(data[x:x+4], []byte("Info"))) {
		return 0, 0, false
	}
	flags := be32(data[x+4:])
	o := x + 8
	frames := -1
	if flags&1 != 0 {
		if len(data) < o+4 {
			return 0, 0, false
		}
		frames = int(be32(data[o:]))
		o += 4
	}
	if flags&2 != 0 {
		o += 4 // stream bytes
	}
	if flags&4 != 0 {
		o += 100 // seek table
	}
	if flags&8 != 0 {
		o += 4 // quality
	}
	if frames <= 0 {
		return 0, 0, false
	}
	// The LAME tag (LAME, and ffmpeg's "Lavc"/"Lavf"): a 9-byte encoder
	// name, 12 bytes of settings, then the delay and padding as two 12-bit
	// numbers. Without it only the Info frame's silence is dropped.
	if len(data) < o+24 || !letters(data[o:o+4]) {
		return spf, frames * spf, true
	}
	tag := data[o:]
	delay := int(tag[21])<<4 | int(tag[22])>>4
	padding := int(tag[22]&0x0f)<<8 | int(tag[23])
	if keep = frames*spf - delay - padding; keep <= 0 {
		return 0, 0, false
	}
	return spf + delay + mp3DecoderDelay, keep, true
}

func letters(b []byte) bool {
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
