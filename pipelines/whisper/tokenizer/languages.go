package tokenizer

import "strings"

// language is one of Whisper's language tokens. The order is the order of the
// <|xx|> special tokens, so it must never be sorted or edited in the middle:
// token id = SOT + 1 + index.
type language struct{ code, name string }

// languages lists every language any Whisper model knows; a model uses the
// first numLanguages of them (99, or 100 for large-v3, which adds "yue").
var languages = [...]language{
	{"en", "english"},
	{"zh", "chinese"},
	{"de", "german"},
	{"es", "spanish"},
	{"ru", "russian"},
	{"ko", "korean"},
	{"fr", "french"},
	{"ja", "japanese"},
	{"pt", "portuguese"},
	{"tr", "turkish"},
	{"pl", "polish"},
	{"ca", "catalan"},
	{"nl", "dutch"},
	{"ar", "arabic"},
	{"sv", "swedish"},
	{"it", "italian"},
	{"id", "indonesian"},
	{"hi", "hindi"},
	{"fi", "finnish"},
	{"vi", "vietnamese"},
	{"he", "hebrew"},
	{"uk", "ukrainian"},
	{"el", "greek"},
	{"ms", "malay"},
	{"cs", "czech"},
	{"ro", "romanian"},
	{"da", "danish"},
	{"hu", "hungarian"},
	{"ta", "tamil"},
	{"no", "norwegian"},
	{"th", "thai"},
	{"ur", "urdu"},
	{"hr", "croatian"},
	{"bg", "bulgarian"},
	{"lt", "lithuanian"},
	{"la", "latin"},
	{"mi", "maori"},
	{"ml", "malayalam"},
	{"cy", "welsh"},
	{"sk", "slovak"},
	{"te", "telugu"},
	{"fa", "persian"},
	{"lv", "latvian"},
	{"bn", "bengali"},
	{"sr", "serbian"},
	{"az", "azerbaijani"},
	{"sl", "slovenian"},
	{"kn", "kannada"},
	{"et", "estonian"},
	{"mk", "macedonian"},
	{"br", "breton"},
	{"eu", "basque"},
	{"is", "icelandic"},
	{"hy", "armenian"},
	{"ne", "nepali"},
	{"mn", "mongolian"},
	{"bs", "bosnian"},
	{"kk", "kazakh"},
	{"sq", "albanian"},
	{"sw", "swahili"},
	{"gl", "galician"},
	{"mr", "marathi"},
	{"pa", "punjabi"},
	{"si", "sinhala"},
	{"km", "khmer"},
	{"sn", "shona"},
	{"yo", "yoruba"},
	{"so", "somali"},
	{"af", "afrikaans"},
	{"oc", "occitan"},
	{"ka", "georgian"},
	{"be", "belarusian"},
	{"tg", "tajik"},
	{"sd", "sindhi"},
	{"gu", "gujarati"},
	{"am", "amharic"},
	{"yi", "yiddish"},
	{"lo", "lao"},
	{"uz", "uzbek"},
	{"fo", "faroese"},
	{"ht", "haitian creole"},
	{"ps", "pashto"},
	{"tk", "turkmen"},
	{"nn", "nynorsk"},
	{"mt", "maltese"},
	{"sa", "sanskrit"},
	{"lb", "luxembourgish"},
	{"my", "myanmar"},
	{"bo", "tibetan"},
	{"tl", "tagalog"},
	{"mg", "malagasy"},
	{"as", "assamese"},
	{"tt", "tatar"},
	{"haw", "hawaiian"},
	{"ln", "lingala"},
	{"ha", "hausa"},
	{"ba", "bashkir"},
	{"jw", "javanese"},
	{"su", "sundanese"},
	{"yue", "cantonese"},
}

// MaxLanguages is the number of languages the largest Whisper vocabulary has.
const MaxLanguages = len(languages)

// LanguageNames maps each language code to its English name, as Whisper's
// LANGUAGES does (e.g. "en" → "english").
var LanguageNames = func() map[string]string {
	m := make(map[string]string, len(languages))
	for _, l := range languages {
		m[l.code] = l.name
	}
	return m
}()

// languageAliases are the extra names Whisper's TO_LANGUAGE_CODE accepts.
var languageAliases = map[string]string{
	"burmese":       "my",
	"valencian":     "ca",
	"flemish":       "nl",
	"haitian":       "ht",
	"letzeburgesch": "lb",
	"pushto":        "ps",
	"panjabi":       "pa",
	"moldavian":     "ro",
	"moldovan":      "ro",
	"sinhalese":     "si",
	"castilian":     "es",
	"mandarin":      "zh",
}

// LanguageCodes maps a language name (or alias) to its code, like Whisper's
// TO_LANGUAGE_CODE (e.g. "japanese" → "ja", "burmese" → "my").
var LanguageCodes = func() map[string]string {
	m := make(map[string]string, len(languages)+len(languageAliases))
	for _, l := range languages {
		m[l.name] = l.code
	}
	for name, code := range languageAliases {
		m[name] = code
	}
	return m
}()

// LanguageCode resolves what a user may send for a language — a code or an
// English name, in any case — to a code, as whisper's get_tokenizer does. It
// does not check that a particular model has the language: see
// Tokenizer.LanguageToken.
func LanguageCode(s string) (string, bool) {
	s = strings.ToLower(s)
	if _, ok := LanguageNames[s]; ok {
		return s, true
	}
	code, ok := LanguageCodes[s]
	return code, ok
}
