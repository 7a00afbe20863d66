package kokoro

// Language is one of fal's Kokoro endpoints: the language its voices speak.
type Language struct {
	Endpoint string   // fal endpoint id
	Name     string   // for messages
	Letter   byte     // first letter of its voices' names
	Espeak   string   // espeak-ng voice that reads it
	Default  string   // fal's default voice
	Voices   []string // fal's voice enum, in fal's order
}

// Languages are fal's nine Kokoro endpoints.
var Languages = []Language{
	{"fal-ai/kokoro/american-english", "American English", 'a', "en-us", "af_heart", []string{
		"af_heart", "af_alloy", "af_aoede", "af_bella", "af_jessica", "af_kore", "af_nicole", "af_nova", "af_river", "af_sarah", "af_sky",
		"am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam", "am_michael", "am_onyx", "am_puck", "am_santa"}},
	{"fal-ai/kokoro/british-english", "British English", 'b', "en-gb", "bf_alice", []string{
		"bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george", "bm_lewis"}},
	{"fal-ai/kokoro/spanish", "Spanish", 'e', "es", "ef_dora", []string{"ef_dora", "em_alex", "em_santa"}},
	{"fal-ai/kokoro/french", "French", 'f', "fr-fr", "ff_siwis", []string{"ff_siwis"}},
	{"fal-ai/kokoro/italian", "Italian", 'i', "it", "if_sara", []string{"if_sara", "im_nicola"}},
	{"fal-ai/kokoro/brazilian-portuguese", "Brazilian Portuguese", 'p', "pt-br", "pf_dora", []string{"pf_dora", "pm_alex", "pm_santa"}},
	{"fal-ai/kokoro/hindi", "Hindi", 'h', "hi", "hf_alpha", []string{"hf_alpha", "hf_beta", "hm_omega", "hm_psi"}},
	{"fal-ai/kokoro/japanese", "Japanese", 'j', "ja", "jf_alpha", []string{"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}},
	{"fal-ai/kokoro/mandarin-chinese", "Mandarin Chinese", 'z', "cmn", "zf_xiaobei", []string{
		"zf_xiaobei", "zf_xiaoni", "zf_xiaoxiao", "zf_xiaoyi", "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang"}},
}

// LanguageOf is the language a voice speaks, by the first letter of its name.
func LanguageOf(voice string) (Language, bool) {
	for _, l := range Languages {
		if voice != "" && voice[0] == l.Letter {
			return l, true
		}
	}
	return Language{}, false
}
