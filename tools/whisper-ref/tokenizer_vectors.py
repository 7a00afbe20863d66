#!/usr/bin/env python3
"""Writes the reference vectors for pipelines/whisper/tokenizer (run by hand).

The Go tokenizer must agree with openai-whisper's whisper/tokenizer.py exactly,
so this script asks the real code, running on the real tiktoken, and records
its answers as pipelines/whisper/tokenizer/testdata/vectors.json(.gz).  It also
exports the multilingual tokenizer as a Hugging Face style model directory
(vocab.json, added_tokens.json, special_tokens_map.json) so that FromHF is
checked against files written independently of the Go code.

Requirements (a venv of its own; whisper/__init__.py imports torch, which we
avoid by loading tokenizer.py by file path):
    python3 -m venv /root/.cache/falocal/venv-tok
    /root/.cache/falocal/venv-tok/bin/pip install tiktoken==0.14.0
    pip download openai-whisper==20240930 --no-deps --no-binary :all: -d /tmp/ow
    tar xzf /tmp/ow/openai-whisper-20240930.tar.gz -C /tmp/ow

Run:
    /root/.cache/falocal/venv-tok/bin/python tools/whisper-ref/tokenizer_vectors.py \
        --whisper /tmp/ow/openai-whisper-20240930/whisper
"""

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys

import tiktoken

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "pipelines", "whisper", "tokenizer", "testdata")

TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello, world!",
    " Hello world",
    "And so, my fellow Americans: ask not what your country can do for you, ask what you can do for your country.",
    "I'm sure it's what they'd've wanted, isn't it? We'll see; you're right, I've been there.",
    "I'M SURE IT'S THEIR'S",
    "''s 's 't 're 've 'm 'll 'd 'S 'x",
    "don't\u2019t \u2018quoted\u2019 \u201cdouble\u201d",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1,000,000 2nd 3rd 10x",
    "\u0661\u0662\u0663 \u0968\u0969 \u2167 \u00bd\u00be \u2460\u2461",
    "a  b   c    d",
    "trailing space ",
    "trailing spaces   ",
    "  leading spaces",
    "line one\nline two\n",
    "para\n\n\nnext",
    "tabs\tand\t\ttabs\t",
    "mixed \t\n \r\n  whitespace \n",
    "\n",
    "\n\n  \t",
    "nbsp\u00a0here\u00a0 \u3000ideographic\u3000space\u2028sep\u2029end\u0085nel",
    "ctrl\x1c\x1d\x1e\x1f\x0b\x0cchars",
    "!!!??? ... --- ((( ))) [[ ]] {{ }} << >>",
    "punctuation: \"#()*+/:;<=>@[\\]^_`{|}~",
    "\u266a\u266a\u266a music \u266a \u2669\u266b\u266c\u266d\u266e\u266f",
    "\u300c\u300d\u300e\u300f",
    "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002",
    "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u042d\u0442\u043e \u0442\u0435\u0441\u0442.",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "Stra\u00dfe na\u00efve caf\u00e9 \u0141\u00f3d\u017a \u00c5ngstr\u00f6m",
    "cafe\u0301 e\u0301\u0301\u0301 a\u0308o\u0308",
    "\U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f3f3\ufe0f\u200d\U0001f308",
    "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5 flags",
    "emoji\U0001f600inside\U0001f600words",
    "<|endoftext|>",
    "text <|startoftranscript|><|en|><|transcribe|><|0.00|> more",
    "<|notimestamps|> <|nospeech|>",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious " * 3,
    "a" * 300,
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 8,
    "ilisticsupersuperzzzzantion" * 12,
    "\u6771\u4eac\u90fd\u7279\u8a31\u8a31\u53ef\u5c40" * 20,
    "ab" * 150,
    "\u3042" * 100,
    "1234567890" * 20,
    "!" * 64,
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "C++ and C# and F# :-) ;-)",
    "    def f(x):\n        return x + 1\n",
    "He said, \"Hello.\" She said -- 'Goodbye'.",
    " - hyphen ' quote",
    "\u00a9\u00ae\u2122 \u20ac100 \u00a35 \u00a5",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA",
    "mixed\u4e2d\u6587English\u65e5\u672c\u8a9eText123\u6570\u5b57",
    "\ufeffBOM and \u200b zero width",
    "\U00010348 gothic \U0001d11e music \U00020000 cjk-ext-b",
]



def random_texts(n, seed=7):
    """Mixed ASCII, Unicode whitespace, apostrophes and arbitrary code points
    (newly assigned ones included): they catch splitter class differences."""
    rng = random.Random(seed)
    spaces = " \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\u180e\u200b\ufeff"
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(1, 30)):
            k = rng.random()
            if k < 0.35:
                chars.append(chr(rng.randrange(32, 127)))
            elif k < 0.5:
                chars.append(rng.choice(spaces))
            elif k < 0.55:
                chars.append("'")
            else:
                c = rng.randrange(0x80, 0x32000)
                chars.append(chr(c) if not 0xD800 <= c < 0xE000 else "?")
        texts.append("".join(chars))
    return texts


