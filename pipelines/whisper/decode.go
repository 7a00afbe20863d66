package whisper

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
)

// textModel is what decoding needs from a Whisper network: one forward pass of
// the decoder over new tokens for every row, against cached keys and values.
type textModel interface {
	// forward feeds tokens (the same count for every row) and returns the
	// logits of every fed position: rows × positions × vocab.
	forward(ctx context.Context, st decoderState, tokens [][]int) ([]float32, error)
	vocab() int
	textCtx() int
}

// decoderState is a model's per-call cache (encoder output and past keys and
// values), one row per decoded sequence.
type decoderState interface {
	// reorder keeps the rows src, in that order (beam search).
	reorder(src []int)
}

// Options are Whisper's DecodingOptions that this server exposes.
type Options struct {
	Task        string  // "transcribe" or "translate"
	Language    string  // "" = detect
	Temperature float64 // 0 = greedy or beam search
	BeamSize    int     // 0 or 1 = greedy
	Patience    float64 // 0 = 1.0
	Prompt      []int   // previous text, already tokenized
	// WithoutTimestamps asks for text only (<|notimestamps|>).
	WithoutTimestamps bool
	// MaxInitialTimestamp bounds the first timestamp, in seconds (default 1).
	MaxInitialTimestamp float64
	// SampleLen caps the sampled tokens (0 = half the text context).
	SampleLen int
	// Rand drives sampling when Temperature > 0.
	Rand *rand.Rand
}

// Result is one decoded window.
type Result struct {
	Language         string
	Tokens           []int
	Text             string
	AvgLogprob       float64
	NoSpeechProb     float64
	Temperature      float64
	CompressionRatio float64
}

// decodeTask holds what one decoding run shares between rows.
type decodeTask struct {
	m            textModel
	tok          *tokenizer.Tokenizer
	opt          Options
	initial      []int
	sampleBegin  int
	sotIndex     int
	suppress     []int
	blank        []int
	maxInitialTS int
}

func newDecodeTask(m textModel, tok *tokenizer.Tokenizer, opt Options) *decodeTask {
	if opt.Task == "" {
		opt.Task = "transcribe"
	}
	if opt.SampleLen == 0 {
		opt.SampleLen = m.textCtx() / 2
	}
	if opt.Patience == 0 {
		opt.Patience = 1
	}
	if opt.MaxInitialTimestamp == 0 {
		opt.MaxInitialTimestamp = 1
	}
	t := &decodeTask{m: m, tok: tok, opt: opt}
	// Whisper's sot_sequence: multilingual models name a language (English
	// until detection replaces it) and the task; English-only models neither.
	sot := []int{tok.SOT()}
	if tok.Multilingual() {
		lang := opt.Language
		if lang == "" {
			lang = "en"
		}
		id, _ := tok.LanguageToken(lang)
		task := tok.Transcribe()
		if opt.Task == "translate" {
			task = tok.Translate()
		}
		sot = append(sot, id, task)
	}
	if opt.WithoutTimestamps {
		sot = append(sot, tok.NoTimestamps())
	}
	if len(opt.Prompt) > 0 {
		p := opt.Prompt
		if keep := m.textCtx()/2 - 1; len(p) > keep {
			p = p[len(p)-keep:]
		}
		t.initial = append(append([]int{tok.SOTPrev()}, p...), sot...)
	} else {
		t.initial = sot
	}
	t.sampleBegin = len(t.initial)
	for i, x := range t.initial {
		if x == tok.SOT() {
			t.sotIndex = i
			break
		}
	}
	// suppress_tokens "-1": the non-speech symbols plus the control tokens
	set := map[int]bool{}
	for _, x := range tok.NonSpeechTokens() {
		set[x] = true
	}
	for _, x := range []int{tok.Transcribe(), tok.Translate(), tok.SOT(), tok.SOTPrev(), tok.SOTLM(), tok.NoSpeech()} {
		set[x] = true
	}
	for x := range set {
		t.suppress = append(t.suppress, x)
	}
	sort.Ints(t.suppress)
	t.blank = append(tok.Encode(" "), tok.EOT())
	t.maxInitialTS = int(math.RoundToEven(opt.MaxInitialTimestamp / 0.02))
	return t
}

