#!/usr/bin/env bash
# Stages ONNX Runtime's GPU build (CUDA 13) for the device machine, small
# enough to travel with the working tree (64 MiB per call in all):
#
#   bench/gpu/stage/ort/libonnxruntime.so.1.30.0            the C API library
#   bench/gpu/stage/ort/libonnxruntime_providers_shared.so
#   bench/gpu/stage/ort/libonnxruntime_providers_cuda.so    sm_90 code only
#   bench/gpu/stage/ort/SHA256SUMS   of the three, as staged
#   bench/gpu/stage/ort/LINKS        the symlinks to make on the device
#   bench/gpu/stage/ort/NEEDED       what the CUDA provider loads
#
# From the pinned PyPI wheel onnxruntime-gpu 1.30.0 (cp312, manylinux_2_28
# x86_64), fetched once with pip into ~/.cache/falocal/wheels and checked
# against its SHA-256. The CUDA provider's fatbins keep only the code that
# runs on the archs in PROVIDER_KEEP (default sm_90: H100/H200; see
# tools/fatprune for the rule) and the payload of every other entry is
# zeroed by tools/fatprune, offsets and size unchanged; the files
# are staged uncompressed and the script prints what they cost xz -9e (what
# the device scripts carry with) and zstd -19 --long=27.
#
# Environment: PROVIDER_KEEP (fatprune -keep, default sm_90),
# PROVIDER_CACHE (default ~/.cache/falocal/wheels), PROVIDER_SIZES=0 to skip
# the (slow, single-threaded) compression measurements.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

version=1.30.0
wheel=onnxruntime_gpu-${version}-cp312-cp312-manylinux_2_28_x86_64.whl
sha256=6acc0f4b3d5ac5f2984432faa59dd8fcce6775f8b43a7140afa0f322c7a703b1
keep=${PROVIDER_KEEP:-sm_90}
cache=${PROVIDER_CACHE:-$HOME/.cache/falocal/wheels}
stage=bench/gpu/stage/ort

mkdir -p "$cache"
whl=$cache/$wheel
verify() { echo "$sha256  $1" | sha256sum -c --status; }
if [[ -f $whl ]] && ! verify "$whl"; then
	echo "provider.sh: cached $whl does not match its SHA-256; fetching it again" >&2
	rm -f "$whl"
