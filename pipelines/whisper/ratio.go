package whisper

// compressionRatio is Whisper's repetition measure: UTF-8 length over the
// length of zlib.compress (C zlib, level 6), computed exactly by zlibSize so
// that the fallback threshold (2.4) flips where the reference's does.
func compressionRatio(text string) float64 {
	return float64(len(text)) / float64(zlibSize([]byte(text)))
}
