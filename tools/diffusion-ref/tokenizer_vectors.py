#!/usr/bin/env python3
"""Reference token ids for pipelines/diffusion/tokenizer (run by hand, not by CI).

Two parts, each in its own pinned environment (transformers 4 and 5 cannot share one):

  * --part clip: CLIP. Derives vocab.json + merges.txt from OpenCLIP's bpe_simple_vocab_16e6.txt.gz
    the way the OpenAI vocabulary maps onto Hugging Face's (256 byte symbols, the same with
    "</w>", one symbol per merge, then <|startoftext|>, <|endoftext|>: 49408 ids), builds the
    Python (slow) CLIPTokenizer of transformers 4 from them, which diffusers loads, with ftfy
    installed, so that every prompt goes through whitespace_clean(ftfy.fix_text(text)).lower()
    before BPE (without ftfy transformers 4 uses a BasicTokenizer instead, which splits CJK
    characters apart; transformers 5 has only a Rust-backed CLIPTokenizer that ignores ftfy).
    Records input_ids for two pad tokens: "<|endoftext|>" (SD 1.5, SDXL tokenizer/, FLUX) and
    "!" (SDXL tokenizer_2, OpenCLIP-G), called as diffusers does: padding="max_length",
    max_length=77, truncation=True, and the raw ids (no padding). Writes clip_vectors.json.gz
    (PROMPTS + CLIP_PROMPTS, with ftfy.fix_text's output of each), clip_fuzz_vectors.json.gz (random
    strings, raw ids) and ftfy_vectors.json.gz (ftfy.fix_text alone on every HTML5 entity and on
    random mojibake).
    Environment: tools/diffusion-ref/requirements-tokenizer.txt, e.g.
      python3 -m venv ~/.cache/falocal/venv-tok &&
      ~/.cache/falocal/venv-tok/bin/pip install -r tools/diffusion-ref/requirements-tokenizer.txt
  * --part t5: T5. transformers 5's T5Tokenizer from a T5 tokenizer.json (FLUX's tokenizer_2
    layout) with max_length 512 and 256 (FLUX dev / schnell), plus the raw ids. It also rebuilds
    a sentencepiece spiece.model from the same pieces/scores/charsmap and records where
    sentencepiece itself disagrees with the fast tokenizer (diffusers uses the fast one). Writes
    t5_vectors.json.gz (PROMPTS), t5_spiece.model.gz and fuzz_vectors.json.gz (random strings, raw
    T5 ids). Environment: python3 -m venv ~/.cache/falocal/venv-tok2 &&
      ~/.cache/falocal/venv-tok2/bin/pip install transformers==5.23.0 tokenizers==0.23.3 \
          sentencepiece==0.2.3 protobuf==7.36.2

Sources (no Hugging Face access needed):
  * bpe_simple_vocab_16e6.txt.gz: open_clip/ in the open_clip_torch wheel (pip download
    --no-deps open_clip_torch==3.3.0), sha256 924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a.
  * T5 tokenizer.json: embedded in stable-diffusion.cpp; pip download --no-deps --no-binary=:all:
    stable-diffusion-cpp-python==0.4.7, then pass
    --t5-from-sdcpp .../vendor/stable-diffusion.cpp/src/tokenizers/vocab/clip_t5.hpp to write --t5-json.

Usage:
  ~/.cache/falocal/venv-tok/bin/python tools/diffusion-ref/tokenizer_vectors.py --part clip \
      --clip-gz pipelines/diffusion/tokenizer/testdata/bpe_simple_vocab_16e6.txt.gz \
      --out pipelines/diffusion/tokenizer/testdata
  ~/.cache/falocal/venv-tok2/bin/python tools/diffusion-ref/tokenizer_vectors.py --part t5 \
      --t5-json pipelines/diffusion/tokenizer/testdata/t5_tokenizer.json.gz \
      --out pipelines/diffusion/tokenizer/testdata
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import tempfile

LONG = (
    "a breathtaking panoramic landscape of an ancient elven city built into giant trees, "
    "glowing lanterns hanging from rope bridges, waterfalls cascading into a misty valley, "
    "golden hour sunlight filtering through the canopy, intricate wooden architecture with "
    "carved runes, flocks of white birds, reflections in a crystal clear lake, volumetric fog, "
    "highly detailed matte painting, trending on artstation, concept art by greg rutkowski and "
    "alphonse mucha, 8k resolution, unreal engine 5 render, octane render, ray tracing"
)

PROMPTS = [
    "",
    " ",
    "   \t\n  ",
    "a photo of a cat",
    "A Photo Of A Cat",
    "an astronaut riding a horse on mars",
    "a photograph of an astronaut riding a horse",
    "(masterpiece:1.2), best quality, ultra-detailed, 1girl, solo",
    "((best quality)), [lowres], {blurry}, (worst quality:1.4)",
    "portrait of a woman, (freckles:0.8), [red hair|blonde hair], <lora:detail:0.5>",
    "cinematic still of a cyberpunk city at night, neon lights, rain, 35mm, f/1.8",
    "A cozy cabin in the woods, winter, snow-covered pine trees, smoke from chimney",
    "don't stop, it's raining; we're here, they've gone, I'm ok, you'll see, he'd go",
    "DON'T STOP IT'S RAINING",
    "rock'n'roll o'clock ''quoted'' `backticks`",
    "numbers: 0 1 2 3 12 123 2024 3.14159 1,000,000 -42 +7 1e10",
    "price $19.99 (50% off!) #1 @user & co. ~approx ^caret *star* _under_",
    "path/to/file.png, http://example.com/?q=a+b&c=d",
    "hello...world!!! what??? ---- ==== ++++",
    "emoji 😀 🐱 🚀 ❤️ 👍🏽 👨‍👩‍👧 🇯🇵",
    "café naïve résumé crème brûlée Zürich São Paulo",
    "cafe\u0301 nai\u0308ve (decomposed accents)",
    "Ångström Ω ℃ ﬁ ﬂ ① ② ｆｕｌｌｗｉｄｔｈ ｶﾀｶﾅ",
    "東京の夜景、ネオン、雨",
    "一只可爱的猫坐在窗台上",
    "한국어 프롬프트 테스트",
    "русский текст, Москва зимой",
    "Ελληνικά γράμματα ΣΟΦΙΑ σοφία",
    "عربي نص تجريبي",
    "हिन्दी पाठ",
    "ภาษาไทย ทดสอบ",
    "İstanbul ISTANBUL ıi straße STRASSE",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em space\u200bzero width",
    "control\x00chars\x07here\x1b[0m",
    "mixed CASE WoRdS and camelCaseWords and snake_case_words",
    "<|startoftext|>a cat<|endoftext|>",
    "a dog </s> and <pad> <unk> <extra_id_0> tokens",
    "trailing space ",
    " leading space",
    "double  space   triple",
    "a" * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "1girl, 2boys, 3d render, 4k, 8k uhd, 16:9, 1920x1080",
    "hyperrealistic, photorealistic, octane render, unreal engine 5, artstation hq",
    "watercolor painting of a fox, by studio ghibli, pastel colors",
    "low poly isometric room, blender 3d, soft lighting",
    "BREAK a second chunk BREAK third",
    "negative: lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit",
    "pixel art of a castle, 16-bit, retro game",
    "a red cube on top of a blue sphere, next to a green pyramid",
    "Mona Lisa by Leonardo da Vinci, oil on canvas, 1503",
    "a sign that says \"Hello World\"",
    "the word 'FLUX' written in graffiti on a brick wall",
    "ＡＢＣ１２３！？",
    "…“smart quotes” ‘single’ — em dash – en dash • bullet",
    "math: x² + y² = z², ½ ¼ ∞ ≠ ≤ ≥ ∑ √",
    "℡ ™ ® © № ㈱ ㎏ ㎡",
    "a\u0301\u0302\u0303 stacked marks",
    "ｶﾞｷﾞ halfwidth voiced",
    "\ufeffbom at start",
    "soft\u00adhyphen and zero\u200cwidth\u200djoiner",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "UPPERCASE PROMPT WITH MANY WORDS FOR TESTING",
    "score_9, score_8_up, score_7_up, source_anime, rating_safe",
    "masterpiece, best quality, highres, absurdres, newest, (artist:xyz:0.7)",
    "a photo of a 🐶 wearing sunglasses 😎 on the 🏖️",
    "macro shot of a dewdrop on a leaf, bokeh, shallow depth of field",
    "Ŧĥïŝ ĩš ŝţŗåñğę ţęxţ",
    "x" * 5 + " " + "y" * 30,
    "ok.",
    "!",
    "!!!!",
    "'s",
    "12345678901234567890",
    LONG,
    LONG + ", " + LONG,
    ", ".join(["cat"] * 80),
    " ".join(str(i) for i in range(300)),
    ("a very long t5 prompt " * 120).strip(),
    # Normalisation corners: NFC singletons and exclusions, Hangul jamo, marks after mapped
    # characters (the tokenizers charsmap quirk), CR LF, title case, final sigma, ligatures.
    "\u212b \u2126 \u212a \uf900 \u0958 \u1100\u1161\u11a8 \u0041\u030a",
    "\uff21\u0301 \u2460\u0301 e\u0301\u0323 \u1e9b\u0323",
    "line\r\nbreak\rcarriage\u2028sep\u2029para\u0085nel",
    "\u01c5 \u01c4 \u1e9e \u00df \u03a3\u0391\u03a3 \ufb03 \u0130i",
    "Vi\u1ec7t Nam, ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "\u3000ideographic\u3000space\u3000",
    "\u200b\u200b\u200b",
    "<extra_id_5>",
    "<pad>",
    "a<|endoftext|>b<|startoftext|>c",
    "!a! b!",
    "\u2581already\u2581metaspace \u2581",
    "\u0000\u0001\u007f\u009f",
    "\U0001F468\u200D\U0001F4BB coding, \U0001F3F3\uFE0F\u200D\U0001F308 flag, \u00a9\ufe0f",
    "\ufffd replacement and \U0001D400\U0001D401 math bold",
]



def _moji(text, enc="windows-1252"):
    """text as UTF-8 bytes wrongly decoded in a single-byte code (sloppily: undefined bytes kept)."""
    out = []
    for x in text.encode("utf-8"):
        try:
            out.append(bytes([x]).decode(enc))
        except UnicodeDecodeError:
            out.append(chr(x))
    return "".join(out)


# CLIP only: what ftfy.fix_text changes (entities, mojibake, widths, quotes, ligatures, line
# breaks, controls) and more scripts, next to prompts it must leave alone.
CLIP_PROMPTS = [
    # HTML entities
    "fish &amp; chips, salt &amp; vinegar",
    "tom &amp;amp; jerry (double escaped)",
    "&lt;3 love &gt;&gt; hate",
    "a &quot;quoted&quot; word and it&#39;s fine",
    "caf&eacute; na&iuml;ve &Eacute;cole &EACUTE;COLE",
    "&copy; 2024 &reg; &trade; &euro;100 &pound;5 &yen;",
    "&hellip; &mdash; &ndash; &laquo;guillemets&raquo; &bull;",
    "&#65;&#66;&#67; &#x41;&#x42; &#X43; &#128512; &#x1F431;",
    "&#0; &#1; &#13; &#128; &#x9F; &#55357; &#1114112; &#99999999999999999999;",
    "&#59; &#x3b; semicolon refs",
    "&nbsp;non&nbsp;breaking&nbsp;spaces",
    "&SZLIG; &szlig; &FFLIG; &fflig; &SIGMA; &sigma;",
    "&amp &lt no semicolons &copy",
    "&notit; &notin; &ampx; &unknownentity;",
    "&lt;|endoftext|&gt; decoded special",
    "<b>bold</b> &amp; html stays",
    "&amp; first line\n<i>second</i> &amp;\n&amp; third",
    "first &amp;\nsecond &amp; no html",
    "&AMP; &Amp; &COPY; &Copy; &QUOT;",
    "&frac12; &FRAC12; &sup2; &deg; &times; &divide;",
    # mojibake: UTF-8 read as Windows-1252 / Latin-1
    _moji("café au lait"),
    _moji("crème brûlée, naïve façade"),
    _moji("it’s a “smart quote” — dash…"),
    _moji("Zürich Straße São Paulo"),
    _moji("emoji 😀 in mojibake"),
    _moji("東京タワー"),
    _moji("Москва"),
    _moji("voilà le travail").replace("\xa0", " "),
    _moji("à la carte", "latin-1"),
    _moji("café ñandú", "latin-1"),
    "cafÃ© and cafÃ©",
    "doesnâ€™t work â€“ really",
    "Ã©lÃ©phant rose",
    "mixed cafÃ© and real café",
    "âœ” No problems",
    "Ã\xa0 bientÃ´t",
    "the Ã‚ stray",
    "Ãƒ double mojibake CafÃƒÂ©",
    _moji("Привет мир", "windows-1251"),
    _moji("Ελληνικά", "windows-1253"),
    _moji("żółć", "windows-1250"),
    _moji("naïve", "mac_roman"),
    _moji("naïve", "cp437"),
    "ï»¿bom as mojibake",
    "legit: Ã is a letter, Â too, ÃÂ",
    "lossy caf\u00c3? and caf\u00c3\ufffd",
    "sorry, it\u2019s \u00e2\u20ac\u0153fine\u00e2\u20ac\u009d",
    "C1 controls: \x80 \x85 \x91quoted\x92 \x93dq\x94 \x99",
    "price 5\u00e2\u201a\u00ac and 10 \u00e2\u201a\u00ac",
    # widths, quotes, ligatures
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ ａｎｄ ０１２３",
    "ﾊﾝｶｸ ｶﾀｶﾅ ｶﾞｷﾞｸﾞ and ｡｢｣､",
    "ＬＯＵＤ\u3000ＮＯＩＳＥＳ",
    "“double” ‘single’ ‚low‛ „low double‟ ʼapostrophe",
    "don’t won’t it’s we’re you’ll I’m they’ve she’d",
    "ﬁne ﬂowers, oﬀice, eﬃcient, waﬄe, ﬅ ﬆ",
    "Ĳssel ĳs, ŉ, Ǳ ǲ ǳ, Ǆ ǅ ǆ, Ǉ ǈ ǉ, Ǌ ǋ ǌ",
    # line breaks, controls, escapes
    "a\r\nb\rc\u2028d\u2029e\u0085f",
    "tab\t\ttab \x0bvertical \x0cformfeed",
    "\x1b[31mred\x1b[0m \x1b[1;4mbold\x1b[m",
    "invisible\u206a\u206f \ufff9ann\ufffb \ufeffbom",
    "\ufeff\ufeffdouble bom",
    "zero\u200bwidth space\u200d joiner",
    # scripts, accents, case
    "中文提示词：一只在月光下奔跑的狼，高清，细节丰富",
    "繁體中文：山水畫，水墨風格",
    "日本語のプロンプト：桜の木の下で眠る猫、アニメ風",
    "ひらがな と カタカナ と 漢字",
    "한국어: 서울의 야경, 네온사인, 비 오는 밤",
    "مدينة عربية قديمة عند الغروب",
    "עברית: ירושלים בשקיעה",
    "Ελληνικά: ΟΔΟΣ οδός ΣΟΦΟΣ Σ",
    "ΣΑΣ ΣΑΣ. 'ΣΑΣ' ΑΣ1 ΑΣ_ x ΑΣ\u0301",
    "Ünïcödé äccénts: àéîõü ÀÉÎÕÜ ñ Ñ ç Ç ø Ø å Å æ Æ œ Œ",
    "Polish: zażółć gęślą jaźń; Czech: příliš žluťoučký kůň",
    "Turkish: İstanbul ışık IĞDIR",
    "Vietnamese: Tiếng Việt có dấu, phở bò",
    "Devanagari: नमस्ते दुनिया; Tamil: வணக்கம்",
    "emoji: 🔥🔥🔥 ✨ 🌸🌸 👩🏽‍🎨 🧑‍🚀 🏳️‍🌈 1️⃣ #️⃣",
    "kaomoji ¯\\_(ツ)_/¯ (╯°□°）╯︵ ┻━┻ ( ͡° ͜ʖ ͡°)",
    "box drawing │┌┐└┘├┤ ═══ ▀▄█ ░▒▓",
    "currency € £ ¥ ₹ ₩ ₽ $ ¢ ₿",
    "degrees 25°C 77°F, 90° angle, ±5%, 2×3, 6÷2",
    "numbers 1st 2nd 3rd 4th, 3.5mm, 1/2, 3:4, 0xFF, 1e-5",
    "roman Ⅻ ⅻ, circled ① ⑳, superscript x¹²³",
    "MiXeD CaSe WiTh ÜMLAUT and ß",
    "URL https://example.com/a?b=c&d=e#frag",
    "email someone@example.com, @handle #hashtag",
    "code: def f(x): return x**2 # comment",
    "(((nested (parentheses) here))) [[brackets]] {{braces}}",
    "weights (cat:1.3) [dog] (bird:0.5) <lora:style:0.8>",
    "a photo of a cat.a photo of a dog,a photo of a bird;",
    "dots... ellipsis… dashes -- — – ‐ ‑",
    "   leading and trailing   whitespace   ",
    "\n\n\nnewlines only at start",
    "end with newline\n",
    "<|endoftext|>",
    "<|startoftext|><|startoftext|>",
    "a!b!c! ! !! !!!",
    "x" * 300,
    "a " * 100,
    "portrait, " * 40,
    "東京" * 60,
    "😀" * 50,
    LONG.upper(),
    LONG.replace(" ", "\t").replace(",", "\u3001"),
]

def fuzz_prompts(n=200, seed=1234):
    """Random strings over a pool of awkward characters, for raw-id comparisons."""
    import random

    rnd = random.Random(seed)
    pool = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" \t\n  ,.;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`")
        + ["'s", "'ll", "'t", "<|endoftext|>", "</s>", "<unk>", "<extra_id_1>", "  ", "\r\n"]
        + list("\u00e9\u00e8\u00fc\u00f1\u00e7\u00c5\u0301\u0308\u0327\u00a0\u2003\u200b\u200d\ufe0f")
        + list("\u4e00\u4e8c\u4e09\u732b\u72ac\u3042\u30a2\uff71\uff9e\uac00\u1100\u1161")
        + list("\u0416\u03a9\u03c3\u0627\u05d0\u0928\u093c\u0e01\u0e31\u2160\u2460\uff10\uff41")
        + ["\U0001F600", "\U0001F3FD", "\U0001F1EF", "\U0001F1F5", "\u2764", "\u2581", "\ufb01", "\u2122"]
    )
    return ["".join(rnd.choice(pool) for _ in range(rnd.randint(0, 40))) for _ in range(n)]


def clip_random_prompts(n=1000, seed=2468):
    """CLIP only: random strings over most of the BMP, emoji and SMP letters (code points Python's
    Unicode database assigns), Greek capitals whose lowercase depends on their neighbours
    (final sigma), Turkish dotted/dotless i, special tokens and mojibake bits."""
    import random
    import unicodedata

    rnd = random.Random(seed)
    ranges = [(0x20, 0x7F), (0xA0, 0x2FFF), (0x3000, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFFFD),
              (0x1F300, 0x1FAFF), (0x10000, 0x1D7FF)]

    def rc():
        a, b = rnd.choice(ranges)
        while True:
            c = chr(rnd.randint(a, b))
            if unicodedata.category(c) not in ("Cn", "Cs", "Co"):
                return c

    greek = "ΣΑΟΔσςαοδ ΆΈ'.:\u0301\u00ad"
    plain = " abcXYZ019,.!?'\"&;<>|-_()"
    out = []
    for _ in range(n):
        k = rnd.random()
        if k < 0.4:
            p = "".join(rc() for _ in range(rnd.randint(1, 12)))
        elif k < 0.6:
            p = "".join(rnd.choice(greek) for _ in range(rnd.randint(1, 10)))
        elif k < 0.8:
            p = "".join(rnd.choice(plain + "İıßẞǅ\u0307") for _ in range(rnd.randint(1, 14)))
        else:
            p = "".join(rnd.choice([rc(), rnd.choice(plain), rnd.choice(greek), "<|endoftext|>", "!", "&amp;", "Ã©", "\n"])
                        for _ in range(rnd.randint(1, 10)))
        out.append(p)
    return out

def ftfy_prompts(n=3000, seed=4321):
    """Strings for ftfy.fix_text alone: every HTML5 entity (and its all-capitals spelling), then
    random text over the characters mojibake is made of, entities, and real mojibake (UTF-8
    read once or twice through each single-byte code ftfy knows)."""
    import html.entities
    import random

    names = sorted(k for k in html.entities.html5 if k.endswith(";"))
    out = [" ".join("&" + k for k in names[i : i + 8]) for i in range(0, len(names), 8)]
    out += [" ".join("&" + k.upper() for k in names[i : i + 8]) for i in range(0, len(names), 8)]
    rnd = random.Random(seed)
    encs = ["latin-1", "windows-1252", "windows-1251", "windows-1250", "windows-1253", "windows-1254",
            "windows-1257", "iso-8859-2", "mac_roman", "cp437"]
    chars = set()
    for e in encs:
        for x in range(0x80, 0x100):
            try:
                chars.add(bytes([x]).decode(e))
            except UnicodeDecodeError:
                pass
    chars = sorted(chars) + list(" \n\tabcxyzAZ.,!?'\"<>&;#019") + [
        "\u00a0", "\ufffd", "\x1a", "\ufeff", "\u200b", "\x1b[1m", "\r", "\u2028", "東", "😀"]

    def ent():
        k = rnd.random()
        if k < 0.4:
            return "&" + rnd.choice(names)
        if k < 0.6:
            return "&" + rnd.choice(names).upper()
        if k < 0.8:
            return "&#%d;" % rnd.choice([0, 1, 9, 10, 13, 31, 59, 65, 127, 128, 129, 141, 150, 159, 160, 233, 0xD800,
                                          0xDFFF, 0xFDD0, 0xFFFE, 0xFFFF, 0x1FFFE, 0x10FFFF, 0x110000, 128512, 10**30])
        return "&#%s%x;" % (rnd.choice("xX"), rnd.choice([0, 0x3B, 0x41, 0x80, 0x9D, 0xE9, 0x1F600, 0xD83D, 0x110000]))

    def moji(t, enc):
        r = []
        for x in t.encode("utf-8"):
            try:
                r.append(bytes([x]).decode(enc))
            except UnicodeDecodeError:
                r.append(chr(x))
        return "".join(r)

    for _ in range(n):
        k = rnd.random()
        if k < 0.4:
            p = "".join(rnd.choice(chars) for _ in range(rnd.randint(1, 10)))
        elif k < 0.6:
            p = "".join(ent() if rnd.random() < 0.5 else rnd.choice(chars) for _ in range(rnd.randint(1, 6)))
        else:
            p = moji("".join(rnd.choice(chars) for _ in range(rnd.randint(1, 6))), rnd.choice(encs))
            if rnd.random() < 0.5:
                p = moji(p, rnd.choice(encs))
            if rnd.random() < 0.5:
                i = rnd.randrange(len(p) + 1)
                p = p[:i] + rnd.choice(chars) + p[i:]
        out.append(p)
    return out

def bytes_to_unicode():
    # GPT-2/CLIP byte -> printable symbol table (same construction as CLIP's simple_tokenizer).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_files_from_gz(gz_path, out_dir):
    """vocab.json + merges.txt as Hugging Face's openai/clip-* repositories ship them."""
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def spiece_from_tokenizer_json(tj, path):
    """A sentencepiece ModelProto equivalent to a T5 tokenizer.json (first 32000 pieces)."""
    import base64

    from sentencepiece import sentencepiece_model_pb2 as spm_pb

    m = spm_pb.ModelProto()
    for i, (piece, score) in enumerate(tj["model"]["vocab"][:32000]):
        p = m.pieces.add()
        p.piece = piece
        p.score = score
        if i == tj["model"]["unk_id"]:
            p.type = spm_pb.ModelProto.SentencePiece.UNKNOWN
        elif piece in ("<pad>", "</s>"):
            p.type = spm_pb.ModelProto.SentencePiece.CONTROL
        else:
            p.type = spm_pb.ModelProto.SentencePiece.NORMAL
    ts = m.trainer_spec
    ts.model_type = spm_pb.TrainerSpec.UNIGRAM
    ts.vocab_size = 32000
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 2, -1, 1, 0
    ns = m.normalizer_spec
    ns.name = "nmt_nfkc"
    ns.precompiled_charsmap = base64.b64decode(tj["normalizer"]["normalizers"][0]["precompiled_charsmap"])
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = True
    ns.escape_whitespaces = True
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


