#!/usr/bin/env bash
# The device driver of the generative benchmark: SDXL, FLUX.1-dev and Whisper large-v3 with random weights and the real
# configurations, through falocal's HTTP API and in PyTorch, in one run.  For each model, in order:
#   1. build.py: build the modules on the GPU (fp16, seeded) and export ONNX fp16 with external data
#   2. falocal weights import into a temporary data dir (never the real store); the export is deleted
#   3. falocal serves it (-providers $GEN_PROVIDERS); http_bench.py sends the requests; device memory sampled
#   4. the server stops; peer.py times the same modules in PyTorch fp16 (eager, SDPA)
# then report.py writes results.json + summary.md into $OUT and prints the table.
#
# A time guard ($GEN_BUDGET_S, default 540 s) skips a model whose estimated cost no longer fits (recorded as
# skipped).  Everything is a parameter (env):
#   OUT               output folder (default bench/gpu/generative/out)
#   GEN_MODELS        "sdxl whisper flux" (order = priority)
#   GEN_SIZE          full | tiny                 GEN_DEVICE   cuda | cpu (torch)
#   GEN_PROVIDERS     cuda,cpu
#   STAGE             the unpacked stage (default: $FERRY_WORK/STAGE's path as bench/gpu/ferry.sh writes it,
#                     else bench/gpu/stage);  FALOCAL_BIN  $STAGE/bin/falocal
#   FALOCAL_ORT_LIBRARY   default $STAGE/ort/libonnxruntime.so.1.30.0 (its dir and the image's nvidia/*/lib
#                     dirs go on LD_LIBRARY_PATH);  GEN_ENV_SCRIPT  optional script sourced first
#   GEN_WORK          scratch (exports, data dir): /tmp/gen-work
#   GEN_IMAGE 1024  GEN_BATCHES 1,4  GEN_SDXL_STEPS 30  GEN_FLUX_STEPS 28
#   GEN_FLUX_DOUBLE / GEN_FLUX_SINGLE  FLUX depth (default 19/38 when GEN_FLUX_FULL=1, else 4/8)
#   GEN_AUDIO_S 600  GEN_WHISPER_BATCH 16  GEN_PEER_ITERS 10  GEN_PYTHON python3  GEN_PORT 8791
#   GEN_IMPORT_CHECK  false (true: the import loads every diffusion component and generates at two small sizes)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
T0=$(date +%s)
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
GEN_MODELS=${GEN_MODELS:-"sdxl whisper flux"}
GEN_SIZE=${GEN_SIZE:-full}
GEN_DEVICE=${GEN_DEVICE:-cuda}
GEN_PROVIDERS=${GEN_PROVIDERS:-cuda,cpu}
# the stage (server + ONNX Runtime's GPU build) as bench/gpu/ferry.sh unpacks it, found as bench/gpu/images.sh does
if [ -z "${STAGE:-}" ]; then
  fw=${FERRY_WORK:-/root/falocal-gpu}
  [ -f "$fw/STAGE" ] || fw=${TMPDIR:-/tmp}/falocal-gpu
  if [ -f "$fw/STAGE" ]; then STAGE=$(cat "$fw/STAGE"); else STAGE=$root/bench/gpu/stage; fi
fi
FALOCAL_BIN=${FALOCAL_BIN:-$STAGE/bin/falocal}
GEN_ENV_SCRIPT=${GEN_ENV_SCRIPT:-}
GEN_WORK=${GEN_WORK:-/tmp/gen-work}
GEN_BUDGET_S=${GEN_BUDGET_S:-540}
GEN_IMAGE=${GEN_IMAGE:-1024}
GEN_BATCHES=${GEN_BATCHES:-1,4}
GEN_SDXL_STEPS=${GEN_SDXL_STEPS:-30}
GEN_FLUX_STEPS=${GEN_FLUX_STEPS:-28}
if [ "${GEN_FLUX_FULL:-0}" = 1 ]; then GEN_FLUX_DOUBLE=${GEN_FLUX_DOUBLE:-19}; GEN_FLUX_SINGLE=${GEN_FLUX_SINGLE:-38}; fi
GEN_FLUX_DOUBLE=${GEN_FLUX_DOUBLE:-4}
GEN_FLUX_SINGLE=${GEN_FLUX_SINGLE:-8}
GEN_AUDIO_S=${GEN_AUDIO_S:-600}
GEN_WHISPER_BATCH=${GEN_WHISPER_BATCH:-16}
GEN_PEER_ITERS=${GEN_PEER_ITERS:-10}
PY=${GEN_PYTHON:-python3}
PORT=${GEN_PORT:-8791}
[ -n "$GEN_ENV_SCRIPT" ] && [ -f "$GEN_ENV_SCRIPT" ] && . "$GEN_ENV_SCRIPT"
if [ -z "${FALOCAL_ORT_LIBRARY:-}" ] && [ -f "$STAGE/ort/libonnxruntime.so.1.30.0" ]; then
  FALOCAL_ORT_LIBRARY=$STAGE/ort/libonnxruntime.so.1.30.0
