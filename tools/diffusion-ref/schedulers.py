#!/usr/bin/env python3
"""Reference vectors for pipelines/diffusion/scheduler (Go) from diffusers.

Run by hand, not in CI:

    python3 -m venv /root/.cache/falocal/venv-diffusers
    /root/.cache/falocal/venv-diffusers/bin/pip install -r tools/diffusion-ref/requirements.txt
    /root/.cache/falocal/venv-diffusers/bin/python tools/diffusion-ref/schedulers.py

Writes pipelines/diffusion/scheduler/testdata/*.json. Every case runs a whole
denoising loop on a small latent with fixed "model outputs" and noises (the
model is replaced by a fixed tensor per step) and records the scaled model
input and prev_sample at a few step indices, plus timesteps, sigmas,
init_noise_sigma, img2img timestep selection and add_noise / scale_noise.
"""

import json
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete as ea_mod
from diffusers.schedulers import scheduling_lcm as lcm_mod

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "pipelines", "diffusion", "scheduler", "testdata")
N = 1 * 4 * 4 * 4  # latent of shape (1, 4, 4, 4): small keeps testdata small
SHAPE = (1, 4, 4, 4)
NBUF = 3  # model outputs / noises cycle through this many fixed tensors

CLASSES = {
    c.__name__: c
    for c in [
        EulerDiscreteScheduler,
        EulerAncestralDiscreteScheduler,
        DPMSolverMultistepScheduler,
        DDIMScheduler,
        LCMScheduler,
        FlowMatchEulerDiscreteScheduler,
    ]
}

rng = np.random.default_rng(20261126)
SAMPLE = rng.standard_normal(N).astype(np.float32)
ORIGINAL = (rng.standard_normal(N) * 0.8).astype(np.float32)  # "VAE latents" for img2img
MODEL_OUT = [rng.standard_normal(N).astype(np.float32) for _ in range(NBUF)]
NOISE = [rng.standard_normal(N).astype(np.float32) for _ in range(NBUF)]

# randn_tensor is replaced so the schedulers that draw noise inside step()
# (ancestral Euler, LCM) take our explicit noise instead.
_next_noise = [None]


def _fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
    return torch.from_numpy(_next_noise[0].reshape(shape)).to(dtype or torch.float32)


ea_mod.randn_tensor = _fake_randn
lcm_mod.randn_tensor = _fake_randn


