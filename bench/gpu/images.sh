#!/usr/bin/env bash
# The image pipelines on the GPU, run ON the device machine in one call
# after bench/gpu/ferry.sh unpack (see bench/gpu/IMAGES.md):
#
#   0. the card (nvidia-smi), the CUDA libraries of the image's nvidia
#      packages on LD_LIBRARY_PATH, what the staged CUDA provider lacks (ldd);
#   1. our server (-providers cuda,cpu, the staged ONNX Runtime) per config,
#      checked to really run on the card (no "falling back" in its log, its
#      process on nvidia-smi's compute apps), fixed inputs saved for the
#      correctness check, then falbench at 1 and 8 clients on rembg (ISNet,
#      1024² inputs), esrgan RealESRGAN_x4plus (512² crops → 2048²) and
#      RealESRGAN_x4_v3 (x4fast, 512² crops);
#      configs, in this order (IMAGES_CONFIGS): cuda (batching off), cpu
#      (the 16 cores, few requests), peer (step 3), cuda-fp32 (ISNet's fp32
#      build, rembg only), cuda-fp16 (the -fp16 models; both staged or
#      derived by ferry.sh unpack), cuda-b8 and
#      cuda-fp16-b8 (-batch <model>:8:5ms);
#   2. correctness: each CUDA config's outputs against the cpu config's
#      (mask IoU at alpha ≥ 128, mean |Δ| of upscales);
#   3. the peer (peer_images.py): the same ONNX files through onnx2torch in
#      PyTorch fp16 on the same card, batch 1 and 8;
#   4. summary.md + results.json (+ logs.tar.xz) in $OUT; the table last.
#
# A time guard (IMAGES_SECONDS, default 360) cuts each phase short when the
# budget runs out and still writes what was measured. Exit status 0 when every
# run phase finished and every check passed.
#
# Dry run on a machine without a GPU (see IMAGES.md):
#   PROVIDERS=cpu IMAGES_CPU_ONLY=1 FALOCAL_BIN=/tmp/falocal-cpu ... images.sh
#
# Env: STAGE (default: the path in $FERRY_WORK/STAGE, else bench/gpu/stage),
# FALOCAL_BIN, FALBENCH_BIN (default $STAGE/bin/*), PROVIDERS (default
# cuda,cpu), IMAGES_CONFIGS (default "cuda cpu peer cuda-fp32 cuda-fp16
# cuda-b8 cuda-fp16-b8"), IMAGES_REQUESTS (per GPU level, default 24),
# IMAGES_CPU_REQUESTS (default 16: falbench sends at least 2× the clients),
# IMAGES_CONC (default 1,8), IMAGES_SIZE (rembg input side, default 1024),
# IMAGES_CROP (esrgan crop, default 512), IMAGES_CPU_X4PLUS_CONC (default 1:
# x4plus on 16 CPU cores is seconds per image), IMAGES_PEER (1),
# IMAGES_ENDPOINTS (default "rembg x4plus x4fast"), IMAGES_PEER_MODELS
# (default: the three), IMAGES_PEER_ITERS (default 10), IMAGES_PEER_BATCHES (1,8), IMAGES_PEER_ARGS
# (more peer_images.py flags), IMAGES_CUDA_OPTIONS (-cuda-options for the CUDA
# configs, e.g. cudnn_conv_algo_search=HEURISTIC), IMAGES_SECONDS (360),
# PYTHON (python3).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
budget=${IMAGES_SECONDS:-360}
end=$((SECONDS + budget))
status=0
py=${PYTHON:-python3}
left() { echo $((end - SECONDS)); }
note() { echo "$*" | tee -a "$work/notes.txt"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/images.XXXXXX")
mkdir -p "$work"/{logs,fb,outs,data,assets}
cleanup() {
	local p
	for p in $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work/data"
}
trap cleanup EXIT

# ---------------------------------------------------------------- stage
if [[ -z ${STAGE:-} ]]; then
	fw=${FERRY_WORK:-/root/falocal-gpu}
	[[ -f $fw/STAGE ]] || fw=${TMPDIR:-/tmp}/falocal-gpu
	if [[ -f $fw/STAGE ]]; then STAGE=$(cat "$fw/STAGE"); else STAGE=$here/stage; fi
fi
falocal=${FALOCAL_BIN:-$STAGE/bin/falocal}
falbench=${FALBENCH_BIN:-$STAGE/bin/falbench}
ortlib=${ORT_LIBRARY:-$STAGE/ort/libonnxruntime.so.1.30.0}
providers=${PROVIDERS:-cuda,cpu}
for f in "$falocal" "$falbench" "$ortlib" "$STAGE/store/manifests"; do
	[[ -e $f ]] || { echo "images.sh: $f missing (bash bench/gpu/ferry.sh unpack first)" >&2; exit 2; }
done
echo "stage: $STAGE"

# ---------------------------------------------------------------- 0. card and libraries
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
card=none driver=none memory=none
if command -v nvidia-smi >/dev/null; then
	nvidia-smi | tee "$work/logs/nvidia-smi.txt"
	IFS=, read -r card driver memory < <(nvidia-smi --query-gpu=name,driver_version,memory.total \
		--format=csv,noheader | head -1 | sed 's/, */,/g')
fi
echo "card: $card, driver $driver, memory $memory"
gpu_used0=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)

