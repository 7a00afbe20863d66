package tokenizer

import "sort"

// classRange overrides the class of code points first..last.
type classRange struct {
	first, last rune
	class       int
}

// newerUnicode lists the letters and numbers that tiktoken's regex engine
// (Unicode 16 tables) knows but Go's unicode package (Unicode 15) does not,
// so that text using them splits exactly as in whisper. It is the
// difference between testdata/classes.json, probed from tiktoken, and Go's
// tables; TestCharClasses fails if it is incomplete, e.g. after a Go or
// tiktoken upgrade.
var newerUnicode = []classRange{
	{0x001c89, 0x001c8a, classLetter},
	{0x00a7cb, 0x00a7cd, classLetter},
	{0x00a7da, 0x00a7dc, classLetter},
	{0x0105c0, 0x0105f3, classLetter},
	{0x010d40, 0x010d49, classNumber},
	{0x010d4a, 0x010d65, classLetter},
	{0x010d6f, 0x010d85, classLetter},
	{0x010ec2, 0x010ec4, classLetter},
	{0x011380, 0x011389, classLetter},
	{0x01138b, 0x01138b, classLetter},
	{0x01138e, 0x01138e, classLetter},
	{0x011390, 0x0113b5, classLetter},
	{0x0113b7, 0x0113b7, classLetter},
	{0x0113d1, 0x0113d1, classLetter},
	{0x0113d3, 0x0113d3, classLetter},
	{0x0116d0, 0x0116e3, classNumber},
	{0x011bc0, 0x011be0, classLetter},
	{0x011bf0, 0x011bf9, classNumber},
	{0x013460, 0x0143fa, classLetter},
	{0x016100, 0x01611d, classLetter},
	{0x016130, 0x016139, classNumber},
	{0x016d40, 0x016d6c, classLetter},
	{0x016d70, 0x016d79, classNumber},
	{0x018cff, 0x018cff, classLetter},
	{0x01ccf0, 0x01ccf9, classNumber},
	{0x01e5d0, 0x01e5ed, classLetter},
	{0x01e5f0, 0x01e5f0, classLetter},
	{0x01e5f1, 0x01e5fa, classNumber},
	{0x02ebf0, 0x02ee5d, classLetter},
}

// overrideClass looks r up in newerUnicode.
func overrideClass(r rune) (int, bool) {
	i := sort.Search(len(newerUnicode), func(i int) bool { return newerUnicode[i].last >= r })
	if i < len(newerUnicode) && newerUnicode[i].first <= r {
		return newerUnicode[i].class, true
	}
	return 0, false
}
