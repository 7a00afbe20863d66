"""Compile one CUDA C file to PTX with NVRTC (ctypes, no other packages).

Usage: nvrtc_ptx.py SRC.cu OUT.ptx [NVRTC options...]

Used by build-ptx.sh instead of nvcc, which PyPI does not ship (see
requirements.txt). Exits non-zero with NVRTC's log on any error or warning
so a warning cannot slip into the committed PTX unnoticed.
"""

import ctypes
import pathlib
import sys

import nvidia.cuda_nvrtc as pkg


def main() -> int:
    src_path, out_path, opts = sys.argv[1], sys.argv[2], sys.argv[3:]
    libdir = pathlib.Path(list(pkg.__path__)[0]) / "lib"
    # libnvrtc dlopens libnvrtc-builtins from the same directory.
    lib = ctypes.CDLL(str(libdir / "libnvrtc.so.12"))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise SystemExit(f"{src_path}: {what}: {lib.nvrtcGetErrorString(rc).decode()}")

    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    src = pathlib.Path(src_path).read_bytes()
    prog = ctypes.c_void_p()
    name = pathlib.Path(src_path).name.encode()
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src, name, 0, None, None), "nvrtcCreateProgram")
    try:
        copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), copts)
        size = ctypes.c_size_t()
        check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        text = log.value.decode(errors="replace").strip()
        if rc != 0 or text:
            sys.stderr.write(text + "\n")
            check(rc, "nvrtcCompileProgram")
            raise SystemExit(f"{src_path}: warnings are errors")
        check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    pathlib.Path(out_path).write_bytes(ptx.value)
    print(f"{out_path}: NVRTC {major.value}.{minor.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
