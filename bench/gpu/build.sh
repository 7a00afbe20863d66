#!/usr/bin/env bash
# Builds the device test binaries here (no GPU needed) for bench/gpu/check.sh
# to run on the device machine, which has no Go toolchain:
#   bench/gpu/bin/tests.tar.xz  holding  cuda.test (kernels/cuda) and
#                                        vram.test (engine/vram)
# Both are built with -tags cuda against the pinned CUDA 12.x headers and a
# libcuda link stub from tools/cuda-headers/check.sh --env; at run time they
# load the real libcuda.so.1.
#
# Why one stripped, xz-compressed archive: the GPU machine receives the whole
# working tree and refuses one over 64 MiB, and the tracked tree alone is
# over 62 MiB (ONNX test models). The script prints what would travel.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=bench/gpu/bin
rm -rf "$bin"
mkdir -p "$bin/stage"

eval "$(bash tools/cuda-headers/check.sh --env)"
flags=(-c -tags cuda -trimpath -ldflags=-s\ -w)
go test "${flags[@]}" -o "$bin/stage/cuda.test" ./kernels/cuda/
go test "${flags[@]}" -o "$bin/stage/vram.test" ./engine/vram/
go test "${flags[@]}" -o "$bin/stage/server.test" ./cmd/falocal/
# The driver entry points the binaries import: they bind lazily, so one the
# installed driver lacks would fail only when called. check.sh looks each
# up in the device's real libcuda.so.1.
for t in "$bin"/stage/*.test; do
	nm -D --undefined-only "$t" | awk '$2 ~ /^cu[A-Z]/ {sub(/@.*/, "", $2); print $2}'
done | sort -u >"$bin/cuda-symbols.txt"
# Solid compression: the two binaries share Go's runtime and testing code.
tar -C "$bin/stage" -cf - cuda.test vram.test server.test | xz -9e -T0 >"$bin/tests.tar.xz"
rm -rf "$bin/stage"

size=$(stat -c %s "$bin/tests.tar.xz")
tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } |
	xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
total=$((size + tree))
awk -v a="$size" -v t="$tree" -v f="$bin/tests.tar.xz" 'BEGIN {
	m = 1048576
	printf "built %s: %.2f MiB\nworking tree %.2f MiB + carried %.2f MiB = %.2f MiB (limit 64 MiB)\n", f, a/m, t/m, a/m, (a+t)/m
}'
if ((total > 64 << 20)); then
	echo "build.sh: over the 64 MiB a GPU machine accepts: the run would be refused" >&2
	exit 1
fi
