#!/usr/bin/env python3
"""The PyTorch peer: the modules build.py exports (models.py, same seeds), float16, eager with SDPA, timed with
CUDA events (CPU: perf_counter) after warm-up; medians.  Peak device memory per measurement from
torch.cuda.max_memory_allocated (weights included).  Writes one JSON object.

    python3 bench/gpu/generative/peer.py --model sdxl|flux|whisper --size full|tiny --out FILE [--device cuda|cpu]
        [--image 1024] [--batches 1,4] [--flux-double N --flux-single M] [--whisper-batch 16] [--compile]

sdxl:    UNet step at batch B images = a UNet call on 2B rows (classifier-free guidance doubles the batch, as
         fast-sdxl runs it); VAE decode of one image.
flux:    transformer step at batch B images (FLUX dev has no CFG batch: guidance is embedded); 512 text tokens as
         flux/dev's T5 length; VAE decode of one image.  With fewer blocks than the real 19 + 38, the time of one
         double and one single block is measured with forward hooks and the full-depth step is extrapolated
         (reported as such).
whisper: encoder on one 30 s window (batch 1 and --whisper-batch), and 100 decoder steps with KV cache after a
         4-token prompt (batch 1 and --whisper-batch).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models as M  # noqa: E402


class Timer:
    def __init__(self, device):
        self.cuda = device == "cuda"

    def run(self, fn, warmup, iters):
        """Median milliseconds of fn() over iters calls after warmup calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        ts = []
        for _ in range(iters):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                ts.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
        return {"median_ms": round(statistics.median(ts), 3), "min_ms": round(min(ts), 3), "iters": iters}

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


class Record(dict):
    """The results so far, rewritten to the output file after every measurement (a run stopped by run.sh's
    time guard keeps what it measured)."""

    def __init__(self, path, **kw):
        super().__init__(**kw)
        self.path = path

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        with open(self.path, "w") as f:
            json.dump(self, f, indent=1)


def reset_peak(device):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak(device):
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def params_bytes(m):
    return sum(p.numel() * p.element_size() for p in m.parameters())


def maybe_compile(m, a):
    return torch.compile(m) if a.compile else m