// applyFilters masks logits for one row as Whisper's SuppressBlank,
// SuppressTokens and ApplyTimestampRules do, in that order.
func (t *decodeTask) applyFilters(logits []float32, seq []int) {
	ninf := float32(math.Inf(-1))
	if len(seq) == t.sampleBegin {
		for _, x := range t.blank {
			logits[x] = ninf
		}
	}
	for _, x := range t.suppress {
		logits[x] = ninf
	}
	if t.opt.WithoutTimestamps {
		return
	}
	tsBegin, eot := t.tok.TimestampBegin(), t.tok.EOT()
	logits[t.tok.NoTimestamps()] = ninf
	sampled := seq[t.sampleBegin:]
	last := len(sampled) >= 1 && sampled[len(sampled)-1] >= tsBegin
	penultimate := len(sampled) < 2 || sampled[len(sampled)-2] >= tsBegin
	if last {
		if penultimate {
			fill(logits[tsBegin:], ninf)
		} else {
			fill(logits[:eot], ninf)
		}
	}
	lastTS := -1
	for _, x := range sampled {
		if x >= tsBegin {
			lastTS = x
		}
	}
	if lastTS >= 0 {
		// timestamps never decrease, and a segment has a nonzero length
		if !(last && !penultimate) {
			lastTS++
		}
		fill(logits[tsBegin:lastTS], ninf)
	}
	if len(seq) == t.sampleBegin {
		fill(logits[:tsBegin], ninf)
		if lastAllowed := tsBegin + t.maxInitialTS; lastAllowed+1 < len(logits) {
			fill(logits[lastAllowed+1:], ninf)
		}
	}
	// when timestamps together are likelier than any text token, take one;
	// comparing log-softmax values, the shared normaliser cancels out
	tsLSE := logSumExp(logits[tsBegin:])
	maxText := float32(math.Inf(-1))
	for _, v := range logits[:tsBegin] {
		if v > maxText {
			maxText = v
		}
	}
	if tsLSE > float64(maxText) {
		fill(logits[:tsBegin], ninf)
	}
}

func fill(s []float32, v float32) {
	for i := range s {
		s[i] = v
	}
}

// logSoftmax in float32, as torch computes it on float32 logits.
func logSoftmax(x []float32) []float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v - m))
	}
	ls := float32(math.Log(s))
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v - m - ls
	}
	return out
}

func logSumExp(x []float32) float64 {
	mf := float32(math.Inf(-1))
	for _, v := range x {
		if v > mf {
			mf = v
		}
	}
	m := float64(mf)
	if math.IsInf(m, -1) {
		return m
	}
	var s float64
	for _, v := range x {
		if d := float64(v) - m; d > -100 { // exp(-100) adds nothing to a sum ≥ 1
			s += math.Exp(d)
		}
	}
	return m + math.Log(s)
}

// detectLanguage returns, per row, the most likely language and the
// probabilities of all languages, from the logits after <|startoftranscript|>.
func detectLanguage(ctx context.Context, m textModel, tok *tokenizer.Tokenizer, st decoderState, rows int) ([]string, []map[string]float64, error) {
	in := make([][]int, rows)
	for i := range in {
		in[i] = []int{tok.SOT()}
	}
	logits, err := m.forward(ctx, st, in)
	if err != nil {
		return nil, nil, err
	}
	v := m.vocab()
	langs := tok.Languages()
	codes := make([]string, rows)
	probs := make([]map[string]float64, rows)
	for r := 0; r < rows; r++ {
		row := logits[r*v : (r+1)*v]
		sel := make([]float32, len(langs))
		best := 0
		for i, c := range langs {
			id, _ := tok.LanguageToken(c)
			sel[i] = row[id]
			if sel[i] > sel[best] {
				best = i
			}
		}
		lp := logSoftmax(sel)
		probs[r] = map[string]float64{}
		for i, c := range langs {
			probs[r][c] = math.Exp(float64(lp[i]))
		}
		codes[r] = langs[best]
	}
	return codes, probs, nil
}

