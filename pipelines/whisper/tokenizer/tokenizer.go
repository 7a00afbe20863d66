// Package tokenizer is Whisper's tokenizer: GPT-2 style byte-level BPE over
// tiktoken ranks plus Whisper's special tokens, behaving exactly like
// openai-whisper's whisper/tokenizer.py (encode, decode, special ids,
// sot_sequence, non_speech_tokens). It reads either the .tiktoken rank files
// that openai-whisper ships or a Hugging Face export (vocab.json plus
// added_tokens.json or tokenizer.json).
package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// gpt2Ranks is the size of the English-only (.en) models' ordinary
// vocabulary; the multilingual one has one more token, so every special
// token id of a multilingual model is one higher.
const gpt2Ranks = 50256

// numTimestamps covers 0.00 s to 30.00 s in 20 ms steps.
const numTimestamps = 1501

// fixedSpecials counts the special tokens other than languages and
// timestamps: endoftext, startoftranscript, translate, transcribe,
// startoflm, startofprev, nospeech, notimestamps.
const fixedSpecials = 8

// Tokenizer is immutable once built and safe for concurrent use.
type Tokenizer struct {
	ranks     map[string]int // ordinary token bytes → id (= tiktoken rank)
	tokens    [][]byte       // id → bytes (ordinary) or text (special)
	nOrdinary int

	multilingual bool
	numLanguages int
	specials     map[string]int // special token text → id

	eot, sot, translate, transcribe, sotLM, sotPrev, noSpeech, noTimestamps, timestampBegin int

	nonSpeech []int
}

// FromTiktoken builds from a .tiktoken ranks file ("base64(bytes) rank" per
// line) plus Whisper's special tokens: gpt2.tiktoken with multilingual=false
// for the English-only models, multilingual.tiktoken with multilingual=true
// otherwise. numLanguages is 99 for most models, 100 for large-v3.
func FromTiktoken(r io.Reader, multilingual bool, numLanguages int) (*Tokenizer, error) {
	var ordinary [][]byte
	seen := make(map[int]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		fields := bytes.Fields(sc.Bytes())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("tiktoken line %d: want \"base64 rank\"", line)
		}
		tok, err := base64.StdEncoding.DecodeString(string(fields[0]))
		if bytes.Trim(fields[0], "=") == nil {
			// multilingual.tiktoken has a token "=" (empty bytes, as Python's
			// lenient b64decode reads it); Go's decoder rejects it.
			tok, err = []byte{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tiktoken line %d: %v", line, err)
		}
		rank, err := strconv.Atoi(string(fields[1]))
		if err != nil || rank < 0 {
			return nil, fmt.Errorf("tiktoken line %d: bad rank %q", line, fields[1])
		}
		if seen[rank] {
			return nil, fmt.Errorf("tiktoken line %d: rank %d repeated", line, rank)
		}
		seen[rank] = true
		if rank >= len(ordinary) {
			ordinary = append(ordinary, make([][]byte, rank+1-len(ordinary))...)
		}
		ordinary[rank] = tok
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tiktoken ranks: %w", err)
	}
	return build(ordinary, multilingual, numLanguages)
}

// build adds Whisper's special tokens after the ordinary ones, in the order
// of whisper's get_encoding: their ids follow from that order alone.
func build(ordinary [][]byte, multilingual bool, numLanguages int) (*Tokenizer, error) {
	if numLanguages < 0 || numLanguages > MaxLanguages {
		return nil, fmt.Errorf("tokenizer: %d languages (at most %d)", numLanguages, MaxLanguages)
	}
	if len(ordinary) == 0 {
		return nil, fmt.Errorf("tokenizer: no ordinary tokens")
	}
	t := &Tokenizer{
		ranks:        make(map[string]int, len(ordinary)),
		nOrdinary:    len(ordinary),
		multilingual: multilingual,
		numLanguages: numLanguages,
		specials:     make(map[string]int, 8+numLanguages+numTimestamps),
	}
	for id, tok := range ordinary {
		if tok == nil {
			// Specials are numbered from len(ranks): a gap would make ids collide.
			return nil, fmt.Errorf("tokenizer: rank %d is missing", id)
		}
		if prev, dup := t.ranks[string(tok)]; dup {
			return nil, fmt.Errorf("tokenizer: ranks %d and %d have the same bytes", prev, id)
		}
		t.ranks[string(tok)] = id
	}
	// BPE starts from single bytes, so every byte must be a token.
	for b := 0; b < 256; b++ {
		if _, ok := t.ranks[string([]byte{byte(b)})]; !ok {
			return nil, fmt.Errorf("tokenizer: byte %#02x has no token", b)
		}
	}
	t.tokens = slices.Clip(ordinary)
	add := func(text string) int {
		id := len(t.tokens)
		t.tokens = append(t.tokens, []byte(text))
		t.specials[text] = id
		return id
	}
	t.eot = add("<|endoftext|>")
	t.sot = add("<|startoftranscript|>")
	for _, l := range languages[:numLanguages] {
		add("<|" + l.code + "|>")
	}
	t.translate = add("<|translate|>")
	t.transcribe = add("<|transcribe|>")
	t.sotLM = add("<|startoflm|>")
	t.sotPrev = add("<|startofprev|>")
	t.noSpeech = add("<|nospeech|>")
	t.noTimestamps = add("<|notimestamps|>")
	t.timestampBegin = len(t.tokens)
	for i := 0; i < numTimestamps; i++ {
		// i*0.02 s printed with two decimals, computed exactly in integers.
		add(fmt.Sprintf("<|%d.%02d|>", i/50, i%50*2))
	}
	t.nonSpeech = t.computeNonSpeech()
	return t, nil
}

