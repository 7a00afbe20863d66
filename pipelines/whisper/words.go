package whisper

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
)

// Word-level timestamps as openai-whisper's timing.py computes them (and
// faster-whisper, through CTranslate2's Whisper.align): one decoder pass over
// [sot sequence, <|notimestamps|>, text tokens, <|endoftext|>] against the
// window's encoder output; the alignment heads' cross-attention over the
// window's frames, softmax-normalised, standardised per head over the
// tokens, median-filtered along time (width 7) and averaged over the heads;
// dynamic time warping on its negative; the jumps of the path are the token
// boundaries, grouped into words by the tokenizer.

// Word is one timed word of a segment.
type Word struct {
	Start, End  float64
	Text        string // as decoded, with its leading space
	Probability float64
}

// Punctuation merged into the neighbouring word (openai-whisper's defaults).
const (
	prependPunctuations = "\"'“¿([{-"
	appendPunctuations  = "\"'.。,，!！?？:：”)]}、"
)

const (
	medianFilterWidth = 7
	tokensPerSecond   = framesPerSec / 2 // encoder positions per second
)

// ErrNoCrossAttentions is returned for word timestamps on an export whose
// decoder does not output the alignment heads' cross-attention.
var ErrNoCrossAttentions = errors.New("the model's decoder does not output the cross-attention weights that word timestamps need (" +
	crossAttentionsOutput + "); import it from a faster-whisper (CTranslate2) directory, or use chunk_level 'segment'")

// crossAttentionsOutput is the decoder output weights/whisperonnx writes:
// f32[batch, alignment heads, seq, 1500], post-softmax.
const crossAttentionsOutput = "cross_attentions"

// HasWordTimestamps says whether the model can time words.
func (m *Model) HasWordTimestamps() bool {
	return !m.merged && m.dec != nil && slices.Contains(m.dec.outputs, crossAttentionsOutput)
}

// wordTiming is one word of an alignment, times relative to its window.
type wordTiming struct {
	word        string
	tokens      []int
	start, end  float64
	probability float64
}

// alignFeatures times the text tokens of each window of f (texts[i] and
// numFrames[i], the window's content in mel frames, belong to window i).
func (m *Model) alignFeatures(ctx context.Context, f *features, sot []int, texts [][]int, numFrames []int, lang string) ([][]wordTiming, error) {
	if !m.HasWordTimestamps() {
		return nil, ErrNoCrossAttentions
	}
	out := make([][]wordTiming, len(texts))
	var idx []int
	maxLen := 0
	for i, t := range texts {
		if len(t) > 0 && numFrames[i]/2 > 0 {
			idx = append(idx, i)
			maxLen = max(maxLen, len(sot)+len(t)+2)
		}
	}
	if len(idx) == 0 {
		return out, nil
	}
	if maxLen > m.textCtx() {
		return nil, fmt.Errorf("whisper: %d tokens to align exceed the text context of %d", maxLen, m.textCtx())
	}
	eot := m.tok.EOT()
	rows := make([][]int, len(idx))
	for r, i := range idx {
		seq := append(append(append(slices.Clone(sot), m.tok.NoTimestamps()), texts[i]...), eot)
		for len(seq) < maxLen {
			seq = append(seq, eot) // after the sequence: causal attention ignores it
		}
		rows[r] = seq
	}
	st := m.newState(f.pick(idx), len(idx))
	st.keepAttn = true
	logits, err := m.forward(ctx, st, rows)
	if err != nil {
		return nil, err
	}
	a := st.attn
	if a == nil {
		return nil, ErrNoCrossAttentions
	}
	data, err := floats(a)
	if err != nil || len(a.Shape) != 4 || a.Shape[0] != int64(len(idx)) || a.Shape[2] != int64(maxLen) {
		return nil, fmt.Errorf("whisper: %s output %s %v", crossAttentionsOutput, a.DType, a.Shape)
	}
	heads, S := int(a.Shape[1]), int(a.Shape[3])
	V := m.vocab()
	for r, i := range idx {
		text := texts[i]
		T := len(sot) + len(text) + 2
		frames := min(numFrames[i]/2, S)
		// [heads][T][frames], renormalised over the window's frames (the
		// softmax over them: CTranslate2 and openai-whisper slice the scores
		// before the softmax)
		w := make([]float32, heads*T*frames)
		for h := range heads {
			for t := range T {
				src := data[((r*heads+h)*maxLen+t)*S:][:frames]
				var sum float64
				for _, v := range src {
					sum += float64(v)
				}
				dst := w[(h*T+t)*frames:][:frames]
				for j, v := range src {
					dst[j] = float32(float64(v) / sum)
				}
			}
		}
		matrix := alignmentMatrix(w, heads, T, frames, len(sot), len(text))
		textIdx, timeIdx := dtw(matrix, len(text)+1, frames)
		// probability of each text token among the text tokens
		probs := make([]float64, len(text))
		for t, x := range text {
			lg := logits[(r*maxLen+len(sot)+t)*V:][:eot]
			probs[t] = math.Exp(float64(lg[x]) - logSumExp(lg))
		}
		out[i] = wordsFromPath(m.tok, lang, text, textIdx, timeIdx, probs)
	}
	return out, nil
}

