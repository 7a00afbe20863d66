#!/usr/bin/env python3
"""Build random-weight SDXL / FLUX.1-dev / Whisper large-v3 modules (models.py) and export them to ONNX float16
with external data, in the layout `falocal weights import -dir` takes.

    python3 bench/gpu/generative/build.py --model sdxl|flux|whisper --size full|tiny --out DIR [--device cuda|cpu]
                                           [--flux-double N --flux-single M]

sdxl:    optimum's diffusers layout: text_encoder/ (CLIP-L, 2 layers), text_encoder_2/ (OpenCLIP bigG with
         projection, 2 layers), unet/, vae_decoder/, tokenizer/, tokenizer_2/, scheduler/, model_index.json
         (tokenizers, scheduler and model_index from pipelines/diffusion/testdata/models/sdxl-tiny).
flux:    text_encoder/ (CLIP-L, 2 layers), text_encoder_2/ (T5-XXL widths, 2 layers), transformer/, vae_decoder/
         (+ tokenizers, scheduler from flux-dev-tiny).  Exported with tools/flux-export/export.py's onnx_export
         (its RoPE and rms_norm workarounds), TorchScript exporter, opset 17.
whisper: optimum's layout: encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx (each with its
         <name>.onnx_data), config.json, generation_config.json, preprocessor_config.json, vocab.json,
         added_tokens.json (Whisper's multilingual BPE from the test assets' multilingual.tiktoken).

Every graph is float16 (inputs and outputs included; `weights import` adds float32 casts at the edges of the
diffusion graphs), weights in external data.  Prints one JSON line `{"build": ...}` with the timings.
"""
import argparse
import base64
import gc
import importlib.util
import json
import os
import shutil
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
import models as M  # noqa: E402

TESTMODELS = os.path.join(ROOT, "pipelines", "diffusion", "testdata", "models")
# stage.sh copies what is used from TESTMODELS here: bench/gpu/ferry.sh sets pipelines/*/testdata aside for a
# device run to keep the tree small
CARRIED = os.path.join(HERE, "carry", "diffusers")


def test_model(name):
    for base in (CARRIED, TESTMODELS):
        if os.path.exists(os.path.join(base, name, "model_index.json")):
            return os.path.join(base, name)
    raise SystemExit(f"no {name} tokenizers/scheduler: run bench/gpu/generative/stage.sh (or restore {TESTMODELS})")


