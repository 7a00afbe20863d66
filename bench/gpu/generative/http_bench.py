#!/usr/bin/env python3
"""Requests through falocal's HTTP API (fal's queue protocol), standard library only.

    python3 http_bench.py --model sdxl|flux|whisper --base http://127.0.0.1:PORT --out FILE
        [--image 1024] [--steps 30] [--batches 1,4] [--audio FILE.wav] [--whisper-batch 16]

Each request is submitted to the queue (POST /fal-ai/<endpoint>), its status polled with ?logs=1 until it
completes, and its result fetched.  From the server's own request logs (each has a timestamp): the diffusion
pipelines log "step i/N" after every denoising step, so the per-step time is the median interval between
consecutive step lines; whisper logs "window i of n decoded: ..., T tokens at temperature x" per window.
The output's `timings` (text, denoise, vae, inference) give the model time; the whole-request overhead is the
wall time from submit to result minus `inference` (polling every 20 ms, so up to ~20 ms of it is ours).

A first request per model (2 steps / 30 s of audio) loads the model and is reported separately as warm-up.
"""
import argparse
import base64
import datetime
import json
import re
import statistics
import sys
import time
import urllib.request

POLL = 0.02


def call(method, url, body=None, timeout=3600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def ts(s):
    # RFC 3339 with up to nanoseconds
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", s)
    base = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def run(base, endpoint, body):
    t0 = time.time()
    sub = call("POST", f"{base}/{endpoint}", body)
    rid = sub["request_id"]
    while True:
        st = call("GET", f"{base}/{endpoint}/requests/{rid}/status?logs=1")
        if st["status"] == "COMPLETED":
            break
        time.sleep(POLL)
    res = call("GET", f"{base}/{endpoint}/requests/{rid}")
    wall = time.time() - t0
    return {"wall_s": wall, "logs": st.get("logs") or [], "result": res, "request_id": rid}


def model_runs(base):
    """falocal_model_run_seconds per (model, role): {key: [sum_s, count]}."""
    runs = {}
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except Exception:  # noqa: BLE001
        return runs
    for l in text.splitlines():
        m = re.match(r'falocal_model_run_seconds_(sum|count)\{model="([^"]*)",role="([^"]*)"\} (\S+)', l)
        if m:
            v = runs.setdefault(m.group(2) + "/" + m.group(3), [0.0, 0])
            v[0 if m.group(1) == "sum" else 1] = float(m.group(4))
    return runs


def runs_between(before, after):
    """What one request ran inside the models: per model file, runs and mean ms, and the total seconds."""
    out, total = {}, 0.0
    for k, (s1, n1) in after.items():
        s0, n0 = before.get(k, [0.0, 0])
        if n1 > n0:
            out[k] = {"runs": int(n1 - n0), "mean_ms": round(1e3 * (s1 - s0) / (n1 - n0), 3)}
            total += s1 - s0
    return out, total


def step_stats(logs):
    t = [ts(l["timestamp"]) for l in logs if re.match(r"step \d+/\d+", l["message"])]
    d = [b - a for a, b in zip(t, t[1:])]
    return {"steps_logged": len(t), "step_ms_median": round(1e3 * statistics.median(d), 3) if d else None,
            "step_ms_min": round(1e3 * min(d), 3) if d else None}


def diffusion(a, endpoint):
    out = {"endpoint": endpoint, "image": a.image, "steps": a.steps, "runs": []}
    size = {"width": a.image, "height": a.image}
    body = {"prompt": "a red cube on a table", "image_size": size, "num_inference_steps": 2, "seed": 1}
    if a.model == "sdxl":
        body["guidance_scale"] = 7.5
    w = run(a.base, endpoint, body)
    out["warmup"] = {"wall_s": round(w["wall_s"], 3), "timings": w["result"].get("timings")}
    for b in a.batches:
        body = dict(body, num_inference_steps=a.steps, num_images=b)
        before = model_runs(a.base)
        r = run(a.base, endpoint, body)
        ran, in_models = runs_between(before, model_runs(a.base))
        tm = r["result"].get("timings") or {}
        inf = tm.get("inference")
        rec = {"images": b, "wall_s": round(r["wall_s"], 3), "timings": tm, **step_stats(r["logs"])}
        # falocal_model_run_seconds: the time inside the model files per run (a denoising step is one run of
        # unet/transformer), and the server's own share of the wall time beside them
        rec["model_runs"] = ran
        if in_models > 0:
            rec["in_models_s"] = round(in_models, 3)
            rec["outside_models_pct"] = round(100 * (r["wall_s"] - in_models) / in_models, 2)
        if inf:
            rec["overhead_s"] = round(r["wall_s"] - inf, 3)
            rec["overhead_pct"] = round(100 * (r["wall_s"] - inf) / inf, 2)
        if tm.get("denoise"):
            rec["denoise_step_ms"] = round(1e3 * tm["denoise"] / a.steps, 3)
        rec["n_images_returned"] = len(r["result"].get("images", []))
        out["runs"].append(rec)
        print(f"  {endpoint} x{b}: {json.dumps(rec)}", flush=True)
    return out


def wav_seconds(path):
    import wave
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


def whisper(a):
    with open(a.audio, "rb") as f:
        uri = "data:audio/wav;base64," + base64.b64encode(f.read()).decode()
    dur = wav_seconds(a.audio)
    out = {"endpoint": "fal-ai/whisper", "audio_s": dur, "batch_size": a.whisper_batch}
    with open(a.warm_audio, "rb") as f:
        warm = "data:audio/wav;base64," + base64.b64encode(f.read()).decode()
    w = run(a.base, "fal-ai/whisper", {"audio_url": warm, "batch_size": a.whisper_batch, "language": "en"})
    out["warmup_wall_s"] = round(w["wall_s"], 3)
    before = model_runs(a.base)
    r = run(a.base, "fal-ai/whisper", {"audio_url": uri, "batch_size": a.whisper_batch, "language": "en",
                                        "chunk_level": "segment"})
    out["model_runs"], in_models = runs_between(before, model_runs(a.base))
    if in_models > 0:
        out["in_models_s"] = round(in_models, 3)
        out["outside_models_pct"] = round(100 * (r["wall_s"] - in_models) / in_models, 2)
    logs = r["logs"]
    wins = []
    prev = None
    start = None
    for l in logs:
        m = l["message"]
        if m.startswith("audio:"):
            start = ts(l["timestamp"])
        mm = re.match(r"window (\d+) of (\d+) decoded: .*?, (\d+) tokens at temperature ([\d.]+)", m)
        if mm:
            wins.append({"window": int(mm.group(1)), "tokens": int(mm.group(3)), "temperature": float(mm.group(4)),
                         "t": ts(l["timestamp"])})
    retries = [l["message"] for l in logs if "retried at temperature" in l["message"]]
    done = [l["message"] for l in logs if l["message"].startswith("done:")]
    out.update(wall_s=round(r["wall_s"], 3), rtf_wall=round(dur / r["wall_s"], 2), windows=len(wins),
               tokens_total=sum(x["tokens"] for x in wins), retries=retries, done=done,
               log_lines=[l["message"] for l in logs][:80])
    if wins and start:
        out["decode_span_s"] = round(wins[-1]["t"] - start, 3)
    out["window_tokens"] = [x["tokens"] for x in wins]
    print(f"  whisper: wall {out['wall_s']} s for {dur:.0f} s of audio, {out['windows']} windows, "
          f"{out['tokens_total']} tokens, retries {len(retries)}", flush=True)
    return out


def metrics(base):
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}
    keep = ("falocal_compute_seconds_sum", "falocal_compute_seconds_count", "falocal_queue_wait_seconds_sum",
            "falocal_model_run_seconds_sum", "falocal_model_run_seconds_count",
            "falocal_model_load_seconds_sum", "falocal_memory_in_use_bytes", "falocal_batch_size_sum")
    return [l for l in text.splitlines() if l.startswith(keep)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["sdxl", "flux", "whisper"])
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--audio")
    ap.add_argument("--warm-audio")
    ap.add_argument("--whisper-batch", type=int, default=16)
    a = ap.parse_args()
    a.batches = [int(x) for x in a.batches.split(",")]
    if a.model == "sdxl":
        a.steps = a.steps or 30
        r = diffusion(a, "fal-ai/fast-sdxl")
    elif a.model == "flux":
        a.steps = a.steps or 28
        r = diffusion(a, "fal-ai/flux/dev")
    else:
        r = whisper(a)
    r["metrics"] = metrics(a.base)
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
