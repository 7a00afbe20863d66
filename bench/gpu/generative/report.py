#!/usr/bin/env python3
"""Merges run.sh's outputs in OUT (build-*.json, http-*.json, peer-*.json, gpumem-*.csv, server-rss-*.txt,
steps.jsonl, env.txt) into OUT/results.json and OUT/summary.md, and prints the short table last.

    python3 report.py OUT
"""
import glob
import json
import os
import sys


def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def peak_mib(out, m):
    """Peak device memory the server used above the GPU's use before it started (nvidia-smi, MiB), or the
    server's peak RSS on a CPU-only run."""
    p = os.path.join(out, f"gpumem-{m}.csv")
    if os.path.exists(p):
        v = [int(x) for x in open(p).read().split() if x.strip().isdigit()]
        if v:
            return max(v) - v[0], "device (nvidia-smi, above idle)"
    p = os.path.join(out, f"server-rss-{m}.txt")
    if os.path.exists(p):
        for line in open(p):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024, "host RSS peak (CPU run)"
    return None, None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def main():
    out = sys.argv[1]
    env = open(os.path.join(out, "env.txt")).read() if os.path.exists(os.path.join(out, "env.txt")) else ""
    steps = [json.loads(l) for l in open(os.path.join(out, "steps.jsonl"))] if os.path.exists(os.path.join(out, "steps.jsonl")) else []
    res = {"env": env.strip().splitlines(), "steps": steps, "models": {}}
    rows = []  # (model, metric, ours, pytorch, ratio, goal)
    for m in ("sdxl", "flux", "whisper"):
        b = load(os.path.join(out, f"build-{m}.json"))
        h = load(os.path.join(out, f"http-{m}.json"))
        p = load(os.path.join(out, f"peer-{m}.json"))
        sk = load(os.path.join(out, f"skipped-{m}.json"))
        if not (b or h or p or sk):
            continue
        mem, memkind = peak_mib(out, m)
        res["models"][m] = {"build": b and b.get("build"), "http": h, "peer": p, "skipped": sk,
                            "server_peak_mib": mem, "server_peak_kind": memkind}
        if sk:
            rows.append((m, "skipped (time budget)", None, None, None, ""))
            continue
        if m in ("sdxl", "flux") and h:
            unit = "unet" if m == "sdxl" else "transformer"
            for run in h.get("runs", []):
                bsz = run["images"]
                pk = (p or {}).get(f"{unit}_step_b{bsz}", {})
                peer_ms = pk.get("median_ms")
                ours = run.get("step_ms_median")
                rows.append((m, f"step, {bsz} image(s){' (CFG: ×2 rows)' if m == 'sdxl' else ''}, ms", ours, peer_ms,
                             ratio(ours, peer_ms), "≤ 1.2"))
                if m == "flux" and pk.get("full_depth_factor") and pk["full_depth_factor"] != 1 and ours:
                    rows.append((m, f"step, {bsz} image(s), full depth EXTRAPOLATED, ms", round(ours * pk["full_depth_factor"], 1),
                                 pk.get("full_depth_step_ms_extrapolated"), ratio(ours * pk["full_depth_factor"],
                                                                                  pk.get("full_depth_step_ms_extrapolated")), "≤ 1.2"))
                mr = next((v for k, v in (run.get("model_runs") or {}).items() if k.endswith("/" + unit)), None)
                if mr:
                    # falocal_model_run_seconds: the session run alone, without the scheduler's step around it
                    rows.append((m, f"{unit} run (server metric), {bsz} image(s), ms", mr["mean_ms"], peer_ms,
                                 ratio(mr["mean_ms"], peer_ms), "≤ 1.2"))
                rows.append((m, f"request overhead, {bsz} image(s), % of model time", run.get("overhead_pct"), None, None, "≤ 5"))
                if run.get("outside_models_pct") is not None:
                    rows.append((m, f"wall time outside the model runs, {bsz} image(s), % of time in them",
                                 run["outside_models_pct"], None, None, "≤ 5"))
                tm = run.get("timings") or {}
                if bsz == 1 and tm.get("vae"):
                    rows.append((m, "VAE decode 1 image, ms (ours: timings.vae)", round(1e3 * tm["vae"], 1),
                                 (p or {}).get("vae_decode", {}).get("median_ms"), None, ""))
        if m == "whisper" and h:
            wb = h.get("batch_size")
            rows.append((m, f"{h.get('audio_s', 0) / 60:.1f} min audio, batch {wb}: real-time factor (wall)", h.get("rtf_wall"), None, None, "≥ PyTorch"))
            enc = (p or {}).get(f"encode_b{wb}", {}).get("median_ms")
            dec = (p or {}).get(f"decode100_b{wb}", {}).get("per_step_ms")
            if enc and dec and h.get("window_tokens"):
                # PyTorch at the same batch and the same decoded token counts: per group of wb windows one
                # encoder call and as many decoder steps as the longest window in the group
                # temperature fallbacks decode windows again: weight the decoder steps by the attempts
                toks = h["window_tokens"]
                retried = sum(int(r.split()[0]) for r in h.get("retries", []) if r.split()[0].isdigit())
                attempts = (len(toks) + retried) / len(toks)
                groups = [toks[i:i + wb] for i in range(0, len(toks), wb)]
                est = sum(enc + dec * max(g) * attempts for g in groups) / 1e3
                res["models"][m]["peer_estimate_attempts_per_window"] = round(attempts, 3)
                rows.append((m, f"PyTorch estimate, same windows and tokens: real-time factor", None,
                             round(h["audio_s"] / est, 2), None, "(estimate)"))
                res["models"][m]["peer_rtf_estimate"] = round(h["audio_s"] / est, 2)
            rows.append((m, f"windows / tokens decoded / fallback retries", f"{h.get('windows')} / {h.get('tokens_total')} / {len(h.get('retries', []))}", None, None, ""))
        if p and m == "whisper":
            rows.append((m, "encode one 30 s window, ms", None, p.get("encode_b1", {}).get("median_ms"), None, ""))
            rows.append((m, "decoder step (KV cache), batch 1, ms", None, p.get("decode100_b1", {}).get("per_step_ms"), None, ""))
        peer_peak = None
        if p:
            peaks = [v.get("peak_bytes") for v in p.values() if isinstance(v, dict) and v.get("peak_bytes")]
            peer_peak = max(peaks) // 2**20 if peaks else None
        rows.append((m, f"peak memory, MiB (ours: {memkind or '–'})", mem, peer_peak, ratio(mem, peer_peak), ""))
    res["table"] = [dict(zip(("model", "metric", "ours", "pytorch", "ours/pytorch", "goal"), r)) for r in rows]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["| model | metric | ours (falocal, ORT) | PyTorch fp16 eager | ours/PyTorch | goal |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(x) for x in r) + " |")
    md = ["# Generative models: falocal vs PyTorch", "", "```", env.strip(), "```", "",
          "Random weights, real configurations (text encoders: real widths, 2 layers; FLUX depth as built: see "
          "build JSON). float16. Per-step times through the server are the median interval between its "
          "`step i/N` request-log lines.", ""] + lines + ["", "Steps: " + ", ".join(
              f"{s['step']} {s['seconds']:.0f} s (rc {s['rc']})" for s in steps)]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
