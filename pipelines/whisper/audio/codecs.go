package audio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hajimehoshi/go-mp3"
	"github.com/jfreymuth/oggvorbis"
	"github.com/mewkiz/flac"
)

// growCap bounds up-front allocation from header-declared lengths, which a
// hostile file can inflate; beyond it slices grow as samples really arrive.
const growCap = 1 << 22

// prealloc is the capacity to reserve for a declared frame count.
func prealloc(frames int64, ch, most int) int {
	n := frames * int64(ch)
	if n < 0 {
		n = 0
	}
	if most > 0 && n > int64(most) {
		n = int64(most)
	}
	return int(min(n, growCap))
}

func decodeFLAC(data []byte, limit time.Duration) (*Audio, error) {
	st, err := flac.New(bytes.NewReader(data))
	if err != nil {
		return nil, corrupt("FLAC", err)
	}
	info := st.Info
	rate, ch := int(info.SampleRate), int(info.NChannels)
	if err := checkFormat("FLAC", rate, ch); err != nil {
		return nil, err
	}
	if info.BitsPerSample < 4 || info.BitsPerSample > 32 {
		return nil, fmt.Errorf("%w: FLAC: %d bits per sample", ErrCorrupt, info.BitsPerSample)
	}
	// NSamples is 0 when the encoder did not know the length.
	if err := overLimit(int64(info.NSamples), rate, limit); err != nil {
		return nil, err
	}
	most := maxSamples(rate, ch, limit)
	out := make([]float32, 0, prealloc(int64(min(info.NSamples, growCap)), ch, most))
	for {
		fr, err := st.ParseNext()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A damaged tail still leaves the audio before it usable, as
			// with ffmpeg; damage before any audio is an error.
			if len(out) > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return nil, corrupt("FLAC", err)
		}
		if len(fr.Subframes) != ch {
			return nil, fmt.Errorf("%w: FLAC: frame with %d channels in a %d-channel stream", ErrCorrupt, len(fr.Subframes), ch)
		}
		bps := fr.BitsPerSample
		if bps == 0 {
			bps = info.BitsPerSample
		}
		if bps < 4 || bps > 32 {
			return nil, fmt.Errorf("%w: FLAC: %d bits per sample", ErrCorrupt, bps)
		}
		scale := 1 / float64(uint64(1)<<(bps-1))
		n := len(fr.Subframes[0].Samples)
		for _, sf := range fr.Subframes {
			if len(sf.Samples) != n {
				return nil, fmt.Errorf("%w: FLAC: subframes of unequal length", ErrCorrupt)
			}
		}
		for i := 0; i < n; i++ {
			for c := 0; c < ch; c++ {
				out = append(out, float32(float64(fr.Subframes[c].Samples[i])*scale))
			}
		}
		if most > 0 && len(out) > most {
			return nil, tooLongErr(limit)
		}
	}
	return &Audio{Samples: out, Rate: rate, Channels: ch}, nil
}

// readAll calls read, which appends decoded samples to *out, until the
// stream ends: io.EOF, a truncated last frame after some audio, or 64
// empty reads in a row (decoders may return nothing without an error
// between frames; a long run of that means they are stuck). More than most
// samples (most > 0) is the duration limit's error.
func readAll(format string, limit time.Duration, most int, out *[]float32, read func() (int, error)) error {
	idle := 0
	for {
		n, err := read()
		if most > 0 && len(*out) > most {
			return tooLongErr(limit)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if len(*out) > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return corrupt(format, err)
		}
		if n > 0 {
			idle = 0
		} else if idle++; idle > 64 {
			return nil
		}
	}
}

func decodeMP3(data []byte, limit time.Duration) (*Audio, error) {
	// Decode has cut any ID3v2 tag off already: go-mp3 would allocate the
	// tag's declared size before reading it.
	d, err := mp3.NewDecoder(bytes.NewReader(data))
	if err != nil {
		return nil, corrupt("MP3", err)
	}
	rate := d.SampleRate()
	if err := checkFormat("MP3", rate, 2); err != nil {
		return nil, err
	}
	// go-mp3 always produces 16-bit stereo (mono is duplicated), 4 bytes a
	// frame; Length counts them from the frame headers without decoding.
	frames := d.Length() / 4
	if err := overLimit(frames, rate, limit); err != nil {
		return nil, err
	}
	most := maxSamples(rate, 2, limit)
	out := make([]float32, 0, prealloc(frames, 2, most))
	buf := make([]byte, 4*4096)
	carry := 0 // a byte of a sample split across reads
	err = readAll("MP3", limit, most, &out, func() (int, error) {
		n, err := d.Read(buf[carry:])
		n += carry
		for i := 0; i+1 < n; i += 2 {
			out = append(out, float32(int16(uint16(buf[i])|uint16(buf[i+1])<<8))/32768)
		}
		carry = n & 1
		buf[0] = buf[n-carry]
		return n - carry, err
	})
	if err != nil {
		return nil, err
	}
	out = out[:len(out)&^1]
	// drop the encoder's delay and padding, so that the samples line up
	// with the source and the duration is its own
	if skip, keep, ok := mp3Gapless(data); ok && 2*skip < len(out) {
		out = out[2*skip : min(len(out), 2*(skip+keep))]
	}
	return &Audio{Samples: out, Rate: rate, Channels: 2}, nil
}

func decodeVorbis(data []byte, limit time.Duration) (*Audio, error) {
	r, err := oggvorbis.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, corrupt("Ogg Vorbis", err)
	}
	rate, ch := r.SampleRate(), r.Channels()
	if err := checkFormat("Ogg Vorbis", rate, ch); err != nil {
		return nil, err
	}
	// Length is the last page's granule position: the declared frame count.
	if err := overLimit(r.Length(), rate, limit); err != nil {
		return nil, err
	}
	most := maxSamples(rate, ch, limit)
	out := make([]float32, 0, prealloc(r.Length(), ch, most))
	buf := make([]float32, 4096*ch)
	err = readAll("Ogg Vorbis", limit, most, &out, func() (int, error) {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		return n, err
	})
	if err != nil {
		return nil, err
	}
	out = out[:len(out)/ch*ch]
	return &Audio{Samples: out, Rate: rate, Channels: ch}, nil
}