// run decodes one batch of windows whose encoder output newState gives; all
// rows share the options. Languages are detected per row when not given.
func (t *decodeTask) run(ctx context.Context, newState func(rows int) (decoderState, error), nAudio int) ([]Result, error) {
	langs := make([]string, nAudio)
	initial := make([][]int, nAudio)
	for i := range initial {
		initial[i] = append([]int(nil), t.initial...)
		langs[i] = t.opt.Language
	}
	if t.opt.Language == "" {
		if !t.tok.Multilingual() {
			for i := range langs {
				langs[i] = "en"
			}
		} else {
			st, err := newState(nAudio)
			if err != nil {
				return nil, err
			}
			codes, _, err := detectLanguage(ctx, t.m, t.tok, st, nAudio)
			if err != nil {
				return nil, err
			}
			for i, c := range codes {
				langs[i] = c
				id, _ := t.tok.LanguageToken(c)
				initial[i][t.sotIndex+1] = id
			}
		}
	}
	group := 1
	beam := t.opt.BeamSize > 1 && t.opt.Temperature == 0
	if beam {
		group = t.opt.BeamSize
	}
	rows := nAudio * group
	st, err := newState(rows)
	if err != nil {
		return nil, err
	}
	tokens := make([][]int, rows)
	for i := range tokens {
		tokens[i] = append([]int(nil), initial[i/group]...)
	}
	sum := make([]float32, rows)
	noSpeech := make([]float64, rows)
	v := t.m.vocab()
	eot := t.tok.EOT()
	var bs *beamSearch
	if beam {
		bs = &beamSearch{size: group, eot: eot, maxCandidates: int(math.RoundToEven(float64(group) * t.opt.Patience)), finished: make([]map[string]seqScore, nAudio)}
		for i := range bs.finished {
			bs.finished[i] = map[string]seqScore{}
		}
	}
	feed := tokens
	for i := 0; i < t.opt.SampleLen; i++ {
		logits, err := t.m.forward(ctx, st, feed)
		if err != nil {
			return nil, err
		}
		n := len(feed[0])
		last := make([][]float32, rows)
		for r := 0; r < rows; r++ {
			if i == 0 {
				at := logits[(r*n+t.sotIndex)*v : (r*n+t.sotIndex+1)*v]
				noSpeech[r] = math.Exp(float64(at[t.tok.NoSpeech()]) - logSumExp(at))
			}
			last[r] = logits[(r*n+n-1)*v : (r*n+n)*v]
			t.applyFilters(last[r], tokens[r])
		}
		var done bool
		if beam {
			var src []int
			tokens, src, done = bs.update(tokens, last, sum)
			st.reorder(src)
		} else {
			tokens, done = t.sampleStep(tokens, last, sum)
		}
		feed = make([][]int, rows)
		for r := range feed {
			feed[r] = []int{tokens[r][len(tokens[r])-1]}
		}
		if done || len(tokens[0]) > t.m.textCtx() {
			break
		}
	}
	// finalize: candidates per audio with their summed log-probabilities
	cands := make([][]seqScore, nAudio)
	if beam {
		cands = bs.finalize(tokens, sum)
	} else {
		for r := range tokens {
			cands[r] = []seqScore{{append(append([]int(nil), tokens[r]...), eot), sum[r]}}
		}
	}
	out := make([]Result, nAudio)
	for a := range out {
		best, bestScore := 0, math.Inf(-1)
		for j, c := range cands[a] {
			c.tokens = trimAtEOT(c.tokens[t.sampleBegin:], eot)
			cands[a][j] = c
			// Whisper's ranker with no length penalty: logprob / length
			if s := float64(c.sum) / float64(len(c.tokens)); s > bestScore {
				best, bestScore = j, s
			}
		}
		c := cands[a][best]
		text := strings.TrimSpace(t.tok.Decode(c.tokens))
		out[a] = Result{
			Language: langs[a], Tokens: c.tokens, Text: text,
			AvgLogprob:   float64(c.sum) / float64(len(c.tokens)+1),
			NoSpeechProb: noSpeech[a*group], Temperature: t.opt.Temperature,
			CompressionRatio: compressionRatio(text),
		}
	}
	return out, nil
}

func trimAtEOT(s []int, eot int) []int {
	for i, x := range s {
		if x == eot {
			return s[:i]
		}
	}
	return s
}