def sdxl(a, T, r):
    dev, f16 = a.device, torch.float16
    parts = M.sdxl_parts(a.size, dev, parts=("unet", "vae"))
    unet, vae = parts.pop("unet"), parts.pop("vae")
    c = unet.config
    lat = a.image // 8
    r["unet_params"] = sum(p.numel() for p in unet.parameters())
    proj = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    fwd = maybe_compile(unet, a)
    for b in a.batches:
        rows = 2 * b
        x = torch.randn(rows, 4, lat, lat, device=dev, dtype=f16)
        t = torch.tensor(999.0, device=dev, dtype=f16)
        ehs = torch.randn(rows, 77, c.cross_attention_dim, device=dev, dtype=f16)
        te = torch.randn(rows, proj, device=dev, dtype=f16)
        ti = torch.tensor([[a.image, a.image, 0, 0, a.image, a.image]] * rows, device=dev, dtype=f16)
        reset_peak(dev)
        res = T.run(lambda: fwd(x, t, ehs, added_cond_kwargs={"text_embeds": te, "time_ids": ti}), a.warmup, a.iters)
        res.update(images=b, unet_rows=rows, peak_bytes=peak(dev))
        r[f"unet_step_b{b}"] = res
    del unet, fwd
    M_free(dev)
    z = torch.randn(1, 4, lat, lat, device=dev, dtype=f16)
    reset_peak(dev)
    res = T.run(lambda: vae.decode(z), 1, max(3, a.iters // 4))
    res.update(peak_bytes=peak(dev), image=a.image)
    r["vae_decode"] = res


def flux(a, T, r):
    dev, f16 = a.device, torch.float16
    parts = M.flux_parts(a.size, dev, a.flux_double, a.flux_single, parts=("transformer", "vae"))
    tr, vae = parts.pop("transformer"), parts.pop("vae")
    c = tr.config
    r["transformer_params"] = sum(p.numel() for p in tr.parameters())
    r["flux_double"], r["flux_single"] = c.num_layers, c.num_single_layers
    h = w = a.image // 16
    n_txt = 512
    fwd = maybe_compile(tr, a)
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    img_ids = ids.reshape(h * w, 3).to(dev, f16)
    txt_ids = torch.zeros(n_txt, 3, device=dev, dtype=f16)
    for b in a.batches:
        x = torch.randn(b, h * w, c.in_channels, device=dev, dtype=f16)
        ehs = torch.randn(b, n_txt, c.joint_attention_dim, device=dev, dtype=f16)
        pooled = torch.randn(b, c.pooled_projection_dim, device=dev, dtype=f16)
        ts = torch.full((b,), 0.75, device=dev, dtype=f16)
        g = torch.full((b,), 3.5, device=dev, dtype=f16)
        call = lambda: fwd(hidden_states=x, encoder_hidden_states=ehs, pooled_projections=pooled, timestep=ts,  # noqa: E731
                           img_ids=img_ids, txt_ids=txt_ids, guidance=g, return_dict=False)
        reset_peak(dev)
        res = T.run(call, a.warmup, a.iters)
        res.update(images=b, peak_bytes=peak(dev))
        # one double and one single block, timed inside a forward pass with hooks (same inputs)
        blocks = {"double": tr.transformer_blocks, "single": tr.single_transformer_blocks}
        times = {k: [] for k in blocks}
        hooks = []
        for k, bl in blocks.items():
            for mod in bl:
                def pre(_m, _a, _kw=None, k=k):
                    if T.cuda:
                        e = torch.cuda.Event(enable_timing=True)
                        e.record()
                        _m._bench_t0 = e
                    else:
                        _m._bench_t0 = time.perf_counter()

                def post(_m, _a, _o, k=k):
                    if T.cuda:
                        e = torch.cuda.Event(enable_timing=True)
                        e.record()
                        times[k].append((_m._bench_t0, e))
                    else:
                        times[k].append((time.perf_counter() - _m._bench_t0) * 1e3)
                hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        with torch.no_grad():
            for _ in range(2):
                tr(hidden_states=x, encoder_hidden_states=ehs, pooled_projections=pooled, timestep=ts, img_ids=img_ids,
                   txt_ids=txt_ids, guidance=g, return_dict=False)
        T.sync()
        for hk in hooks:
            hk.remove()
        per = {}
        for k, v in times.items():
            ms = [s.elapsed_time(e) for s, e in v] if T.cuda else v
            per[k] = round(statistics.median(ms), 3) if ms else None
        res["double_block_ms"], res["single_block_ms"] = per["double"], per["single"]
        if per["double"] is not None and per["single"] is not None:
            extra = (19 - c.num_layers) * per["double"] + (38 - c.num_single_layers) * per["single"]
            res["full_depth_step_ms_extrapolated"] = round(res["median_ms"] + extra, 3)
            res["full_depth_factor"] = round((res["median_ms"] + extra) / res["median_ms"], 4)
        r[f"transformer_step_b{b}"] = res
    del tr, fwd
    M_free(dev)
    z = torch.randn(1, 16, a.image // 8, a.image // 8, device=dev, dtype=f16)
    reset_peak(dev)
    res = T.run(lambda: vae.decode(z), 1, max(3, a.iters // 4))
    res.update(peak_bytes=peak(dev), image=a.image)
    r["vae_decode"] = res


def whisper(a, T, r):
    dev, f16 = a.device, torch.float16
    hf = M.build_whisper(a.size, dev)
    c = hf.config
    r["params"] = sum(p.numel() for p in hf.parameters())
    enc = maybe_compile(M.WhisperEncoder(hf), a)
    dec0 = M.WhisperDecoderKV(hf, False)
    decp = M.WhisperDecoderKV(hf, True)
    for b in sorted({1, a.whisper_batch}):
        feats = torch.randn(b, c.num_mel_bins, 3000, device=dev, dtype=f16)
        reset_peak(dev)
        res = T.run(lambda: enc(feats), a.warmup, max(3, a.iters // 2))
        res.update(windows=b, peak_bytes=peak(dev))
        r[f"encode_b{b}"] = res
        with torch.no_grad():
            eh = enc(feats)
        ids = torch.full((b, 4), 50258, dtype=torch.int64, device=dev)
        one = torch.full((b, 1), 50259, dtype=torch.int64, device=dev)

        L = c.decoder_layers

        def decode100():
            out = dec0(ids, eh)  # per layer: self key, self value, cross key, cross value
            selfkv = [t for li in range(L) for t in out[1 + 4 * li:3 + 4 * li]]
            cross = [t for li in range(L) for t in out[3 + 4 * li:5 + 4 * li]]
            for _ in range(100):
                past = []
                for li in range(L):
                    past += selfkv[2 * li:2 * li + 2] + cross[2 * li:2 * li + 2]
                o = decp(one, *past)
                selfkv = list(o[1:])
            return o[0]
        reset_peak(dev)
        res = T.run(decode100, 1, max(2, a.iters // 8))
        res.update(windows=b, steps=100, per_step_ms=round(res["median_ms"] / 100, 4), peak_bytes=peak(dev))
        r[f"decode100_b{b}"] = res


def M_free(dev):
    import gc
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["sdxl", "flux", "whisper"])
    ap.add_argument("--size", default="full", choices=["full", "tiny"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--image", type=int, default=1024)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--flux-double", type=int, default=None)
    ap.add_argument("--flux-single", type=int, default=None)
    ap.add_argument("--whisper-batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet / transformer / encoder")
    a = ap.parse_args()
    a.batches = [int(x) for x in a.batches.split(",")]
    torch.backends.cuda.matmul.allow_tf32 = True
    T = Timer(a.device)
    r = Record(a.out, model=a.model, size=a.size, device=a.device, torch=torch.__version__, dtype="float16",
               attention="sdpa", compiled=a.compile)
    if a.device == "cuda":
        r["gpu"] = torch.cuda.get_device_name()
    t0 = time.time()
    with torch.inference_mode():
        {"sdxl": sdxl, "flux": flux, "whisper": whisper}[a.model](a, T, r)
    r["total_s"] = round(time.time() - t0, 2)
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)
    print(json.dumps({"peer": r}), flush=True)


if __name__ == "__main__":
    main()