TEXTS += random_texts(120)

# Byte strings (decoded through single-byte tokens) whose UTF-8 is broken in
# the ways Python's errors="replace" must handle.
BAD_BYTES = [
    b"\xe6\x97",              # truncated 3-byte
    b"\xe6\x97\xa5",          # complete
    b"\xf0\x9f\x98",          # truncated 4-byte
    b"\xf0\x9f\x98A",
    b"\x80\x80abc",           # stray continuations
    b"\xc0\xaf",              # overlong
    b"\xe0\x80\xaf",          # overlong 3-byte
    b"\xe0\xa0",              # truncated but valid prefix
    b"\xed\xa0\x80",          # surrogate
    b"\xed\x9f\xbf",          # last before surrogates
    b"\xf4\x90\x80\x80",      # above U+10FFFF
    b"\xf4\x8f\xbf\xbf",      # U+10FFFF
    b"\xf5\x80",
    b"\xff\xfe",
    b"\xc2",
    b"\xc2\xc2\xa9",
    b"\xe2\x82\xe2\x82\xac",
    b"\xf1\x80\x80",
    b"\xf1\x80\x80\xf1",
    b"a\xf0\x90\x80b",
    b"\xef\xbf\xbd",          # a real U+FFFD
]

# (language, task) pairs; names and aliases go through whisper's lookup.
SOT_CASES = [
    (None, None),
    ("en", None),
    (None, "transcribe"),
    (None, "translate"),
    ("en", "transcribe"),
    ("en", "translate"),
    ("ja", "transcribe"),
    ("de", "translate"),
    ("su", "transcribe"),
    ("haw", "transcribe"),
    ("yue", "transcribe"),
    ("Japanese", "transcribe"),
    ("burmese", "translate"),
    ("castilian", "transcribe"),
    ("MANDARIN", "transcribe"),
]