// sampleStep is Whisper's greedy decoder (argmax at temperature 0, sampling
// from softmax(logits/T) otherwise).
func (t *decodeTask) sampleStep(tokens [][]int, logits [][]float32, sum []float32) ([][]int, bool) {
	eot := t.tok.EOT()
	done := true
	for r, row := range logits {
		var next int
		if t.opt.Temperature == 0 {
			next = argmax(row)
		} else {
			next = sampleFrom(row, t.opt.Temperature, t.opt.Rand)
		}
		prev := tokens[r][len(tokens[r])-1]
		if prev == eot {
			next = eot
		} else {
			sum[r] += row[next] - float32(logSumExp(row))
		}
		tokens[r] = append(tokens[r], next)
		if next != eot {
			done = false
		}
	}
	return tokens, done
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func sampleFrom(logits []float32, temp float64, rng *rand.Rand) int {
	if rng == nil {
		rng = rand.New(rand.NewPCG(1, 2))
	}
	scaled := make([]float32, len(logits))
	for i, v := range logits {
		scaled[i] = float32(float64(v) / temp)
	}
	lp := logSoftmax(scaled)
	u := rng.Float64()
	var acc float64
	last := 0
	for i, v := range lp {
		if math.IsInf(float64(v), -1) {
			continue
		}
		acc += math.Exp(float64(v))
		last = i
		if u < acc {
			return i
		}
	}
	return last
}

type seqScore struct {
	tokens []int
	sum    float32
}

// beamSearch is Whisper's BeamSearchDecoder: per audio, the beam_size+1 best
// continuations of every beam are ranked, finished ones set aside until
// round(beam_size × patience) are collected.
type beamSearch struct {
	size, eot, maxCandidates int
	finished                 []map[string]seqScore
	order                    [][]string // insertion order of finished, per audio
}

func seqKey(s []int) string {
	var b strings.Builder
	for _, x := range s {
		b.WriteString(strconv.Itoa(x))
		b.WriteByte(',')
	}
	return b.String()
}

func (b *beamSearch) update(tokens [][]int, logits [][]float32, sum []float32) ([][]int, []int, bool) {
	nAudio := len(tokens) / b.size
	if b.order == nil {
		b.order = make([][]string, nAudio)
	}
	var next [][]int
	var src []int
	newSum := make([]float32, len(sum))
	for a := 0; a < nAudio; a++ {
		type cand struct {
			seq   []int
			score float32
			src   int
			order int
		}
		scores := map[string]*cand{}
		var keys []string
		for j := 0; j < b.size; j++ {
			idx := a*b.size + j
			row := logits[idx]
			lse := float32(logSumExp(row))
			for _, tk := range topK(row, b.size+1) {
				seq := append(append([]int(nil), tokens[idx]...), tk)
				k := seqKey(seq)
				sc := sum[idx] + (row[tk] - lse)
				if c, ok := scores[k]; ok {
					// a repeated sequence keeps its first position, takes the
					// latest score and source, as a Python dict does
					c.score, c.src = sc, idx
					continue
				}
				scores[k] = &cand{seq, sc, idx, len(keys)}
				keys = append(keys, k)
			}
		}
		sorted := make([]*cand, 0, len(keys))
		for _, k := range keys {
			sorted = append(sorted, scores[k])
		}
		sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].score > sorted[j].score })
		saved := 0
		var newly []*cand
		for _, c := range sorted {
			if c.seq[len(c.seq)-1] == b.eot {
				newly = append(newly, c)
				continue
			}
			newSum[len(next)] = c.score
			next = append(next, c.seq)
			src = append(src, c.src)
			saved++
			if saved == b.size {
				break
			}
		}
		for _, c := range newly {
			if len(b.finished[a]) >= b.maxCandidates {
				break
			}
			k := seqKey(c.seq)
			if _, ok := b.finished[a][k]; !ok {
				b.order[a] = append(b.order[a], k)
			}
			b.finished[a][k] = seqScore{c.seq, c.score}
		}
	}
	copy(sum, newSum)
	done := true
	for _, f := range b.finished {
		if len(f) < b.maxCandidates {
			done = false
		}
	}
	return next, src, done
}

func (b *beamSearch) finalize(tokens [][]int, sum []float32) [][]seqScore {
	out := make([][]seqScore, len(b.finished))
	for a, f := range b.finished {
		if len(f) < b.size {
			idx := make([]int, b.size)
			for j := range idx {
				idx[j] = j
			}
			// numpy's argsort (quicksort, ascending) reversed; ties are rare
			sort.SliceStable(idx, func(i, j int) bool { return sum[a*b.size+idx[i]] < sum[a*b.size+idx[j]] })
			for i := len(idx) - 1; i >= 0; i-- {
				j := idx[i]
				seq := append(append([]int(nil), tokens[a*b.size+j]...), b.eot)
				k := seqKey(seq)
				if _, ok := f[k]; !ok {
					b.order[a] = append(b.order[a], k)
				}
				f[k] = seqScore{seq, sum[a*b.size+j]}
				if len(f) >= b.size {
					break
				}
			}
		}
		for _, k := range b.order[a] {
			out[a] = append(out[a], f[k])
		}
	}
	return out
}

// topK returns the indices of the k largest values, largest first.
func topK(x []float32, k int) []int {
	idx := make([]int, 0, k+1)
	for i, v := range x {
		if len(idx) == k && v <= x[idx[k-1]] {
			continue
		}
		p := sort.Search(len(idx), func(j int) bool { return x[idx[j]] < v })
		idx = append(idx, 0)
		copy(idx[p+1:], idx[p:])
		idx[p] = i
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	return idx
}
