package kokoro

import (
	"encoding/binary"
	"math"
	"strings"
	"unicode"
)

// Marks where a phoneme string may be cut, least disruptive first, as
// kokoro-onnx's chunker has them.
const (
	sentenceMarks = ".!?…"
	clauseMarks   = ",;:"
)

// SplitPhonemes cuts a phoneme string (known symbols only: one rune per
// token) into chunks of at most max runes: at sentence ends, then clause
// marks, then spaces, and only as a last resort inside a word. The chunks are
// balanced, as kokoro-onnx's split_phonemes makes them: the smallest limit
// that needs no more chunks than filling each to max would.
func SplitPhonemes(phonemes string, max int) []string {
	atoms := splitAtoms(strings.TrimSpace(phonemes), max, 0, nil)
	if len(atoms) == 0 {
		return nil
	}
	lengths := make([]int, len(atoms))
	low := 0
	for i, a := range atoms {
		lengths[i] = runeLen(a)
		low = maxInt(low, lengths[i])
	}
	fewest := len(pack(lengths, max))
	high := max
	for low < high {
		mid := (low + high) / 2
		if len(pack(lengths, mid)) <= fewest {
			high = mid
		} else {
			low = mid + 1
		}
	}
	var out []string
	for _, r := range pack(lengths, low) {
		out = append(out, strings.Join(atoms[r[0]:r[1]], " "))
	}
	return out
}

func runeLen(s string) int { return len([]rune(s)) }

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// splitAtoms yields pieces of s no longer than max, cutting at the
// boundaries of level and beyond.
func splitAtoms(s string, max, level int, out []string) []string {
	if runeLen(s) <= max {
		if s != "" {
			out = append(out, s)
		}
		return out
	}
	for l := level; l < 3; l++ {
		pieces := splitAt(s, l)
		if len(pieces) > 1 {
			for _, p := range pieces {
				out = splitAtoms(strings.TrimSpace(p), max, l+1, out)
			}
			return out
		}
	}
	rs := []rune(s)
	for i := 0; i < len(rs); i += max {
		out = append(out, string(rs[i:min(i+max, len(rs))]))
	}
	return out
}

// splitAt cuts s at the whitespace after a sentence mark (level 0), after a
// clause mark (1), or at any whitespace (2).
func splitAt(s string, level int) []string {
	rs := []rune(s)
	var out []string
	start := 0
	for i := 0; i < len(rs); {
		if !unicode.IsSpace(rs[i]) {
			i++
			continue
		}
		j := i
		for j < len(rs) && unicode.IsSpace(rs[j]) {
			j++
		}
		cut := level == 2
		if i > 0 {
			switch level {
			case 0:
				cut = strings.ContainsRune(sentenceMarks, rs[i-1])
			case 1:
				cut = strings.ContainsRune(clauseMarks, rs[i-1])
			}
		}
		if cut {
			out = append(out, string(rs[start:i]))
			start = j
		}
		i = j
	}
	return append(out, string(rs[start:]))
}

// pack groups consecutive atoms into chunks within limit (joined by one
// space), as index ranges.
func pack(lengths []int, limit int) [][2]int {
	var out [][2]int
	start, size := 0, 0
	for i, l := range lengths {
		c := l
		if i != start {
			c = size + 1 + l
		}
		if c > limit && i > start {
			out = append(out, [2]int{start, i})
			start, size = i, l
		} else {
			size = c
		}
	}
	if len(lengths) > 0 {
		out = append(out, [2]int{start, len(lengths)})
	}
	return out
}

// PauseAfter is the silence (seconds) that follows a chunk ending with a
// sentence mark (0.25 s) or a clause mark (0.1 s), as kokoro-onnx adds it.
func PauseAfter(chunk string) float64 {
	s := strings.TrimRightFunc(chunk, unicode.IsSpace)
	if s == "" {
		return 0
	}
	rs := []rune(s)
	last := rs[len(rs)-1]
	switch {
	case strings.ContainsRune(sentenceMarks, last):
		return 0.25
	case strings.ContainsRune(clauseMarks, last):
		return 0.1
	}
	return 0
}

// Trim cuts the leading and trailing silence of a chunk as kokoro-onnx
// does (librosa's trim: frames of 2048 samples every 512, centred, silent
// when their RMS is 60 dB or more below the loudest frame's), so that
// chunks join without the model's own edge silences (a chunk that is all
// silence has no quieter part, and is kept whole, as librosa keeps it).
func Trim(y []float32) []float32 {
	const frame, hop, topDB = 2048, 512, 60.0
	n := len(y)
	if n == 0 {
		return y
	}
	frames := 1 + n/hop
	rms := make([]float64, frames)
	peak := 0.0
	for f := range frames {
		var s float64
		for k := f*hop - frame/2; k < f*hop+frame/2; k++ {
			if k >= 0 && k < n {
				v := float64(y[k])
				s += v * v
			}
		}
		rms[f] = math.Sqrt(s / frame)
		peak = math.Max(peak, rms[f])
	}
	const amin = 1e-5
	ref := 20 * math.Log10(math.Max(amin, peak))
	first, last := -1, -1
	for f, r := range rms {
		if 20*math.Log10(math.Max(amin, r))-ref > -topDB {
			if first < 0 {
				first = f
			}
			last = f
		}
	}
	if first < 0 {
		return y[:0] // unreachable: the loudest frame is never below itself
	}
	return y[first*hop : min(n, (last+1)*hop)]
}

// WAV encodes mono samples in [-1, 1] as 16-bit PCM WAV.
func WAV(pcm []float32, rate int) []byte {
	b := make([]byte, 44+2*len(pcm))
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*len(pcm)))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(2*rate))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*len(pcm)))
	for i, v := range pcm {
		x := math.Round(float64(v) * 32767)
		if math.IsNaN(x) {
			x = 0
		}
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(int16(math.Max(-32768, math.Min(32767, x)))))
	}
	return b
}
