#!/usr/bin/env python3
"""Converts a CTranslate2 Whisper model (model.bin + config.json) into an
openai-whisper checkpoint: {"dims": ModelDimensions as a dict,
"model_state_dict": float32 tensors}, which whisper.load_model(path) loads.

The mapping is the one of weights/whisperonnx (the Go converter whose ONNX
graphs falocal runs), onto openai-whisper's module names:

  encoder/conv{1,2}/{weight,bias}                 encoder.conv{1,2}.*
  encoder/position_encodings/encodings            encoder.positional_embedding
  encoder/layer_i/self_attention/layer_norm       encoder.blocks.i.attn_ln
  encoder/layer_i/self_attention/linear_0 (QKV)   encoder.blocks.i.attn.{query,key,value}
  encoder/layer_i/self_attention/linear_1         encoder.blocks.i.attn.out
  encoder/layer_i/ffn/layer_norm                  encoder.blocks.i.mlp_ln
  encoder/layer_i/ffn/linear_{0,1}                encoder.blocks.i.mlp.{0,2}
  encoder/layer_norm                              encoder.ln_post
  decoder/embeddings/weight                       decoder.token_embedding.weight
                                                  (decoder/projection/weight is its alias)
  decoder/position_encodings/encodings            decoder.positional_embedding
  decoder/layer_i/self_attention/...              decoder.blocks.i.attn(_ln) (fused QKV)
  decoder/layer_i/attention/layer_norm            decoder.blocks.i.cross_attn_ln
  decoder/layer_i/attention/linear_0              decoder.blocks.i.cross_attn.query
  decoder/layer_i/attention/linear_1 (K/V)        decoder.blocks.i.cross_attn.{key,value}
  decoder/layer_i/attention/linear_2              decoder.blocks.i.cross_attn.out
  decoder/layer_i/ffn/...                         decoder.blocks.i.mlp(_ln), mlp.{0,2}
  decoder/layer_norm                              decoder.ln

CTranslate2 keeps the 1/sqrt(head_dim) attention scale out of the weights
(as openai-whisper, which scales q and k by head_dim^-1/4 at run time) and
stores the key projection's bias, which Whisper lacks, as zeros (checked).
gamma/beta are LayerNorm weight/bias. The float16 values are widened to
float32 exactly. The position encodings are the stored ones (openai-whisper
would compute the encoder's sinusoids in float32; the stored ones are those
rounded to float16, as CTranslate2 and falocal use them).

openai-whisper does not load alignment heads from a checkpoint (the buffer
is not persistent; load_model sets them only for its own model names), so
the checkpoint also carries "alignment_heads" (config.json's [layer, head]
pairs) and "alignment_heads_dump" (the same in openai's base85/gzip form
for model.set_alignment_heads); generate.py sets them after load_model.

Usage: convert.py MODEL_DIR OUT.pt   (MODEL_DIR holds model.bin, config.json)
"""
import base64
import gzip
import json
import os
import struct
import sys

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path):
    """Parses CTranslate2's model.bin (layout: weights/ct2/ct2.go)."""
    with open(path, "rb") as f:
        buf = f.read()
    off = 0

    def u(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal off
        n = u("H")
        s = buf[off:off + n]
        off += n
        assert s.endswith(b"\0"), s
        return s[:-1].decode()

    version = u("I")
    assert 4 <= version <= 6, f"binary version {version} (this script reads 4 to 6)"
    spec, rev = string(), u("I")
    assert spec == "WhisperSpec", spec
    tensors = {}
    for _ in range(u("I")):
        name = string()
        rank = u("B")
        shape = [u("I") for _ in range(rank)]
        tid, nbytes = u("B"), u("I")
        dt = np.dtype(DTYPES[tid]).newbyteorder("<")
        a = np.frombuffer(buf, dtype=dt, count=nbytes // dt.itemsize, offset=off).reshape(shape)
        off += nbytes
        tensors[name] = a
    for _ in range(u("I")):
        alias, target = string(), string()
        tensors[alias] = tensors[target]
    assert off == len(buf), "trailing bytes"
    return tensors


def convert(model_dir):
    import torch

    t = read_ct2(os.path.join(model_dir, "model.bin"))
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    for k in t:
        assert not k.endswith("_scale"), f"{k}: quantised models are not converted"
    f32 = lambda name: torch.from_numpy(np.ascontiguousarray(t[name], dtype=np.float32))
    n_vocab, d = t["decoder/embeddings/weight"].shape
    count = lambda fmt: next(i for i in range(1000) if fmt % i + "/ffn/linear_0/weight" not in t)
    n_mels = t["encoder/conv1/weight"].shape[1]
    dims = dict(n_mels=int(n_mels), n_audio_ctx=int(t["encoder/position_encodings/encodings"].shape[0]),
                n_audio_state=int(d), n_audio_head=int(t["encoder/num_heads"]),
                n_audio_layer=count("encoder/layer_%d"), n_vocab=int(n_vocab),
                n_text_ctx=int(t["decoder/position_encodings/encodings"].shape[0]), n_text_state=int(d),
                n_text_head=int(t["decoder/num_heads"]), n_text_layer=count("decoder/layer_%d"))
    assert int(t["decoder/activation"]) == 3 and int(t["decoder/pre_norm"]) == 1, "not Whisper's GELU/pre-norm"
    for k in ("decoder/alibi", "decoder/scale_embeddings", "decoder/start_from_zero_embedding"):
        assert int(t.get(k, 0)) == 0, k
    assert (t["decoder/projection/weight"] is t["decoder/embeddings/weight"]), "output projection is not tied"
    sd = {}

    def ln(dst, src):
        sd[dst + ".weight"], sd[dst + ".bias"] = f32(src + "/gamma"), f32(src + "/beta")

    def lin(dst, src, bias=True):
        sd[dst + ".weight"] = f32(src + "/weight")
        if bias:
            sd[dst + ".bias"] = f32(src + "/bias")

    def fused(dsts, src):
        w, b = f32(src + "/weight"), f32(src + "/bias")
        for i, dst in enumerate(dsts):
            sd[dst + ".weight"] = w[i * d:(i + 1) * d].clone()
            if dst.endswith(".key"):
                assert not b[i * d:(i + 1) * d].any(), f"{src}: the key bias is not zero"
            else:
                sd[dst + ".bias"] = b[i * d:(i + 1) * d].clone()

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = f32("encoder/position_encodings/encodings")
    for i in range(dims["n_audio_layer"]):
        s, p = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        ln(p + ".attn_ln", s + "/self_attention/layer_norm")
        fused([p + ".attn.query", p + ".attn.key", p + ".attn.value"], s + "/self_attention/linear_0")
        lin(p + ".attn.out", s + "/self_attention/linear_1")
        ln(p + ".mlp_ln", s + "/ffn/layer_norm")
        lin(p + ".mlp.0", s + "/ffn/linear_0")
        lin(p + ".mlp.2", s + "/ffn/linear_1")
    ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = f32("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = f32("decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        s, p = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        ln(p + ".attn_ln", s + "/self_attention/layer_norm")
        fused([p + ".attn.query", p + ".attn.key", p + ".attn.value"], s + "/self_attention/linear_0")
        lin(p + ".attn.out", s + "/self_attention/linear_1")
        ln(p + ".cross_attn_ln", s + "/attention/layer_norm")
        lin(p + ".cross_attn.query", s + "/attention/linear_0")
        fused([p + ".cross_attn.key", p + ".cross_attn.value"], s + "/attention/linear_1")
        lin(p + ".cross_attn.out", s + "/attention/linear_2")
        ln(p + ".mlp_ln", s + "/ffn/layer_norm")
        lin(p + ".mlp.0", s + "/ffn/linear_0")
        lin(p + ".mlp.2", s + "/ffn/linear_1")
    ln("decoder.ln", "decoder/layer_norm")

    heads = [list(map(int, h)) for h in cfg.get("alignment_heads", [])]
    mask = np.zeros((dims["n_text_layer"], dims["n_text_head"]), dtype=bool)
    for l, h in heads:
        mask[l, h] = True
    dump = base64.b85encode(gzip.compress(mask.tobytes(), mtime=0)).decode()
    return {"dims": dims, "model_state_dict": sd, "alignment_heads": heads, "alignment_heads_dump": dump}


def load(path, device="cpu"):
    """whisper.load_model(path) plus the checkpoint's alignment heads."""
    import torch
    import whisper

    model = whisper.load_model(path, device=device)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("alignment_heads"):
        model.set_alignment_heads(ck["alignment_heads_dump"].encode())
    return model


def main():
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    src, out = sys.argv[1], sys.argv[2]
    ck = convert(src)
    # every parameter and persistent buffer of openai's module, no more, no fewer
    want = Whisper(ModelDimensions(**ck["dims"])).state_dict()
    assert set(want) == set(ck["model_state_dict"]), set(want) ^ set(ck["model_state_dict"])
    for k, v in want.items():
        assert v.shape == ck["model_state_dict"][k].shape, (k, v.shape, ck["model_state_dict"][k].shape)
    torch.save(ck, out)
    m = load(out)
    print(out, ck["dims"], "alignment heads", ck["alignment_heads"], file=sys.stderr)
    assert m.alignment_heads.to_dense().sum() == len(ck["alignment_heads"])


if __name__ == "__main__":
    main()
