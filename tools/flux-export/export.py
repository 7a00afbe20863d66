#!/usr/bin/env python3
"""Export a FLUX.1 (dev or schnell) diffusers folder to the ONNX layout falocal serves, with dynamic sizes.

    python tools/flux-export/export.py SRC OUT [--fp16] [--device cpu|cuda] [--external-data auto|always|never]

SRC is a folder as `FluxPipeline.save_pretrained` writes it (model_index.json, scheduler/, text_encoder/,
text_encoder_2/, tokenizer/, tokenizer_2/, transformer/, vae/). OUT gets optimum's ONNX diffusers layout:

    model_index.json                 copied
    scheduler/ tokenizer/ tokenizer_2/   copied unchanged
    text_encoder/    CLIPTextModel   input_ids int32 [B,S] -> last_hidden_state [B,S,H], pooler_output [B,H]
    text_encoder_2/  T5EncoderModel  input_ids int64 [B,S] -> last_hidden_state [B,S,D]
    transformer/     FluxTransformer2DModel
                     hidden_states [B,N,64], encoder_hidden_states [B,T,D], pooled_projections [B,H],
                     timestep [B] (= sigma, t/1000), img_ids [N,3], txt_ids [T,3], guidance [B] (dev only)
                     -> out_hidden_states [B,N,64]
    vae_encoder/     AutoencoderKL encoder  sample [B,3,H,W] -> latent_sample [B,16,H/8,W/8] (the distribution's
                     mean), latent_parameters [B,32,H/8,W/8] (mean and logvar)
    vae_decoder/     AutoencoderKL decoder  latent_sample [B,16,h,w] -> sample [B,3,8h,8w]
    each component folder also gets its config.json

Every batch, sequence length, height and width is a dynamic axis. Two things stop a plain
torch.onnx.export of diffusers' FLUX from being dynamic, and both are handled here:

  * diffusers' apply_rotary_emb does `x.reshape(*x.shape[:-1], -1, 2)`; the tracer records the shape of
    the export-time sequence, so the graph only runs at the size it was exported at. During the export
    it is replaced by the same arithmetic written with strided slices and reshape_as (exact, see
    rope_dynamic below); diffusers itself is not changed.
  * torch.nn.RMSNorm (the q/k norms) traces to aten::rms_norm, which has no ONNX symbolic in torch's
    TorchScript exporter: a symbolic that decomposes it into ReduceMean/Add/Sqrt/Div/Mul is registered.

--fp16 loads the weights as float16 and exports float16 graphs (inputs and outputs included, as
optimum's --fp16 does; falocal converts float16 graph inputs and outputs to float32 when it imports a
model). A graph whose weights pass 2 GB is written as model.onnx + model.onnx_data (ONNX external
data, one file); --external-data always does so for every component.

The export is checked: every component runs in onnxruntime against the torch module, the transformer
at two sizes different from the export-time size (square and 2:1). The script prints the max abs
difference and exits non-zero if one exceeds the tolerance (--atol, plus --rtol times the largest
reference value).
"""
import argparse
import gc
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

OPSET = 17
TWO_GB = 2 * 1024**3


# --------------------------------------------------------------------------------------------
# the two export workarounds
# --------------------------------------------------------------------------------------------
def rope_dynamic(x, freqs_cis, use_real=True, use_real_unbind_dim=-1, sequence_dim=2):
    """diffusers.models.embeddings.apply_rotary_emb for FLUX (use_real=True, use_real_unbind_dim=-1), with the
    same arithmetic as the original:

        x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)   # pairs (x[2k], x[2k+1])
        x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
        out = (x.float() * cos + x_rotated.float() * sin).to(x.dtype)

    x[..., 0::2] / x[..., 1::2] select the same pairs, and reshape_as(x) takes its target shape from x at
    run time, so nothing in the graph depends on the export-time sequence length."""
    if not use_real or use_real_unbind_dim != -1:
        raise NotImplementedError("only the FLUX form of apply_rotary_emb is handled")
    cos, sin = freqs_cis
    if sequence_dim == 2:
        cos, sin = cos[None, None], sin[None, None]
    elif sequence_dim == 1:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        raise ValueError(f"sequence_dim {sequence_dim}")
    x_real, x_imag = x[..., 0::2], x[..., 1::2]
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).reshape_as(x)
    return (x.float() * cos + x_rotated.float() * sin).to(x.dtype)


