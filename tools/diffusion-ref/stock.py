#!/usr/bin/env python3
"""Stock exports: tiny random-weight SD 1.5-style / SDXL-style diffusers pipelines exported with the
unmodified `optimum-cli export onnx`, plus a tiny FLUX exported with tools/flux-export/export.py, and
diffusers reference runs for each, in generate.py's case format.

Run by hand (not in CI), from the repository root, in the environment of requirements-stock.txt:

    /root/.cache/falocal/venv-stock/bin/python tools/diffusion-ref/stock.py [--only sd15,sdxl,flux]
        [--old-optimum /root/.cache/falocal/venv-stock-old]

Outputs (committed test data):
    pipelines/diffusion/testdata/stock/<name>/...               the export folders, byte for byte as written
    pipelines/diffusion/testdata/stock/ref/<name>/<case>/case.json + *.f32 + image_0.png
    pipelines/diffusion/testdata/stock/onnx_io.json             declared ONNX inputs/outputs of every component

Nothing is edited after the exporter wrote it. The ONNX files (but sd15-optimum's) and the case.json
and .f32 files are stored gzipped (gzip -n -9, which the Go tests undo). See README.md ("Stock exports").
"""
import argparse
import glob
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TD = os.path.join(ROOT, "pipelines", "diffusion", "testdata")
STOCK = os.path.join(TD, "stock")
REF = os.path.join(STOCK, "ref")
BUILD = os.environ.get("FALOCAL_STOCK_BUILD", "/root/.cache/falocal/stock-build")
PROMPT = "a red cube on a table"
NEG = "blurry, low quality"
CLIP_VOCAB = 1000  # 512 byte symbols + 486 merges + 2 special tokens

import diffusers  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

ERRORS = {}  # (name, onnx component) -> max abs err over all recorded calls


def wjson(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def seed(n):
    torch.manual_seed(n)
    np.random.seed(n)


def t2np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# tiny pipelines
# --------------------------------------------------------------------------------------------
def small_clip_bpe():
    """vocab.json + merges.txt of a CLIP BPE with CLIP's first 486 merges (vocabulary 1000 instead of 49408:
    the token-embedding table is what makes a CLIP text encoder big). Same layout as CLIP's files: the
    256 byte symbols, the same with "</w>", one token per merge, <|startoftext|>, <|endoftext|>."""
    out = os.path.join(BUILD, "clip-bpe-1000")
    if os.path.exists(os.path.join(out, "merges.txt")):
        return out
    src = os.path.join(TD, "models", "sd15-tiny", "tokenizer")
    full = json.load(open(os.path.join(src, "vocab.json"), encoding="utf-8"))
    by_id = sorted(full.items(), key=lambda kv: kv[1])
    base = [t for t, i in by_id if i < 512]
    lines = open(os.path.join(src, "merges.txt"), encoding="utf-8").read().split("\n")
    n_merges = CLIP_VOCAB - 512 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    vocab = base + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == len(set(vocab)) == CLIP_VOCAB
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return out


def clip_tokenizer(pad_token):
    src = small_clip_bpe()
    return CLIPTokenizer(os.path.join(src, "vocab.json"), os.path.join(src, "merges.txt"), pad_token=pad_token,
                         model_max_length=77)


def tiny_clip(hidden, proj=None, act="quick_gelu", seed_=0):
    cfg = CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act=act,
                         projection_dim=proj or hidden, bos_token_id=CLIP_VOCAB - 2, eos_token_id=CLIP_VOCAB - 1,
                         pad_token_id=1)
    seed(seed_)
    return (CLIPTextModelWithProjection if proj else CLIPTextModel)(cfg).eval()


def tiny_vae(scaling, seed_=3):
    seed(seed_)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(4, 4, 8, 8), layers_per_block=1,
                         latent_channels=4, norm_num_groups=2, sample_size=64, scaling_factor=scaling).eval()