def load_whisper_tokenizer(whisper_dir):
    path = os.path.join(whisper_dir, "tokenizer.py")
    spec = importlib.util.spec_from_file_location("whisper_tokenizer_ref", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses looks the module up by name
    spec.loader.exec_module(mod)
    return mod


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable characters (HF vocab.json keys)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def ref_sot(wt, multilingual, num_languages, language, task):
    """sot_sequence as get_tokenizer would build it, except that a missing
    language or task stays missing (the Tokenizer dataclass semantics)."""
    if language is not None:
        language = language.lower()
        if language not in wt.LANGUAGES:
            if language in wt.TO_LANGUAGE_CODE:
                language = wt.TO_LANGUAGE_CODE[language]
            else:
                return None
    if not multilingual:
        language, task = None, None
    enc = wt.get_encoding("multilingual" if multilingual else "gpt2", num_languages)
    if language is not None and language not in list(wt.LANGUAGES)[:num_languages]:
        return None
    tok = wt.Tokenizer(encoding=enc, num_languages=num_languages, language=language, task=task)
    return list(tok.sot_sequence)


def decode_cases(tok, rng):
    enc = tok.encoding
    n_vocab = enc.n_vocab
    tb = tok.timestamp_begin
    hello = enc.encode_ordinary(" Hello world.")
    jp = enc.encode_ordinary("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\U0001f600")
    seqs = [
        [],
        [tok.eot],
        list(tok.sot_sequence_including_notimestamps) + hello + [tok.eot],
        list(tok.sot_sequence) + [tb] + hello + [tb + 54, tb + 54] + hello + [tb + 1500, tok.eot],
        [tok.sot_prev] + hello + [tok.sot] + [tok.no_speech, tok.sot_lm, tok.translate, tok.transcribe],
        [tb, tb + 1, tb + 49, tb + 50, tb + 51, tb + 99, tb + 100, tb + 749, tb + 1499, tb + 1500],
        jp,
        [tb] + jp[:1] + [tb + 3] + jp[1:],
        [tok.sot] + sorted(tok.all_language_tokens),  # a set underneath: sort for a stable file
    ]
    for i in range(1, len(jp)):
        seqs.append(jp[:i])
        seqs.append(jp[i:])
    single = {b: enc.encode_single_token(bytes([b])) for b in range(256)}
    for bad in BAD_BYTES:
        seqs.append([single[b] for b in bad])
    for _ in range(40):
        length = rng.randint(1, 24)
        seqs.append([rng.randrange(n_vocab) for _ in range(length)])
    for _ in range(20):
        seqs.append([single[rng.randrange(128, 256)] for _ in range(rng.randint(1, 8))])
    out = []
    for ids in seqs:
        out.append(
            {
                "ids": ids,
                "decode": tok.decode(ids),
                "decode_with_timestamps": tok.decode_with_timestamps(ids),
                "bytes_hex": enc.decode_bytes([t for t in ids if t < tb]).hex(),
            }
        )
    return out


def tokenizer_vectors(wt, multilingual, num_languages, rng):
    name = "multilingual" if multilingual else "gpt2"
    enc = wt.get_encoding(name, num_languages)
    tok = wt.Tokenizer(encoding=enc, num_languages=num_languages)
    encode = []
    for text in TEXTS:
        ids = enc.encode_ordinary(text)
        # whisper's encode refuses special-token text; ordinary text must agree.
        if "<|" not in text:
            assert ids == tok.encode(text)
        encode.append({"text": text, "ids": ids})
    sot = []
    for language, task in SOT_CASES:
        sot.append(
            {
                "language": language or "",
                "task": task or "",
                "ids": ref_sot(wt, multilingual, num_languages, language, task),
            }
        )
    language_tokens = sorted(tok.all_language_tokens)
    return {
        "name": f"{name}-{num_languages}",
        "file": f"{name}.tiktoken",
        "multilingual": multilingual,
        "num_languages": num_languages,
        "vocab_size": enc.n_vocab,
        "ids": {
            "eot": tok.eot,
            "sot": tok.sot,
            "sot_prev": tok.sot_prev,
            "sot_lm": tok.sot_lm,
            "no_speech": tok.no_speech,
            "no_timestamps": tok.no_timestamps,
            "timestamp_begin": tok.timestamp_begin,
            "translate": tok.translate,
            "transcribe": tok.transcribe,
        },
        "special_tokens": dict(sorted(tok.special_tokens.items(), key=lambda kv: kv[1])),
        "all_language_tokens": language_tokens,
        "all_language_codes": [tok.decode([t]).strip("<|>") for t in language_tokens],
        "non_speech_tokens": list(tok.non_speech_tokens),
        "encode": encode,
        "decode": decode_cases(tok, rng),
        "sot_sequence": sot,
    }


def export_hf(wt, out_dir):
    """The multilingual tokenizer as an HF export: ordinary tokens (and
    <|endoftext|>, as the real exports have it) in vocab.json, the remaining
    specials in added_tokens.json."""
    enc = wt.get_encoding("multilingual", 99)
    tok = wt.Tokenizer(encoding=enc, num_languages=99)
    b2u = bytes_to_unicode()
    vocab = {}
    for rank in range(enc.n_vocab):
        if rank >= tok.eot:
            break
        token = enc.decode_single_token_bytes(rank)
        vocab["".join(b2u[b] for b in token)] = rank
    vocab["<|endoftext|>"] = tok.eot
    added = {k: v for k, v in sorted(tok.special_tokens.items(), key=lambda kv: kv[1]) if v != tok.eot}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "added_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(added, f, ensure_ascii=False, indent=0)
    specials_map = {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": [k for k, v in added.items() if v < tok.timestamp_begin],
    }
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(specials_map, f, ensure_ascii=False, indent=1)


def char_classes():
    """The code points tiktoken's regex engine (Rust regex, whose Unicode
    tables may be newer than Go's) counts as \\p{L}, \\p{N} and \\s, as
    sorted [first, last] ranges. Probed through tiktoken itself: with a
    pattern of one class, encode_ordinary keeps exactly the matching
    characters."""
    ranks = {bytes([b]): b for b in range(256)}
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    out = {}
    for name, pat in (("letter", r"\p{L}"), ("number", r"\p{N}"), ("space", r"\s")):
        enc = tiktoken.Encoding("probe-" + name, pat_str=pat, mergeable_ranks=ranks, special_tokens={})
        members = sorted(ord(c) for c in enc.decode_bytes(enc.encode_ordinary(text)).decode("utf-8"))
        ranges = []
        for c in members:
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
        out[name] = ranges
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--whisper", required=True, help="the sdist's whisper/ directory (tokenizer.py, assets/)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    wt = load_whisper_tokenizer(args.whisper)
    rng = random.Random(20240930)
    doc = {
        "generator": "tools/whisper-ref/tokenizer_vectors.py",
        "whisper_version": "20240930",
        "tiktoken_version": tiktoken.__version__ if hasattr(tiktoken, "__version__") else "",
        "languages": [[code, name] for code, name in wt.LANGUAGES.items()],
        "to_language_code": wt.TO_LANGUAGE_CODE,
        "tokenizers": [
            tokenizer_vectors(wt, False, 99, rng),
            tokenizer_vectors(wt, True, 99, rng),
            tokenizer_vectors(wt, True, 100, rng),
        ],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vectors.json"), "w", encoding="ascii") as f:
        json.dump(doc, f, ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(args.out, "classes.json"), "w", encoding="ascii") as f:
        json.dump(char_classes(), f, separators=(",", ":"))
        f.write("\n")
    export_hf(wt, os.path.join(args.out, "hf-multilingual"))
    # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
    hf = os.path.join(args.out, "hf-multilingual")
    subprocess.check_call(["gzip", "-n", "-9", "-f", os.path.join(args.out, "vectors.json"), os.path.join(args.out, "classes.json")]
                          + [os.path.join(hf, n) for n in sorted(os.listdir(hf)) if not n.endswith(".gz")])


if __name__ == "__main__":
    main()