def rms_norm_symbolic(g, x, normalized_shape, weight, eps):
    """ONNX for aten::rms_norm: x / sqrt(mean(x^2 over the normalized dims) + eps) * weight."""
    from torch.onnx import symbolic_helper as sh

    n = len(sh._get_const(normalized_shape, "is", "normalized_shape"))
    e = torch.finfo(torch.float32).eps if sh._is_none(eps) else sh._get_const(eps, "f", "eps")
    x_dtype = x.type().scalarType() if x.type() is not None else None
    if x_dtype == "Half":  # accumulate in float32 like torch does for half inputs
        xf = g.op("Cast", x, to_i=1)
    else:
        xf = x
    mean = g.op("ReduceMean", g.op("Mul", xf, xf), axes_i=list(range(-n, 0)), keepdims_i=1)
    y = g.op("Div", xf, g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(e, dtype=torch.float32)))))
    if x_dtype == "Half":
        y = g.op("Cast", y, to_i=10)
    if not sh._is_none(weight):
        y = g.op("Mul", y, weight)
    return y


torch.onnx.register_custom_op_symbolic("aten::rms_norm", rms_norm_symbolic, OPSET)


# --------------------------------------------------------------------------------------------
# wrappers: the ONNX input/output names
# --------------------------------------------------------------------------------------------
class CLIPWrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        o = self.m(input_ids.to(torch.int64))
        return o.last_hidden_state, o.pooler_output


class T5Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids).last_hidden_state


class FluxWrap(torch.nn.Module):
    def __init__(self, m, guidance):
        super().__init__()
        self.m, self.g = m, guidance

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
                guidance=None):
        return self.m(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                      pooled_projections=pooled_projections, timestep=timestep, img_ids=img_ids, txt_ids=txt_ids,
                      guidance=guidance if self.g else None, return_dict=False)[0]


class VaeEncWrap(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        h = self.vae.encoder(sample)
        if getattr(self.vae, "quant_conv", None) is not None:
            h = self.vae.quant_conv(h)
        mean, _ = torch.chunk(h, 2, dim=1)
        return mean, h


class VaeDecWrap(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


# --------------------------------------------------------------------------------------------
# export + check
# --------------------------------------------------------------------------------------------
def img_ids(h, w, dtype):
    """FluxPipeline._prepare_latent_image_ids: (0, row, col) for each 2x2 latent patch, [h*w, 3]."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(dtype)


def _all_tensors(graph):
    """Initializers and tensor attributes (Constant nodes: torch stores large ones externally too), recursively."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for at in node.attribute:
            if at.type == onnx.AttributeProto.TENSOR:
                yield at.t
            elif at.type == onnx.AttributeProto.TENSORS:
                yield from at.tensors
            elif at.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(at.g)
            elif at.type == onnx.AttributeProto.GRAPHS:
                for g in at.graphs:
                    yield from _all_tensors(g)


def _consolidate(m, src_dir, out_dir, inline_small):
    """Moves every external tensor (torch writes one file per tensor for graphs over 2 GB) and, when
    inline_small is False, every inline tensor over 1 KB into out_dir/model.onnx_data, one tensor at a
    time (the weights are never all in memory at once)."""
    import onnx

    data = os.path.join(out_dir, "model.onnx_data")
    off = 0
    with open(data, "wb") as f:
        for t in _all_tensors(m.graph):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                kv = {e.key: e.value for e in t.external_data}
                with open(os.path.join(src_dir, kv["location"]), "rb") as g:
                    g.seek(int(kv.get("offset", 0)))
                    raw = g.read(int(kv["length"])) if "length" in kv else g.read()
            elif not inline_small and t.HasField("raw_data") and len(t.raw_data) > 1024:
                raw = t.raw_data
            else:
                continue
            pad = (-off) % 4096  # page-aligned, as onnx does for memory-mapping
            f.write(b"\0" * pad)
            off += pad
            f.write(raw)
            del t.external_data[:]
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", "model.onnx_data"), ("offset", str(off)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            off += len(raw)
    os.chmod(data, 0o644)


def onnx_export(module, args, out_dir, in_names, out_names, dyn, external):
    """torch.onnx.export (TorchScript exporter) into out_dir/model.onnx; the weights go to model.onnx_data
    when they pass 2 GB (torch then writes one file per tensor; they are gathered into one) or when
    external == 'always'."""
    import onnx
    import diffusers.models.transformers.transformer_flux as tf

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    kw = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False  # the TorchScript exporter (the default until torch 2.9)
    orig_rope = tf.apply_rotary_emb
    tf.apply_rotary_emb = rope_dynamic
    tmp = tempfile.mkdtemp(dir=out_dir)
    try:
        with torch.no_grad():
            torch.onnx.export(module, tuple(args), os.path.join(tmp, "model.onnx"), input_names=in_names,
                              output_names=out_names, dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True,
                              **kw)
        m = onnx.load(os.path.join(tmp, "model.onnx"), load_external_data=False)
        # torch names some derived output dims after the op that made them: give every output dim that is
        # not declared dynamic its traced size, so each output's shape reads cleanly
        with torch.no_grad():
            traced = module(*args)
        traced = traced if isinstance(traced, tuple) else (traced,)
        for o, t in zip(m.graph.output, traced):
            declared = dyn.get(o.name, {})
            for k, d in enumerate(o.type.tensor_type.shape.dim):
                if k not in declared:
                    d.Clear()
                    d.dim_value = int(t.shape[k])
        torch_ext = any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(m.graph))
        use_ext = external == "always" or (external == "auto" and torch_ext)
        if external == "never" and torch_ext:
            raise SystemExit(f"{out_dir}: the weights pass 2 GB; they cannot be stored inside model.onnx")
        if use_ext:
            _consolidate(m, tmp, out_dir, inline_small=False)
        onnx.save_model(m, path)
        del m
        onnx.checker.check_model(path)
    finally:
        tf.apply_rotary_emb = orig_rope
        shutil.rmtree(tmp, ignore_errors=True)
    sz = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.startswith("model.onnx"))
    print(f"  wrote {path}{' + model.onnx_data' if use_ext else ''} ({sz / 1e6:.1f} MB)", flush=True)
    return path


