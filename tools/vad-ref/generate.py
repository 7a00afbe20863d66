#!/usr/bin/env python3
"""Reference vectors for the Go Silero VAD (pipelines/whisper/vad.go), from
faster-whisper's own VAD: faster_whisper/vad.py (SileroVADModel on its
assets/silero_vad_v6.onnx, get_speech_timestamps, collect_chunks,
SpeechTimestampsMap), the code faster-whisper's BatchedInferencePipeline
cuts audio with. Run by hand (never in CI):

    python3 -m venv /tmp/vad-ref-venv
    /tmp/vad-ref-venv/bin/pip install --require-hashes --only-binary :all: -r tools/vad-ref/requirements.txt
    /tmp/vad-ref-venv/bin/python tools/vad-ref/generate.py

It reads the pinned test recordings that `make test-assets` installs
($FALOCAL_TEST_ASSETS/whisper, default ~/.cache/falocal/testdata/whisper)
and writes pipelines/whisper/testdata/vad/ref.json.gz. Each recording is
described by a recipe (files, cuts and runs of digital silence) that the Go
test rebuilds the same way; the SHA-256 of its float32 samples checks that
both built the same audio.
"""
import hashlib
import json
import os
import subprocess
import wave

import numpy as np

import faster_whisper
import onnxruntime
from faster_whisper.utils import get_assets_path
from faster_whisper.vad import (
    SpeechTimestampsMap,
    VadOptions,
    collect_chunks,
    get_speech_timestamps,
    get_vad_model,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(REPO, "pipelines", "whisper", "testdata", "vad", "ref.json")
SR = 16000


def assets_dir():
    base = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
    return os.path.join(base, "whisper")


LIBRIVOX = ["librivox/sense_and_sensibility_01_austen_64kb-%04d.wav" % n for n in (870, 880, 890, 920, 930)]
CARDS = ["cards/%03d.wav" % n for n in range(1, 6)]


def f(name, first=None):
    d = {"file": name}
    if first is not None:
        d["first"] = first
    return d


def sil(n):
    return {"silence": n}


# Recipes: {"file": path, "first": n} takes the first n samples of a file
# (all without "first"); {"silence": n} is n zero samples.
RECORDINGS = [("jfk", [f("jfk.wav")])]
RECORDINGS += [("librivox-" + p[-8:-4], [f(p)]) for p in LIBRIVOX]
RECORDINGS += [("cards-" + p[-7:-4], [f(p)]) for p in CARDS]
RECORDINGS += [
    # a multiple of 512 samples: np.pad appends a whole chunk of zeros
    ("jfk-cut-300x512", [f("jfk.wav", 300 * 512)]),
    # 500 samples past a multiple of 512: SileroVADModel zeroes the last 64
    # samples of the padded audio, so 52 real samples are lost to the model
    ("jfk-cut-300x512+500", [f("jfk.wav", 300 * 512 + 500)]),
    ("silence-3s", [sil(3 * SR)]),
    ("empty", []),
    # speech with short and long silences between clips, about 75 s
    ("long", [f("jfk.wav"), sil(800), f(LIBRIVOX[0]), sil(1600), f(LIBRIVOX[1]), sil(1280), f(LIBRIVOX[2]),
              sil(2400), f(LIBRIVOX[3]), sil(2720), f(LIBRIVOX[4]), sil(48000), f(CARDS[0]), sil(8000),
              f(CARDS[1]), sil(16000), f(CARDS[2]), sil(3200), f(CARDS[3]), sil(35200), f(CARDS[4]),
              sil(80000), f("jfk.wav"), sil(4800)]),
    # over 10,000 chunks (345 s): SileroVADModel runs 10,000 a time, the
    # LSTM state carried between runs (probabilities kept for every 7th
    # chunk only, to keep the file small)
    ("long-x5", "long", 5),
    # continuous speech past 30 s with no silence of 2 s: the max-speech split
    ("long-tight", [f(LIBRIVOX[0]), sil(300), f(LIBRIVOX[1]), sil(300), f(LIBRIVOX[2]), sil(300),
                    f(LIBRIVOX[3]), sil(300), f(LIBRIVOX[4]), sil(300), f("jfk.wav"), sil(300),
                    f(LIBRIVOX[0]), sil(300), f("jfk.wav")]),
]

# Option sets. "batched" is what BatchedInferencePipeline.transcribe uses
# with vad_filter and no vad_parameters (chunk_length 30); "default" is
# VadOptions() as WhisperModel.transcribe(vad_filter=True) uses it.
OPTIONS = {
    "batched": dict(max_speech_duration_s=30, min_silence_duration_ms=160),
    "default": dict(),
    "maxsplit": dict(max_speech_duration_s=30, min_silence_duration_ms=2000),
    "custom": dict(threshold=0.6, neg_threshold=0.3, min_speech_duration_ms=250, max_speech_duration_s=5,
                   min_silence_duration_ms=300, speech_pad_ms=100),
    "aggressive": dict(max_speech_duration_s=3, min_silence_duration_ms=100, speech_pad_ms=30),
}
# a recording given as (name, other recording, copies) repeats that one's recipe
RECORDINGS = [(r[0], [it for _ in range(r[2]) for it in dict((x[0], x[1]) for x in RECORDINGS if len(x) == 2)[r[1]]])
              if len(r) == 3 else r for r in RECORDINGS]
SPARSE_ABOVE = 4000  # chunks; past this only every SPARSE_EVERY-th probability is kept
SPARSE_EVERY = 7

CHUNK_SECONDS = 30  # collect_chunks(max_duration=chunk_length) in the batched pipeline


def read_wav(path):
    with wave.open(path) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        b = w.readframes(w.getnframes())
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768


def build(recipe):
    parts = []
    for it in recipe:
        if "silence" in it:
            parts.append(np.zeros(it["silence"], dtype=np.float32))
        else:
            a = read_wav(os.path.join(assets_dir(), it["file"]))
            if "first" in it:
                a = a[: it["first"]]
            parts.append(a)
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


def f32(x):
    # the shortest decimal that reads back as the same float32
    return float(str(np.float32(x)))


def spans(ts):
    return [[int(s["start"]), int(s["end"])] for s in ts]


def main():
    model = get_vad_model()
    model_path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    with open(model_path, "rb") as fh:
        model_sha = hashlib.sha256(fh.read()).hexdigest()
    out = {
        "generator": "tools/vad-ref/generate.py",
        "faster_whisper": faster_whisper.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "model_sha256": model_sha,
        "chunk_seconds": CHUNK_SECONDS,
        "options": {},
        "recordings": [],
    }
    for name, o in OPTIONS.items():
        v = VadOptions(**o)
        out["options"][name] = {
            "threshold": v.threshold, "neg_threshold": v.neg_threshold,
            "min_speech_duration_ms": v.min_speech_duration_ms,
            "max_speech_duration_s": None if v.max_speech_duration_s == float("inf") else v.max_speech_duration_s,
            "min_silence_duration_ms": v.min_silence_duration_ms, "speech_pad_ms": v.speech_pad_ms,
        }
    for name, recipe in RECORDINGS:
        audio = build(recipe)
        # what get_speech_timestamps feeds the model
        padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
        probs = model(padded)
        rec = {
            "name": name, "recipe": recipe, "samples": int(audio.shape[0]),
            "sha256": hashlib.sha256(audio.astype("<f4").tobytes()).hexdigest(),
            "probs_every": SPARSE_EVERY if len(probs) > SPARSE_ABOVE else 1,
            "probs_count": int(len(probs)),
            "probs": [f32(p) for p in probs[:: SPARSE_EVERY if len(probs) > SPARSE_ABOVE else 1]],
            "timestamps": {}, "chunks": {}, "times": {},
        }
        for oname, o in OPTIONS.items():
            ts = get_speech_timestamps(audio, VadOptions(**o))
            rec["timestamps"][oname] = spans(ts)
            audio_chunks, meta = collect_chunks(audio, [dict(s) for s in ts], max_duration=CHUNK_SECONDS)
            rec["chunks"][oname] = [{
                "offset": m["offset"], "duration": m["duration"],
                "segments": spans(m["segments"]), "audio_samples": int(c.shape[0]),
            } for c, m in zip(audio_chunks, meta)]
            sparse = len(probs) > SPARSE_ABOVE
            if ts and (not sparse or oname == "batched"):
                # restore_speech_timestamps: times in the speech-only audio
                # back to the recording's
                tm = SpeechTimestampsMap(ts, SR)
                total = sum(s["end"] - s["start"] for s in ts) / SR
                step = 3.7 if sparse else 0.37
                grid = [round(i * step, 2) for i in range(int(total / step) + 2)]
                grid += [(s["end"] - s["start"]) / SR for s in ts]  # exact chunk ends
                acc = 0
                for s in ts:
                    acc += s["end"] - s["start"]
                    grid.append(acc / SR)
                rec["times"][oname] = [[t, tm.get_original_time(t), tm.get_original_time(t, is_end=True)]
                                       for t in grid]
        out["recordings"].append(rec)
        print(name, audio.shape[0], {k: len(v) for k, v in rec["timestamps"].items()})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
    subprocess.check_call(["gzip", "-n", "-9", "-f", OUT])
    print("wrote", OUT + ".gz", os.path.getsize(OUT + ".gz"), "bytes")


if __name__ == "__main__":
    main()
