#!/usr/bin/env python3
"""Reference phonemes for the Go espeak-ng front end (pipelines/kokoro/phonemes.go):
misaki 0.9.4's espeak fallbacks (misaki/espeak.py: EspeakFallback for English,
as Kokoro's pipeline uses it when its lexicon has no entry; EspeakG2P for the
other languages, as Kokoro's pipeline reads them) on sentences of each
language. Run by hand (never in CI):

    python3 -m venv /tmp/kokoro-ph-venv
    /tmp/kokoro-ph-venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r tools/kokoro-ref/requirements-phonemes.txt
    /tmp/kokoro-ph-venv/bin/python tools/kokoro-ref/phonemes.py

It writes pipelines/kokoro/testdata/phonemes.json: the espeak-ng version
phonemizer ran, and per espeak-ng voice, [text, phonemes] pairs.
"""
import json
import os

import espeakng_loader
from misaki.espeak import EspeakFallback, EspeakG2P
from phonemizer.backend import EspeakBackend

SENTENCES = {
    "en-us": [
        "The birch canoe slid on the smooth planks.",
        "Hello, world! How are you doing today?",
        "It's easy to tell the depth of a well; isn't it?",
        "Water, thirty degrees: the boat's motor (an old one) stopped.",
        "\u201cQuiet,\u201d he whispered\u2026 then nothing.",
    ],
    "en-gb": [
        "The birch canoe slid on the smooth planks.",
        "Good morning, how do you do? I'd rather go home.",
        "Our neighbour's colour television, however, was better.",
    ],
    "es": ["Buenos días, ¿cómo estás?", "El perro corre rápido por el jardín.", "Tengo 21 años."],
    "fr-fr": ["Bonjour, comment allez-vous ?", "Le chat dort sur le canapé.", "Il fait beau aujourd'hui."],
    "it": ["Buongiorno, come stai?", "La pizza è buonissima.", "Ci vediamo domani alle otto."],
    "pt-br": ["Bom dia, tudo bem?", "O gato está dormindo no sofá.", "Eu gosto de música brasileira."],
    "hi": ["नमस्ते, आप कैसे हैं?", "मुझे हिंदी पसंद है।"],
}

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pipelines", "kokoro", "testdata", "phonemes.json")


class Token:
    def __init__(self, text):
        self.text = text


def main():
    out = {"espeak_ng": EspeakBackend.version() and ".".join(map(str, EspeakBackend.version())),
           "espeakng_loader_data": os.path.basename(espeakng_loader.get_data_path()), "voices": {}}
    for lang, sentences in SENTENCES.items():
        if lang in ("en-us", "en-gb"):
            fb = EspeakFallback(british=lang == "en-gb")
            g2p = lambda s: fb(Token(s))[0]  # noqa: E731
        else:
            g = EspeakG2P(language=lang)
            g2p = lambda s: g(s)[0]  # noqa: E731
        out["voices"][lang] = [[s, g2p(s)] for s in sentences]
        for s, p in out["voices"][lang]:
            print(f"{lang}: {s} → {p}")
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