def reference(module, feeds):
    """The torch module's outputs (float32 numpy) for feeds, computed before the export so that the torch
    weights can be freed before onnxruntime loads the graph."""
    with torch.no_grad():
        out = module(*feeds.values())
    out = out if isinstance(out, tuple) else (out,)
    return {"feeds": {k: v.cpu().numpy() for k, v in feeds.items()}, "want": [o.float().cpu().numpy() for o in out]}


def check(path, ref, label, atol, rtol, providers):
    """onnxruntime on the reference inputs vs the torch outputs; returns (max abs diff, passed)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=providers)
    names = [i.name for i in sess.get_inputs()]
    try:
        got = sess.run(None, {n: ref["feeds"][n] for n in names})
    except Exception as e:  # noqa: BLE001 (a graph frozen to its export-time shapes fails here)
        print(f"  check {label}: onnxruntime FAILED: {str(e).splitlines()[0][:400]}", flush=True)
        return float("inf"), False
    worst, ok = 0.0, True
    for g, w in zip(got, ref["want"]):
        g = g.astype(np.float32)
        d = float(np.abs(g - w).max()) if np.isfinite(g).all() else float("inf")
        worst = max(worst, d)
        ok = ok and d <= atol + rtol * float(np.abs(w).max())
    shapes = ", ".join(f"{n}{list(ref['feeds'][n].shape)}" for n in names)
    print(f"  check {label}: {shapes}: max abs diff {worst:.3e} {'ok' if ok else 'ABOVE TOLERANCE'}", flush=True)
    del sess
    return worst, ok


def export_transformer(src, out, dtype, device, external, atol, rtol, providers):
    from diffusers import FluxTransformer2DModel

    print("transformer", flush=True)
    tr = FluxTransformer2DModel.from_pretrained(src, subfolder="transformer", torch_dtype=dtype).to(device).eval()
    c = tr.config
    guidance = bool(c.guidance_embeds)
    wrap = FluxWrap(tr, guidance)
    cin, d_txt, d_pool = c.in_channels, c.joint_attention_dim, c.pooled_projection_dim
    names = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
    if guidance:
        names.append("guidance")

    def feeds(h, w, t, b=1):
        """Inputs as FluxPipeline makes them for an (8h*2)x(8w*2) px image, t text tokens, batch b."""
        f = {"hidden_states": torch.randn(b, h * w, cin), "encoder_hidden_states": torch.randn(b, t, d_txt),
             "pooled_projections": torch.randn(b, d_pool), "timestep": torch.full((b,), 0.75),
             "img_ids": img_ids(h, w, torch.float32), "txt_ids": torch.zeros(t, 3), "guidance": torch.full((b,), 3.5)}
        return {k: f[k].to(device=device, dtype=dtype) for k in names}

    dyn = {"hidden_states": {0: "batch_size", 1: "image_sequence_length"},
           "encoder_hidden_states": {0: "batch_size", 1: "text_sequence_length"},
           "pooled_projections": {0: "batch_size"}, "timestep": {0: "batch_size"},
           "img_ids": {0: "image_sequence_length"}, "txt_ids": {0: "text_sequence_length"},
           "guidance": {0: "batch_size"}, "out_hidden_states": {0: "batch_size", 1: "image_sequence_length"}}
    checks = []
    for k, (label, (h, w, t, b)) in enumerate((("64x64 px, 13 text tokens", (4, 4, 13, 1)),
                                               ("64x128 px (H x W), 24 text tokens, batch 2", (4, 8, 24, 2)))):
        torch.manual_seed(1 + k)
        checks.append((label, reference(wrap, feeds(h, w, t, b))))
    torch.manual_seed(0)
    ex = feeds(3, 2, 7)  # export-time size: a 3x2 patch grid and 7 text tokens, used by no check
    path = onnx_export(wrap, [ex[n] for n in names], os.path.join(out, "transformer"), names, ["out_hidden_states"],
                       {k: v for k, v in dyn.items() if k in names or k == "out_hidden_states"}, external)
    tr.save_config(os.path.join(out, "transformer"))
    del tr, wrap, ex
    gc.collect()
    return [check(path, ref, f"transformer {label}", atol, rtol, providers) for label, ref in checks]


def export_text_encoders(src, out, dtype, t5_dtype, device, external, atol, rtol, providers):
    from transformers import CLIPTextModel, T5EncoderModel

    results = []
    print("text_encoder", flush=True)
    te = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", torch_dtype=dtype).to(device).eval()
    v = te.config.vocab_size
    wrap = CLIPWrap(te)
    ids2 = torch.tensor([[v - 2, 9, 10, v - 1] + [v - 1] * 73, [v - 2, v - 1] + [v - 1] * 75], dtype=torch.int32,
                        device=device)
    ref = reference(wrap, {"input_ids": ids2})
    ids = torch.tensor([[v - 2, 5, 6, 7, v - 1] + [v - 1] * 72], dtype=torch.int32, device=device)
    path = onnx_export(wrap, [ids], os.path.join(out, "text_encoder"), ["input_ids"],
                       ["last_hidden_state", "pooler_output"],
                       {"input_ids": {0: "batch_size", 1: "sequence_length"},
                        "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}},
                       external)
    te.config.to_json_file(os.path.join(out, "text_encoder", "config.json"))
    del te, wrap
    gc.collect()
    results.append(check(path, ref, "text_encoder batch 2", atol, rtol, providers))

    print("text_encoder_2", flush=True)
    t5 = T5EncoderModel.from_pretrained(src, subfolder="text_encoder_2", torch_dtype=t5_dtype).to(device).eval()
    wrap = T5Wrap(t5)
    ref = reference(wrap, {"input_ids": torch.tensor([[8, 9, 10, 11, 12, 1] + [0] * 26, [13, 1] + [0] * 30],
                                                     device=device)})
    path = onnx_export(wrap, [torch.tensor([[5, 6, 7, 1, 0, 0, 0, 0]], device=device)],
                       os.path.join(out, "text_encoder_2"), ["input_ids"], ["last_hidden_state"],
                       {"input_ids": {0: "batch_size", 1: "sequence_length"},
                        "last_hidden_state": {0: "batch_size", 1: "sequence_length"}}, external)
    t5.config.to_json_file(os.path.join(out, "text_encoder_2", "config.json"))
    del t5, wrap
    gc.collect()
    results.append(check(path, ref, "text_encoder_2 batch 2, 32 tokens", atol, rtol, providers))
    return results


def export_vae(src, out, dtype, device, external, atol, rtol, providers):
    from diffusers import AutoencoderKL

    print("vae", flush=True)
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=dtype).to(device).eval()
    c = vae.config
    f = 2 ** (len(c.block_out_channels) - 1)
    enc, dec = VaeEncWrap(vae), VaeDecWrap(vae)
    torch.manual_seed(2)
    ref_enc = reference(enc, {"sample": (torch.rand(1, 3, 64, 128) * 2 - 1).to(device, dtype)})
    ref_dec = reference(dec, {"latent_sample": torch.randn(2, c.latent_channels, 64 // f, 64 // f).to(device, dtype)})
    p_enc = onnx_export(enc, [(torch.rand(1, 3, 48, 32) * 2 - 1).to(device, dtype)], os.path.join(out, "vae_encoder"),
                        ["sample"], ["latent_sample", "latent_parameters"],
                        {"sample": {0: "batch_size", 2: "height", 3: "width"},
                         "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
                         "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"}}, external)
    vae.save_config(os.path.join(out, "vae_encoder"))
    p_dec = onnx_export(dec, [torch.randn(1, c.latent_channels, 48 // f, 32 // f).to(device, dtype)],
                        os.path.join(out, "vae_decoder"), ["latent_sample"], ["sample"],
                        {"latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
                         "sample": {0: "batch_size", 2: "height", 3: "width"}}, external)
    vae.save_config(os.path.join(out, "vae_decoder"))
    del vae, enc, dec
    gc.collect()
    return [check(p_enc, ref_enc, "vae_encoder 64x128 px", atol, rtol, providers),
            check(p_dec, ref_dec, "vae_decoder batch 2, 64x64 px", atol, rtol, providers)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="diffusers FLUX.1 folder (FluxPipeline.save_pretrained layout)")
    ap.add_argument("out", help="output folder (ONNX layout)")
    ap.add_argument("--fp16", action="store_true", help="float16 weights, inputs and outputs")
    ap.add_argument("--t5-fp32", action="store_true",
                    help="with --fp16: keep text_encoder_2 (T5) in float32 (T5 v1.1 activations can exceed float16)")
    ap.add_argument("--device", default="cpu", help="torch device for tracing and the reference runs (cpu, cuda)")
    ap.add_argument("--external-data", choices=["auto", "always", "never"], default="auto",
                    help="model.onnx_data next to model.onnx: auto = when the weights pass 2 GB")
    ap.add_argument("--only", default="text_encoders,transformer,vae",
                    help="comma list of components to export (text_encoders, transformer, vae)")
    ap.add_argument("--atol", type=float, default=None, help="check tolerance (default 1e-3 fp32, 2e-2 fp16)")
    ap.add_argument("--rtol", type=float, default=None,
                    help="plus rtol x the largest |reference value| (default 1e-4 fp32, 1e-2 fp16)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    a = ap.parse_args()

    import diffusers
    import onnx
    import onnxruntime as ort
    import transformers

    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}", flush=True)
    if not os.path.exists(os.path.join(a.src, "model_index.json")):
        sys.exit(f"{a.src}: no model_index.json (expected a FluxPipeline.save_pretrained folder)")
    idx = json.load(open(os.path.join(a.src, "model_index.json")))
    if idx.get("_class_name") not in ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"):
        print(f"warning: model_index.json names {idx.get('_class_name')}, not FluxPipeline", flush=True)
    if os.path.exists(a.out):
        if not a.overwrite:
            sys.exit(f"{a.out} exists (use --overwrite)")
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    dtype = torch.float16 if a.fp16 else torch.float32
    atol = a.atol if a.atol is not None else (2e-2 if a.fp16 else 1e-3)
    rtol = a.rtol if a.rtol is not None else (1e-2 if a.fp16 else 1e-4)
    providers = ["CPUExecutionProvider"]
    if a.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    t0 = time.time()
    for sub in ("scheduler", "tokenizer", "tokenizer_2"):
        if os.path.isdir(os.path.join(a.src, sub)):
            shutil.copytree(os.path.join(a.src, sub), os.path.join(a.out, sub))
    shutil.copy(os.path.join(a.src, "model_index.json"), os.path.join(a.out, "model_index.json"))
    parts = a.only.split(",")
    results = []
    if "text_encoders" in parts:
        results += export_text_encoders(a.src, a.out, dtype, torch.float32 if a.t5_fp32 else dtype, a.device, a.external_data, atol, rtol, providers)
    if "transformer" in parts:
        results += export_transformer(a.src, a.out, dtype, a.device, a.external_data, atol, rtol, providers)
    if "vae" in parts:
        results += export_vae(a.src, a.out, dtype, a.device, a.external_data, atol, rtol, providers)
    worst = max((r[0] for r in results), default=0.0)
    bad = sum(1 for r in results if not r[1])
    print(f"done in {time.time() - t0:.0f} s: {len(results)} checks, max abs diff {worst:.3e}, "
          f"{bad} above tolerance (atol {atol:g}, rtol {rtol:g})", flush=True)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
