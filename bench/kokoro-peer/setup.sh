#!/usr/bin/env bash
# Installs kokoro-onnx (the peer of BenchmarkKokoro) into a virtual environment:
#   bash bench/kokoro-peer/setup.sh [VENV]   (default: ~/.cache/falocal/venv-kokoro-peer)
# Every package is pinned by version and SHA-256 (requirements.txt); a failed install fails.
set -euo pipefail
venv=${1:-${CACHE_DIR:-$HOME/.cache/falocal}/venv-kokoro-peer}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --require-hashes --only-binary :all: -r "$(dirname "$0")/requirements.txt"
"$venv/bin/python" -c 'import kokoro_onnx, onnxruntime; print("kokoro-onnx ready, onnxruntime", onnxruntime.__version__)'
