"""Make testdata/models/sd15-tiny-fp16: sd15-tiny's UNet and VAE decoder
converted to float16 with float16 inputs and outputs, as GPU fp16 exports
come. The Go test overlays them on sd15-tiny and imports the result, which
puts Cast nodes at the graph edges (weights.Float32IO).

Run by hand after generate.py, in /root/.cache/falocal/venv-ref plus
onnxconverter-common==1.14.0:  python tools/diffusion-ref/fp16.py
"""
import os
import subprocess

import onnx
from onnxconverter_common import float16

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "../../pipelines/diffusion/testdata/models/sd15-tiny")
dst = os.path.join(here, "../../pipelines/diffusion/testdata/models/sd15-tiny-fp16")
for comp in ["unet", "vae_decoder"]:
    m = onnx.load(os.path.join(src, comp, "model.onnx"))
    os.makedirs(os.path.join(dst, comp), exist_ok=True)
    onnx.save(float16.convert_float_to_float16(m, keep_io_types=False), os.path.join(dst, comp, "model.onnx"))
    # stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
    subprocess.check_call(["gzip", "-n", "-9", "-f", os.path.join(dst, comp, "model.onnx")])
