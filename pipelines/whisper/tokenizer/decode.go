package tokenizer

import "unicode/utf8"

// Decode is whisper's decode: timestamp tokens (and any id at or above
// TimestampBegin, or negative) are dropped; other special tokens appear as
// their text. Invalid UTF-8 becomes U+FFFD as Python's errors="replace" does.
func (t *Tokenizer) Decode(ids []int) string {
	return replaceInvalid(t.appendBytes(nil, ids, t.timestampBegin))
}

// DecodeWithTimestamps is whisper's decode_with_timestamps: like Decode but
// timestamps appear as "<|1.08|>". Ids outside the vocabulary are dropped.
func (t *Tokenizer) DecodeWithTimestamps(ids []int) string {
	return replaceInvalid(t.appendBytes(nil, ids, len(t.tokens)))
}

// DecodeBytes returns the raw bytes of the tokens Decode keeps, without
// repairing UTF-8: a token may end inside a character, which a streaming
// caller completes with later tokens. Decode(ids) is these bytes with
// invalid sequences replaced.
func (t *Tokenizer) DecodeBytes(ids []int) []byte {
	return t.appendBytes(nil, ids, t.timestampBegin)
}

func (t *Tokenizer) appendBytes(dst []byte, ids []int, limit int) []byte {
	for _, id := range ids {
		if id >= 0 && id < limit {
			dst = append(dst, t.tokens[id]...)
		}
	}
	return dst
}

// replaceInvalid converts to a string the way Python's
// bytes.decode("utf-8", errors="replace") does: one U+FFFD for each maximal
// prefix of a valid sequence (Unicode's "maximal subpart" practice), so a
// truncated "\xe6\x97" is one U+FFFD, but a lone continuation byte or a byte
// that cannot start a sequence is one each. Go's own conversions differ (one
// per byte, or one per run), hence the hand-written loop.
func replaceInvalid(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			out = append(out, b[i])
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		out = append(out, "\uFFFD"...)
		i += maximalSubpart(b[i:])
	}
	return string(out)
}

// maximalSubpart returns how many bytes at the start of b (which does not
// start with a valid sequence) form the longest prefix of some valid UTF-8
// sequence; at least 1. The allowed second-byte ranges exclude overlong
// forms, surrogates and values above U+10FFFF (Unicode Table 3-7).
func maximalSubpart(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	var need int
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for ; n <= need && n < len(b); n++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF // only the second byte has special limits
	}
	return n
}