def f32list(a):
    # 9 significant digits round-trip float32 exactly.
    return [float("%.9g" % v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def f64list(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def t(x):
    return torch.from_numpy(np.array(x, dtype=np.float32).reshape(SHAPE))


def calculate_shift(seq_len, base_seq=256, max_seq=4096, base_shift=0.5, max_shift=1.15):
    # Same formula as FluxPipeline's calculate_shift (written out so the mu is in the JSON).
    m = (max_shift - base_shift) / (max_seq - base_seq)
    b = base_shift - m * base_seq
    return seq_len * m + b


def set_timesteps(s, cls, n, opts):
    if cls is FlowMatchEulerDiscreteScheduler:
        sig = np.linspace(1.0, 1 / n, n)  # as FluxPipeline passes them
        s.set_timesteps(sigmas=sig, mu=opts.get("mu"))
    elif cls is LCMScheduler:
        s.set_timesteps(n, strength=opts.get("lcm_strength", 1.0))
    else:
        s.set_timesteps(n)


def check_indices(begin, n):
    return sorted({i for i in [begin, begin + 1, n - 2, n - 1] if begin <= i < n})


def run_chain(s, begin, sample):
    """Runs steps begin..n-1; returns checks at a few indices."""
    n = len(s.timesteps)
    want = check_indices(begin, n)
    checks = []
    x = torch.from_numpy(sample.reshape(SHAPE).copy())
    for i in range(begin, n):
        ts = s.timesteps[i]
        scaled = s.scale_model_input(x, ts) if hasattr(s, "scale_model_input") else x
        mo = t(MODEL_OUT[i % NBUF])
        _next_noise[0] = NOISE[i % NBUF]
        x = s.step(mo, ts, x, return_dict=False)[0]  # step takes the unscaled sample
        if i in want:
            c = {"index": i, "prev": f32list(x.numpy())}
            if i == begin:  # scale_model_input is a per-step scalar: one check is enough
                c["scaled"] = f32list(scaled.numpy())
            checks.append(c)
    return checks


def make(cls, config):
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls.from_config(cfg)


def case(name, config, runs, img2img=()):
    """runs: list of (steps, opts); img2img: list of (steps, strength, opts)."""
    cls = CLASSES[config["_class_name"]]
    out = {"diffusers": diffusers.__version__, "config": config, "runs": [], "img2img": []}
    for n, opts in runs:
        s = make(cls, config)
        set_timesteps(s, cls, n, opts)
        init = getattr(s, "init_noise_sigma", 1.0)  # FlowMatch has none: FLUX starts from plain noise
        r = {
            "steps": n,
            "opts": opts,
            "timesteps": f64list(s.timesteps.numpy()),
            "init_noise_sigma": float(init),
            "checks": run_chain(s, 0, SAMPLE),
        }
        if hasattr(s, "sigmas") and cls not in (DDIMScheduler, LCMScheduler):
            r["sigmas"] = f32list(s.sigmas.numpy())
        out["runs"].append(r)
    for n, strength, opts in img2img:
        s = make(cls, config)
        set_timesteps(s, cls, n, opts)
        if cls is FlowMatchEulerDiscreteScheduler:
            init_timestep = min(n * strength, n)  # FluxImg2ImgPipeline.get_timesteps: no int()
            t_start = int(max(n - init_timestep, 0))
        else:
            init_timestep = min(int(n * strength), n)  # StableDiffusionImg2ImgPipeline.get_timesteps
            t_start = max(n - init_timestep, 0)
        timesteps = s.timesteps[t_start * s.order :]
        if hasattr(s, "set_begin_index"):  # DDIM has none: its add_noise looks the timestep up
            s.set_begin_index(t_start * s.order)
        latent_timestep = timesteps[:1].repeat(SHAPE[0])  # as the pipelines do, one per batch item
        if len(timesteps) == 0:
            noised = torch.from_numpy(ORIGINAL.copy())  # pipelines refuse this; only t_start is checked
        elif cls is FlowMatchEulerDiscreteScheduler:
            noised = s.scale_noise(t(ORIGINAL), latent_timestep, t(NOISE[0]))
        else:
            noised = s.add_noise(t(ORIGINAL), t(NOISE[0]), latent_timestep)
        r = {
            "steps": n,
            "strength": strength,
            "opts": opts,
            "t_start": t_start,
            "timesteps": f64list(timesteps.numpy()),
            "noised": f32list(noised.numpy()),
        }
        if len(timesteps) > 0:
            r["checks"] = run_chain(s, t_start, noised.numpy().reshape(-1))
        out["img2img"].append(r)
    path = os.path.join(OUT, name + ".json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(name, os.path.getsize(path), file=sys.stderr)


SD = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "trained_betas": None,
}
SD15 = dict(SD, prediction_type="epsilon", timestep_spacing="leading")
SD21V = dict(SD, prediction_type="v_prediction", timestep_spacing="leading")
SDXL = dict(SD, prediction_type="epsilon", timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False)
TURBO = dict(SD, prediction_type="epsilon", timestep_spacing="trailing", interpolation_type="linear")
LINEAR = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000}

STD = [(n, {}) for n in (1, 2, 4, 20, 28, 50)]
FEW = [(n, {}) for n in (1, 2, 3, 4)]
I2I = [(20, 0.75, {}), (4, 0.5, {}), (28, 0.3, {}), (50, 1.0, {}), (2, 0.1, {})]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    diffusers.utils.logging.set_verbosity_error()

    # Beta schedules: alphas_cumprod exactly as diffusers has them (float32 torch).
    betas = {}
    for name, cfg in [("scaled_linear", SD15), ("linear", LINEAR)]:
        s = DDIMScheduler.from_config(dict(cfg))
        betas[name] = {"config": cfg, "alphas_cumprod": f32list(s.alphas_cumprod.numpy())}
    with open(os.path.join(OUT, "betas.json"), "w") as f:
        json.dump({"diffusers": diffusers.__version__, "schedules": betas}, f, separators=(",", ":"))

    with open(os.path.join(OUT, "inputs.json"), "w") as f:
        json.dump(
            {
                "shape": list(SHAPE),
                "sample": f32list(SAMPLE),
                "original": f32list(ORIGINAL),
                "model_out": [f32list(m) for m in MODEL_OUT],
                "noise": [f32list(m) for m in NOISE],
            },
            f,
            separators=(",", ":"),
        )

    E, EA, DPM, DDIM, LCM, FM = (
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DDIMScheduler",
        "LCMScheduler",
        "FlowMatchEulerDiscreteScheduler",
    )
    case("euler_sd15", dict(SD15, _class_name=E), STD, I2I)
    case("euler_sd21v", dict(SD21V, _class_name=E), STD, I2I[:2])
    case("euler_sdxl_karras", dict(SDXL, _class_name=E, use_karras_sigmas=True), STD, I2I[:2])
    case("euler_linspace", dict(SD15, _class_name=E, timestep_spacing="linspace"), STD + [(7, {})])
    case("euler_turbo", dict(TURBO, _class_name=E), FEW + [(7, {})], I2I[1:2])
    case("euler_linear_betas", dict(LINEAR, _class_name=E, timestep_spacing="leading", steps_offset=1), STD[:4])
    case("euler_a_sd15", dict(SD15, _class_name=EA), STD, I2I[:2])
    case("euler_a_sd21v", dict(SD21V, _class_name=EA), STD[:4])
    case("euler_a_turbo", dict(TURBO, _class_name=EA), FEW, I2I[1:2])
    case("euler_a_linspace", dict(SD15, _class_name=EA, timestep_spacing="linspace"), STD[:4])
    dpm = dict(SD15, _class_name=DPM, solver_order=2, algorithm_type="dpmsolver++", lower_order_final=True)
    case("dpmpp2m_sd15", dpm, STD + [(14, {}), (15, {})], I2I)
    case("dpmpp2m_sd15_karras", dict(dpm, use_karras_sigmas=True), STD + [(14, {}), (15, {})], I2I[:2])
    case("dpmpp2m_sd21v", dict(dpm, prediction_type="v_prediction"), STD, I2I[:2])
    case("dpmpp2m_sd21v_karras", dict(dpm, prediction_type="v_prediction", use_karras_sigmas=True), STD)
    case("dpmpp2m_linspace", dict(dpm, timestep_spacing="linspace"), STD[:4])
    case("dpmpp2m_trailing", dict(dpm, timestep_spacing="trailing"), FEW + [(20, {})])
    case("ddim_sd15", dict(SD15, _class_name=DDIM), STD, I2I)
    case("ddim_sd21v", dict(SD21V, _class_name=DDIM), STD, I2I[:2])
    case("ddim_trailing", dict(TURBO, _class_name=DDIM), FEW + [(7, {})])
    case("ddim_linspace_linear", dict(LINEAR, _class_name=DDIM, timestep_spacing="linspace", clip_sample=False), STD[:4])
    lcm = dict(SD15, _class_name=LCM, original_inference_steps=50, timestep_scaling=10.0, set_alpha_to_one=True)
    case("lcm_sd15", lcm, FEW + [(6, {}), (8, {}), (4, {"lcm_strength": 0.5}), (3, {"lcm_strength": 0.3})], I2I[1:2])
    case("lcm_sd21v", dict(lcm, prediction_type="v_prediction"), FEW)
    schnell = {
        "_class_name": FM,
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    }
    case("flow_schnell", schnell, FEW, [(4, 0.6, {}), (4, 0.95, {}), (2, 0.5, {})])
    dev = dict(schnell, shift=3.0, use_dynamic_shifting=True)
    runs = []
    for seq in (4096, 1024, 256, 6000):
        mu = calculate_shift(seq)
        runs += [(n, {"image_seq_len": seq, "mu": mu}) for n in ((1, 4, 20, 28, 50) if seq == 4096 else (4, 28))]
    mu = calculate_shift(4096)
    case("flow_dev", dev, runs, [(28, 0.6, {"image_seq_len": 4096, "mu": mu}), (20, 0.85, {"image_seq_len": 4096, "mu": mu})])
    case("flow_shift3", dict(schnell, shift=3.0), [(4, {}), (20, {})])


if __name__ == "__main__":
    main()
