#!/usr/bin/env python3
"""N seconds of speech (16 kHz mono 16-bit WAV) from the project's test recordings: the five LibriVox clips and
jfk.wav, each followed by 0.2 s of silence, repeated until N seconds (the last repetition cut).

    python3 make_audio.py SRC_DIR SECONDS OUT.wav      (SRC_DIR holds librivox/*.wav and jfk.wav)"""
import glob
import os
import sys
import wave


def main():
    src, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    clips = sorted(glob.glob(os.path.join(src, "librivox", "*.wav"))) + [os.path.join(src, "jfk.wav")]
    pcm = []
    for c in clips:
        with wave.open(c) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), c
            pcm.append(w.readframes(w.getnframes()) + b"\0\0" * 3200)
    one = b"".join(pcm)
    need = int(secs * 16000) * 2
    data = (one * (need // len(one) + 1))[:need]
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(data)
    print(f"{out}: {secs:.0f} s from {len(clips)} clips ({len(one) / 32000:.1f} s per repetition)")


if __name__ == "__main__":
    main()
