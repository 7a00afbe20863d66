#!/usr/bin/env bash
# Check the CUDA C in kernels/*.cu against the Go CPU reference without a
# GPU: compile the kernels as host C++ (emu.cpp, with AddressSanitizer) and
# run tools/cuda/emucheck, which launches each kernel on random inputs and
# compares the outputs with kernels.CPU. Needs a C++17 compiler with
# _Float16 (GCC 12 or later on x86-64). It does not test the PTX or the
# driver; the GPU tests of kernels/cuda do that.
#
# Env: CXX (default g++), GO (default go).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"${CXX:-g++}" -std=c++17 -O1 -g -Wall -Wextra -Werror -ffp-contract=off \
	-fsanitize=address,undefined -fno-sanitize-recover=all \
	-o "$tmp/emu" "$here/emu.cpp"
cd "$root"
"${GO:-go}" run ./tools/cuda/emucheck -emu "$tmp/emu"