fi
if [[ ! -f $whl ]]; then
	tmp=$(mktemp -d "$cache/.pip.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	python3 -m pip download "onnxruntime-gpu==$version" --no-deps --only-binary=:all: \
		--python-version 3.12 --platform manylinux_2_28_x86_64 --implementation cp \
		--no-cache-dir -d "$tmp" >&2
	[[ -f $tmp/$wheel ]] || { echo "provider.sh: pip fetched $(ls "$tmp"), not $wheel" >&2; exit 1; }
	verify "$tmp/$wheel" || { echo "provider.sh: $wheel does not match the pinned SHA-256 $sha256" >&2; exit 1; }
	mv "$tmp/$wheel" "$whl"
fi
echo "wheel $whl"
echo "sha256 $sha256 (verified)"

work=$(mktemp -d "${TMPDIR:-/tmp}/provider.XXXXXX")
trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT
core=libonnxruntime.so.$version
libs=("$core" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so)
python3 - "$whl" "$work" "${libs[@]}" <<'EOF'
import sys, zipfile, os
whl, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
z = zipfile.ZipFile(whl)
have = {os.path.basename(n): n for n in z.namelist() if n.startswith("onnxruntime/capi/")}
missing = [n for n in names if n not in have]
if missing:
    print("provider.sh: THE WHEEL LACKS", " ".join(missing), file=sys.stderr)
    print("  its onnxruntime/capi/ shared objects:", sorted(n for n in have if ".so" in n), file=sys.stderr)
    if names[0] in missing:
        print("  NO C API LIBRARY (libonnxruntime.so.*): the Go server cannot dlopen this build", file=sys.stderr)
    sys.exit(1)
for n in names:
    with z.open(have[n]) as src, open(os.path.join(out, n), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.chmod(os.path.join(out, n), 0o755)
EOF

echo
echo "== fatprune -keep $keep libonnxruntime_providers_cuda.so"
go run ./tools/fatprune -keep "$keep" -in "$work/libonnxruntime_providers_cuda.so" -out "$work/pruned.so"
for f in "${libs[@]}"; do
	readelf -SW "$work/$f" >/dev/null # still an ELF readelf understands
done
readelf -SW "$work/pruned.so" >/dev/null
readelf -d "$work/pruned.so" >/dev/null

rm -rf "$stage"
mkdir -p "$stage"
cp "$work/$core" "$work/libonnxruntime_providers_shared.so" "$stage/"
cp "$work/pruned.so" "$stage/libonnxruntime_providers_cuda.so"
chmod 0755 "$stage"/*.so*
(cd "$stage" && sha256sum "${libs[@]}" >SHA256SUMS)

# Links do not travel: the device script makes them.
soname=$(readelf -d "$stage/$core" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
cat >"$stage/LINKS" <<EOF
# Symlinks to make in this directory on the device (links do not travel):
#   while read -r link target; do ln -sf "\$target" "\$link"; done < <(grep -v '^#' LINKS)
# The Go server dlopens $core by path and ORT loads the providers from
# beside it; the soname link serves anything linked against it.
$soname $core
libonnxruntime.so $core
EOF

needed=$(readelf -d "$stage/libonnxruntime_providers_cuda.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
cuda=$(grep -E '^lib(cu|nv)' <<<"$needed" || true)
cat >"$stage/NEEDED" <<EOF
# readelf -d libonnxruntime_providers_cuda.so: NEEDED
$(sed 's/^/needed /' <<<"$needed")
# The CUDA libraries among them: put their directories on LD_LIBRARY_PATH
# (pip wheels: nvidia-cublas, nvidia-curand, nvidia-cuda-runtime; libcuda.so.1
# is the driver's).
$(sed 's/^/cuda /' <<<"$cuda")
# Loaded with dlopen at run time, not NEEDED (names from the library's
# strings): cuDNN 9 (libcudnn.so.9, nvidia-cudnn-cu13) and cuFFT (libcufft,
# nvidia-cufft); the cuDNN frontend may dlopen libnvrtc.so.13 for fused
# kernels.
dlopen libcudnn.so.9
dlopen libcufft
EOF

echo
echo "== staged in $stage"
cat "$stage/SHA256SUMS"
echo
echo "== NEEDED of libonnxruntime_providers_cuda.so"
echo "$needed"
echo "-- CUDA libraries: $(echo $cuda)"
echo "-- dlopened at run time: cuDNN 9 (libcudnn.so.9), cuFFT (libcufft)"

if [[ ${PROVIDER_SIZES:-1} != 0 ]]; then
	echo
	echo "== sizes (bytes): raw, xz -9e -T1$(command -v zstd >/dev/null && echo ', zstd -19 --long=27 -T1')"
	total_xz=0 total_zst=0
	for f in "${libs[@]}"; do
		raw=$(stat -c %s "$stage/$f")
		xzs=$(xz -9e -T1 -c "$stage/$f" | wc -c)
		total_xz=$((total_xz + xzs))
		line="$f raw $raw xz $xzs"
		if command -v zstd >/dev/null; then
			zs=$(zstd -q -19 --long=27 -T1 -c "$stage/$f" | wc -c)
			total_zst=$((total_zst + zs))
			line+=" zstd $zs"
		fi
		echo "$line"
	done
	echo "total xz $total_xz$( ((total_zst > 0)) && echo " zstd $total_zst")"
	echo "(unpruned provider: raw $(stat -c %s "$work/libonnxruntime_providers_cuda.so"))"
fi
