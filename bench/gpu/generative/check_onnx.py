#!/usr/bin/env python3
"""Whisper export check: onnxruntime (CPU) on the exported graphs vs the torch modules (float32 reference on the
CPU), at shapes other than the export-time ones.  python3 check_onnx.py DIR --size tiny"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as M  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--size", default="tiny")
    a = ap.parse_args()
    import onnxruntime as ort
    hf = M.build_whisper(a.size, "cpu")
    c = hf.config
    L = c.decoder_layers
    so = ort.SessionOptions()
    enc_s = ort.InferenceSession(os.path.join(a.dir, "encoder_model.onnx"), so, providers=["CPUExecutionProvider"])
    dec_s = ort.InferenceSession(os.path.join(a.dir, "decoder_model.onnx"), so, providers=["CPUExecutionProvider"])
    decp_s = ort.InferenceSession(os.path.join(a.dir, "decoder_with_past_model.onnx"), so, providers=["CPUExecutionProvider"])
    hf32 = hf.float()
    torch.manual_seed(0)
    feats = torch.randn(3, c.num_mel_bins, 3000)
    with torch.no_grad():
        eh = M.WhisperEncoder(hf32)(feats)
    got = enc_s.run(None, {"input_features": feats.half().numpy()})[0].astype(np.float32)
    print("encoder max abs diff", float(np.abs(got - eh.numpy()).max()), "ref max", float(eh.abs().max()))
    ids = torch.tensor([[50258, 50259, 50360, 50365, 400, 20]] * 3)
    with torch.no_grad():
        ref = M.WhisperDecoderKV(hf32, False)(ids, eh)
    out = dec_s.run(None, {"input_ids": ids.numpy(), "encoder_hidden_states": eh.half().numpy()})
    print("decoder logits max abs diff", float(np.abs(out[0].astype(np.float32) - ref[0].numpy()).max()),
          "ref max", float(ref[0].abs().max()))
    one = torch.tensor([[33]] * 3)
    past = []
    for li in range(L):
        past += [ref[1 + 4 * li], ref[2 + 4 * li], ref[3 + 4 * li], ref[4 + 4 * li]]
    with torch.no_grad():
        refp = M.WhisperDecoderKV(hf32, True)(one, *past)
    names = [i.name for i in decp_s.get_inputs()]
    feeds = {"input_ids": one.numpy()}
    for n, t in zip(names[1:], past):
        feeds[n] = t.half().numpy()
    outp = decp_s.run(None, feeds)
    print("decoder_with_past logits max abs diff", float(np.abs(outp[0].astype(np.float32) - refp[0].numpy()).max()))
    # whole sequence at once == prefix + one step
    ids7 = torch.cat([ids, one], 1)
    with torch.no_grad():
        full = M.WhisperDecoderKV(hf32, False)(ids7, eh)
    print("kv-cache consistency (torch)", float((full[0][:, -1] - refp[0][:, -1]).abs().max()))


if __name__ == "__main__":
    main()