// alignmentMatrix standardises each head's weights w [heads][T][frames] over
// the tokens, median-filters them along time, averages the heads and keeps
// the rows from the sot sequence's end (<|notimestamps|>) to the last text
// token: [textLen+1][frames].
func alignmentMatrix(w []float32, heads, T, frames, sotLen, textLen int) []float32 {
	for h := range heads {
		hw := w[h*T*frames:][:T*frames]
		for j := range frames {
			var mean float64
			for t := range T {
				mean += float64(hw[t*frames+j])
			}
			mean /= float64(T)
			var v float64
			for t := range T {
				d := float64(hw[t*frames+j]) - mean
				v += d * d
			}
			std := math.Sqrt(v / float64(T))
			for t := range T {
				hw[t*frames+j] = float32((float64(hw[t*frames+j]) - mean) / std)
			}
		}
	}
	rows := textLen + 1
	matrix := make([]float32, rows*frames)
	row := make([]float32, frames)
	for h := range heads {
		for k := range rows {
			medianFilter(row, w[(h*T+sotLen+k)*frames:][:frames], medianFilterWidth)
			dst := matrix[k*frames:][:frames]
			for j, v := range row {
				dst[j] += v
			}
		}
	}
	for i := range matrix {
		matrix[i] /= float32(heads)
	}
	return matrix
}

// medianFilter writes to dst the median of each width-wide window of src,
// reflecting src at its ends (torch's "reflect" padding); a row no longer
// than width/2 is copied as it is.
func medianFilter(dst, src []float32, width int) {
	n, r := len(src), width/2
	if n <= r {
		copy(dst, src)
		return
	}
	win := make([]float32, width)
	for j := range n {
		for k := -r; k <= r; k++ {
			i := j + k
			if i < 0 {
				i = -i
			}
			if i >= n {
				i = 2*n - 2 - i
			}
			win[k+r] = src[i]
		}
		slices.Sort(win)
		dst[j] = win[r]
	}
}

// dtw aligns the rows of x [n][m] with its columns along the path of
// greatest total x (dynamic time warping on -x), with openai-whisper's
// tie-breaking; it returns the path's row and column indices.
func dtw(x []float32, n, m int) (rows, cols []int) {
	inf := float32(math.Inf(1))
	cost := make([]float32, (n+1)*(m+1))
	trace := make([]int8, (n+1)*(m+1))
	for i := range cost {
		cost[i] = inf
		trace[i] = -1
	}
	cost[0] = 0
	W := m + 1
	for j := 1; j <= m; j++ {
		for i := 1; i <= n; i++ {
			c0, c1, c2 := cost[(i-1)*W+j-1], cost[(i-1)*W+j], cost[i*W+j-1]
			var c float32
			var t int8
			switch {
			case c0 < c1 && c0 < c2:
				c, t = c0, 0
			case c1 < c0 && c1 < c2:
				c, t = c1, 1
			default:
				c, t = c2, 2
			}
			cost[i*W+j] = -x[(i-1)*m+j-1] + c
			trace[i*W+j] = t
		}
	}
	for j := 0; j <= m; j++ {
		trace[j] = 2
	}
	for i := 0; i <= n; i++ {
		trace[i*W] = 1
	}
	i, j := n, m
	for i > 0 || j > 0 {
		rows = append(rows, i-1)
		cols = append(cols, j-1)
		switch trace[i*W+j] {
		case 0:
			i, j = i-1, j-1
		case 1:
			i--
		default:
			j--
		}
	}
	slices.Reverse(rows)
	slices.Reverse(cols)
	return rows, cols
}

// wordsFromPath groups the path's token boundaries into words
// (find_alignment's second half).
func wordsFromPath(tok *tokenizer.Tokenizer, lang string, text, textIdx, timeIdx []int, probs []float64) []wordTiming {
	words, wordTokens := splitToWordTokens(tok, lang, append(slices.Clone(text), tok.EOT()))
	if len(wordTokens) <= 1 {
		return nil
	}
	// the time at which the path enters each token's row
	var jumpTimes []float64
	for k := range textIdx {
		if k == 0 || textIdx[k] != textIdx[k-1] {
			jumpTimes = append(jumpTimes, float64(timeIdx[k])/tokensPerSecond)
		}
	}
	var out []wordTiming
	b := 0
	for w := 0; w+1 < len(wordTokens); w++ {
		e := b + len(wordTokens[w])
		if e >= len(jumpTimes) || b >= len(probs) {
			break
		}
		var p float64
		for _, x := range probs[b:min(e, len(probs))] {
			p += x
		}
		p /= float64(min(e, len(probs)) - b)
		out = append(out, wordTiming{word: words[w], tokens: wordTokens[w], start: jumpTimes[b], end: jumpTimes[e], probability: p})
		b = e
	}
	return out
}

