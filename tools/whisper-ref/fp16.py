"""Make testdata/tiny-multi-fp16: tiny-multi's encoder and unmerged decoders
converted to float16 (inputs and outputs too), so the Go tests cover fp16
exports and the decoder_model + decoder_with_past_model layout.

Run by hand after generate.py, in the same venv plus onnxconverter-common==1.14.0:
    python tools/whisper-ref/fp16.py
(onnxconverter-common breaks optimum's merged decoder: its If subgraphs end up
with duplicate node names, so only the unmerged pair is converted.)
"""
import os
import shutil
import subprocess

import onnx
from onnxconverter_common import float16

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "../../pipelines/whisper/testdata/tiny-multi")
dst = os.path.join(here, "../../pipelines/whisper/testdata/tiny-multi-fp16")
shutil.rmtree(dst, ignore_errors=True)
os.makedirs(dst)
for name in ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"]:
    m = onnx.load(os.path.join(src, name))
    onnx.save(float16.convert_float_to_float16(m, keep_io_types=False), os.path.join(dst, name))
for name in ["config.json", "generation_config.json", "preprocessor_config.json", "vocab.json", "added_tokens.json"]:
    shutil.copy(os.path.join(src, name), dst)
# stored gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name
subprocess.check_call(["gzip", "-n", "-9", "-f"] + [os.path.join(dst, n) for n in
                      ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "added_tokens.json"]])
