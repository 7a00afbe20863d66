"""ONNX Runtime's Stable Diffusion optimizer run on a stock optimum export, as users run it.

    python -m onnxruntime.transformers.models.stable_diffusion.optimize_pipeline \
        -i <optimum export> -o <out> --float16 [--disable_... flags]

Two outputs from pipelines/diffusion/testdata/stock/sd15-optimum:

  sd15-ort-fp16      the default float16 optimization, which targets CUDA: GroupNorm,
                     SkipGroupNorm, NhwcConv, BiasSplitGelu, BiasAdd have no CPU kernels.
  sd15-ort-fp16-cpu  the same with the CUDA-only fusions disabled (--disable_group_norm
                     --disable_skip_group_norm --disable_nhwc_conv --disable_bias_splitgelu
                     --disable_bias_add, and --disable_packed_qkv --disable_packed_kv: the CPU
                     MultiHeadAttention kernel has no packed layouts): float16 weights, and the
                     contrib operators that ONNX Runtime's CPU provider implements (Attention,
                     MultiHeadAttention, SkipLayerNormalization, Gelu, QuickGelu).

Each output folder is complete (the optimizer copies the tokenizer, scheduler and configs byte
for byte; this is checked), so it imports as it is. The script prints the contrib operators of
every component and any change to the inputs and outputs besides float32 -> float16.

Environment: tools/diffusion-ref/requirements-ort-optimize.txt (onnxruntime 1.32.0's optimizer
fails on numpy 2.4: int() of a one-element array). Usage, from the repository root:

    python tools/diffusion-ref/ort_optimize.py [--src DIR] [--out DIR]
"""

import argparse
import collections
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

import onnx
import onnxruntime

MODULE = "onnxruntime.transformers.models.stable_diffusion.optimize_pipeline"
CUDA_ONLY = ["--disable_group_norm", "--disable_skip_group_norm", "--disable_nhwc_conv",
             "--disable_bias_splitgelu", "--disable_bias_add", "--disable_packed_qkv", "--disable_packed_kv"]
VARIANTS = {"sd15-ort-fp16": [], "sd15-ort-fp16-cpu": CUDA_ONLY}
COMPONENTS = ["text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"]


def io(model):
    def one(v):
        t = v.type.tensor_type
        return v.name, onnx.TensorProto.DataType.Name(t.elem_type), [d.dim_param or d.dim_value for d in t.shape.dim]
    return [one(v) for v in model.graph.input], [one(v) for v in model.graph.output]


def describe(src, out):
    for c in COMPONENTS:
        p = os.path.join(out, c, "model.onnx")
        if not os.path.exists(p):
            continue
        m = onnx.load(p)
        ops = collections.Counter(n.op_type for n in m.graph.node if n.domain == "com.microsoft")
        print(f"  {c}: contrib operators {dict(sorted(ops.items())) or 'none'}")
        before = io(onnx.load(os.path.join(src, c, "model.onnx"), load_external_data=False))
        after = io(m)
        for kind, b, a in zip(("inputs", "outputs"), before, after):
            if [(n, s) for n, _, s in b] != [(n, s) for n, _, s in a]:
                print(f"    {kind} changed: {b} -> {a}")
            types = sorted({t for _, t, _ in a})
            print(f"    {kind}: {[n for n, _, _ in a]} ({'/'.join(types)})")


def check_copies(src, out):
    """Everything but the ONNX files must be the source's bytes."""
    for dirpath, _, names in os.walk(src):
        for n in names:
            if n.endswith(".onnx") or n.endswith(".onnx_data"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, n), src)
            dst = os.path.join(out, rel)
            if not os.path.exists(dst):
                shutil.copy2(os.path.join(src, rel), dst)
            elif not filecmp.cmp(os.path.join(src, rel), dst, shallow=False):
                sys.exit(f"{rel} differs from the source")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    stock = os.path.relpath(os.path.join(here, "..", "..", "pipelines", "diffusion", "testdata", "stock"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=os.path.join(stock, "sd15-optimum"))
    ap.add_argument("--out", default=stock)
    args = ap.parse_args()
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}")
    for name, flags in VARIANTS.items():
        dst = os.path.join(args.out, name)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, name)
            cmd = [sys.executable, "-m", MODULE, "-i", args.src, "-o", out, "--float16", *flags]
            print("$", " ".join(["python"] + cmd[1:]))
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stdout[-4000:] + r.stderr[-4000:])
            check_copies(args.src, out)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(out, dst)
        print(f"{name}:")
        describe(args.src, dst)
        # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
        subprocess.check_call(["gzip", "-n", "-9", "-f"] + sorted(
            os.path.join(dst, c, "model.onnx") for c in os.listdir(dst) if os.path.exists(os.path.join(dst, c, "model.onnx"))))


if __name__ == "__main__":
    main()
