package tokenizer

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// charsmap is SentencePiece's precompiled normalisation map (T5's "nmt_nfkc"): a darts-clone
// double-array trie over UTF-8 byte strings whose values index NUL-terminated replacements.
type charsmap struct {
	units []uint32
	repl  []byte
}

// parseCharsmap reads the blob: a little-endian uint32 trie size in bytes, the trie, then the
// replacement strings.
func parseCharsmap(b []byte) (*charsmap, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("tokenizer: precompiled charsmap too short")
	}
	n := binary.LittleEndian.Uint32(b)
	if n%4 != 0 || uint64(n) > uint64(len(b)-4) {
		return nil, fmt.Errorf("tokenizer: precompiled charsmap trie size %d of %d bytes", n, len(b))
	}
	m := &charsmap{units: make([]uint32, n/4), repl: b[4+n:]}
	for i := range m.units {
		m.units[i] = binary.LittleEndian.Uint32(b[4+4*i:])
	}
	return m, nil
}

// firstMatch returns the replacement for the shortest prefix of key that the trie holds. The
// shortest, not the longest: that is what the tokenizers library does (see normalize).
func (m *charsmap) firstMatch(key string) (string, bool) {
	if m == nil || len(m.units) == 0 {
		return "", false
	}
	// darts-clone unit layout: bit 8 has-leaf, low 8 bits (and bit 31) the label, the rest an
	// offset to the children, scaled by 2^8 when bit 9 is set; a leaf unit holds a 31-bit value.
	offset := func(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
	pos := offset(m.units[0])
	for i := 0; i < len(key); i++ {
		c := uint32(key[i])
		pos ^= c
		if pos >= uint32(len(m.units)) {
			return "", false
		}
		u := m.units[pos]
		if u&((1<<31)|0xFF) != c {
			return "", false
		}
		pos ^= offset(u)
		if u>>8&1 == 1 {
			if pos >= uint32(len(m.units)) {
				return "", false
			}
			v := m.units[pos] & (1<<31 - 1)
			if int(v) >= len(m.repl) {
				return "", false
			}
			s := m.repl[v:]
			if end := strings.IndexByte(string(s), 0); end >= 0 {
				s = s[:end]
			}
			return string(s), true
		}
	}
	return "", false
}

// normalize applies the map as the tokenizers library's Precompiled normaliser does: per
// extended grapheme cluster, a cluster shorter than 6 bytes with a match is replaced whole by
// its first match; otherwise each character is looked up on its own. (SentencePiece itself
// takes the longest match over the raw bytes; the two differ only on rare mark sequences.)
func (m *charsmap) normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		n := graphemeLen(s)
		g := s[:n]
		s = s[n:]
		if len(g) < 6 {
			if r, ok := m.firstMatch(g); ok {
				b.WriteString(r)
				continue
			}
		}
		for len(g) > 0 {
			_, k := utf8.DecodeRuneInString(g)
			if r, ok := m.firstMatch(g[:k]); ok {
				b.WriteString(r)
			} else {
				b.WriteString(g[:k])
			}
			g = g[k:]
		}
	}
	return b.String()
}

// graphemeLen is the byte length of the first extended grapheme cluster of s, as far as the
// normaliser can tell the difference: clusters of 6 bytes or more are handled per character
// anyway, so only CR LF and a base followed by marks, joiners and variation selectors matter
// (emoji sequences, flags and Hangul jamo runs are all 6 bytes or longer).
func graphemeLen(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if r == '\r' && len(s) > 1 && s[1] == '\n' {
		return 2
	}
	if isGraphemeControl(r) {
		return n
	}
	for n < len(s) {
		r, k := utf8.DecodeRuneInString(s[n:])
		if !isGraphemeExtend(r) {
			break
		}
		n += k
	}
	return n
}

func isGraphemeControl(r rune) bool {
	if r == 0x200C || r == 0x200D {
		return false
	}
	return unicode.In(r, unicode.Cc, unicode.Zl, unicode.Zp, unicode.Cf) || r == utf8.RuneError
}

// isGraphemeExtend: Extend, SpacingMark and ZWJ (UAX #29), approximated by the mark categories
// plus the non-mark members that matter in prompts.
func isGraphemeExtend(r rune) bool {
	switch {
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc):
		return true
	case r == 0x200C || r == 0x200D || r == 0xFF9E || r == 0xFF9F:
		return true
	case r >= 0x1F3FB && r <= 0x1F3FF: // emoji skin-tone modifiers
		return true
	case r >= 0xE0020 && r <= 0xE007F: // tag characters
		return true
	}
	return false
}
