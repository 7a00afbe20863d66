#!/usr/bin/env python3
"""Reference audio for the Go Kokoro synthesis (pipelines/kokoro/model.go):
the same ONNX file (kokoro-v1.0.int8.onnx, as 'falocal setup' installs it)
run by Python onnxruntime on given token ids, voice rows and speeds, the way
kokoro-onnx feeds it (tokens [[0, *ids, 0]] int64, style = voice row
len(ids)-1 as [1, 256] float32, speed [1] float32). Run by hand (never in CI):

    python3 -m venv /tmp/kokoro-ref-venv
    /tmp/kokoro-ref-venv/bin/pip install --require-hashes --only-binary :all: -r tools/kokoro-ref/requirements.txt
    /tmp/kokoro-ref-venv/bin/python tools/kokoro-ref/generate.py [--data-dir ~/.local/share/falocal]

It reads the model, vocab.json and voices from the model store (the
kokoro-v1.0 manifest and its blobs, each checked by SHA-256) and writes
pipelines/kokoro/testdata/ref/: ref.json (per case: phonemes, token ids,
voice, style row, speed, sample count, file) and <case>.f32 (the audio,
little-endian float32).
"""
import argparse
import hashlib
import json
import os

import numpy as np
import onnxruntime

# Phoneme strings (misaki's symbols), voices and speeds; the phonemes are
# fixed here so that the reference depends on no text front end.
CASES = [
    ("us_heart", "hɛlˈO wˈɜɹld. ðɪs ɪz ə tˈɛst.", "af_heart", 1.0),
    ("gb_george_fast", "ðə bˈɜːʧ kənˈuː slˈɪd ɒn ðə smˈuːð plˈaŋks.", "bm_george", 1.5),
    ("es_dora_slow", "ˈola, kˈomo estˈas?", "ef_dora", 0.8),
]

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pipelines", "kokoro", "testdata", "ref")


def blob(data_dir, manifest, name):
    for f in manifest["files"]:
        if f["name"] == name:
            p = os.path.join(data_dir, "blobs", "sha256-" + f["sha256"])
            with open(p, "rb") as fh:
                b = fh.read()
            if hashlib.sha256(b).hexdigest() != f["sha256"]:
                raise SystemExit(f"{p} does not match its manifest")
            return p, b
    raise SystemExit(f"kokoro-v1.0 has no {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.local/share/falocal"))
    a = ap.parse_args()
    with open(os.path.join(a.data_dir, "manifests", "kokoro-v1.0.json")) as fh:
        man = json.load(fh)
    model, _ = blob(a.data_dir, man, "kokoro-v1.0.int8.onnx")
    vocab = json.loads(blob(a.data_dir, man, "vocab.json")[1])["vocab"]
    sess = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for name, phonemes, voice, speed in CASES:
        ids = [vocab[c] for c in phonemes if c in vocab]
        styles = np.frombuffer(blob(a.data_dir, man, f"voices/{voice}.bin")[1], dtype="<f4").reshape(-1, 256)
        row = min(len(ids), len(styles)) - 1
        audio = sess.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": styles[row].reshape(1, 256).astype(np.float32),
            "speed": np.array([speed], dtype=np.float32),
        })[0].astype("<f4").ravel()
        audio.tofile(os.path.join(OUT, name + ".f32"))
        cases.append({"name": name, "phonemes": phonemes, "tokens": ids, "voice": voice, "row": row,
                      "speed": speed, "samples": len(audio), "file": name + ".f32"})
        print(f"{name}: {len(ids)} tokens, {len(audio) / 24000:.2f} s")
    with open(os.path.join(OUT, "ref.json"), "w") as fh:
        json.dump({"onnxruntime": onnxruntime.__version__, "model_sha256": man["files"][0]["sha256"], "cases": cases},
                  fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