fi
export FALOCAL_ORT_LIBRARY=${FALOCAL_ORT_LIBRARY:-}
if [ -n "$FALOCAL_ORT_LIBRARY" ] && [ "$GEN_DEVICE" = cuda ]; then
  # the CUDA libraries of the image's nvidia pip packages, beside ONNX Runtime's (as bench/gpu/images.sh)
  cudalibs=$(${GEN_PYTHON:-python3} - <<'PY' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = []
for base in list(nvidia.__path__):
    for d, _, files in os.walk(base):
        if any(f.startswith("lib") and ".so" in f for f in files) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)
  export LD_LIBRARY_PATH=$(dirname "$FALOCAL_ORT_LIBRARY")${cudalibs:+:$cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONUNBUFFERED=1

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/run.log"; }
left() { echo $(( GEN_BUDGET_S - ($(date +%s) - T0) )); }
step() {  # step NAME cmd...: runs, times, records rc into $OUT/steps.jsonl
  local name=$1; shift
  local s=$(date +%s%N)
  # no step runs past the budget: the report still gets written within the call's limit
  local lim=$(left); [ "$lim" -lt 15 ] && lim=15
  timeout -k 5 "$lim" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  local ms=$(( ($(date +%s%N) - s) / 1000000 ))
  printf '{"step":"%s","rc":%d,"seconds":%d.%03d}\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$OUT/steps.jsonl"
  log "$name: rc=$rc $((ms / 1000)).$((ms % 1000 / 100)) s"
  return $rc
}

# ---- environment: card, versions, carried wheels --------------------------------------------------------
: > "$OUT/steps.jsonl"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import sys,torch;print("python",sys.version.split()[0],"torch",torch.__version__,"cuda",torch.version.cuda)' 2>&1
  echo "falocal $FALOCAL_BIN ort ${FALOCAL_ORT_LIBRARY:-default} providers $GEN_PROVIDERS size $GEN_SIZE precision float16"
  echo "flux blocks ${GEN_FLUX_DOUBLE}+${GEN_FLUX_SINGLE} (real 19+38); text encoders: real widths, 2 layers; image ${GEN_IMAGE}; audio ${GEN_AUDIO_S} s at batch ${GEN_WHISPER_BATCH}"
} > "$OUT/env.txt"
site=$GEN_WORK/site
mkdir -p "$site"
for w in "$root"/bench/gpu/wheels/generative/*.whl; do
  [ -f "$w" ] || continue
  mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z'); [ "$mod" = pillow ] && mod=PIL
  if ! $PY -c "import $mod" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" "$w" && echo "installed $(basename "$w")" >> "$OUT/env.txt"
  fi
done
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
$PY -c 'import diffusers,transformers,onnx;print("diffusers",diffusers.__version__,"transformers",transformers.__version__,"onnx",onnx.__version__)' >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$OUT/run.log"
if [ ! -x "$FALOCAL_BIN" ]; then log "no server binary at $FALOCAL_BIN"; fi

assets=$here/carry
[ -f "$assets/multilingual.tiktoken" ] || assets=${FALOCAL_TEST_ASSETS:-$HOME/.cache/falocal/testdata}/whisper
export WHISPER_TIKTOKEN=$assets/multilingual.tiktoken
audio_src=$assets; [ -d "$assets/audio" ] && audio_src=$assets/audio

DATA=$GEN_WORK/data
rm -rf "$DATA" "$GEN_WORK/onnx"
mkdir -p "$DATA" "$GEN_WORK/onnx"
SERVER_PID=
SAMPLER_PID=

start_server() {  # start_server MODEL
  local m=$1
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpumem-$m.csv" 2>/dev/null &
    SAMPLER_PID=$!
  fi
  "$FALOCAL_BIN" serve -data-dir "$DATA" -cache-dir "$GEN_WORK/cache" -listen 127.0.0.1:$PORT \
    -providers "$GEN_PROVIDERS" -max-diffusion-work -1 -request-timeout 30m -keep-alive -1 ${WHISPER_MODEL:+-whisper-model $WHISPER_MODEL} \
    ${FALOCAL_ORT_LIBRARY:+-ort-library $FALOCAL_ORT_LIBRARY} > "$OUT/server-$m.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if command -v curl >/dev/null; then
      curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    else
      $PY -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null && return 0
    fi
    kill -0 $SERVER_PID 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

stop_server() {  # stop_server MODEL: records the server's peak RSS, stops it and the sampler
  local m=$1
  if [ -n "$SERVER_PID" ]; then
    grep -E 'VmHWM|VmRSS' /proc/$SERVER_PID/status > "$OUT/server-rss-$m.txt" 2>/dev/null
    kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null
  fi
  if [ -n "$SAMPLER_PID" ]; then kill $SAMPLER_PID 2>/dev/null; wait $SAMPLER_PID 2>/dev/null; fi
  SERVER_PID= SAMPLER_PID=
}
trap 'stop_server trap' EXIT

# estimated seconds each model needs on an H100 (build+export+import+serve+peer); the guard skips a model
# that no longer fits.  tiny: small numbers.
declare -A NEED=([sdxl]=150 [whisper]=150 [flux]=200)
[ "$GEN_SIZE" = tiny ] && NEED=([sdxl]=20 [whisper]=20 [flux]=20)

for m in $GEN_MODELS; do
  if [ "$(left)" -lt "${NEED[$m]}" ]; then
    log "$m: skipped, $(left) s left of the budget, needs ~${NEED[$m]} s"
    echo "{\"model\":\"$m\",\"skipped\":\"budget\"}" > "$OUT/skipped-$m.json"
    continue
  fi
  src=$GEN_WORK/onnx/$m
  extra=()
  [ "$m" = flux ] && extra=(--flux-double "$GEN_FLUX_DOUBLE" --flux-single "$GEN_FLUX_SINGLE")
  step "build-$m" $PY "$here/build.py" --model $m --size "$GEN_SIZE" --device "$GEN_DEVICE" --out "$src" "${extra[@]}" || continue
  grep '^{"build"' "$OUT/build-$m.log" | tail -1 > "$OUT/build-$m.json"
  case $m in
    sdxl) imp=(-pipeline diffusion -serves fast-sdxl -check=${GEN_IMPORT_CHECK:-false}) ;;
    flux) imp=(-pipeline diffusion -serves flux/dev -check=${GEN_IMPORT_CHECK:-false}) ;;
    whisper) imp=(-pipeline whisper) ;;
  esac
  step "import-$m" "$FALOCAL_BIN" weights import -data-dir "$DATA" -cache-dir "$GEN_WORK/cache" -providers "$GEN_PROVIDERS" \
    ${FALOCAL_ORT_LIBRARY:+-ort-library $FALOCAL_ORT_LIBRARY} -name "$m-bench" -dir "$src" -dtype fp16 "${imp[@]}" || continue
  rm -rf "$src"
  http=(--image "$GEN_IMAGE" --batches "$GEN_BATCHES")
  case $m in
    sdxl) http+=(--steps "$GEN_SDXL_STEPS") ;;
    flux) http+=(--steps "$GEN_FLUX_STEPS") ;;
    whisper)
      $PY "$here/make_audio.py" "$audio_src" "$GEN_AUDIO_S" "$GEN_WORK/audio.wav" >> "$OUT/run.log"
      $PY "$here/make_audio.py" "$audio_src" 30 "$GEN_WORK/warm.wav" >> "$OUT/run.log"
      http=(--audio "$GEN_WORK/audio.wav" --warm-audio "$GEN_WORK/warm.wav" --whisper-batch "$GEN_WHISPER_BATCH")
      export WHISPER_MODEL=whisper-bench ;;
  esac
  if start_server $m; then
    step "http-$m" $PY "$here/http_bench.py" --model $m --base "http://127.0.0.1:$PORT" --out "$OUT/http-$m.json" "${http[@]}"
  else
    log "$m: the server did not start (see server-$m.log)"
  fi
  stop_server $m
  unset WHISPER_MODEL
  # the store's copy is not needed any more (disk)
  "$FALOCAL_BIN" weights remove -data-dir "$DATA" -cache-dir "$GEN_WORK/cache" "$m-bench" >/dev/null 2>&1
  peer=(--image "$GEN_IMAGE" --batches "$GEN_BATCHES" --iters "$GEN_PEER_ITERS" --whisper-batch "$GEN_WHISPER_BATCH")
  [ "$m" = flux ] && peer+=(--flux-double "$GEN_FLUX_DOUBLE" --flux-single "$GEN_FLUX_SINGLE")
  step "peer-$m" $PY "$here/peer.py" --model $m --size "$GEN_SIZE" --device "$GEN_DEVICE" --out "$OUT/peer-$m.json" "${peer[@]}"
done

$PY "$here/report.py" "$OUT" | tee "$OUT/table.txt"
log "total $(( $(date +%s) - T0 )) s"
