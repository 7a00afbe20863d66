#!/usr/bin/env python3
"""The PyTorch peer of bench/gpu/images.sh: the same ONNX files our server
loads (ISNet isnet-general-use, Real-ESRGAN x4plus and x4fast), turned into
torch modules with onnx2torch, run in fp16 on the same card.

Per model:
  1. the ONNX graph made plain fp32 (ISNet's file keeps fp16 initialisers and
     Cast nodes: the casts go, the initialisers are widened, the side outputs
     are dropped), so that module.half() makes it fp16 end to end;
  2. onnx2torch.convert;
  3. a check against ONNX Runtime's CPU provider on the original file, on one
     real image (ISNet: mask IoU at 0.5 and max |Δ|; ESRGAN: mean |Δ| on a
     crop of --check-crop pixels), fp32 and fp16;
  4. timing at each --batches: warm-up, then --iters runs, each timed with
     CUDA events (wall clock on the CPU); the median; images/s. On CUDA, both
     memory layouts (NCHW and channels_last) are timed and the faster kept.

Usage (images.sh calls it so):
  peer_images.py --blobs STORE/blobs --assets DIR --model isnet-general-use=SHA \\
      --model realesrgan-x4plus=SHA --model realesrgan-x4fast=SHA --out peer.json
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def plain_fp32(model, keep_outputs):
    """Drop Cast nodes (rewire their consumers), widen fp16 initialisers and
    constants to fp32, keep only keep_outputs, drop dead nodes."""
    import onnx
    from onnx import TensorProto, numpy_helper

    g = model.graph
    rename = {}
    kept = []
    for n in g.node:
        if n.op_type == "Cast":
            to = next(a.i for a in n.attribute if a.name == "to")
            if to in (TensorProto.FLOAT, TensorProto.FLOAT16):
                rename[n.output[0]] = n.input[0]
                continue
        kept.append(n)

    def resolve(x):
        while x in rename:
            x = rename[x]
        return x

    for n in kept:
        for i, x in enumerate(n.input):
            n.input[i] = resolve(x)
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
    outs = [o for o in g.output if o.name in keep_outputs]
    for o in outs:
        src = resolve(o.name)
        if src != o.name:  # an output that was a Cast's: rename its producer's output
            for n in kept:
                for i, x in enumerate(n.output):
                    if x == src:
                        n.output[i] = o.name
                for i, x in enumerate(n.input):
                    if x == src:
                        n.input[i] = o.name
    # Dead-node elimination from the kept outputs.
    need = {o.name for o in outs}
    live = []
    for n in reversed(kept):
        if any(o in need for o in n.output):
            live.append(n)
            need.update(x for x in n.input if x)
    live.reverse()
    inits = []
    for t in g.initializer:
        if t.name not in need:
            continue
        if t.data_type == TensorProto.FLOAT16:
            t = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
        inits.append(t)
    del g.node[:]
    g.node.extend(live)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[:]
    g.output.extend(outs)
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    del g.value_info[:]
    return model


def load_rgb(path, size=None, crop=None):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    if crop:
        im = im.crop(((w - crop) // 2, (h - crop) // 2, (w - crop) // 2 + crop, (h - crop) // 2 + crop))
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", required=True)
    ap.add_argument("--assets", required=True)
    ap.add_argument("--model", action="append", default=[], help="name=sha256 of its ONNX blob")
    ap.add_argument("--size", type=int, default=1024, help="ISNet input side (the model's is fixed: 1024)")
    ap.add_argument("--crop", type=int, default=512, help="ESRGAN input side for timing")
    ap.add_argument("--check-crop", type=int, default=128, help="ESRGAN input side for the check against ORT")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if os.environ.get("PEER_DEVICE") != "cpu" else "cpu")
    ap.add_argument("--fp32-time", action="store_true", help="also time fp32 (always on CPU)")
    ap.add_argument("--layouts", default="", help="comma list of nchw,channels_last (default: both on CUDA, nchw on CPU)")
    ap.add_argument("--cpu-fp16", action="store_true", help="on the CPU, also run the fp16 check (slow)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import onnx
    import onnx2torch
    import onnxruntime as ort
    import torch

    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("peer: no CUDA device visible to torch: running on the CPU", file=sys.stderr)
        dev = "cpu"
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
    layouts = a.layouts.split(",") if a.layouts else (["nchw", "channels_last"] if dev == "cuda" else ["nchw"])
    try:
        from importlib.metadata import version

        o2t = version("onnx2torch")
    except Exception:  # noqa: BLE001
        o2t = getattr(onnx2torch, "__version__", "?")
    res = {"torch": torch.__version__, "onnx2torch": o2t,
           "onnxruntime": ort.__version__, "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "models": {}}
    batches = [int(b) for b in a.batches.split(",") if b]

    def dump():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    imgs = [os.path.join(a.assets, n) for n in ("astronaut.png", "coffee.png")]
    for spec in a.model:
        name, sha = spec.split("=", 1)
        path = os.path.join(a.blobs, "sha256-" + sha)
        isnet = name.startswith("isnet")
        r = res["models"].setdefault(name, {})
        t0 = time.time()
        m = onnx.load(path)
        outname = m.graph.output[0].name
        m = plain_fp32(m, {outname})
        net32 = onnx2torch.convert(m).eval()
        r["convert_s"] = round(time.time() - t0, 2)
        r["nodes"] = len(m.graph.node)
        print(f"{name}: converted in {r['convert_s']} s ({r['nodes']} nodes)", flush=True)

        # One real input for the check: ISNet normalises (x - 128) / 256 as
        # the manifest says; ESRGAN takes [0, 1].
        if isnet:
            x = (load_rgb(imgs[0], size=a.size) - 128.0) / 256.0
        else:
            x = load_rgb(imgs[1], crop=a.check_crop) / 255.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        so = ort.SessionOptions()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name
        itype = sess.get_inputs()[0].type
        ref = sess.run([outname], {iname: x.astype(np.float16 if "float16" in itype else np.float32)})[0].astype(np.float32)
        del sess

        def check(y, dt):
            y = y.astype(np.float32)
            if y.shape != ref.shape:
                return {"ok": False, "error": f"shape {y.shape} vs ORT {ref.shape}"}
            if isnet:
                ma, mb = y > 0.5, ref > 0.5
                u = (ma | mb).sum()
                iou = float((ma & mb).sum() / u) if u else 1.0
                lim = 0.995 if dt == "fp32" else 0.99
                return {"iou": iou, "max_abs_diff": float(np.abs(y - ref).max()), "limit": lim, "ok": iou >= lim}
            d = np.abs(np.clip(y, 0, 1) - np.clip(ref, 0, 1))
            lim = 1 / 255 if dt == "fp32" else 2 / 255
            return {"mean_abs_diff": float(d.mean()), "max_abs_diff": float(d.max()), "limit": lim,
                    "ok": float(d.mean()) <= lim}

        for dt in ("fp32", "fp16"):
            if dt == "fp16" and dev == "cpu" and not a.cpu_fp16:
                r[dt] = {"check": "skipped on the CPU (--cpu-fp16 to try)"}
                continue
            tdt = torch.float16 if dt == "fp16" else torch.float32
            net = net32.to(dev, tdt) if dt == "fp16" else net32.to(dev)
            entry = r.setdefault(dt, {})
            try:
                with torch.inference_mode():
                    y = net(torch.from_numpy(x).to(dev, tdt)).float().cpu().numpy()
                entry["check_detail"] = check(y, dt)
                entry["check"] = "ok" if entry["check_detail"]["ok"] else "MISMATCH"
            except Exception as e:  # noqa: BLE001 - the report says what failed
                entry["check"] = f"error: {type(e).__name__}: {e}"[:300]
            print(f"{name} {dt}: check vs ORT CPU: {entry['check']} {entry.get('check_detail', '')}", flush=True)
            dump()
            if dt == "fp32" and dev == "cuda" and not a.fp32_time:
                continue
            if dt == "fp16" and dev == "cpu":
                continue  # checked only: fp16 timing on the CPU says nothing
            # Timing.
            side = a.size if isnet else a.crop
            base = load_rgb(imgs[0], size=side) if isnet else load_rgb(imgs[1], crop=side)
            base = torch.from_numpy(np.ascontiguousarray((base / 255.0).transpose(2, 0, 1)[None]))
            entry["batches"] = {}
            for b in batches:
                best = None
                for lay in layouts:
                    cl = lay == "channels_last"
                    try:
                        mod = net.to(memory_format=torch.channels_last) if cl else net.to(memory_format=torch.contiguous_format)
                        inp = base.repeat(b, 1, 1, 1).to(dev, tdt)
                        if cl:
                            inp = inp.contiguous(memory_format=torch.channels_last)
                        times = []
                        with torch.inference_mode():
                            for i in range(a.warmup + a.iters):
                                if dev == "cuda":
                                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                                    s.record()
                                    mod(inp)
                                    e.record()
                                    e.synchronize()
                                    ms = s.elapsed_time(e)
                                else:
                                    t = time.perf_counter()
                                    mod(inp)
                                    ms = (time.perf_counter() - t) * 1000
                                if i >= a.warmup:
                                    times.append(ms)
                        med = statistics.median(times)
                        v = {"median_ms": med, "min_ms": min(times), "iters": len(times), "layout": lay,
                             "images_per_s": b * 1000.0 / med, "input": list(inp.shape)}
                        entry.setdefault("all", []).append(dict(v, batch=b))
                        if best is None or med < best["median_ms"]:
                            best = v
                        print(f"{name} {dt} batch {b} {lay}: {med:.2f} ms, {v['images_per_s']:.2f} images/s", flush=True)
                    except Exception as e:  # noqa: BLE001
                        print(f"{name} {dt} batch {b} {lay}: error {type(e).__name__}: {e}"[:300], flush=True)
                        entry.setdefault("errors", []).append(f"batch {b} {lay}: {type(e).__name__}: {e}"[:300])
                        if dev == "cuda":
                            torch.cuda.empty_cache()
                if best:
                    entry["batches"][str(b)] = best
                dump()
            if dev == "cuda":
                net32.to("cpu", torch.float32)
                torch.cuda.empty_cache()
        del net32
    dump()
    bad = [n for n, r in res["models"].items() for dt in ("fp32", "fp16")
           if str((r.get(dt) or {}).get("check", "ok")).startswith(("MISMATCH", "error"))]
    if bad:
        print(f"peer: check failed for {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
