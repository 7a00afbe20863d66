#!/usr/bin/env bash
# Interleaved rounds of BenchmarkWhisperReal (ours) and run.py (faster-whisper, then openai-whisper when its
# venv is given): ours, peers, ours, peers, ...
# Usage (from the repository root, after make setup and the venvs of README.md):
#   bash bench/whisper-peer/compare.sh OUTDIR [ROUNDS] [PYTHON] [OPENAI_PYTHON]
# Before each step it waits (up to WAIT_TRIES×20 s, default 3 min) for the 1-minute load average to fall below 1.2 and logs it.
set -euo pipefail
out=${1:?outdir}; rounds=${2:-2}; py=${3:-/tmp/whisper-peer-venv/bin/python}; opy=${4:-}
mkdir -p "$out"; out=$(cd "$out" && pwd)
cache=${CACHE_DIR:-$HOME/.cache/falocal}
export FALOCAL_REQUIRE_ASSETS=1 FALOCAL_TEST_ORT=$cache/onnxruntime-1.30.0/libonnxruntime.so.1 \
  FALOCAL_TEST_DATA_DIR=${DATA_DIR:-$HOME/.local/share/falocal} FALOCAL_TEST_PACKAGES=$cache/packages \
  FALOCAL_TEST_ASSETS=$cache/testdata OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
go test -c -o "$out/.bench.test" ./bench/
quiet() {
  for _ in $(seq "${WAIT_TRIES:-9}"); do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" 'BEGIN{exit !(l < 1.2)}' && break
    sleep 20
  done
  echo "$(date -u +%H:%M:%S) $1: $(uptime)" | tee -a "$out/load.txt"
}
# the peer needs the recording the benchmark writes
[ -f /tmp/falocal-whisper-real.wav ] || (cd bench && "$out/.bench.test" -test.run '^$' -test.bench 'WhisperReal/none' -test.benchtime 1x >/dev/null)
for r in $(seq "$rounds"); do
  quiet "round $r ours"
  (cd bench && "$out/.bench.test" -test.run '^$' -test.bench WhisperReal -test.benchtime 3x -test.timeout 30m) 2>&1 | tee "$out/round$r-ours.txt"
  quiet "round $r faster-whisper"
  "$py" bench/whisper-peer/run.py --runs 3 --threads 2 --out "$out/round$r-peer.json" 2>&1 | tee "$out/round$r-peer.txt"
  if [ -n "$opy" ]; then
    quiet "round $r openai-whisper"
    "$opy" bench/whisper-peer/run.py --peer openai-whisper --runs 3 --threads 2 --out "$out/round$r-openai.json" 2>&1 |
      tee "$out/round$r-openai.txt"
  fi
done
rm -f "$out/.bench.test"
