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
# tokenizers, scheduler configs and model_index.json of the tiny diffusion test models (symlinks followed):
# bench/gpu/ferry.sh sets pipelines/*/testdata aside on the way to the device
for m in sdxl-tiny flux-dev-tiny; do
  mkdir -p "$carry/diffusers/$m"
  for p in model_index.json scheduler tokenizer tokenizer_2; do
    cp -rL "$here/../../../pipelines/diffusion/testdata/models/$m/$p" "$carry/diffusers/$m/"
  done
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --require-hashes -r "$here/requirements-device.txt" -d "$wheels"
du -sh "$carry"
ls -la "$wheels"; du -sh "$wheels"