# CUDA libraries of the image's nvidia packages (cublas, cudnn, cudart,
# curand, cufft, ...): every directory under the nvidia namespace that holds
# a lib*.so*, whatever the layout (nvidia/<pkg>/lib or CUDA 13's nvidia/cu13/lib).
cudalibs=$("$py" - <<'PY' 2>/dev/null
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
export LD_LIBRARY_PATH=$(dirname "$ortlib")${cudalibs:+:$cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$work/logs/libs.txt"
for so in "$(dirname "$ortlib")"/libonnxruntime_providers_cuda.so "$ortlib" "$falocal"; do
	[[ -f $so ]] || continue
	echo "== ldd $(basename "$so")" >>"$work/logs/libs.txt"
	ldd "$so" >>"$work/logs/libs.txt" 2>&1
	if ldd "$so" 2>/dev/null | grep -q 'not found'; then
		note "WARNING: $(basename "$so") lacks: $(ldd "$so" | awk '/not found/ {print $1}' | tr '\n' ' ')"
	fi
done

# ---------------------------------------------------------------- inputs
# rembg: 1024² photographs (the size the overhead goal names); esrgan: their
# central crops (falbench -esrgan-crop).
size=${IMAGES_SIZE:-1024}
crop=${IMAGES_CROP:-512}
cp "$STAGE"/assets/*.png "$work/assets/"
"$py" - "$work/assets" "$size" <<'PY' || { echo "images.sh: cannot make the ${size}² inputs (python3 + pillow)" >&2; exit 2; }
import sys
from PIL import Image
d, n = sys.argv[1], int(sys.argv[2])
for name in ("astronaut", "coffee"):
    im = Image.open(f"{d}/{name}.png").convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    im.resize((n, n), Image.LANCZOS).save(f"{d}/{name}-{n}.png")
PY
images=astronaut-$size.png,coffee-$size.png

# ---------------------------------------------------------------- data dirs
# One scratch data dir per precision: its manifests name only that
# precision's models (so fal-ai/esrgan resolves to them), its blobs link to
# the staged store (read-only use).
mkdata() { # mkdata NAME MODEL... -> prints the dir, or nothing if a model is missing
	local d=$work/data/$1 m
	shift
	mkdir -p "$d/manifests"
	ln -sfn "$STAGE/store/blobs" "$d/blobs"
	for m in "$@"; do
		[[ -f $STAGE/store/manifests/$m.json ]] || { rm -rf "$d"; return 1; }
		cp "$STAGE/store/manifests/$m.json" "$d/manifests/"
	done
	echo "$d"
}
data32=$(mkdata fp32 isnet-general-use realesrgan-x4plus realesrgan-x4fast)
data16=$(mkdata fp16 isnet-general-use-fp16 realesrgan-x4plus-fp16 realesrgan-x4fast-fp16 || true)
# The published ISNet computes in fp16 but for its Resize nodes; its fp32
# build (Float32Compute) is the fp32 reference of the issue's tolerances.
data32i=$(mkdata fp32i isnet-general-use-fp32 realesrgan-x4plus realesrgan-x4fast || true)
[[ -n $data32i ]] || note "fp32 ISNet: isnet-general-use-fp32 is not staged: cuda-fp32 is skipped"
[[ -n $data16 ]] || note "fp16: not every -fp16 model is staged: the fp16 configs are skipped"

# ---------------------------------------------------------------- servers
# http_get URL: the body on stdout, exit 1 on any failure (curl when the
# image has it, else python's urllib).
if command -v curl >/dev/null; then
	http_get() { curl -fsS --max-time 10 "$1" 2>/dev/null; }
else
	http_get() { "$py" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())' "$1" 2>/dev/null; }
fi
port=18480
server_pid=
start_server() { # start_server LABEL DATADIR PROVIDERS REMBG_MODEL EXTRA...
	local label=$1 dd=$2 prov=$3 rembg=$4
	shift 4
	port=$((port + 1))
	url=http://127.0.0.1:$port
	local log=$work/logs/server-$label.log
	echo "== server $label: -providers $prov $*"
	"$falocal" serve -data-dir "$dd" -cache-dir "$work/cache" -listen "127.0.0.1:$port" \
		-ort-library "$ortlib" -providers "$prov" -rembg-model "$rembg" -keep-alive -1 \
		-memory-budget 0 "$@" >"$log" 2>&1 &
	server_pid=$!
	echo "$server_pid" >>"$work/pids"
	local i
	for ((i = 0; i < 120; i++)); do
		http_get "$url/healthz" >"$work/logs/healthz-$label.json" && return 0
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.5
	done
	note "server $label did not come up: $(tail -5 "$log")"
	return 1
}
stop_server() {
	[[ -n $server_pid ]] || return 0
	kill "$server_pid" 2>/dev/null
	local i
	for ((i = 0; i < 40; i++)); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.25; done
	kill -9 "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	server_pid=
}

# on_card LABEL: fail loudly when a session of the server fell back to the
# CPU, or when its process holds no memory on the card.
on_card() {
	local label=$1
	local log=$work/logs/server-$label.log
	if grep -q 'execution provider not in this library.*provider=cuda' "$log"; then
		note "FAIL $label: the staged ONNX Runtime cannot load its CUDA provider: $(grep -o 'provider=cuda reason=.*' "$log" | head -1 | cut -c1-400)"
		return 1
	fi
	if grep -q 'falling back' "$log"; then
		note "FAIL $label: a session fell back to the CPU: $(grep 'falling back' "$log" | head -2)"
		return 1
	fi
	if command -v nvidia-smi >/dev/null; then
		local mem
		mem=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null |
			awk -F', *' -v p="$server_pid" '$1 == p {print $2}')
		nvidia-smi --query-compute-apps=pid,used_memory --format=csv >>"$work/logs/compute-apps-$label.txt" 2>&1
		if [[ -z $mem ]]; then
			# In a container nvidia-smi may list no processes (another pid
			# namespace): then the card's used memory must have grown.
			local apps used
			apps=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | grep -c .)
			used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
			if ((apps == 0)) && [[ -n $used && -n $gpu_used0 ]] && ((used - gpu_used0 > 300)); then
				note "$label: on the card ($((used - gpu_used0)) MiB more used than at the start; nvidia-smi lists no processes here)"
				return 0
			fi
			note "FAIL $label: the server (pid $server_pid) is not on the card (nvidia-smi: $apps compute apps, memory.used $used MiB, $gpu_used0 at the start)"
			return 1
		fi
		note "$label: on the card, ${mem} MiB"
	fi
	return 0
}

# fetch_outputs LABEL: the fixed correctness inputs through the server's
# sync route, outputs saved as PNG under outs/LABEL/.
fetch_outputs() {
	local label=$1
	timeout $(($(left) > 10 ? $(left) : 10)) "$py" - "$url" "$work/assets" "$work/outs/$label" "$size" "$crop" \
		>>"$work/logs/outputs-$label.txt" 2>&1 <<'PY'
import base64, io, json, os, sys, time, urllib.request
from PIL import Image
url, assets, dst, size, crop = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
os.makedirs(dst, exist_ok=True)
def datauri(im):
    b = io.BytesIO(); im.save(b, "PNG")
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()
def call(ep, body):
    req = urllib.request.Request(f"{url}/run/{ep}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t = time.time()
    r = json.load(urllib.request.urlopen(req, timeout=600))
    u = r["image"]["url"]
    if u.startswith("data:"):
        raw = base64.b64decode(u.split(",", 1)[1])
    else:
        raw = urllib.request.urlopen(u, timeout=60).read()
    return Image.open(io.BytesIO(raw)), time.time() - t
def center(im, n):
    w, h = im.size
    return im.crop(((w - n) // 2, (h - n) // 2, (w - n) // 2 + n, (h - n) // 2 + n))
jobs = [("rembg", "astronaut", "fal-ai/imageutils/rembg", lambda im: im, {}),
        ("rembg", "chelsea", "fal-ai/imageutils/rembg", lambda im: im, {}),
        ("x4fast", "coffee", "fal-ai/esrgan", lambda im: center(im, crop), {"model": "RealESRGAN_x4_v3", "scale": 4}),
        ("x4plus", "coffee", "fal-ai/esrgan", lambda im: center(im, crop), {"model": "RealESRGAN_x4plus", "scale": 4})]
only = os.environ.get("IMAGES_OUTPUTS", "")
for kind, name, ep, prep, extra in jobs:
    if only and kind not in only.split(","):
        continue
    src = f"{assets}/{name}-{size}.png" if os.path.exists(f"{assets}/{name}-{size}.png") else f"{assets}/{name}.png"
    im = prep(Image.open(src).convert("RGB"))
    try:
        out, took = call(ep, dict(image_url=datauri(im), **extra))
    except Exception as e:
        print(f"{kind} {name}: ERROR {e}"); continue
    out.save(f"{dst}/{kind}-{name}.png")
    print(f"{kind} {name}: {im.size} -> {out.size} {out.mode} in {took:.2f}s")
PY
	cat "$work/logs/outputs-$label.txt"
}

# bench LABEL ENDPOINT_NAME FALBENCH_ARGS...: one falbench run against the
# running server, cut at the time guard (SIGINT: falbench writes what it has).
bench() {
	local label=$1 what=$2
	shift 2
	if [[ " ${IMAGES_ENDPOINTS:-rembg x4plus x4fast} " != *" $what "* ]]; then
		return 0
	fi
	local t=$(($(left) - 5))
	if ((t < 15)); then
		note "skipped $label/$what: time guard"
		status=1
		return 1
	fi
	echo "== falbench $label/$what (limit ${t}s)"
	http_get "$url/metrics" >"$work/logs/metrics-$label-$what-0.txt"
	timeout -s INT -k 15 "$t" "$falbench" -url "$url" -label "$label" -assets "$work/assets" -images "$images" \
		-codec-runs 3 -samples=false -out "$work/fb/$label-$what" \
		-note "images.sh $label $what: $card" "$@" >"$work/logs/falbench-$label-$what.txt" 2>&1
	local rc=$?
	http_get "$url/metrics" >"$work/logs/metrics-$label-$what-1.txt"
	tail -3 "$work/logs/falbench-$label-$what.txt"
	((rc == 0)) || { note "falbench $label/$what: exit $rc"; status=1; }
}

requests=${IMAGES_REQUESTS:-24}
cpu_requests=${IMAGES_CPU_REQUESTS:-16}
conc=${IMAGES_CONC:-1,8}
configs=${IMAGES_CONFIGS:-cuda cpu peer cuda-fp32 cuda-fp16 cuda-b8 cuda-fp16-b8}
[[ -n ${IMAGES_CPU_ONLY:-} ]] && configs=${IMAGES_CONFIGS:-cpu}

run_config() {
	local label=$1 dd prov=$providers rembg=isnet-general-use suffix="" extra=(-batch-max 1 -workers 8)
	case $label in
	cpu) prov=cpu ;;
	esac
	case $label in
	*fp16*) dd=$data16 rembg=isnet-general-use-fp16 suffix=-fp16 ;;
	*fp32*) dd=$data32i rembg=isnet-general-use-fp32 ;;
	*) dd=$data32 ;;
	esac
	[[ -n $dd ]] || { note "skipped $label: models not staged"; return 0; }
	if [[ $prov != cpu && -n ${cuda_broken:-} ]]; then
		note "skipped $label: an earlier CUDA config was not on the card"
		return 0
	fi
	if [[ $prov != cpu && -n ${IMAGES_CUDA_OPTIONS:-} ]]; then
		extra+=(-cuda-options "$IMAGES_CUDA_OPTIONS")
	fi
	case $label in
	*-b8) extra=("${extra[@]:4}" -batch "isnet-general-use$suffix:8:5ms,realesrgan-x4plus$suffix:8:5ms,realesrgan-x4fast$suffix:8:5ms" -workers 8) ;;
	esac
	if (($(left) < 30)); then
		note "skipped $label: time guard"
		status=1
		return 0
	fi
	local t0=$SECONDS
	start_server "$label" "$dd" "$prov" "$rembg" "${extra[@]}" || { status=1; stop_server; return 0; }
	# Correctness inputs first (they also load the models).
	if [[ $label != *-b8 ]]; then
		fetch_outputs "$label"
	fi
	if [[ $prov != cpu ]] && ! on_card "$label"; then
		# Timing the CPU under a CUDA label would only cost device time,
		# and the next CUDA configs would fail the same way.
		status=1
		cuda_broken=1
		rm -rf "$work/outs/$label" # its outputs came from the CPU
		http_get "$url/metrics" >"$work/logs/metrics-$label.txt"
		stop_server
		note "$label: not timed (not on the card)"
		return 0
	fi
	if [[ $label == cpu ]]; then
		bench "$label" rembg -endpoints rembg -concurrency "$conc" -requests "$cpu_requests" -warmup 0
		bench "$label" x4fast -endpoints esrgan -esrgan-model RealESRGAN_x4_v3 -esrgan-crop "$crop" \
			-concurrency "$conc" -requests "$cpu_requests" -warmup 0
		bench "$label" x4plus -endpoints esrgan -esrgan-model RealESRGAN_x4plus -esrgan-crop "$crop" \
			-images "astronaut-$size.png" -concurrency "${IMAGES_CPU_X4PLUS_CONC:-1}" -requests 2 -warmup 0
	else
		bench "$label" rembg -endpoints rembg -concurrency "$conc" -requests "$requests" -warmup 2
		# cuda-fp32 differs from cuda only in its ISNet: the upscalers are timed once
		if [[ $label != cuda-fp32 ]]; then
			bench "$label" x4plus -endpoints esrgan -esrgan-model RealESRGAN_x4plus -esrgan-crop "$crop" \
				-concurrency "$conc" -requests "$requests" -warmup 2
			bench "$label" x4fast -endpoints esrgan -esrgan-model RealESRGAN_x4_v3 -esrgan-crop "$crop" \
				-concurrency "$conc" -requests "$requests" -warmup 2
		fi
		if [[ $prov != cpu ]] && command -v nvidia-smi >/dev/null; then
			nvidia-smi --query-compute-apps=pid,used_memory --format=csv >>"$work/logs/compute-apps-$label.txt" 2>&1
		fi
	fi
	http_get "$url/metrics" >"$work/logs/metrics-$label.txt"
	stop_server
	note "$label: $((SECONDS - t0)) s; models loaded: $(grep -o 'msg="model loaded" model=[^ ]*' "$work/logs/server-$label.log" | sed 's/.*model=//' | sort -u | tr '\n' ' ')"
}

# ---------------------------------------------------------------- 3. the peer
run_peer() {
	if [[ ${IMAGES_PEER:-1} != 1 ]]; then note "peer: skipped (IMAGES_PEER)"; return 0; fi
	if (($(left) < 40)); then note "peer: skipped (time guard)"; status=1; return 0; fi
	echo "== peer (onnx2torch)"
	if ! "$py" -c 'import onnx2torch' 2>/dev/null; then
		# A pure-python wheel imports from the zip itself when pip is missing.
		if "$py" -m pip install --no-index --no-deps --quiet --target "$work/py" "$STAGE"/wheels/*.whl 2>&1 | tail -2; then
			export PYTHONPATH=$work/py${PYTHONPATH:+:$PYTHONPATH}
		fi
		"$py" -c 'import onnx2torch' 2>/dev/null ||
			export PYTHONPATH=$(ls "$STAGE"/wheels/onnx2torch-*.whl | head -1)${PYTHONPATH:+:$PYTHONPATH}
	fi
	local m args=()
	for m in ${IMAGES_PEER_MODELS:-isnet-general-use realesrgan-x4plus realesrgan-x4fast}; do
		args+=(--model "$m=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"][0]["sha256"])' "$STAGE/store/manifests/$m.json")")
	done
	local t0=$SECONDS
	# shellcheck disable=SC2086
	timeout -s INT -k 10 $(($(left) - 5)) "$py" "$here/peer_images.py" --blobs "$STAGE/store/blobs" \
		--assets "$work/assets" --crop "$crop" --iters "${IMAGES_PEER_ITERS:-10}" \
		--batches "${IMAGES_PEER_BATCHES:-1,8}" --out "$work/peer.json" ${IMAGES_PEER_ARGS:-} "${args[@]}" 2>&1 |
		tee "$work/logs/peer.txt"
	[[ ${PIPESTATUS[0]} == 0 ]] || { note "peer: failed or cut short"; status=1; }
	note "peer: $((SECONDS - t0)) s"
}

for c in $configs; do
	if [[ $c == peer ]]; then run_peer; else run_config "$c"; fi
done

# ---------------------------------------------------------------- 2. correctness
echo "== correctness"
"$py" - "$work/outs" >"$work/correctness.json" 2>"$work/logs/correctness.err" <<'PY'
import json, os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
res = {}
if not os.path.isdir(f"{root}/cpu"):
    print(json.dumps({"error": "no cpu reference outputs"})); sys.exit(0)
for label in sorted(os.listdir(root)):
    if label == "cpu":
        continue
    for f in sorted(os.listdir(f"{root}/{label}")):
        ref = f"{root}/cpu/{f}"
        if not os.path.exists(ref):
            continue
        a = np.asarray(Image.open(f"{root}/{label}/{f}").convert("RGBA")).astype(np.float64)
        b = np.asarray(Image.open(ref).convert("RGBA")).astype(np.float64)
        r = {"shape": list(a.shape)}
        if a.shape != b.shape:
            r["error"] = f"shape {a.shape} vs cpu {b.shape}"
        elif f.startswith("rembg"):
            ma, mb = a[..., 3] >= 128, b[..., 3] >= 128
            union = (ma | mb).sum()
            r["iou"] = float((ma & mb).sum() / union) if union else 1.0
            r["alpha_mean_abs_diff"] = float(np.abs(a[..., 3] - b[..., 3]).mean() / 255)
            r["limit"] = 0.99 if "fp16" in label else 0.995
            r["ok"] = r["iou"] >= r["limit"]
        else:
            d = np.abs(a[..., :3] - b[..., :3])
            r["mean_abs_diff"] = float(d.mean() / 255)
            r["max_abs_diff"] = float(d.max() / 255)
            r["limit"] = 1 / 255 if "fp16" not in label else None
            r["ok"] = r["mean_abs_diff"] <= (r["limit"] if r["limit"] is not None else 4 / 255)
        res[f"{label}/{f[:-4]}"] = r
print(json.dumps(res, indent=1))
PY
cat "$work/correctness.json"
if grep -q '"ok": false' "$work/correctness.json"; then status=1; fi

# ---------------------------------------------------------------- 4. summary
echo "== summary"
"$py" - "$work" "$out" "$date" "$card" "$driver" "$memory" "$providers" "$(cat "$STAGE/bin/COMMIT" 2>/dev/null | head -1)" "$SECONDS" "$budget" <<'PY'
import glob, json, os, sys
work, out, date, card, driver, memory, providers, commit, took, budget = sys.argv[1:11]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
import re
def scrape(p):
    out = {}
    try:
        for l in open(p):
            m = re.match(r'falocal_model_run_seconds_(sum|count)\{model="([^"]*)",role="([^"]*)"\} (\S+)', l)
            if m:
                out.setdefault(m.group(2) + "/" + m.group(3), {})[m.group(1)] = float(m.group(4))
    except OSError:
        pass
    return out
def model_runs(p0, p1):
    """falocal_model_run_seconds between two /metrics snapshots: runs and time per model file."""
    a, b = scrape(p0), scrape(p1)
    out = {}
    for k, v in b.items():
        n = v.get("count", 0) - a.get(k, {}).get("count", 0)
        if n > 0:
            s = v.get("sum", 0) - a.get(k, {}).get("sum", 0)
            out[k] = {"count": int(n), "sum_s": s, "mean_ms": 1000 * s / n}
    return out
runs = {}
for p in sorted(glob.glob(f"{work}/fb/*/report.json")):
    name = os.path.basename(os.path.dirname(p))
    label, what = name.rsplit("-", 1)
    r = load(p)
    if not r:
        continue
    for s in r.get("servers", []):
        for e in s.get("endpoints", []):
            row = {"error": e.get("error"), "cold_ms": (e.get("cold") or {}).get("latency_ms"), "levels": {}}
            for lv in e.get("levels", []):
                row["levels"][lv["concurrency"]] = {
                    "requests": lv["requests"], "errors": lv["errors"], "rps": lv["throughput_rps"],
                    "latency_p50_ms": lv["latency"]["p50_ms"], "latency_mean_ms": lv["latency"]["mean_ms"],
                    "inference_mean_ms": lv["inference"]["mean_ms"], "overhead_mean_ms": lv["overhead"]["mean_ms"],
                    "overhead_p50_ms": lv["overhead"]["p50_ms"], "queue_wait_mean_ms": lv["queue_wait"]["mean_ms"]}
            mr = model_runs(f"{work}/logs/metrics-{label}-{what}-0.txt", f"{work}/logs/metrics-{label}-{what}-1.txt")
            if mr:
                row["model_runs"] = mr
                tot_s = sum(v["sum_s"] for v in mr.values())
                tot_n = sum(v["count"] for v in mr.values())
                row["model_run_mean_ms"] = 1000 * tot_s / tot_n if tot_n else None
            codec = e.get("codec") or []
            if codec:
                row["codec"] = codec
            runs.setdefault(label, {})[what] = row
peer = load(f"{work}/peer.json") or {}
corr = load(f"{work}/correctness.json") or {}
notes = open(f"{work}/notes.txt").read().splitlines() if os.path.exists(f"{work}/notes.txt") else []

def rps(label, what, c):
    try:
        return runs[label][what]["levels"][c]["rps"]
    except KeyError:
        return None
def top(label, what):
    lv = (runs.get(label, {}).get(what) or {}).get("levels") or {}
    return lv[max(lv)] if lv else None
goals = []
for what, pmodel in (("rembg", "isnet-general-use"), ("x4plus", "realesrgan-x4plus"), ("x4fast", "realesrgan-x4fast")):
    best = None
    for label in runs:
        if label == "cpu":
            continue
        v = rps(label, what, 8)
        if v and (best is None or v > best[1]):
            best = (label, v)
    if not best:
        continue
    cpu = top("cpu", what)
    g = {"endpoint": what, "best_config": best[0], "rps_c8": best[1]}
    if cpu:
        g["cpu_rps"] = cpu["rps"]
        g["vs_cpu"] = best[1] / cpu["rps"] if cpu["rps"] else None
        g["vs_cpu_goal"] = 20.0
    p = (peer.get("models", {}).get(pmodel) or {}).get("fp16", {})
    pb = max((v.get("images_per_s", 0) for v in p.get("batches", {}).values()), default=0)
    if pb:
        g["peer_fp16_best_ips"] = pb
        g["vs_peer"] = best[1] / pb
        g["vs_peer_goal"] = 1.0
    goals.append(g)
over = None
for label in ("cuda", "cuda-fp16"):
    row = runs.get(label, {}).get("rembg") or {}
    lv = row.get("levels", {}).get(1)
    if lv:
        over = {"config": label, "latency_mean_ms": lv["latency_mean_ms"], "inference_mean_ms": lv["inference_mean_ms"],
                "overhead_mean_ms": lv["overhead_mean_ms"],
                "overhead_share": lv["overhead_mean_ms"] / lv["latency_mean_ms"] if lv["latency_mean_ms"] else None,
                "goal": 0.05,
                "note": "inference = the server's metrics.inference_time (pipeline: decode, model, encode, store); "
                        "model = falocal_model_run_seconds' mean over the whole falbench run (batching off: one run a request)"}
        mm = row.get("model_run_mean_ms")
        if mm:
            over["model_run_mean_ms"] = mm
            over["latency_minus_model_ms"] = lv["latency_mean_ms"] - mm
            over["latency_minus_model_share_of_latency"] = (lv["latency_mean_ms"] - mm) / lv["latency_mean_ms"]
            over["latency_minus_model_share_of_model"] = (lv["latency_mean_ms"] - mm) / mm
        break
res = {"date": date, "card": card, "driver": driver, "memory": memory, "providers": providers, "commit": commit,
       "took_s": int(took), "budget_s": int(budget), "runs": runs, "correctness": corr, "peer": peer,
       "goals": goals, "overhead_c1_1024": over, "notes": notes}
json.dump(res, open(f"{out}/results.json", "w"), indent=1, default=str)

L = [f"# Image pipelines on the GPU, {date}", "",
     f"- card: {card}, driver {driver}, memory {memory}",
     f"- provider: ONNX Runtime {providers} (staged libonnxruntime.so.1.30.0), server commit {commit}",
     f"- peer: {peer.get('torch', '?')} onnx2torch {peer.get('onnx2torch', '?')}, fp16",
     f"- took {took} s of a {budget} s budget", ""]
L += ["| config | endpoint | C | req | err | images/s | p50 ms | inference ms | overhead ms | model run ms |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for label in runs:
    for what, row in runs[label].items():
        if row.get("error"):
            L.append(f"| {label} | {what} | - | - | - | error: {row['error'][:60]} | | | | |")
        for c, lv in sorted(row["levels"].items()):
            mm = row.get("model_run_mean_ms")
            L.append(f"| {label} | {what} | {c} | {lv['requests']} | {lv['errors']} | {lv['rps']:.2f} | {lv['latency_p50_ms']:.1f} | {lv['inference_mean_ms']:.1f} | {lv['overhead_mean_ms']:.1f} | {'' if mm is None else f'{mm:.1f}'} |")
if peer.get("models"):
    L += ["", "| peer (PyTorch) | dtype | batch | images/s | ms/batch (median) | check |", "|---|---|---:|---:|---:|---|"]
    for m, pm in peer["models"].items():
        for dt in ("fp16", "fp32"):
            bs = sorted((pm.get(dt) or {}).get("batches", {}).items(), key=lambda x: int(x[0]))
            for b, v in bs:
                L.append(f"| {m} | {dt} | {b} ({v.get('layout', '')}) | {v['images_per_s']:.2f} | {v['median_ms']:.1f} | {(pm.get(dt) or {}).get('check', '')} |")
            if not bs and pm.get(dt):
                L.append(f"| {m} | {dt} | - | - | - | {pm[dt].get('check', '')} {pm[dt].get('check_detail', '')} |")
if corr.get("error"):
    L += ["", f"correctness: {corr['error']}"]
elif corr:
    L += ["", "| correctness vs cpu | value | limit | ok |", "|---|---:|---:|---|"]
    for k, r in corr.items():
        if not isinstance(r, dict):
            continue
        v = r.get("iou", r.get("mean_abs_diff"))
        name = "IoU" if "iou" in r else "mean |Δ|"
        L.append(f"| {k} ({name}) | {v if v is None else round(v, 5)} | {r.get('limit') if r.get('limit') is None else round(r['limit'], 5)} | {r.get('ok', r.get('error'))} |")
if goals or over:
    L += ["", "| goal | value | target |", "|---|---:|---:|"]
    for g in goals:
        if g.get("vs_cpu") is not None:
            L.append(f"| {g['endpoint']}: {g['best_config']} C=8 vs cpu (top C) | {g['vs_cpu']:.1f}x | ≥ 20x |")
        if g.get("vs_peer") is not None:
            L.append(f"| {g['endpoint']}: {g['best_config']} C=8 vs PyTorch fp16 best batch | {g['vs_peer']:.2f}x | ≥ 1.0x |")
    if over:
        if over.get("model_run_mean_ms"):
            L.append(f"| rembg {over['config']} C=1 (latency − model run) / latency | {100 * over['latency_minus_model_share_of_latency']:.1f} % ({over['latency_minus_model_ms']:.1f} of {over['latency_mean_ms']:.1f} ms; model {over['model_run_mean_ms']:.1f} ms) | ≤ 5 % |")
        L.append(f"| rembg {over['config']} C=1 (latency − inference) / latency | {100 * (over['overhead_share'] or 0):.1f} % ({over['overhead_mean_ms']:.1f} of {over['latency_mean_ms']:.1f} ms) | (HTTP + queue only) |")
if notes:
    L += ["", "Notes:", ""] + [f"- {n}" for n in notes]
open(f"{out}/summary.md", "w").write("\n".join(L) + "\n")
PY
# Logs and falbench's reports in one archive (the device tool brings back
# at most 8 files).
tar -C "$work" -cJf "$out/logs.tar.xz" logs fb correctness.json $( [[ -f $work/peer.json ]] && echo peer.json ) notes.txt 2>/dev/null ||
	tar -C "$work" -cJf "$out/logs.tar.xz" logs fb
echo
cat "$out/summary.md"
exit $status