// splitToWordTokens splits tokens into words: at spaces and punctuation, or
// for languages written without spaces at every complete character.
func splitToWordTokens(tok *tokenizer.Tokenizer, lang string, tokens []int) ([]string, [][]int) {
	switch lang {
	case "zh", "ja", "th", "lo", "my", "yue":
		return splitOnUnicode(tok, tokens)
	}
	return splitOnSpaces(tok, tokens)
}

// splitOnUnicode cuts wherever the decoded text so far is whole characters
// (a U+FFFD that the full text also has does not count as broken).
func splitOnUnicode(tok *tokenizer.Tokenizer, tokens []int) ([]string, [][]int) {
	full := []rune(tok.DecodeWithTimestamps(tokens))
	var words []string
	var wordTokens [][]int
	var cur []int
	offset := 0
	for _, x := range tokens {
		cur = append(cur, x)
		decoded := []rune(tok.DecodeWithTimestamps(cur))
		bad := slices.Index(decoded, '\ufffd')
		if bad < 0 || (bad+offset < len(full) && full[bad+offset] == '\ufffd') {
			words = append(words, string(decoded))
			wordTokens = append(wordTokens, cur)
			cur = nil
			offset += len(decoded)
		}
	}
	return words, wordTokens
}

// pythonPunctuation is Python's string.punctuation.
const pythonPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

func splitOnSpaces(tok *tokenizer.Tokenizer, tokens []int) ([]string, [][]int) {
	subwords, subTokens := splitOnUnicode(tok, tokens)
	var words []string
	var wordTokens [][]int
	for i, sub := range subwords {
		special := subTokens[i][0] >= tok.EOT()
		withSpace := strings.HasPrefix(sub, " ")
		// Python's `in`: a substring of the punctuation, "" included
		punct := strings.Contains(pythonPunctuation, strings.TrimSpace(sub))
		if special || withSpace || punct || len(words) == 0 {
			words = append(words, sub)
			wordTokens = append(wordTokens, slices.Clone(subTokens[i]))
		} else {
			words[len(words)-1] += sub
			wordTokens[len(wordTokens)-1] = append(wordTokens[len(wordTokens)-1], subTokens[i]...)
		}
	}
	return words, wordTokens
}

// mergePunctuations attaches leading punctuation to the following word and
// trailing punctuation to the preceding one, leaving empty words in their
// place.
func mergePunctuations(a []wordTiming, prepended, appended string) {
	for i, j := len(a)-2, len(a)-1; i >= 0; i-- {
		prev, next := &a[i], &a[j]
		if strings.HasPrefix(prev.word, " ") && strings.Contains(prepended, strings.TrimSpace(prev.word)) {
			next.word = prev.word + next.word
			next.tokens = append(slices.Clone(prev.tokens), next.tokens...)
			prev.word, prev.tokens = "", nil
		} else {
			j = i
		}
	}
	for i, j := 0, 1; j < len(a); j++ {
		prev, next := &a[i], &a[j]
		if !strings.HasSuffix(prev.word, " ") && strings.Contains(appended, next.word) {
			prev.word += next.word
			prev.tokens = append(slices.Clone(prev.tokens), next.tokens...)
			next.word, next.tokens = "", nil
		} else {
			i = j
		}
	}
}

// textTokens are a segment's tokens below <|endoftext|>.
func textTokens(tok *tokenizer.Tokenizer, toks []int) []int {
	var out []int
	for _, x := range toks {
		if x < tok.EOT() {
			out = append(out, x)
		}
	}
	return out
}

