#!/usr/bin/env bash
# The GPU device check, run ON the device machine (it has no Go toolchain):
# unpacks the test binaries that bench/gpu/build.sh made here and carried in
# bench/gpu/bin, then
#   1. prints the card (nvidia-smi name, driver, memory),
#   2. runs kernels/cuda's correctness tests (device vs CPU reference),
#   3. runs engine/vram's pool tests (fake allocator and the real device)
#      and the server's GPU set-up (pool, budget, /metrics, trimming),
#   4. runs kernels/cuda's benchmarks and prints achieved GB/s against a
#      measured device-to-device copy as a short table,
# all within CHECK_SECONDS (default 450: under the 8 minutes a check may
# take, leaving room in a 10-minute call). Everything lands in $OUT (the
# device tool brings it back): summary.md (for bench/results/), gpu.csv,
# kernels.log, vram.log, bench.txt. Exit status: 0 when every step passed.
#
# Env: CHECK_SECONDS, CHECK_BENCH (benchmark regexp, default .),
# CHECK_BENCHTIME (default 1s), CHECK_COPY (regexp naming the copy
# benchmark, default DtoD|D2D|Copy).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
rm -f "$out"/{summary.md,gpu.csv,image.txt,symbols.txt,kernels.log,vram.log,server.log,bench.txt}
end=$((SECONDS + ${CHECK_SECONDS:-450}))
status=0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive=$here/bin/tests.tar.xz
if [[ ! -f $archive ]]; then
	echo "check.sh: $archive missing: run bench/gpu/build.sh here and carry bench/gpu/bin" >&2
	exit 2
fi
if command -v xz >/dev/null; then
	xz -dc "$archive" | tar -x -C "$work"
else
	python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$archive" | tar -x -C "$work"
fi || { echo "check.sh: cannot unpack $archive" >&2; exit 2; }

# step NAME LOG CMD...: run CMD with what is left of the time limit, its
# output to the terminal and to $out/LOG; the result goes in results[NAME].
declare -A results
step() {
	local name=$1 log=$2
	shift 2
	local left=$((end - SECONDS))
	if [[ ! -x $1 ]]; then
		results[$name]="not run: $(basename "$1") not in the archive"
		status=1
		return
	fi
	if ((left < 15)); then
		results[$name]="skipped (time limit)"
		status=1
		return
	fi
	echo "== $name (limit ${left}s)"
	timeout --kill-after=5 "$left" "$@" 2>&1 | tee "$out/$log"
	local rc=${PIPESTATUS[0]}
	local pass fail skip
	pass=$(grep -c -- '^--- PASS' "$out/$log")
	# Benchmarks print no PASS line: count their result lines.
	((pass += $(grep -c -- '^Benchmark.*ns/op' "$out/$log")))
	fail=$(grep -c -- '^--- FAIL' "$out/$log")
	skip=$(grep -c -- '^--- SKIP' "$out/$log")
	case $rc in
	0) results[$name]="ok ($pass passed, $skip skipped)" ;;
	124 | 137) results[$name]="TIMED OUT ($pass passed, $fail failed)"; status=1 ;;
	*) results[$name]="FAILED, exit $rc ($pass passed, $fail failed, $skip skipped)"; status=1 ;;
	esac
}

date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.csv"
IFS=, read -r card driver memory < <(nvidia-smi --query-gpu=name,driver_version,memory.total \
	--format=csv,noheader | head -1 | sed 's/, */,/g')

# What ONNX Runtime the image carries (for the CUDA provider bridge):
# informational, never fails the check.
{
	python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' 2>&1
	timeout 20 find /usr /opt -name 'libonnxruntime_providers_*.so' 2>/dev/null | head -5
	nvcc --version 2>&1 | tail -2
} | tee "$out/image.txt"

# Every driver entry point the binaries import must exist in this driver.
if [[ -f $here/bin/cuda-symbols.txt ]]; then
	if python3 - "$here/bin/cuda-symbols.txt" >"$out/symbols.txt" 2>&1 <<'PY'