SD15_SCHED = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None,
}
SDXL_SCHED = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
    "trained_betas": None, "use_karras_sigmas": False,
}


def build_sd15():
    te = tiny_clip(16, seed_=1)
    seed(2)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(4, 8),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=2).eval()
    return StableDiffusionPipeline(vae=tiny_vae(0.18215), text_encoder=te, tokenizer=clip_tokenizer("<|endoftext|>"),
                                   unet=unet, scheduler=PNDMScheduler.from_config(SD15_SCHED), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def build_sdxl():
    te = tiny_clip(8, seed_=11)
    te2 = tiny_clip(8, proj=8, act="gelu", seed_=12)
    seed(13)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(4, 8),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=4, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=8 + 6 * 4,
        cross_attention_dim=16, norm_num_groups=2).eval()
    return StableDiffusionXLPipeline(vae=tiny_vae(0.13025), text_encoder=te, text_encoder_2=te2,
                                     tokenizer=clip_tokenizer("<|endoftext|>"), tokenizer_2=clip_tokenizer("!"),
                                     unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHED),
                                     force_zeros_for_empty_prompt=True)


# --------------------------------------------------------------------------------------------
# export with the stock exporter
# --------------------------------------------------------------------------------------------
def optimum_export(venv, diffusers_dir, out, task):
    """`optimum-cli export onnx --model DIR --task TASK OUT` exactly as a user runs it."""
    if os.path.exists(out):
        shutil.rmtree(out)
    cli = os.path.join(venv, "bin", "optimum-cli")
    # run from the build folder with relative paths: the configs' "_name_or_path" then names the folder only
    cmd = [cli, "export", "onnx", "--model", os.path.relpath(diffusers_dir, BUILD), "--task", task,
           os.path.relpath(out, BUILD)]
    print("  $", " ".join(cmd), flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=BUILD)
    log = r.stdout + r.stderr
    with open(out.rstrip("/") + ".log", "w") as f:
        f.write(log)
    if r.returncode != 0:
        print(log[-4000:])
        raise SystemExit(f"optimum-cli failed ({r.returncode})")
    for line in log.splitlines():
        if "max diff" in line.lower() or "validat" in line.lower() or "warn" in line.lower():
            print("    |", line.strip()[:200])
    ver = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import optimum.version as v, torch, diffusers, transformers, onnx;"
                          "print(v.__version__, torch.__version__, diffusers.__version__, transformers.__version__,"
                          " onnx.__version__)"], capture_output=True, text=True).stdout.split()
    return dict(zip(["optimum", "torch", "diffusers", "transformers", "onnx"], ver))


def gzip_files(paths):
    """Stores test data gzipped (gzip -n: byte for byte reproducible); the Go tests read name.gz as name."""
    paths = list(paths)
    if paths:
        subprocess.check_call(["gzip", "-n", "-9", "-f"] + paths)


# The export kept as written: tools/diffusion-ref/ort_optimize.py reads it.
KEEP_PLAIN = "sd15-optimum"


