package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
)

// FromHF builds from a Hugging Face (transformers/optimum) Whisper export.
// files maps file names ("vocab.json", "added_tokens.json",
// "tokenizer.json", ...) to paths; vocab.json or tokenizer.json must be
// there. Ordinary token ids equal tiktoken ranks, so the same tiktoken-style
// BPE runs over them and merges.txt is not needed. Whether the vocabulary is
// multilingual follows from where <|endoftext|> is (after GPT-2's 50256
// tokens for English-only models); the number of languages from the <|xx|>
// tokens after <|startoftranscript|>, or, where the files list no such
// tokens, from config.json's vocab_size. Every special token the files name is
// checked against Whisper's layout; timestamps that older exports omit are
// supplied.
func FromHF(files map[string]string) (*Tokenizer, error) {
	find := func(name string) string {
		if p, ok := files[name]; ok {
			return p
		}
		for k, p := range files { // keys may carry a directory
			if path.Base(k) == name {
				return p
			}
		}
		return ""
	}
	vocab := map[string]int{}
	added := map[string]int{}
	addAll := func(src string, m map[string]int) error {
		for k, v := range m {
			if old, ok := added[k]; ok && old != v {
				return fmt.Errorf("%s: %q is %d, elsewhere %d", src, k, v, old)
			}
			added[k] = v
		}
		return nil
	}

	if p := find("tokenizer.json"); p != "" {
		var tj struct {
			AddedTokens []struct {
				ID      int    `json:"id"`
				Content string `json:"content"`
			} `json:"added_tokens"`
			Model struct {
				Type  string         `json:"type"`
				Vocab map[string]int `json:"vocab"`
			} `json:"model"`
		}
		if err := readJSON(p, &tj); err != nil {
			return nil, err
		}
		if tj.Model.Type != "" && tj.Model.Type != "BPE" {
			return nil, fmt.Errorf("tokenizer.json: model type %q, want BPE", tj.Model.Type)
		}
		vocab = tj.Model.Vocab
		m := make(map[string]int, len(tj.AddedTokens))
		for _, a := range tj.AddedTokens {
			m[a.Content] = a.ID
		}
		if err := addAll("tokenizer.json", m); err != nil {
			return nil, err
		}
	}
	if p := find("vocab.json"); p != "" {
		// vocab.json is what the slow tokenizer reads; prefer it when both exist.
		vocab = nil
		if err := readJSON(p, &vocab); err != nil {
			return nil, err
		}
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("tokenizer: no vocab.json or tokenizer.json vocabulary among %d files", len(files))
	}
	if p := find("added_tokens.json"); p != "" {
		var m map[string]int
		if err := readJSON(p, &m); err != nil {
			return nil, err
		}
		if err := addAll("added_tokens.json", m); err != nil {
			return nil, err
		}
	}

	// Special tokens may sit in vocab.json too (exports put <|endoftext|> there).
	eot, ok := added["<|endoftext|>"]
	if !ok {
		if eot, ok = vocab["<|endoftext|>"]; !ok {
			return nil, fmt.Errorf("tokenizer: no <|endoftext|> token")
		}
	}
	if eot <= 0 || eot > len(vocab) {
		return nil, fmt.Errorf("tokenizer: <|endoftext|> id %d does not follow the %d-token vocabulary", eot, len(vocab))
	}
	ordinary := make([][]byte, eot)
	for k, id := range vocab {
		if id >= eot {
			if old, ok := added[k]; ok && old != id {
				return nil, fmt.Errorf("tokenizer: %q is %d in the vocabulary, %d as added token", k, id, old)
			}
			added[k] = id
			continue
		}
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: %q has id %d", k, id)
		}
		b, ok := fromByteLevel(k)
		if !ok {
			return nil, fmt.Errorf("tokenizer: vocabulary entry %q is not byte-level BPE text", k)
		}
		if ordinary[id] != nil {
			return nil, fmt.Errorf("tokenizer: id %d appears twice in the vocabulary", id)
		}
		ordinary[id] = b
	}

	// Older vocabularies (faster-whisper's tokenizer.json among them) name
	// Hebrew by its withdrawn code iw; openai-whisper says he.
	if id, ok := added["<|iw|>"]; ok {
		if _, dup := added["<|he|>"]; !dup {
			delete(added, "<|iw|>")
			added["<|he|>"] = id
		}
	}
	numLanguages := 0
	if sot, ok := added["<|startoftranscript|>"]; ok {
		for numLanguages < MaxLanguages {
			if id, ok := added["<|"+languages[numLanguages].code+"|>"]; !ok || id != sot+1+numLanguages {
				break
			}
			numLanguages++
		}
	} else if p := find("config.json"); p != "" {
		// Files as openai-whisper once shipped them name only <|endoftext|>;
		// the model's vocab_size then tells how many languages sit between
		// the fixed specials.
		var cfg struct {
			VocabSize int `json:"vocab_size"`
		}
		if err := readJSON(p, &cfg); err != nil {
			return nil, err
		}
		numLanguages = cfg.VocabSize - eot - fixedSpecials - numTimestamps
		if numLanguages < 0 || numLanguages > MaxLanguages {
			return nil, fmt.Errorf("tokenizer: config.json vocab_size %d does not fit Whisper's layout after %d tokens", cfg.VocabSize, eot)
		}
	} else {
		return nil, fmt.Errorf("tokenizer: no <|startoftranscript|> token (and no config.json to size the vocabulary)")
	}
	t, err := build(ordinary, eot > gpt2Ranks, numLanguages)
	if err != nil {
		return nil, err
	}
	for text, id := range added {
		if text == "<|nocaptions|>" { // the pre-tiktoken name of <|nospeech|>
			text = "<|nospeech|>"
		}
		want, known := t.specials[text]
		switch {
		case known && want != id:
			return nil, fmt.Errorf("tokenizer: %s is %d, Whisper's layout has %d (%d languages)", text, id, want, numLanguages)
		case !known && id < len(t.tokens):
			return nil, fmt.Errorf("tokenizer: added token %q (%d) is not one of Whisper's", text, id)
		}
		// Unknown tokens past the vocabulary are ignored: the model cannot
		// emit them, and their id collides with nothing.
	}
	return t, nil
}

func readJSON(p string, v any) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path.Base(p), err)
	}
	return nil
}

// byteLevel maps each byte to the printable character GPT-2's byte-level BPE
// stores it as: printable Latin-1 bytes stand for themselves, the other 68
// take code points 256 onwards in byte order.
var byteLevel, byteLevelInverse = func() (fwd [256]rune, inv map[rune]byte) {
	inv = make(map[rune]byte, 256)
	extra := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			fwd[b] = rune(b)
		} else {
			fwd[b] = extra
			extra++
		}
		inv[fwd[b]] = byte(b)
	}
	return fwd, inv
}()

func fromByteLevel(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := byteLevelInverse[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}
