#!/usr/bin/env python3
"""Reference word timestamps for pipelines/whisper: faster-whisper (CTranslate2's
Whisper align) with word_timestamps=True, greedy, on tiny.en from the test
assets. Run by hand (see README.md); writes pipelines/whisper/testdata/words/tiny.en.json.gz.
"""
import json
import os
import subprocess
import sys
import wave

import numpy as np
import ctranslate2
import faster_whisper
from faster_whisper import WhisperModel

ASSETS = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
W = os.path.join(ASSETS, "whisper")
OUT = os.environ.get("WORDS_REF_OUT", os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "pipelines", "whisper", "testdata", "words", "tiny.en.json"))

# clips, relative to $FALOCAL_TEST_ASSETS/whisper; "long" is their
# concatenation (two windows: exercises the long-form rules and the seek
# that follows the last word)
CLIPS = [
    "jfk.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
    "cards/005.wav",
]
LONG = ["jfk.wav"] + [c for c in CLIPS if c.startswith("librivox/")] + [
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
]


def read_wav(path):
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def run(model, audio):
    segments, info = model.transcribe(audio, language="en", beam_size=1, best_of=1,
                                      word_timestamps=True, vad_filter=False,
                                      condition_on_previous_text=True)
    out = []
    for s in segments:
        out.append({
            "seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens),
            "temperature": s.temperature,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "probability": round(float(w.probability), 4)}
                      for w in s.words],
        })
    return out


def main():
    model = WhisperModel(os.path.join(W, "tiny.en-ct2"), device="cpu", compute_type="float32",
                         cpu_threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    clips = []
    for c in CLIPS:
        clips.append({"name": c, "files": [c], "segments": run(model, read_wav(os.path.join(W, c)))})
        print(c, " ".join(w["word"] for s in clips[-1]["segments"] for w in s["words"]), file=sys.stderr)
    audio = np.concatenate([read_wav(os.path.join(W, c)) for c in LONG])
    clips.append({"name": "long", "files": LONG, "segments": run(model, audio)})
    doc = {
        "generator": "tools/whisper-words-ref/words_ref.py",
        "faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
        "model": "tiny.en-ct2 (test assets), compute_type float32, greedy (beam_size 1), language en",
        "clips": clips,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
    subprocess.check_call(["gzip", "-n", "-9", "-f", OUT])
    print("wrote", OUT + ".gz", file=sys.stderr)


if __name__ == "__main__":
    main()
