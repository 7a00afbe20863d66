#!/usr/bin/env python3
"""kokoro-onnx (PyPI, pinned in requirements.txt) on the model file falocal
installs, for BenchmarkKokoro (bench/kokoro_test.go), which runs it on the
same text right after its own runs:

    python run.py --text FILE [--phonemes FILE] --voice af_heart --runs 3 --out result.json

The model, vocab.json and the voice come from the kokoro-v1.0 manifest of
the falocal model store (each blob checked by SHA-256). Two modes are timed:
"text" (kokoro-onnx's own phonemizer, espeak-ng through phonemizer) and, when
--phonemes is given, "phonemes" (our phonemes, is_phonemes=True: the same
tokens as ours). kokoro-onnx's defaults otherwise: trimmed chunks, 0.25 s
after a sentence and 0.1 s after a clause. The JSON gives, per mode, the
seconds of each run, the audio seconds and the real-time factor (processing
seconds per audio second) of the median run.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime
from kokoro_onnx import Kokoro


def blob(data_dir, manifest, name):
    for f in manifest["files"]:
        if f["name"] == name:
            p = os.path.join(data_dir, "blobs", "sha256-" + f["sha256"])
            with open(p, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != f["sha256"]:
                    raise SystemExit(f"{p} does not match its manifest")
            return p
    raise SystemExit(f"kokoro-v1.0 has no {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.local/share/falocal"))
    ap.add_argument("--text", required=True)
    ap.add_argument("--phonemes")
    ap.add_argument("--voice", default="af_heart")
    ap.add_argument("--lang", default="en-us")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.data_dir, "manifests", "kokoro-v1.0.json")) as fh:
        man = json.load(fh)
    model = blob(a.data_dir, man, "kokoro-v1.0.int8.onnx")
    vocab = blob(a.data_dir, man, "vocab.json")
    style = np.fromfile(blob(a.data_dir, man, f"voices/{a.voice}.bin"), dtype="<f4").reshape(-1, 1, 256)
    voices = os.path.join(tempfile.mkdtemp(), "voices.npz")
    np.savez(voices, **{a.voice: style})

    t0 = time.perf_counter()
    kokoro = Kokoro(model, voices, vocab_config=vocab)
    load = time.perf_counter() - t0
    with open(a.text) as fh:
        text = fh.read()
    modes = {"text": (text, False)}
    if a.phonemes:
        with open(a.phonemes) as fh:
            modes["phonemes"] = (fh.read(), True)
    out = {"kokoro_onnx": importlib.metadata.version("kokoro-onnx"), "onnxruntime": onnxruntime.__version__,
           "load_s": load, "voice": a.voice}
    kokoro.create(text[:40], voice=a.voice, lang=a.lang)  # warm up
    for mode, (inp, is_ph) in modes.items():
        runs = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            audio, rate = kokoro.create(inp, voice=a.voice, lang=a.lang, is_phonemes=is_ph)
            runs.append(time.perf_counter() - t0)
        secs = len(audio) / rate
        med = statistics.median(runs)
        out[mode] = {"runs_s": runs, "audio_s": secs, "rtf": med / secs, "rtf_min": min(runs) / secs}
        print(f"kokoro-onnx {mode}: {secs:.2f} s of audio, runs {', '.join(f'{r:.2f}' for r in runs)} s, rtf {med / secs:.3f}")
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
