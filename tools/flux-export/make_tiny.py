#!/usr/bin/env python3
"""Write a tiny random-weight FLUX.1 pipeline (FluxPipeline.save_pretrained layout) to try export.py on.

    python tools/flux-export/make_tiny.py [--variant dev|schnell] OUT

dev: guidance_embeds true, FlowMatchEuler shift 3.0 with dynamic shifting, T5 max length 512.
schnell: guidance_embeds false, shift 1.0, no dynamic shifting, T5 max length 256.
The architecture is FLUX's (double + single stream blocks, RoPE over (0, row, col) ids, CLIP pooled +
T5 sequence conditioning, 16-channel VAE) at toy sizes; seeded, so a re-run writes the same weights.
Tokenizers: a CLIP BPE cut down to CLIP's first 486 merges (1000 tokens) and the toy T5 sentencepiece
model of pipelines/diffusion/testdata/models/flux-dev-tiny (copied byte for byte).
"""
import argparse
import json
import os
import shutil
import tempfile

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "pipelines", "diffusion", "testdata", "models", "flux-dev-tiny")
CLIP_VOCAB = 1000


def clip_tokenizer(tmp):
    from transformers import CLIPTokenizer

    src = os.path.join(TINY, "tokenizer")
    full = json.load(open(os.path.join(src, "vocab.json"), encoding="utf-8"))
    base = [t for t, i in sorted(full.items(), key=lambda kv: kv[1]) if i < 512]
    lines = open(os.path.join(src, "merges.txt"), encoding="utf-8").read().split("\n")
    merges = [tuple(x.split()) for x in lines[1:1 + CLIP_VOCAB - 514]]
    vocab = base + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == len(set(vocab)) == CLIP_VOCAB
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=77)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--variant", choices=["dev", "schnell"], default="dev")
    ap.add_argument("--real-widths", action="store_true",
                    help="FLUX.1's widths (3072 = 24 heads x 128, RoPE axes 16/56/56, T5 width 4096, CLIP 768) with "
                         "2 double + 1 single blocks: a ~2.5 GB float32 transformer, to try the external-data path")
    a = ap.parse_args()
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    dev = a.variant == "dev"
    max_len = 512 if dev else 256
    tmp = tempfile.mkdtemp()
    tok = clip_tokenizer(tmp)
    tok2 = T5TokenizerFast.from_pretrained(os.path.join(TINY, "tokenizer_2"), model_max_length=max_len)
    clip_w, t5_w, heads, head_dim, axes, blocks = 8, 16, 2, 8, (2, 2, 4), (1, 1)
    if a.real_widths:
        clip_w, t5_w, heads, head_dim, axes, blocks = 768, 4096, 24, 128, (16, 56, 56), (2, 1)
    torch.manual_seed(21)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=clip_w, intermediate_size=2 * clip_w,
                                      num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                                      projection_dim=clip_w, bos_token_id=CLIP_VOCAB - 2, eos_token_id=CLIP_VOCAB - 1,
                                      pad_token_id=1)).eval()
    torch.manual_seed(22)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=t5_w, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                                 use_cache=False, tie_word_embeddings=False, decoder_start_token_id=0,
                                 pad_token_id=0, eos_token_id=1)).eval()
    torch.manual_seed(23 if dev else 24)
    tr = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=blocks[0], num_single_layers=blocks[1],
                                attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=t5_w,
                                pooled_projection_dim=clip_w, guidance_embeds=dev, axes_dims_rope=axes).eval()
    torch.manual_seed(25)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(4, 4, 8, 8), layers_per_block=1,
                        latent_channels=16, norm_num_groups=2, sample_size=64, scaling_factor=0.3611,
                        shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False).eval()
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0 if dev else 1.0,
                                            use_dynamic_shifting=dev, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=t5,
                        tokenizer_2=tok2, transformer=tr)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    pipe.save_pretrained(a.out)
    # the T5 tokenizer files exactly as in the repository (save_pretrained rewrites them)
    shutil.rmtree(os.path.join(a.out, "tokenizer_2"))
    shutil.copytree(os.path.join(TINY, "tokenizer_2"), os.path.join(a.out, "tokenizer_2"))
    if not dev:
        p = os.path.join(a.out, "tokenizer_2", "tokenizer_config.json")
        cfg = json.load(open(p))
        cfg["model_max_length"] = max_len
        with open(p, "w") as f:
            json.dump(cfg, f, indent=2)
    shutil.rmtree(tmp)
    print(f"wrote tiny FLUX.1-{a.variant} to {a.out}")


if __name__ == "__main__":
    main()