// addWordTimestamps sets the words of each window's segments from the
// window's alignment (add_word_timestamps): words at sentence ends and after
// pauses are kept within twice the median word duration, and the segments'
// ends move to their words'. offsets are the windows' start times;
// lastSpeech is the end of the speech before the first window, and the
// result the end of the last.
func addWordTimestamps(tok *tokenizer.Tokenizer, windows [][]*Segment, alignments [][]wordTiming, offsets []float64, lastSpeech float64) float64 {
	for w, segs := range windows {
		if len(segs) == 0 {
			continue
		}
		al := alignments[w]
		var durs []float64
		for _, x := range al {
			if d := x.end - x.start; d != 0 {
				durs = append(durs, d)
			}
		}
		median := 0.0
		if len(durs) > 0 {
			median = medianOf(durs)
		}
		median = math.Min(0.7, median)
		maxDur := median * 2
		if len(durs) > 0 {
			const sentenceEnd = ".。!！?？"
			for i := 1; i < len(al); i++ {
				if al[i].end-al[i].start > maxDur {
					// Python's `in`: a substring, "" included
					if strings.Contains(sentenceEnd, al[i].word) {
						al[i].end = al[i].start + maxDur
					} else if strings.Contains(sentenceEnd, al[i-1].word) {
						al[i].start = al[i].end - maxDur
					}
				}
			}
		}
		mergePunctuations(al, prependPunctuations, appendPunctuations)

		off := offsets[w]
		wi := 0
		for _, seg := range segs {
			n := len(textTokens(tok, seg.Tokens))
			saved := 0
			var words []Word
			for wi < len(al) && saved < n {
				t := al[wi]
				if t.word != "" {
					words = append(words, Word{Start: round2(off + t.start), End: round2(off + t.end), Text: t.word, Probability: t.probability})
				}
				saved += len(t.tokens)
				wi++
			}
			if len(words) > 0 {
				first := &words[0]
				if first.End-lastSpeech > median*4 &&
					(first.End-first.Start > maxDur || (len(words) > 1 && words[1].End-first.Start > maxDur*2)) {
					if len(words) > 1 && words[1].End-words[1].Start > maxDur {
						boundary := math.Max(words[1].End/2, words[1].End-maxDur)
						first.End, words[1].Start = boundary, boundary
					}
					first.Start = math.Max(0, first.End-maxDur)
				}
				if seg.Start < first.End && seg.Start-0.5 > first.Start {
					first.Start = math.Max(0, math.Min(first.End-median, seg.Start))
				} else {
					seg.Start = first.Start
				}
				last := &words[len(words)-1]
				if seg.End > last.Start && seg.End+0.5 < last.End {
					last.End = math.Max(last.Start+median, seg.End)
				} else {
					seg.End = last.End
				}
				lastSpeech = seg.End
			}
			seg.Words = words
		}
	}
	return lastSpeech
}

// medianOf is numpy's median.
func medianOf(x []float64) float64 {
	s := slices.Clone(x)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// lastWordEnd is get_end: the end of the segments' last word, else of the
// last segment; ok is false without segments.
func lastWordEnd(segs []*Segment) (float64, bool) {
	for i := len(segs) - 1; i >= 0; i-- {
		if w := segs[i].Words; len(w) > 0 {
			return w[len(w)-1].End, true
		}
	}
	if len(segs) > 0 {
		return segs[len(segs)-1].End, true
	}
	return 0, false
}

// alignSOT is the sot sequence the alignment pass starts with: SOT, then
// for multilingual models the language and the task.
func (m *Model) alignSOT(lang, task string) []int {
	if !m.tok.Multilingual() {
		return []int{m.tok.SOT()}
	}
	if task == "" {
		task = "transcribe"
	}
	if seq := m.tok.SOTSequence(lang, task); seq != nil {
		return seq
	}
	return m.tok.SOTSequence("en", task)
}

// windowWords cuts independently decoded windows (TranscribeBatched) into
// segments with their words: one alignment pass for all of them over their
// encoder output f (window i of f decoded as results[i], starting at mel
// frame starts[i] of content). Windows judged silent get no segments.
// lastSpeech carries the end of the speech across calls.
func (m *Model) windowWords(ctx context.Context, f *features, results []Result, wins []batchWindow, opt TranscribeOptions, lastSpeech float64) ([][]Segment, float64, error) {
	segs := make([][]Segment, len(results))
	texts := make([][]int, len(results))
	frames := make([]int, len(results))
	offs := make([]float64, len(results))
	for i, r := range results {
		if r.NoSpeechProb > opt.NoSpeechThreshold && !(r.AvgLogprob > opt.LogprobThreshold) {
			continue
		}
		offs[i], frames[i] = wins[i].off, wins[i].frames
		segs[i] = windowSegments(m.tok, r, offs[i], offs[i]+float64(frames[i])/framesPerSec)
		for _, s := range segs[i] {
			texts[i] = append(texts[i], textTokens(m.tok, s.Tokens)...)
		}
	}
	al, err := m.alignFeatures(ctx, f, m.alignSOT(opt.Language, opt.Task), texts, frames, opt.Language)
	if err != nil {
		return nil, lastSpeech, err
	}
	ptrs := make([][]*Segment, len(segs))
	for i := range segs {
		for j := range segs[i] {
			ptrs[i] = append(ptrs[i], &segs[i][j])
		}
	}
	lastSpeech = addWordTimestamps(m.tok, ptrs, al, offs, lastSpeech)
	return segs, lastSpeech, nil
}
