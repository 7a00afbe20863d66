#!/usr/bin/env bash
# Stages what the device run needs besides the tree, under bench/gpu/generative/carry/ (git-ignored, ~2 MiB) and bench/gpu/wheels/generative/ (~12 MiB):
# Whisper's multilingual BPE and the test recordings (from the project's test assets), and the wheels of
# requirements-device.txt (diffusers: the device image has none), downloaded with pip and checked by SHA-256.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
assets=${FALOCAL_TEST_ASSETS:-$HOME/.cache/falocal/testdata}
carry=$here/carry
rm -rf "$carry"
wheels=$here/../wheels/generative
rm -rf "$wheels"
mkdir -p "$carry/audio/librivox" "$wheels"
cp "$assets/whisper/multilingual.tiktoken" "$carry/"
cp "$assets/whisper/jfk.wav" "$carry/audio/"
cp "$assets"/whisper/librivox/*.wav "$carry/audio/librivox/"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --require-hashes -r "$here/requirements-device.txt" -d "$wheels"
du -sh "$carry"
ls -la "$wheels"; du -sh "$wheels"
