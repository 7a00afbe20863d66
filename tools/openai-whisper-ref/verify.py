#!/usr/bin/env python3
"""Checks that convert.py's checkpoint is the CTranslate2 model: on jfk.wav's
padded log-mel (openai-whisper's), the encoder output of openai-whisper
(float32, torch) against CTranslate2's (compute_type float32), and the
language probabilities of both.

Usage: verify.py MODEL_DIR CHECKPOINT.pt  (prints the largest |difference|)
"""
import os
import sys

import numpy as np
import torch
import ctranslate2
import whisper

from convert import load

ASSETS = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))


def main():
    src, ck = sys.argv[1], sys.argv[2]
    model = load(ck)
    import generate  # the clip loader

    audio = generate.read_wav(os.path.join(ASSETS, "whisper", "jfk.wav"))
    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=whisper.audio.N_SAMPLES)
    mel = whisper.pad_or_trim(mel[:, :whisper.audio.N_FRAMES], whisper.audio.N_FRAMES)
    with torch.no_grad():
        ours = model.embed_audio(mel[None]).numpy()
    ct = ctranslate2.models.Whisper(src, device="cpu", compute_type="float32", intra_threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy()))
    theirs = np.array(ct.encode(feats, to_cpu=True))
    diff = np.abs(ours - theirs)
    print(f"encoder output: max |openai - ct2| {diff.max():.3g}, mean {diff.mean():.3g}, max |value| {np.abs(theirs).max():.3g}")
    if model.is_multilingual:
        _, probs = model.detect_language(mel)
        ctp = dict(ct.detect_language(feats)[0])
        worst = max(abs(probs[k] - ctp["<|%s|>" % k]) for k in probs)
        print(f"language probabilities: max |openai - ct2| {worst:.3g}")
    # float32 sums in another order: about 1e-6 of the largest value
    assert diff.max() < 1e-4 * np.abs(theirs).max() and diff.mean() < 1e-5, "the conversion differs"


if __name__ == "__main__":
    main()
