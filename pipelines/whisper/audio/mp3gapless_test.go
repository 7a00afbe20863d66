package audio

import "testing"

// infoFrame builds the start of an MPEG layer III frame carrying a Xing or
// Info header with frames and, when tag is set, a LAME tag with delay and
// padding.
func infoFrame(mpeg1, mono, crc bool, magic string, frames int, tag string, delay, padding int) []byte {
	h := []byte{0xff, 0xf3, 0x88, 0xc4} // MPEG-2 layer III, no CRC, mono
	side := 9
	if mpeg1 {
		h[1], side = 0xfb, 32
		if mono {
			side = 17
		}
	} else if !mono {
		side = 17
	}
	if !mono {
		h[3] = 0x44
	}
	if crc {
		h[1] &^= 1
		side += 2
	}
	b := append(h, make([]byte, side)...)
	b = append(b, magic...)
	b = append(b, 0, 0, 0, 1, byte(frames>>24), byte(frames>>16), byte(frames>>8), byte(frames))
	if tag != "" {
		t := make([]byte, 36)
		copy(t, tag)
		t[21], t[22], t[23] = byte(delay>>4), byte(delay&0xf)<<4|byte(padding>>8), byte(padding)
		b = append(b, t...)
	}
	return b
}

func TestMP3Gapless(t *testing.T) {
	cases := []struct {
		name       string
		data       []byte
		skip, keep int
		ok         bool
	}{
		{"LAME, MPEG-2 mono", infoFrame(false, true, false, "Xing", 308, "LAME3.100", 576, 832), 576 + 576 + 529, 308*576 - 576 - 832, true},
		{"Info, MPEG-1 stereo", infoFrame(true, false, false, "Info", 100, "LAME3.99r", 576, 1000), 1152 + 576 + 529, 100*1152 - 1576, true},
		{"MPEG-1 mono with CRC", infoFrame(true, true, true, "Xing", 10, "Lavc58.91", 1105, 900), 1152 + 1105 + 529, 10*1152 - 2005, true},
		{"MPEG-2 stereo", infoFrame(false, false, false, "Xing", 50, "LAME3.100", 576, 100), 576 + 576 + 529, 50*576 - 676, true},
		{"no LAME tag: the Info frame only", infoFrame(false, true, false, "Info", 20, "", 0, 0), 576, 20 * 576, true},
		{"not letters where the tag would be", infoFrame(false, true, false, "Info", 20, "\x00\x01\x02\x03", 9, 9), 576, 20 * 576, true},
		{"no Xing", infoFrame(false, true, false, "Junk", 20, "LAME", 1, 1), 0, 0, false},
		{"no frames", infoFrame(false, true, false, "Xing", 0, "LAME", 1, 1), 0, 0, false},
		{"delay and padding past the stream", infoFrame(false, true, false, "Xing", 2, "LAME", 2000, 2000), 0, 0, false},
		{"truncated", infoFrame(false, true, false, "Xing", 308, "LAME3.100", 576, 832)[:20], 0, 0, false},
		{"not a frame", []byte("RIFF0000WAVE"), 0, 0, false},
		{"empty", nil, 0, 0, false},
	}
	for _, c := range cases {
		skip, keep, ok := mp3Gapless(c.data)
		if skip != c.skip || keep != c.keep || ok != c.ok {
			t.Errorf("%s: skip %d keep %d ok %v, want %d %d %v", c.name, skip, keep, ok, c.skip, c.keep, c.ok)
		}
	}
}
