"""Random-weight SDXL, FLUX.1-dev and Whisper large-v3 modules with the published configurations
(configs/*.json), built directly on the target device in float16 (no float32 CPU copy), seeded.

Shared by build.py (ONNX export) and peer.py (PyTorch timings): both build the same modules the same way.

--size full: the real configurations (FLUX's depth may be cut with double/single; the text encoders keep
their real widths but only `te_layers` layers: their cost is not what is measured).
--size tiny: the same architectures, narrow and shallow, for the CPU rehearsal.
"""
import contextlib
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "configs")


def cfg(name):
    with open(os.path.join(CONFIGS, name + ".json")) as f:
        d = json.load(f)
    return {k: v for k, v in d.items() if not k.startswith("_")}


@contextlib.contextmanager
def on(device, dtype=torch.float16):
    """Parameters are created on `device` in `dtype` (random init there, nothing on the CPU first)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def seed(n):
    torch.manual_seed(n)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(n)


def _hf_eval(m):
    m.eval()
    m.requires_grad_(False)
    return m


# ------------------------------------------------------------------------------------------------
# text encoders (real widths, few layers)
# ------------------------------------------------------------------------------------------------
def clip_config(name, size, layers):
    from transformers import CLIPTextConfig
    c = cfg(name)
    c["num_hidden_layers"] = layers
    if size == "tiny":
        c.update(hidden_size=32, intermediate_size=64, num_attention_heads=2, projection_dim=32)
    c.pop("architectures", None)
    c.pop("model_type", None)
    return CLIPTextConfig(**c)


def t5_config(size, layers):
    from transformers import T5Config
    c = cfg("t5_xxl")
    c["num_layers"] = layers
    if size == "tiny":
        c.update(d_model=32, d_kv=8, d_ff=64, num_heads=4)
    c.pop("architectures", None)
    c.pop("model_type", None)
    return T5Config(**c)


def build_clip(name, size, layers, device, with_projection, sd):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    c = clip_config(name, size, layers)
    # eager attention: its additive causal mask keeps the input's dtype; torch's TorchScript symbolic of SDPA with
    # a boolean mask adds float32 constants, which turns the whole layer float32 (fp16 LayerNorm weights then
    # fail to load in onnxruntime).  The text encoders' cost is not what this benchmark measures.
    c._attn_implementation = "eager"
    seed(sd)
    with on(device):
        m = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(c)
    return _hf_eval(m)


def build_t5(size, layers, device, sd):
    from transformers import T5EncoderModel
    c = t5_config(size, layers)
    seed(sd)
    with on(device):
        m = T5EncoderModel(c)
    return _hf_eval(m)


# ------------------------------------------------------------------------------------------------
# SDXL
# ------------------------------------------------------------------------------------------------
def sdxl_unet_config(size, te1, te2):
    c = cfg("sdxl_unet")
    if size == "tiny":
        c.update(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                 transformer_layers_per_block=[1, 2], attention_head_dim=[2, 4], addition_time_embed_dim=8,
                 sample_size=16)
    c["cross_attention_dim"] = te1.hidden_size + te2.hidden_size
    c["projection_class_embeddings_input_dim"] = 6 * c["addition_time_embed_dim"] + te2.projection_dim
    return c


def vae_config(name, size):
    c = cfg(name)
    if size == "tiny":
        c.update(block_out_channels=[32, 32, 64, 64], layers_per_block=1, sample_size=64)
    return c


def build_unet(c, device, sd):
    from diffusers import UNet2DConditionModel
    seed(sd)
    with on(device):
        m = UNet2DConditionModel(**c)
    return _hf_eval(m)


def build_vae(c, device, sd):
    from diffusers import AutoencoderKL
    seed(sd)
    with on(device):
        m = AutoencoderKL(**c)
    return _hf_eval(m)


def flux_config(size, double=None, single=None):
    c = cfg("flux_dev_transformer")
    if size == "tiny":
        c.update(num_attention_heads=2, attention_head_dim=16, axes_dims_rope=[4, 6, 6], joint_attention_dim=32,
                 pooled_projection_dim=32, num_layers=1, num_single_layers=1)
    if double is not None:
        c["num_layers"] = double
    if single is not None:
        c["num_single_layers"] = single
    return c


def build_flux(c, device, sd):
    from diffusers import FluxTransformer2DModel
    seed(sd)
    with on(device):
        m = FluxTransformer2DModel(**c)
    return _hf_eval(m)


# Seeds per component (build.py and peer.py agree on them).
SEEDS = {"te1": 11, "te2": 12, "unet": 13, "vae": 14, "transformer": 15, "whisper": 16}
TE_LAYERS = 2  # text encoders: real hidden sizes, two layers


def sdxl_parts(size, device, parts=("te", "unet", "vae")):
    out = {}
    te1c = clip_config("clip_l", size, TE_LAYERS)
    te2c = clip_config("clip_bigg", size, TE_LAYERS)
    if "te" in parts:
        out["text_encoder"] = build_clip("clip_l", size, TE_LAYERS, device, False, SEEDS["te1"])
        out["text_encoder_2"] = build_clip("clip_bigg", size, TE_LAYERS, device, True, SEEDS["te2"])
    if "unet" in parts:
        out["unet"] = build_unet(sdxl_unet_config(size, te1c, te2c), device, SEEDS["unet"])
    if "vae" in parts:
        out["vae"] = build_vae(vae_config("sdxl_vae", size), device, SEEDS["vae"])
    return out


def flux_parts(size, device, double=None, single=None, parts=("te", "transformer", "vae")):
    out = {}
    if "te" in parts:
        out["text_encoder"] = build_clip("clip_l", size, TE_LAYERS, device, False, SEEDS["te1"])
        out["text_encoder_2"] = build_t5(size, TE_LAYERS, device, SEEDS["te2"])
    if "transformer" in parts:
        tc = flux_config(size, double, single)
        if size == "tiny":
            te1c = clip_config("clip_l", size, TE_LAYERS)
            tc["pooled_projection_dim"] = te1c.hidden_size
            tc["joint_attention_dim"] = t5_config(size, TE_LAYERS).d_model
        out["transformer"] = build_flux(tc, device, SEEDS["transformer"])
    if "vae" in parts:
        out["vae"] = build_vae(vae_config("flux_vae", size), device, SEEDS["vae"])
    return out


# ------------------------------------------------------------------------------------------------
# Whisper large-v3
# ------------------------------------------------------------------------------------------------
def whisper_config(size):
    from transformers import WhisperConfig
    c = cfg("whisper_large_v3")
    if size == "tiny":
        c.update(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=128, decoder_ffn_dim=128, num_hidden_layers=2)
    c.pop("architectures", None)
    c.pop("model_type", None)
    wc = WhisperConfig(**c)
    wc._attn_implementation = "sdpa"
    return wc


def build_whisper(size, device):
    from transformers import WhisperForConditionalGeneration
    c = whisper_config(size)
    seed(SEEDS["whisper"])
    with on(device):
        m = WhisperForConditionalGeneration(c)
    return _hf_eval(m)


class WhisperEncoder(torch.nn.Module):
    """input_features [B, mels, 3000] -> last_hidden_state [B, 1500, D] (transformers' encoder, SDPA)."""

    def __init__(self, hf):
        super().__init__()
        self.enc = hf.model.encoder

    def forward(self, input_features):
        return self.enc(input_features).last_hidden_state


def _attn(layer_attn, x, k, v, mask):
    """q projection of x against given k, v [B, H, T, hd]; returns out_proj(attention)."""
    B, S, D = x.shape
    H = k.shape[1]
    q = layer_attn.q_proj(x).view(B, S, H, D // H).transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return layer_attn.out_proj(o.transpose(1, 2).reshape(B, S, D))


def _kv(layer_attn, x, H):
    B, T, D = x.shape
    k = layer_attn.k_proj(x).view(B, T, H, D // H).transpose(1, 2)
    v = layer_attn.v_proj(x).view(B, T, H, D // H).transpose(1, 2)
    return k, v


class WhisperDecoderKV(torch.nn.Module):
    """Whisper's decoder with an explicit key/value cache, written on transformers' own submodules (their weight
    names are stable across transformers 4 and 5; the Cache classes are not), in optimum's ONNX interface:

    with_past=False: input_ids [B, S], encoder_hidden_states [B, 1500, D]
        -> logits [B, S, V], present.{l}.decoder.{key,value} [B, H, S, hd], present.{l}.encoder.{key,value}
    with_past=True:  input_ids [B, S], past_key_values.{l}.{decoder,encoder}.{key,value}
        -> logits [B, S, V], present.{l}.decoder.{key,value} [B, H, past+S, hd]
    """

    def __init__(self, hf, with_past):
        super().__init__()
        self.dec = hf.model.decoder
        self.with_past = with_past
        self.H = hf.config.decoder_attention_heads
        self.L = hf.config.decoder_layers

    def forward(self, input_ids, *rest):
        dec, H = self.dec, self.H
        B, S = input_ids.shape
        if self.with_past:
            pkv = rest
            past = pkv[0].shape[2]
        else:
            enc = rest[0]
            past = 0
        pos = torch.arange(S, device=input_ids.device) + past
        x = dec.embed_tokens(input_ids) + dec.embed_positions.weight[pos]
        # causal mask over [past + S]: row i sees columns <= past + i
        cols = torch.arange(S, device=input_ids.device) + past
        allowed = torch.arange(past + S, device=input_ids.device)[None, :] <= cols[:, None]
        # additive mask in the activations' dtype (a boolean one exports with float32 constants, see models.build_clip)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        mask = torch.where(allowed, zero, torch.full((), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device))
        presents = []
        for li, layer in enumerate(dec.layers):
            h = layer.self_attn_layer_norm(x)
            k, v = _kv(layer.self_attn, h, H)
            if self.with_past:
                k = torch.cat([pkv[4 * li], k], dim=2)
                v = torch.cat([pkv[4 * li + 1], v], dim=2)
                ck, cv = pkv[4 * li + 2], pkv[4 * li + 3]
            else:
                ck, cv = _kv(layer.encoder_attn, enc, H)
            x = x + _attn(layer.self_attn, h, k, v, mask)
            h = layer.encoder_attn_layer_norm(x)
            x = x + _attn(layer.encoder_attn, h, ck, cv, None)
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            presents += [k, v] if self.with_past else [k, v, ck, cv]
        x = dec.layer_norm(x)
        logits = x @ dec.embed_tokens.weight.t()
        return (logits, *presents)


def whisper_decoder_names(L, with_past):
    ins = ["input_ids"]
    outs = ["logits"]
    for l in range(L):
        if with_past:
            ins += [f"past_key_values.{l}.{w}.{kv}" for w in ("decoder", "encoder") for kv in ("key", "value")]
            outs += [f"present.{l}.decoder.key", f"present.{l}.decoder.value"]
        else:
            outs += [f"present.{l}.{w}.{kv}" for w in ("decoder", "encoder") for kv in ("key", "value")]
    if not with_past:
        ins.append("encoder_hidden_states")
    return ins, outs