import ctypes, sys
lib = ctypes.CDLL("libcuda.so.1")
names = [n.strip() for n in open(sys.argv[1]) if n.strip()]
missing = [n for n in names if not hasattr(lib, n)]
print(f"{len(names)} driver entry points imported, {len(missing)} missing: {missing}")
sys.exit(1 if missing else 0)
PY
	then results[symbols]="ok ($(cat "$out/symbols.txt"))"
	else results[symbols]="FAILED ($(cat "$out/symbols.txt"))"; status=1
	fi
fi

step kernels kernels.log "$work/cuda.test" -test.v -test.count=1 -test.timeout=240s
step vram vram.log "$work/vram.test" -test.v -test.count=1 -test.timeout=120s
step server server.log "$work/server.test" -test.v -test.count=1 -test.timeout=60s \
	-test.run='^(TestSetupGPU|TestDeviceBudget)'
step bench bench.txt "$work/cuda.test" -test.run='^$' -test.bench="${CHECK_BENCH:-.}" \
	-test.benchtime="${CHECK_BENCHTIME:-1s}" -test.count=1 -test.timeout=240s

# Benchmark lines: name, iterations, then value/unit pairs. A benchmark's
# GB/s is its own "GB/s" metric when it reports one, else Go's MB/s (from
# b.SetBytes) / 1000. Both should count bytes read plus bytes written, as
# the copy does, so the ratio is the fraction of achievable bandwidth.
table=$(awk -v copy="${CHECK_COPY:-DtoD|D2D|Copy}" '
/^Benchmark/ {
	gbs = ""; ns = ""
	for (i = 3; i < NF; i += 2) {
		if ($(i+1) == "GB/s") gbs = $i
		else if ($(i+1) == "MB/s" && gbs == "") gbs = $i / 1000
		else if ($(i+1) == "ns/op") ns = $i
	}
	name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
	n++; names[n] = name; rate[n] = gbs; nsop[n] = ns
	if (name ~ copy && gbs != "" && gbs > ref) ref = gbs
}
END {
	if (n == 0) { print "(no benchmarks ran)"; exit }
	printf "| benchmark | ns/op | GB/s | of copy |\n|---|---:|---:|---:|\n"
	for (i = 1; i <= n; i++) {
		# Host* benchmarks go host to host: set against the CPU, not the copy.
		if (names[i] ~ /^Host/) continue
		pct = (ref > 0 && rate[i] != "") ? sprintf("%.0f%%", 100 * rate[i] / ref) : "-"
		printf "| %s | %s | %s | %s |\n", names[i], nsop[i], (rate[i] == "" ? "-" : sprintf("%.1f", rate[i])), pct
	}
	if (ref == 0) print "\n(no device-to-device copy benchmark matched /" copy "/: no reference)"
	# HostXDevice against HostXCPU: one operation from host memory to host
	# memory, through the device (copies included) or on the CPU.
	host = 0
	for (i = 1; i <= n; i++) {
		if (names[i] !~ /^Host.*Device$/) continue
		op = names[i]; sub(/^Host/, "", op); sub(/Device$/, "", op)
		for (j = 1; j <= n; j++) {
			if (names[j] != "Host" op "CPU") continue
			if (!host++) printf "\n| host to host | device ns/op | CPU ns/op | device speed-up |\n|---|---:|---:|---:|\n"
			printf "| %s | %s | %s | %.2fx |\n", op, nsop[i], nsop[j], nsop[j] / nsop[i]
		}
	}
}' "$out/bench.txt" 2>/dev/null)

{
	echo "# GPU device check, $date"
	echo
	echo "- card: $card, driver $driver, memory $memory"
	echo "- driver entry points: ${results[symbols]:-not checked}"
	echo "- kernels/cuda tests: ${results[kernels]:-not run}"
	echo "- engine/vram tests: ${results[vram]:-not run}"
	echo "- server GPU set-up tests: ${results[server]:-not run}"
	echo "- benchmarks: ${results[bench]:-not run} (benchtime ${CHECK_BENCHTIME:-1s})"
	echo "- took ${SECONDS}s"
	echo
	echo "$table"
} >"$out/summary.md"
echo
cat "$out/summary.md"
exit $status