def flux_export_module():
    spec = importlib.util.spec_from_file_location("flux_export", os.path.join(ROOT, "tools", "flux-export", "export.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = flux_export_module()  # registers the aten::rms_norm symbolic; onnx_export, wrappers, _all_tensors


def export(module, args, out_dir, ins, outs, dyn):
    t0 = time.time()
    FX.onnx_export(module, args, out_dir, ins, outs, dyn, "always")
    return time.time() - t0


def copy_assets(src, out, names):
    for n in names:
        s = os.path.join(src, n)
        d = os.path.join(out, n)
        if os.path.isdir(s):
            shutil.copytree(s, d, symlinks=False, dirs_exist_ok=True)
        else:
            shutil.copyfile(s, d)


def save_config(obj_or_dict, path, extra=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    d = dict(obj_or_dict) if isinstance(obj_or_dict, dict) else obj_or_dict.to_dict()
    d.update(extra or {})
    with open(path, "w") as f:
        json.dump(d, f, indent=1, default=str)


class SDXLClip(torch.nn.Module):
    """optimum's CLIP outputs: last_hidden_state, pooler_output (or text_embeds), hidden_states.0..N."""

    def __init__(self, m, proj):
        super().__init__()
        self.m, self.proj = m, proj

    def forward(self, input_ids):
        o = self.m(input_ids.to(torch.int64), output_hidden_states=True)
        first = o.text_embeds if self.proj else o.pooler_output
        if self.proj:
            return (first, o.last_hidden_state, *o.hidden_states)
        return (o.last_hidden_state, first, *o.hidden_states)


class UNetWrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        return self.m(sample, timestep, encoder_hidden_states,
                      added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}, return_dict=False)[0]


def text_encoders(parts, out, device, clip2_proj, t):
    """CLIP-L (+ bigG with projection, or T5) exported; returns seconds."""
    dt = 0.0
    ids = torch.ones(1, 77, dtype=torch.int32, device=device)
    te = parts.pop("text_encoder")
    n = te.config.num_hidden_layers
    outs = ["last_hidden_state", "pooler_output"] + [f"hidden_states.{i}" for i in range(n + 1)]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"}}
    for o in outs:
        dyn[o] = {0: "batch_size"} if o == "pooler_output" else {0: "batch_size", 1: "sequence_length"}
    dt += export(SDXLClip(te, False), [ids], os.path.join(out, "text_encoder"), ["input_ids"], outs, dyn)
    save_config(te.config, os.path.join(out, "text_encoder", "config.json"))
    del te
    te2 = parts.pop("text_encoder_2")
    if clip2_proj:
        n = te2.config.num_hidden_layers
        outs = ["text_embeds", "last_hidden_state"] + [f"hidden_states.{i}" for i in range(n + 1)]
        dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"}}
        for o in outs:
            dyn[o] = {0: "batch_size"} if o == "text_embeds" else {0: "batch_size", 1: "sequence_length"}
        dt += export(SDXLClip(te2, True), [ids], os.path.join(out, "text_encoder_2"), ["input_ids"], outs, dyn)
    else:
        ids64 = torch.ones(1, 512, dtype=torch.int64, device=device)
        dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
               "last_hidden_state": {0: "batch_size", 1: "sequence_length"}}
        dt += export(FX.T5Wrap(te2), [ids64], os.path.join(out, "text_encoder_2"), ["input_ids"],
                     ["last_hidden_state"], dyn)
    save_config(te2.config, os.path.join(out, "text_encoder_2", "config.json"))
    del te2
    t["text_encoders_export_s"] = round(dt, 2)


def vae_decoder(vae, out, device, latent_ch, t):
    lat = torch.randn(1, latent_ch, 16, 16, device=device, dtype=torch.float16)
    dyn = {"latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
           "sample": {0: "batch_size", 2: "height", 3: "width"}}
    t["vae_decoder_export_s"] = round(export(FX.VaeDecWrap(vae), [lat], os.path.join(out, "vae_decoder"),
                                             ["latent_sample"], ["sample"], dyn), 2)
    save_config(dict(vae.config), os.path.join(out, "vae_decoder", "config.json"), {"_class_name": "AutoencoderKL"})


def build_sdxl(a, t):
    t0 = time.time()
    parts = M.sdxl_parts(a.size, a.device)
    sync(a.device)
    t["init_s"] = round(time.time() - t0, 2)
    copy_assets(test_model("sdxl-tiny"), a.out,
                ["model_index.json", "scheduler", "tokenizer", "tokenizer_2"])
    clip2 = parts["text_encoder_2"].config
    text_encoders(parts, a.out, a.device, True, t)
    unet = parts.pop("unet")
    c = unet.config
    cross = c.cross_attention_dim
    dev, f16 = a.device, torch.float16
    args = [torch.randn(2, 4, 16, 16, device=dev, dtype=f16), torch.tensor(999.0, device=dev, dtype=f16),
            torch.randn(2, 77, cross, device=dev, dtype=f16), torch.randn(2, clip2.projection_dim, device=dev, dtype=f16),
            torch.randn(2, 6, device=dev, dtype=f16)]
    dyn = {"sample": {0: "batch_size", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
           "text_embeds": {0: "batch_size"}, "time_ids": {0: "batch_size"}, "out_sample": {0: "batch_size", 2: "height", 3: "width"}}
    t["unet_export_s"] = round(export(UNetWrap(unet), args, os.path.join(a.out, "unet"),
                                      ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"],
                                      ["out_sample"], dyn), 2)
    save_config(dict(c), os.path.join(a.out, "unet", "config.json"), {"_class_name": "UNet2DConditionModel"})
    t["unet_params"] = sum(p.numel() for p in unet.parameters())
    del unet
    free()
    vae = parts.pop("vae")
    vae_decoder(vae, a.out, a.device, 4, t)


def build_flux(a, t):
    t0 = time.time()
    parts = M.flux_parts(a.size, a.device, a.flux_double, a.flux_single)
    sync(a.device)
    t["init_s"] = round(time.time() - t0, 2)
    copy_assets(test_model("flux-dev-tiny"), a.out,
                ["model_index.json", "scheduler", "tokenizer", "tokenizer_2"])
    text_encoders(parts, a.out, a.device, False, t)
    tr = parts.pop("transformer")
    c = tr.config
    dev, f16 = a.device, torch.float16
    h, w, n = 3, 2, 7
    args = [torch.randn(1, h * w, c.in_channels, device=dev, dtype=f16),
            torch.randn(1, n, c.joint_attention_dim, device=dev, dtype=f16),
            torch.randn(1, c.pooled_projection_dim, device=dev, dtype=f16), torch.full((1,), 0.75, device=dev, dtype=f16),
            FX.img_ids(h, w, f16).to(dev), torch.zeros(n, 3, device=dev, dtype=f16), torch.full((1,), 3.5, device=dev, dtype=f16)]
    names = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids", "guidance"]
    dyn = {"hidden_states": {0: "batch_size", 1: "image_sequence_length"},
           "encoder_hidden_states": {0: "batch_size", 1: "text_sequence_length"}, "pooled_projections": {0: "batch_size"},
           "timestep": {0: "batch_size"}, "img_ids": {0: "image_sequence_length"}, "txt_ids": {0: "text_sequence_length"},
           "guidance": {0: "batch_size"}, "out_hidden_states": {0: "batch_size", 1: "image_sequence_length"}}
    t["transformer_export_s"] = round(export(FX.FluxWrap(tr, True), args, os.path.join(a.out, "transformer"), names,
                                             ["out_hidden_states"], dyn), 2)
    save_config(dict(c), os.path.join(a.out, "transformer", "config.json"), {"_class_name": "FluxTransformer2DModel"})
    t["transformer_params"] = sum(p.numel() for p in tr.parameters())
    t["flux_double"], t["flux_single"] = c.num_layers, c.num_single_layers
    del tr
    free()
    vae_decoder(parts.pop("vae"), a.out, a.device, 16, t)


# ------------------------------------------------------------------------------------------------
# Whisper
# ------------------------------------------------------------------------------------------------
def relocate(tmp, out, name):
    """tmp/model.onnx + model.onnx_data -> out/<name> + <name>_data (external data locations rewritten)."""
    import onnx
    m = onnx.load(os.path.join(tmp, "model.onnx"), load_external_data=False)
    for t in FX._all_tensors(m.graph):
        for e in t.external_data:
            if e.key == "location":
                e.value = name + "_data"
    onnx.save_model(m, os.path.join(out, name))
    shutil.move(os.path.join(tmp, "model.onnx_data"), os.path.join(out, name + "_data"))
    shutil.rmtree(tmp)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


LANGS = ("en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi "
         "ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg "
         "sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue").split()


def whisper_tokenizer(out, vocab_size):
    """vocab.json (GPT-2 byte-level form of multilingual.tiktoken's ranks) + added_tokens.json (large-v3's
    special tokens: 100 languages, 51866 ids)."""
    assets = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
    src = os.environ.get("WHISPER_TIKTOKEN", os.path.join(assets, "whisper", "multilingual.tiktoken"))
    b2u = bytes_to_unicode()
    vocab = {}
    with open(src) as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                vocab["".join(b2u[b] for b in base64.b64decode(tok))] = int(rank)
    n = len(vocab)  # 50257 ranks 0..50256
    specials = ["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{l}|>" for l in LANGS] + \
               ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    specials += ["<|%.2f|>" % (i * 0.02) for i in range(1501)]
    added = {s: n - 1 + i if i == 0 else n + i - 1 for i, s in enumerate(specials)}
    # <|endoftext|> is rank 50256 in the BPE itself; the rest follow from 50257
    added = {"<|endoftext|>": 50257}
    for i, s in enumerate(specials[1:]):
        added[s] = 50258 + i
    assert max(added.values()) + 1 == vocab_size, (max(added.values()) + 1, vocab_size)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "added_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(added, f, ensure_ascii=False, indent=1)
    return added


def build_whisper(a, t):
    t0 = time.time()
    hf = M.build_whisper(a.size, a.device)
    sync(a.device)
    t["init_s"] = round(time.time() - t0, 2)
    c = hf.config
    os.makedirs(a.out, exist_ok=True)
    added = whisper_tokenizer(a.out, c.vocab_size)
    cfgd = c.to_dict()
    cfgd["architectures"] = ["WhisperForConditionalGeneration"]
    save_config(cfgd, os.path.join(a.out, "config.json"))
    langs = {f"<|{l}|>": added[f"<|{l}|>"] for l in LANGS}
    gen = {"alignment_heads": [[c.decoder_layers - 1, 0]], "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257,
           "decoder_start_token_id": 50258, "eos_token_id": 50257, "pad_token_id": 50257, "is_multilingual": True,
           "lang_to_id": langs, "max_initial_timestamp_index": 50, "max_length": 448, "no_timestamps_token_id": added["<|notimestamps|>"],
           "prev_sot_token_id": added["<|startofprev|>"], "task_to_id": {"transcribe": added["<|transcribe|>"],
                                                                         "translate": added["<|translate|>"]},
           "return_timestamps": False}
    save_config(gen, os.path.join(a.out, "generation_config.json"))
    save_config({"chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": c.num_mel_bins,
                 "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
                 "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000},
                os.path.join(a.out, "preprocessor_config.json"))
    dev, f16 = a.device, torch.float16
    L, H, D = c.decoder_layers, c.decoder_attention_heads, c.d_model
    feats = torch.randn(1, c.num_mel_bins, 3000, device=dev, dtype=f16)
    tmp = os.path.join(a.out, ".enc")
    t["encoder_export_s"] = round(export(M.WhisperEncoder(hf), [feats], tmp, ["input_features"], ["last_hidden_state"],
                                         {"input_features": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}}), 2)
    relocate(tmp, a.out, "encoder_model.onnx")
    enc = torch.randn(2, 1500, D, device=dev, dtype=f16)
    ids = torch.full((2, 4), 50258, dtype=torch.int64, device=dev)
    ins, outs = M.whisper_decoder_names(L, False)
    dyn = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
           "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
           "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for o in outs[1:]:
        dyn[o] = {0: "batch_size", 2: "past_decoder_sequence_length + 1" if ".decoder." in o else "encoder_sequence_length_out"}
    tmp = os.path.join(a.out, ".dec")
    t["decoder_export_s"] = round(export(M.WhisperDecoderKV(hf, False), [ids, enc], tmp, ins, outs, dyn), 2)
    relocate(tmp, a.out, "decoder_model.onnx")
    hd = D // H
    past = []
    for _ in range(L):
        past += [torch.randn(2, H, 5, hd, device=dev, dtype=f16), torch.randn(2, H, 5, hd, device=dev, dtype=f16),
                 torch.randn(2, H, 1500, hd, device=dev, dtype=f16), torch.randn(2, H, 1500, hd, device=dev, dtype=f16)]
    ids1 = torch.full((2, 1), 50258, dtype=torch.int64, device=dev)
    ins, outs = M.whisper_decoder_names(L, True)
    dyn = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"}, "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for n in ins[1:]:
        dyn[n] = {0: "batch_size", 2: "past_decoder_sequence_length" if ".decoder." in n else "encoder_sequence_length_out"}
    for o in outs[1:]:
        dyn[o] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
    tmp = os.path.join(a.out, ".decp")
    t["decoder_with_past_export_s"] = round(export(M.WhisperDecoderKV(hf, True), [ids1, *past], tmp, ins, outs, dyn), 2)
    relocate(tmp, a.out, "decoder_with_past_model.onnx")
    t["params"] = sum(p.numel() for p in hf.parameters())


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["sdxl", "flux", "whisper"])
    ap.add_argument("--size", default="full", choices=["full", "tiny"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--flux-double", type=int, default=None, help="FLUX double-stream blocks (real: 19)")
    ap.add_argument("--flux-single", type=int, default=None, help="FLUX single-stream blocks (real: 38)")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    t = {"model": a.model, "size": a.size, "device": a.device, "torch": torch.__version__}
    t0 = time.time()
    with torch.no_grad():
        {"sdxl": build_sdxl, "flux": build_flux, "whisper": build_whisper}[a.model](a, t)
    t["total_s"] = round(time.time() - t0, 2)
    t["bytes"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(a.out) for f in fs)
    if a.device == "cuda":
        t["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps({"build": t}), flush=True)


if __name__ == "__main__":
    main()