// EOT is <|endoftext|>.
func (t *Tokenizer) EOT() int { return t.eot }

// SOT is <|startoftranscript|>.
func (t *Tokenizer) SOT() int { return t.sot }

// SOTPrev is <|startofprev|>, which introduces the previous-text prompt.
func (t *Tokenizer) SOTPrev() int { return t.sotPrev }

// SOTLM is <|startoflm|>.
func (t *Tokenizer) SOTLM() int { return t.sotLM }

// NoSpeech is <|nospeech|> (<|nocaptions|> in some older exports).
func (t *Tokenizer) NoSpeech() int { return t.noSpeech }

// NoTimestamps is <|notimestamps|>.
func (t *Tokenizer) NoTimestamps() int { return t.noTimestamps }

// TimestampBegin is <|0.00|>; timestamp k (k*20 ms) is TimestampBegin()+k.
func (t *Tokenizer) TimestampBegin() int { return t.timestampBegin }

// Translate is <|translate|>.
func (t *Tokenizer) Translate() int { return t.translate }

// Transcribe is <|transcribe|>.
func (t *Tokenizer) Transcribe() int { return t.transcribe }

// Multilingual reports whether this is the multilingual vocabulary (not an
// English-only .en model).
func (t *Tokenizer) Multilingual() bool { return t.multilingual }

// VocabSize is the number of token ids, ordinary and special (the model's
// n_vocab).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// Languages returns the codes of this vocabulary's languages in token order.
func (t *Tokenizer) Languages() []string {
	out := make([]string, t.numLanguages)
	for i, l := range languages[:t.numLanguages] {
		out[i] = l.code
	}
	return out
}

// LanguageTokens returns the ids of all language tokens in order (whisper's
// all_language_tokens, sorted).
func (t *Tokenizer) LanguageTokens() []int {
	out := make([]int, t.numLanguages)
	for i := range out {
		out[i] = t.sot + 1 + i
	}
	return out
}

// LanguageToken returns the id of <|code|>; false where this vocabulary lacks
// the language (e.g. "yue" before large-v3). Names are not accepted here; see
// LanguageCode.
func (t *Tokenizer) LanguageToken(code string) (int, bool) {
	id, ok := t.specials["<|"+code+"|>"]
	if !ok || id <= t.sot || id > t.sot+t.numLanguages {
		return 0, false
	}
	return id, true
}

// LanguageOf returns the code of a language token.
func (t *Tokenizer) LanguageOf(token int) (string, bool) {
	i := token - t.sot - 1
	if i < 0 || i >= t.numLanguages {
		return "", false
	}
	return languages[i].code, true
}

// SpecialToken returns the id of a special token by its text, e.g.
// "<|nospeech|>" or "<|1.00|>".
func (t *Tokenizer) SpecialToken(text string) (int, bool) {
	id, ok := t.specials[text]
	return id, ok
}

// SOTSequence is whisper's sot_sequence: <|startoftranscript|>, then the
// language token unless language is "", then the task token unless task is
// "". language may be a code or a name (as get_tokenizer accepts); task is
// "transcribe" or "translate". English-only models take neither, as
// get_tokenizer forces, so their sequence is always just SOT. It returns nil
// for an unknown language or task, or a language this multilingual
// vocabulary lacks.
func (t *Tokenizer) SOTSequence(language, task string) []int {
	seq := []int{t.sot}
	if language != "" {
		code, ok := LanguageCode(language)
		if !ok {
			return nil
		}
		if t.multilingual {
			id, ok := t.LanguageToken(code)
			if !ok {
				return nil
			}
			seq = append(seq, id)
		}
	}
	switch task {
	case "":
	case "transcribe":
		if t.multilingual {
			seq = append(seq, t.transcribe)
		}
	case "translate":
		if t.multilingual {
			seq = append(seq, t.translate)
		}
	default:
		return nil
	}
	return seq
}

// NonSpeechTokens returns whisper's non_speech_tokens (sorted): tokens of
// speaker tags and sound annotations that decoding suppresses.
func (t *Tokenizer) NonSpeechTokens() []int { return slices.Clone(t.nonSpeech) }

// computeNonSpeech follows whisper: symbols (and their space-prefixed forms)
// that are a single token, plus the first token of the musical symbols
// (which share their leading UTF-8 bytes), plus " -" and " '" so those are
// allowed only between words.
func (t *Tokenizer) computeNonSpeech() []int {
	var symbols []string
	for _, r := range "\"#()*+/:;<=>@[\\]^_`{|}~「」『』" {
		symbols = append(symbols, string(r))
	}
	symbols = append(symbols, "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", "(\"",
		"((", "))", "(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪")
	set := map[int]bool{t.Encode(" -")[0]: true, t.Encode(" '")[0]: true}
	for _, s := range symbols {
		for _, ids := range [][]int{t.Encode(s), t.Encode(" " + s)} {
			if len(ids) == 1 {
				set[ids[0]] = true
			}
		}
	}
	for _, r := range "♩♪♫♬♭♮♯" {
		set[t.Encode(string(r))[0]] = true
		set[t.Encode(" " + string(r))[0]] = true
	}
	out := make([]int, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