def t5_json_from_sdcpp_header(hpp, out_gz):
    """T5's tokenizer.json as stable-diffusion.cpp embeds it (a byte array in
    src/tokenizers/vocab/clip_t5.hpp of the stable-diffusion-cpp-python sdist), gzipped."""
    import re

    s = open(hpp).read()
    i = s.index("t5_tokenizer_json_str[]")
    body = s[s.index("{", i) + 1 : s.index("};", i)]
    raw = bytes(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", body)).rstrip(b"\0")
    json.loads(raw)
    with gzip.GzipFile(out_gz, "wb", 9, mtime=0) as g:
        g.write(raw)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def clip_part(a):
    import ftfy
    import tokenizers
    import transformers
    from transformers import CLIPTokenizer

    assert transformers.__version__.startswith("4."), "the Python CLIPTokenizer with its ftfy path is transformers 4's"
    tmp = tempfile.mkdtemp()
    try:
        # The diffusers layout: tokenizer/ pads with <|endoftext|>, SDXL's tokenizer_2/ with "!".
        dirs = {}
        for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
            d = os.path.join(tmp, sub)
            os.mkdir(d)
            clip_files_from_gz(a.clip_gz, d)
            special = {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": pad,
            }
            with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
                json.dump(special, f)
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(dict(special, model_max_length=77, do_lower_case=True), f)
            dirs[sub] = d
        vf, mf = os.path.join(dirs["tokenizer"], "vocab.json"), os.path.join(dirs["tokenizer"], "merges.txt")
        clip_eot = CLIPTokenizer.from_pretrained(dirs["tokenizer"])
        clip_bang = CLIPTokenizer.from_pretrained(dirs["tokenizer_2"])
        print(clip_eot.pad_token_id, clip_bang.pad_token_id, len(clip_eot))
        assert clip_eot.pad_token_id == 49407 and clip_bang.pad_token_id == 0
        # The slow tokenizer, on its ftfy path (fix_text is None means the BasicTokenizer path).
        for tok in (clip_eot, clip_bang):
            assert not tok.is_fast and tok.fix_text is ftfy.fix_text, "CLIPTokenizer is not using ftfy"
        clip = []
        for p in PROMPTS + CLIP_PROMPTS:
            clip.append(
                {
                    "prompt": p,
                    "fixed": ftfy.fix_text(p),
                    "raw": clip_eot(p).input_ids,
                    "pad_eot_77": clip_eot(p, padding="max_length", max_length=77, truncation=True).input_ids,
                    "pad_bang_77": clip_bang(p, padding="max_length", max_length=77, truncation=True).input_ids,
                }
            )
        fuzz = [{"prompt": p, "clip_eot": clip_eot(p).input_ids, "clip_bang": clip_bang(p).input_ids} for p in fuzz_prompts() + clip_random_prompts()]
        fixes = [{"prompt": p, "fixed": ftfy.fix_text(p)} for p in ftfy_prompts()]
        meta = {
            "generator": "tools/diffusion-ref/tokenizer_vectors.py --part clip",
            "tokenizer": "transformers.CLIPTokenizer (Python, ftfy path)",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "ftfy": ftfy.__version__,
            "clip_source": {"file": os.path.basename(a.clip_gz), "sha256": sha256(a.clip_gz)},
            "clip_vocab_json_sha256": sha256(vf),
            "clip_merges_txt_sha256": sha256(mf),
        }
        # Gzipped: the padded id lists and the random strings come to a few hundred KB as text.
        write_vectors(os.path.join(a.out, "clip_vectors.json.gz"), meta, clip)
        write_vectors(os.path.join(a.out, "clip_fuzz_vectors.json.gz"), meta, fuzz)
        write_vectors(os.path.join(a.out, "ftfy_vectors.json.gz"), meta, fixes)
        print(json.dumps(meta, indent=1), len(clip), "prompts,", len(fuzz), "fuzz strings")
    finally:
        shutil.rmtree(tmp)


def t5_part(a):
    import sentencepiece
    import tokenizers
    import transformers
    from transformers import T5Tokenizer

    assert transformers.__version__.startswith("5."), "the T5 vectors pin transformers 5's T5Tokenizer"
    tmp = tempfile.mkdtemp()
    try:
        raw = open(a.t5_json, "rb").read()
        if a.t5_json.endswith(".gz"):
            raw = gzip.decompress(raw)
        tj = json.loads(raw)
        t5dir = os.path.join(tmp, "t5")
        os.mkdir(t5dir)
        with open(os.path.join(t5dir, "tokenizer.json"), "wb") as f:
            f.write(raw)
        t5 = T5Tokenizer.from_pretrained(t5dir)
        assert t5.pad_token_id == 0 and t5.eos_token_id == 1
        # transformers 4's T5TokenizerFast ran tokenizer.json as written (Replace " {2,}", a
        # Metaspace that keeps a trailing "▁"); transformers 5 rebuilds it with WhitespaceSplit.
        v4fast = tokenizers.Tokenizer.from_file(os.path.join(t5dir, "tokenizer.json"))
        spm_path = os.path.join(tmp, "spiece.model")
        spiece_from_tokenizer_json(tj, spm_path)
        with open(spm_path, "rb") as f, gzip.GzipFile(os.path.join(a.out, "t5_spiece.model.gz"), "wb", 9, mtime=0) as g:
            g.write(f.read())
        sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
        t5v, spm_diff, v4_diff = [], 0, 0
        for p in PROMPTS:
            ids = t5(p).input_ids
            rec = {
                "prompt": p,
                "raw": ids,
                "pad_512": t5(p, padding="max_length", max_length=512, truncation=True).input_ids,
                "pad_256": t5(p, padding="max_length", max_length=256, truncation=True).input_ids,
            }
            spm_ids = sp.encode(p) + [1]
            if spm_ids != ids:
                rec["sentencepiece_raw"] = spm_ids
                spm_diff += 1
            v4_ids = v4fast.encode(p).ids
            if v4_ids != ids:
                rec["tokenizer_json_raw"] = v4_ids
                v4_diff += 1
            t5v.append(rec)
        # Raw ids only (no padding) for random strings: a cheap wide net.
        fuzz = [{"prompt": p, "t5": t5(p).input_ids} for p in fuzz_prompts()]
        meta = {
            "generator": "tools/diffusion-ref/tokenizer_vectors.py --part t5",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "t5_source": {"file": os.path.basename(a.t5_json), "sha256_uncompressed": hashlib.sha256(raw).hexdigest()},
            "t5_spiece_model_sha256": sha256(spm_path),
            "t5_prompts_where_sentencepiece_differs": spm_diff,
            "t5_prompts_where_plain_tokenizer_json_differs": v4_diff,
        }
        for name, rows in (("t5_vectors", t5v), ("fuzz_vectors", fuzz)):
            write_vectors(os.path.join(a.out, name + ".json.gz"), meta, rows)
        print(json.dumps(meta, indent=1))
    finally:
        shutil.rmtree(tmp)


def write_vectors(path, meta, rows):
    data = json.dumps({"meta": meta, "vectors": rows}, ensure_ascii=False, separators=(",", ":")) + "\n"
    if path.endswith(".gz"):
        with gzip.GzipFile(path, "wb", 9, mtime=0) as g:
            g.write(data.encode("utf-8"))
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("clip", "t5"), required=True)
    ap.add_argument("--clip-gz", help="OpenCLIP's bpe_simple_vocab_16e6.txt.gz (--part clip)")
    ap.add_argument("--t5-json", help="T5 tokenizer.json, optionally .gz (--part t5)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--t5-from-sdcpp", help="clip_t5.hpp to extract --t5-json (.gz) from first")
    a = ap.parse_args()
    if a.part == "clip":
        if not a.clip_gz:
            ap.error("--part clip needs --clip-gz")
        clip_part(a)
    else:
        if not a.t5_json:
            ap.error("--part t5 needs --t5-json")
        if a.t5_from_sdcpp:
            t5_json_from_sdcpp_header(a.t5_from_sdcpp, a.t5_json)
        t5_part(a)


if __name__ == "__main__":
    main()