def publish(src, name):
    dst = os.path.join(STOCK, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def describe_onnx(model_dir):
    out = {}
    for comp in sorted(os.listdir(model_dir)):
        p = os.path.join(model_dir, comp, "model.onnx")
        if not os.path.exists(p):
            continue
        m = onnx.load(p, load_external_data=False)

        def vi(v):
            t = v.type.tensor_type
            return {"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(),
                    "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

        out[comp] = {"inputs": [vi(i) for i in m.graph.input], "outputs": [vi(o) for o in m.graph.output],
                     "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                     "producer": f"{m.producer_name} {m.producer_version}".strip()}
    return out


# --------------------------------------------------------------------------------------------
# recording (generate.py's case format)
# --------------------------------------------------------------------------------------------
class Store:
    """Writes arrays of one case as little-endian float32 files, deduplicating identical contents."""

    def __init__(self, d):
        self.d = d
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        self.by_hash = {}

    def arr(self, name, x, n_first=8):
        src = t2np(x).astype("<f4")
        a = np.ascontiguousarray(src).reshape(src.shape)  # keeps rank 0 (a scalar timestep)
        h = hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest()
        if h in self.by_hash:
            fn = self.by_hash[h]
        else:
            fn = name + ".f32"
            a.tofile(os.path.join(self.d, fn))
            self.by_hash[h] = fn
        return {"file": fn, "shape": list(a.shape), "dtype": "float32", "first": [float(v) for v in a.ravel()[:n_first]]}


class Recorder:
    """Hooks component forwards, the VAE decode and every randn_tensor draw of one pipeline call."""

    def __init__(self):
        self.calls, self.noise, self._undo, self._mods = [], [], [], []

    def wrap_forward(self, comp_name, module, method="forward"):
        orig = getattr(module, method)
        sig = inspect.signature(orig)
        rec = self

        def wrapped(*a, **kw):
            bound = sig.bind(*a, **kw)
            bound.apply_defaults()
            out = orig(*a, **kw)
            rec.calls.append((comp_name, dict(bound.arguments), out))
            return out

        setattr(module, method, wrapped)
        self._undo.append((module, method))

    def patch_randn(self):
        import diffusers.utils.torch_utils as tu

        orig, rec = tu.randn_tensor, self

        def randn(shape, generator=None, device=None, dtype=None, layout=None):
            caller = inspect.stack()[1]
            x = orig(shape, generator=generator, device=device, dtype=dtype, layout=layout)
            rec.noise.append((f"{os.path.basename(caller.filename)}:{caller.function}", x.clone()))
            return x

        for name, mod in list(sys.modules.items()):
            if name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is orig:
                mod.randn_tensor = randn
                self._mods.append(mod)
        self._orig_randn = orig

    def undo(self):
        for module, method in self._undo:
            delattr(module, method)
        for mod in self._mods:
            mod.randn_tensor = self._orig_randn


NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(double)": np.float64}


def as_declared(sess, name, v):
    """A value in the dtype and rank the export declares for input `name` (e.g. a rank-0 timestep)."""
    i = {x.name: x for x in sess.get_inputs()}[name]
    a = np.asarray(v).astype(NP_DTYPES[i.type])
    if len(i.shape) == 0:
        assert a.size == 1 or np.all(a == a.ravel()[0]), (name, a)
        a = np.asarray(a.ravel()[0])
    elif len(i.shape) == 1 and a.ndim == 0:
        a = a.reshape(1)
    return a


def component_io(comp, args, outp, pipe, sess):
    """Maps a recorded torch call to (ONNX feeds in the declared dtypes/ranks, expected outputs)."""
    names = [o.name for o in sess.get_outputs()]
    if comp.startswith("text_encoder"):
        feeds = {"input_ids": as_declared(sess, "input_ids", t2np(args["input_ids"]).astype(np.int64))}
        hs = outp.hidden_states or ()
        byname = {"last_hidden_state": outp.last_hidden_state}
        for k in ("pooler_output", "text_embeds"):
            if getattr(outp, k, None) is not None:
                byname[k] = getattr(outp, k)
        for k, h in enumerate(hs):
            byname[f"hidden_states.{k}"] = h
        return feeds, {n: t2np(byname[n]) for n in names}
    if comp == "unet":
        s = args["sample"]
        t = torch.as_tensor(args["timestep"], dtype=torch.float32).reshape(-1).expand(s.shape[0])
        vals = {"sample": t2np(s), "timestep": t2np(t), "encoder_hidden_states": t2np(args["encoder_hidden_states"])}
        ack = args.get("added_cond_kwargs") or {}
        for k in ("text_embeds", "time_ids"):
            if k in ack:
                vals[k] = t2np(ack[k])
        if args.get("timestep_cond") is not None:
            vals["timestep_cond"] = t2np(args["timestep_cond"])
        feeds = {i.name: as_declared(sess, i.name, vals[i.name]) for i in sess.get_inputs()}
        o = outp[0] if isinstance(outp, tuple) else outp.sample
        return feeds, {"out_sample": t2np(o)}
    if comp == "transformer":
        vals = {k: t2np(args[k]) for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep",
                                           "img_ids", "txt_ids")}
        if args.get("guidance") is not None:
            vals["guidance"] = t2np(args["guidance"])
        feeds = {i.name: as_declared(sess, i.name, vals[i.name]) for i in sess.get_inputs()}
        o = outp[0] if isinstance(outp, tuple) else outp.sample
        return feeds, {"out_hidden_states": t2np(o)}
    if comp == "vae_decode":
        o = outp[0] if isinstance(outp, tuple) else outp.sample
        return {"latent_sample": t2np(args["z"])}, {"sample": t2np(o)}
    raise ValueError(comp)


ONNX_COMP = {"vae_decode": "vae_decoder"}


def sched_config(sched):
    """The effective scheduler config; `_use_default_values` (built from a set) sorted, so re-runs match."""
    c = dict(sched.config)
    if isinstance(c.get("_use_default_values"), list):
        c["_use_default_values"] = sorted(c["_use_default_values"])
    return c


def run_case(pipe, name, model_dir, case, call_kw, components, sched_info, exporter):
    """Runs pipe(**call_kw) with output_type='np', records everything, writes stock/ref/<name>/<case>/."""
    st = Store(os.path.join(REF, name, case))
    rec = Recorder()
    for cname in components:
        rec.wrap_forward(cname, getattr(pipe, cname))
    rec.wrap_forward("vae_decode", pipe.vae, "decode")
    rec.patch_randn()
    step_latents = []

    def cb(p, i, t, kw):
        step_latents.append((i, float(t), kw["latents"].clone()))
        return {}

    try:
        out = pipe(**call_kw, output_type="np", callback_on_step_end=cb, return_dict=True)
    finally:
        rec.undo()
    img = out.images.astype(np.float32)
    doc = {
        "family": name, "model": os.path.relpath(model_dir, TD), "case": case,
        "pipeline": type(pipe).__name__, "diffusers_version": diffusers.__version__, "torch_version": torch.__version__,
        "scheduler": {"class": type(pipe.scheduler).__name__, "config": sched_config(pipe.scheduler), **sched_info},
        "call": {k: v for k, v in call_kw.items() if k not in ("latents", "generator")},
        "timesteps": [float(x) for x in pipe.scheduler.timesteps],
        "sigmas": [float(x) for x in pipe.scheduler.sigmas] if getattr(pipe.scheduler, "sigmas", None) is not None else None,
        "begin_index": getattr(pipe.scheduler, "begin_index", None),
        "timesteps_run": [t for _, t, _ in step_latents],
        "exporter": exporter,
    }
    if call_kw.get("latents") is not None:
        doc["initial_latents"] = st.arr("initial_latents", call_kw["latents"])
    doc["noise"] = [dict(source=src, index=i, **st.arr(f"noise_{i:02d}", x)) for i, (src, x) in enumerate(rec.noise)]
    doc["step_latents"] = [dict(step=i, timestep=t, **st.arr(f"latents_step{i:02d}", x)) for i, t, x in step_latents]
    doc["image"] = st.arr("image", img)
    doc["image"]["layout"] = "NHWC float32 [0,1] (output_type='np')"
    doc["png"] = []
    for bi, p in enumerate(pipe.image_processor.numpy_to_pil(img)):
        fn = f"image_{bi}.png"
        p.save(os.path.join(st.d, fn))
        doc["png"].append({"file": fn, "note": "pipe.image_processor.numpy_to_pil(np) == output_type='pil', saved with PIL defaults"})

    sessions, calls, counters = {}, [], {}
    for comp, args, outp in rec.calls:
        k = counters.get(comp, 0)
        counters[comp] = k + 1
        tag = f"{comp}_{k:02d}"
        onnx_comp = ONNX_COMP.get(comp, comp)
        if onnx_comp not in sessions:
            sessions[onnx_comp] = ort.InferenceSession(os.path.join(model_dir, onnx_comp, "model.onnx"),
                                                       providers=["CPUExecutionProvider"])
        sess = sessions[onnx_comp]
        feeds, want = component_io(comp, args, outp, pipe, sess)
        entry = {"component": comp, "index": k, "onnx_component": onnx_comp, "inputs": {}}
        for n, v in feeds.items():
            if n == "input_ids":
                entry["inputs"][n] = {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.tolist()}
            else:
                # an array ref (float32 file) in the shape the export declares (a scalar timestep has shape []);
                # declared_dtype names any other input dtype (int64 timestep): the same values, fed as that type
                entry["inputs"][n] = st.arr(f"{tag}_in_{n}", v.astype(np.float32))
                if v.dtype != np.float32:
                    entry["inputs"][n]["declared_dtype"] = str(v.dtype)
        entry["outputs"] = {n: st.arr(f"{tag}_out_{n}", v) for n, v in want.items()}
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        err = max(float(np.abs(got[n].astype(np.float32) - v).max()) for n, v in want.items())
        entry["onnx_max_abs_err"] = err
        key = (name, onnx_comp)
        ERRORS[key] = max(ERRORS.get(key, 0.0), err)
        calls.append(entry)
    doc["component_calls"] = calls
    wjson(os.path.join(st.d, "case.json"), doc)
    gzip_files(os.path.join(st.d, f) for f in sorted(os.listdir(st.d)) if f == "case.json" or f.endswith(".f32"))
    print(f"  case {name}/{case}: {len(step_latents)} steps, {len(rec.noise)} noise draws, {len(calls)} component "
          f"calls, image mean {img.mean():.4f}; onnx err "
          + ", ".join(f"{c['component']}{c['index']}={c['onnx_max_abs_err']:.1e}" for c in calls))
    return doc


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------
def sd_cases(name, model_dir, diffusers_dir, xl, exporter):
    """txt2img, Euler: CFG + negative prompt at 64x64, CFG + negative_prompt "" at 128x64, no CFG at 64x64."""
    pipe = DiffusionPipeline.from_pretrained(diffusers_dir)
    pipe.set_progress_bar_config(disable=True)
    euler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    g = 5.0 if xl else 7.5
    comps = ["text_encoder", "text_encoder_2", "unet"] if xl else ["text_encoder", "unet"]
    seed(100)
    lat64 = torch.randn(1, 4, 8, 8)
    lat128x64 = torch.randn(1, 4, 8, 16)
    cases = [
        ("txt2img_euler_cfg_neg_64", dict(negative_prompt=NEG, height=64, width=64, num_inference_steps=3,
                                          guidance_scale=g, latents=lat64)),
        ("txt2img_euler_cfg_emptyneg_128x64", dict(negative_prompt="", height=64, width=128, num_inference_steps=2,
                                                   guidance_scale=g, latents=lat128x64)),
        ("txt2img_euler_nocfg_64", dict(height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                                        latents=lat64)),
    ]
    for case, kw in cases:
        pipe.scheduler = EulerDiscreteScheduler.from_config(euler.config)
        run_case(pipe, name, model_dir, case, dict(prompt=PROMPT, **kw), comps,
                 {"scheduler_config_file": "scheduler/scheduler_config.json (as EulerDiscrete)"}, exporter)


def flux_cases(name, model_dir, diffusers_dir, exporter):
    """txt2img, FlowMatchEuler: 64x64 and 128x64 (multiples of 16), 2 steps."""
    pipe = DiffusionPipeline.from_pretrained(diffusers_dir)
    pipe.set_progress_bar_config(disable=True)
    guidance = pipe.transformer.config.guidance_embeds
    cfg = dict(pipe.scheduler.config)
    seed(300)
    for case, h, w in (("txt2img_flow_euler_64", 64, 64), ("txt2img_flow_euler_128x64", 64, 128)):
        lat = torch.randn(1, (h // 16) * (w // 16), 64)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        run_case(pipe, name, model_dir, case,
                 dict(prompt=PROMPT, height=h, width=w, num_inference_steps=2, guidance_scale=3.5 if guidance else 0.0,
                      latents=lat, max_sequence_length=pipe.tokenizer_2.model_max_length),
                 ["text_encoder", "text_encoder_2", "transformer"],
                 {"latents_layout": "packed [B, (H/16)*(W/16), 64]"}, exporter)


# --------------------------------------------------------------------------------------------
# dynamic-size check of every exported component (onnxruntime at two sizes)
# --------------------------------------------------------------------------------------------
def try_sizes(model_dir):
    """Runs every component at two sizes; returns {component: [(shape summary, 'ok' | error)]}."""
    res = {}
    rng = np.random.default_rng(0)
    for comp in sorted(os.listdir(model_dir)):
        p = os.path.join(model_dir, comp, "model.onnx")
        if not os.path.exists(p):
            continue
        sess = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        res[comp] = []
        for (h, w) in ((64, 64), (64, 128)):
            feeds = {}
            for i in sess.get_inputs():
                dt = NP_DTYPES[i.type]
                n = i.name
                if n == "input_ids":
                    shape = [1, 77] if "text_encoder_2" != comp or "T5" not in open(
                        os.path.join(model_dir, comp, "config.json")).read() else [1, 32]
                    feeds[n] = np.ones(shape, dtype=dt)
                    continue
                if n == "sample" and comp == "vae_encoder":
                    shape = [1, 3, h, w]
                elif n == "sample":
                    shape = [2, i.shape[1] if isinstance(i.shape[1], int) else 4, h // 8, w // 8]
                elif n == "latent_sample":
                    shape = [1, i.shape[1] if isinstance(i.shape[1], int) else 4, h // 8, w // 8]
                elif n == "hidden_states":
                    shape = [1, (h // 16) * (w // 16), 64]
                elif n == "img_ids":
                    ids = np.zeros((h // 16, w // 16, 3), np.float32)
                    ids[..., 1] = np.arange(h // 16)[:, None]
                    ids[..., 2] = np.arange(w // 16)[None, :]
                    ids = ids.reshape(-1, 3)
                    feeds[n] = (ids[None] if len(i.shape) == 3 else ids).astype(dt)
                    continue
                elif n == "txt_ids":
                    shape = [1, 32, 3] if len(i.shape) == 3 else [32, 3]
                    feeds[n] = np.zeros(shape, dt)
                    continue
                else:
                    shape = [d if isinstance(d, int) else (2 if k == 0 and n != "encoder_hidden_states" else
                                                           (2 if k == 0 else 77)) for k, d in enumerate(i.shape)]
                    if n == "encoder_hidden_states" and "transformer" == comp:
                        shape = [1, 32, shape[2]]
                    if comp == "transformer" and n in ("pooled_projections",):
                        shape[0] = 1
                    if comp == "transformer" and n in ("timestep", "guidance") and len(shape):
                        shape[0] = 1
                if n in ("timestep",):
                    feeds[n] = np.full(shape, 500 if dt in (np.int64, np.int32) else 0.5, dt)
                    continue
                feeds[n] = rng.standard_normal(shape).astype(dt)
            try:
                outs = sess.run(None, feeds)
                res[comp].append((f"{h}x{w}", "ok " + " ".join(str(list(o.shape)) for o in outs)))
            except Exception as e:  # noqa: BLE001
                res[comp].append((f"{h}x{w}", "FAILS: " + str(e).splitlines()[0][:300]))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="sd15,sdxl,flux")
    ap.add_argument("--old-optimum", default="/root/.cache/falocal/venv-stock-old",
                    help="venv with an older optimum; its SD 1.5 export becomes stock/sd15-optimum-<version>/")
    ap.add_argument("--old-task", default="stable-diffusion")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(sys.executable))
    venv = os.path.dirname(here)
    print(f"torch {torch.__version__} diffusers {diffusers.__version__} transformers {transformers.__version__} "
          f"onnx {onnx.__version__} onnxruntime {ort.__version__} numpy {np.__version__}")
    os.makedirs(BUILD, exist_ok=True)
    io_path = os.path.join(STOCK, "onnx_io.json")
    io_doc = json.load(open(io_path)) if os.path.exists(io_path) else {}
    fams = a.only.split(",")
    for fam, xl in (("sd15", False), ("sdxl", True)):
        if fam not in fams:
            continue
        print(f"== {fam}")
        pipe = build_sd15() if not xl else build_sdxl()
        ddir = os.path.join(BUILD, f"{fam}-diffusers")
        if os.path.exists(ddir):
            shutil.rmtree(ddir)
        pipe.save_pretrained(ddir)
        exports = [(f"{fam}-optimum", venv, "text-to-image")]
        if fam == "sd15" and a.old_optimum and os.path.exists(os.path.join(a.old_optimum, "bin", "optimum-cli")):
            exports.append((None, a.old_optimum, a.old_task))
        for name, v, task in exports:
            tmp = os.path.join(BUILD, f"{fam}-export-{os.path.basename(v)}")
            vers = optimum_export(v, ddir, tmp, task)
            if name is None:
                name = f"{fam}-optimum-{vers['optimum']}"
            dst = publish(tmp, name)
            desc = describe_onnx(dst)
            sizes = try_sizes(dst)
            io_doc[name] = {"exporter": vers, "command": f"optimum-cli export onnx --model <dir> --task {task} <out>",
                            "components": desc, "runs_at": {c: dict(s) for c, s in sizes.items()}}
            for c, s in sizes.items():
                print(f"  {name}/{c}: " + "; ".join(f"{k}: {r}" for k, r in s))
            sd_cases(name, dst, ddir, xl, {"tool": "optimum-cli export onnx", **vers})
    if "flux" in fams:
        print("== flux")
        tools = os.path.join(ROOT, "tools", "flux-export")
        ddir = os.path.join(BUILD, "flux-dev-diffusers")
        subprocess.check_call([sys.executable, os.path.join(tools, "make_tiny.py"), "--variant", "dev", ddir])
        tmp = os.path.join(BUILD, "flux-dev-export")
        subprocess.check_call([sys.executable, os.path.join(tools, "export.py"), "flux-dev-diffusers", "flux-dev-export",
                               "--overwrite"], cwd=BUILD)
        name = "flux-export"
        dst = publish(tmp, name)
        desc = describe_onnx(dst)
        sizes = try_sizes(dst)
        vers = {"tool": "tools/flux-export/export.py", "torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "onnx": onnx.__version__}
        io_doc[name] = {"exporter": vers, "command": "python tools/flux-export/export.py <dir> <out>",
                        "components": desc, "runs_at": {c: dict(s) for c, s in sizes.items()}}
        for c, s in sizes.items():
            print(f"  {name}/{c}: " + "; ".join(f"{k}: {r}" for k, r in s))
        flux_cases(name, dst, ddir, vers)
    wjson(io_path, io_doc)
    # every case has run: the exports' ONNX files are stored gzipped
    gzip_files(p for name in sorted(os.listdir(STOCK)) if name not in ("ref", KEEP_PLAIN)
               for p in sorted(glob.glob(os.path.join(STOCK, name, "*", "model.onnx"))))
    print("\nONNX vs torch max abs error (over all recorded calls):")
    for (name, comp), e in sorted(ERRORS.items()):
        print(f"  {name:24s} {comp:16s} {e:.3e}")


if __name__ == "__main__":
    main()
