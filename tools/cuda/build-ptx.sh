#!/usr/bin/env bash
# Regenerate kernels/ptx/<name>.ptx from every kernels/<name>.cu and record
# the sha256 of each source and output in kernels/ptx/SOURCES.sha256, which
# `go test ./kernels/` checks so that a .cu edit without a rebuild fails.
# The PTX is committed: Go builds never need this script or a CUDA toolkit.
#
# Compiler: NVRTC 12.0 from PyPI (requirements.txt, --require-hashes)
# driven by nvrtc_ptx.py; PyPI has no nvcc binary (see requirements.txt).
# ptxas from the nvcc wheel then assembles every module for sm_80 and sm_90.
# Target compute_80: PTX for sm_80 and newer, JIT-compiled by the driver.
# The arguments are what `nvcc -ptx -arch=compute_80 -fmad=false` would get.
#
# Env: CACHE_DIR (default ~/.cache/falocal; the venv is $CACHE_DIR/venv-cuda),
# PYTHON (default python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
req=$here/requirements.txt
venv=${CACHE_DIR:-$HOME/.cache/falocal}/venv-cuda
py=${PYTHON:-python3}

# Reinstall when the pins change (the stamp holds the requirements' hash).
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -f $venv/.installed || $(cat "$venv/.installed") != "$want" ]]; then
	rm -rf "$venv"
	"$py" -m venv "$venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$req"
	echo "$want" >"$venv/.installed"
fi

cd "$root/kernels"
shopt -s nullglob
srcs=(*.cu)
[[ ${#srcs[@]} -gt 0 ]] || { echo "build-ptx.sh: no kernels/*.cu" >&2; exit 1; }
mkdir -p ptx
rm -f ptx/*.ptx # a deleted .cu must not leave its PTX embedded
for s in "${srcs[@]}"; do
	"$venv/bin/python" "$here/nvrtc_ptx.py" "$s" "ptx/${s%.cu}.ptx" \
		--gpu-architecture=compute_80 --fmad=false --std=c++17
done
# Assemble each module as the driver's JIT would, so invalid PTX fails here
# rather than at load time on a GPU; -v gives register and spill counts,
# printed one line per entry and architecture.
ptxas=$(echo "$venv"/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas)
for p in ptx/*.ptx; do
	for sm in sm_80 sm_90; do
		if ! out=$("$ptxas" -arch=$sm -Werror -v -o /dev/null "$p" 2>&1); then
			echo "$out" >&2
			exit 1
		fi
		awk -v sm=$sm '
			/Compiling entry function/ { e = $(NF - 2); gsub(/\047/, "", e) }
			/spill stores/ { sp = $5 " B spill stores, " $9 " B spill loads" }
			/Used [0-9]+ registers/ { printf "ptxas %s %-20s %3d registers, %s\n", sm, e, $5, sp }
		' <<<"$out"
	done
done
# sha256sum format, so `cd kernels && sha256sum -c ptx/SOURCES.sha256`
# works too.
sha256sum "${srcs[@]}" ptx/*.ptx >ptx/SOURCES.sha256
