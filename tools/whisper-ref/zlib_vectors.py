#!/usr/bin/env python3
"""Writes pipelines/whisper/testdata/zlib_sizes.json.gz (run by hand).

Whisper's temperature fallback uses len(text) / len(zlib.compress(text)), so
the Go port (pipelines/whisper/zlibsize.go) must reproduce CPython's
zlib.compress length exactly.  This script records, for a few thousand
inputs, the length CPython's zlib (level 6 by default) gives.

Every input is stored in the JSON itself (no shared PRNG between Python and
Go), in the most compact of three forms:
    "s":   the text, when the input is valid UTF-8
    "b64": base64 of the bytes
    "z":   base64 of zlib.compress(bytes, 9) -- only a container for large,
           redundant inputs; the Go test inflates it with compress/zlib.

Run:
    python3 tools/whisper-ref/zlib_vectors.py
The zlib version used is recorded in the file; expected sizes are only valid
for that C zlib (1.2.13 when this was written).
"""

import base64
import json
import os
import random
import subprocess
import sys
import zlib

import pydoc_data.topics

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "..", "..", "pipelines", "whisper", "testdata",
                   "zlib_sizes.json")

rng = random.Random(20261126)
cases = []


def add(name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    cases.append((name, bytes(data)))


def english_corpus():
    # Real English prose: the Python documentation topics shipped with CPython.
    return "\n\n".join(pydoc_data.topics.topics[k]
                       for k in sorted(pydoc_data.topics.topics))


CORPUS = english_corpus()

# --- tiny inputs ----------------------------------------------------------
add("empty", b"")
for c in range(256):
    add("byte", bytes([c]))
for n in range(2, 11):
    for _ in range(25):
        add("short-random", bytes(rng.randrange(256) for _ in range(n)))
    for _ in range(15):
        add("short-text", "".join(rng.choice("abc de") for _ in range(n)))
    add("short-same", b"a" * n)

# --- English sentences ----------------------------------------------------
sentences = [s.strip().replace("\n", " ") for s in CORPUS.split(". ")]
sentences = [s + "." for s in sentences if 10 <= len(s) <= 400]
rng.shuffle(sentences)
for s in sentences[:700]:
    add("sentence", s)
# Whisper segments are often a few sentences long.
for _ in range(200):
    k = rng.randint(2, 6)
    add("sentences", " " + " ".join(rng.choice(sentences) for _ in range(k)))

# --- Whisper-like garbage: random tokens from mixed scripts ---------------
SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん",
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "ابتثجحخدذرسشصضطظعغفقكلمنهوي",
    "אבגדהוזחטיכלמנסעפצקרשת",
    "한국어문장테스트입니다가나다라마바사",
    "0123456789",
    ".,!?;:-'\"()[]…♪🎵😀",
]


def token():
    script = rng.choice(SCRIPTS)
    return "".join(rng.choice(script) for _ in range(rng.randint(1, 8)))


for _ in range(500):
    toks = [token() for _ in range(rng.randint(1, 60))]
    sep = rng.choice([" ", "", " ", "  ", "\n"])
    add("garbage", sep.join(toks))

# Garbage with repeated token loops, the usual hallucination shape.
for _ in range(300):
    loop = [token() for _ in range(rng.randint(1, 5))]
    reps = rng.randint(2, 80)
    pre = " ".join(token() for _ in range(rng.randint(0, 5)))
    add("garbage-loop", pre + " " + " ".join(loop * reps))

# --- highly repetitive text (what trips the 2.4 threshold) ----------------
WORDS = ["you", "Thank you.", "ha", "the", "♪", "ありがとうございます",
         "Да.", "1", "I'm going to go to the store.", "オ", "a", "so so"]
REPS = sorted(set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 20,
                   25, 30, 33, 40, 50, 64, 75, 86, 100, 128, 150, 200, 256,
                   300, 333, 400, 450, 499, 500]))
for w in WORDS:
    for sep in (" ", "", ", "):
        for n in REPS:
            add("repeat", sep.join([w] * n))
for _ in range(150):
    w = token()
    add("repeat-token", " ".join([w] * rng.randint(1, 500)))

# --- long texts (several deflate blocks) ----------------------------------
for _ in range(10):
    n = rng.randint(20000, 60000)
    start = rng.randrange(len(CORPUS) - n)
    add("long-english", CORPUS[start:start + n])
for _ in range(4):
    n = rng.randint(20000, 60000)
    toks = []
    size = 0
    while size < n:
        t = token()
        toks.append(t)
        size += len(t.encode()) + 1
    add("long-garbage", " ".join(toks))
# Past 64 KiB the window slides; very long runs make blocks whose start slid
# out of the window (zlib then cannot fall back to a stored block).
for n in (65273, 65274, 65275, 70000, 140000, 300000):
    start = rng.randrange(len(CORPUS) - n)
    add("window-slide-english", CORPUS[start:start + n])
add("huge-repeat", "Thank you. " * 300000)
add("huge-same", b"a" * 2000000)
add("huge-repeat-var", "".join(rng.choice(["ha ", "ha! ", "ha, "])
                               for _ in range(200000)))
add("low-entropy", bytes(rng.choice(b"ACGT") for _ in range(200000)))
add("mixed-entropy",
    b"".join(bytes(rng.randrange(256) for _ in range(rng.randint(100, 3000)))
             if rng.random() < 0.3 else
             CORPUS[i:i + rng.randint(100, 8000)].encode()
             for i in range(0, 30 * 4000, 4000)))

# --- random bytes (stored blocks) ------------------------------------------
for n in list(range(11, 60)) + [100, 255, 256, 1000, 4096, 10000,
                                16382, 16383, 16384, 16385, 40000, 70000]:
    add("random", bytes(rng.randrange(256) for _ in range(n)))
for n in (16381, 16382, 16383, 16384, 16385, 32766, 32767, 32768):
    add("random-latin", bytes(rng.randrange(97, 123) for _ in range(n)))
for n in (5, 50, 300, 3000, 30000):
    add("random-utf8", "".join(chr(rng.randrange(0x4e00, 0x9fff))
                               for _ in range(n)))


def encode(data):
    opts = []
    try:
        opts.append(("s", data.decode("utf-8")))
    except UnicodeDecodeError:
        pass
    opts.append(("b64", base64.b64encode(data).decode()))
    opts.append(("z", base64.b64encode(zlib.compress(data, 9)).decode()))

    def cost(o):
        return len(json.dumps(o[1], ensure_ascii=False).encode())
    return min(opts, key=cost)


out = []
for name, data in cases:
    kind, val = encode(data)
    out.append({"name": name, kind: val, "len": len(data),
                "size": len(zlib.compress(data))})

doc = {
    "generator": "tools/whisper-ref/zlib_vectors.py",
    "zlib_runtime_version": zlib.ZLIB_RUNTIME_VERSION,
    "zlib_version": zlib.ZLIB_VERSION,
    "python": sys.version.split()[0],
    "cases": out,
}
with open(OUT, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
# stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
subprocess.check_call(["gzip", "-n", "-9", "-f", OUT])
print(f"{len(out)} cases, {os.path.getsize(OUT + '.gz')} bytes -> {OUT}.gz")
