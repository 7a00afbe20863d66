#!/usr/bin/env python3
"""Generate tiny random-weight Whisper models + reference vectors for the Go
Whisper pipeline tests.  Run by hand (never in CI); see README.md.

Stages (default: all):
  models  build the openai-whisper models (shaped random init), convert them to
          Hugging Face WhisperForConditionalGeneration, export ONNX with optimum,
          write configs + tokenizer files, and verify ONNX vs PyTorch logits.
  refs    run the openai-whisper reference decoder and write testdata/ref/*.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
import torch.nn.functional as F

import whisper
import whisper.decoding as wdec
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import LANGUAGES, get_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TESTDATA = os.path.join(REPO, "pipelines", "whisper", "testdata")
REF = os.environ.get("WHISPER_REF_OUT", os.path.join(TESTDATA, "ref"))
WORK = os.environ.get("WHISPER_REF_WORK", "/tmp/whisper-ref-work")


def assets_dir():
    base = os.environ.get("FALOCAL_TEST_ASSETS", os.path.expanduser("~/.cache/falocal/testdata"))
    return os.path.join(base, "whisper")


# ---------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------
D = 16  # d_model (kept tiny: the tied 51865 x D embedding dominates file size)

SPECS = {
    "tiny-multi": dict(
        dims=ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=D, n_audio_head=2, n_audio_layer=2,
                             n_vocab=51865, n_text_ctx=448, n_text_state=D, n_text_head=2, n_text_layer=2),
        seed=7, keep_unmerged=True),
    "tiny-en": dict(
        dims=ModelDimensions(n_mels=128, n_audio_ctx=1500, n_audio_state=D, n_audio_head=2, n_audio_layer=2,
                             n_vocab=51864, n_text_ctx=448, n_text_state=D, n_text_head=2, n_text_layer=2),
        seed=5678, keep_unmerged=False),
}

# Shaping knobs (see shape_init and README.md).
KNOBS = dict(
    emb_std=3.0,         # text token embedding rows ~ N(0, emb_std^2) on the "free" dims
    cross_qk=3.0,        # multiplier on cross-attention query/key weights (sharper attention)
    cross_out=6.0,       # multiplier on cross-attention output projection (audio dependence)
    ts_slope=12.0,        # timestamp row weight on the ramp feature (x t, t = i/1500)
    ts_quad=12.0,         # timestamp row weight -ts_quad * t^2 on the constant feature
    ts_bias=0.0,         # timestamp row constant-feature bias
    ts_periodic=10.0,     # timestamp row weight on the periodic feature
    eot_ramp=6.0,        # EOT row weight on the ramp feature
    eot_bias=4.0,        # EOT row constant-feature bias
    ramp_len=160.0,      # positions over which the ramp feature goes -1 -> +1
    period=9.0,          # period (positions) of the periodic feature
    dec_mlp_out=4.0,     # multiplier on decoder MLP output projection (breaks the tied-embedding self-loop)
    dec_attn_out=2.0,    # multiplier on decoder self-attention output projection
    pos_std=2.0,         # std of the random part of the decoder positional embedding
    res_scale=3.0,
    special_std=0.25,    # norm/sqrt(D) of the rows sot..notimestamps (SOT, languages, tasks, ...): keeps the
                         # audio (not the fed special token) in charge of language detection       # amplitude of the reserved features in the residual stream
    logit_scale=8.0,     # after calibration, final decoder LayerNorm gain+bias x logit_scale: all logits x8, so
                         # the argmax margins along the decode paths are 8x larger (robust vs ORT/PyTorch float noise)
    ramp_gain=3.0,       # final decoder LayerNorm gain on the ramp dim
    per_gain=2.0,        # final decoder LayerNorm gain on the periodic dim
)
R_RAMP, R_PER, R_CONST = D - 4, D - 3, D - 2   # reserved residual dims; D-1 is left free
FREE = list(range(0, D - 4)) + [D - 1]


def tokenizer_for(dims):
    multi = dims.n_vocab >= 51865
    return get_tokenizer(multi, num_languages=dims.n_vocab - 51765 - int(multi), language="en" if multi else None,
                         task="transcribe")


def shape_init(model: Whisper, seed: int, knobs=KNOBS):
    """Deterministic, shaped random init.  Everything comes from one torch.Generator."""
    g = torch.Generator().manual_seed(seed)
    dims = model.dims
    tok = tokenizer_for(dims)
    with torch.no_grad():
        # 1) plain random init for every parameter (linear: U(-1/sqrt(fan_in), +); conv like torch default;
        #    LayerNorm weight 1 bias 0; embeddings N(0,1)).
        for name, p in model.named_parameters():
            if name.endswith("ln.weight") or "ln" in name.split(".")[-2] and name.endswith("weight"):
                p.fill_(1.0)
            elif "ln" in name.split(".")[-2] and name.endswith("bias"):
                p.zero_()
            elif p.dim() >= 2 and "embedding" not in name:
                fan_in = int(np.prod(p.shape[1:]))
                b = 1.0 / np.sqrt(fan_in)
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * b * np.sqrt(3))
            elif p.dim() == 1:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g))
        dec = model.decoder
        E = dec.token_embedding.weight  # [n_vocab, D], tied with the output projection
        E.copy_(torch.randn(E.shape, generator=g))
        # equal-norm rows (no "hub" tokens that win for every hidden state): |row| = emb_std * sqrt(D)
        E.mul_(knobs["emb_std"] * np.sqrt(D) / E.norm(dim=1, keepdim=True))
        sp = slice(tok.eot + 1, tok.timestamp_begin)
        E[sp] = E[sp] * (knobs["special_std"] / knobs["emb_std"])
        pos = dec.positional_embedding  # [n_text_ctx, D]
        pos.copy_(torch.randn(pos.shape, generator=g) * knobs["pos_std"])
        # 2) reserved dims: only token embedding + positional embedding write them
        #    (zero the rows of every residual-writing projection for those dims).
        R = [R_RAMP, R_PER, R_CONST]
        for blk in dec.blocks:
            for lin in (blk.attn.out, blk.cross_attn.out, blk.mlp[2]):
                lin.weight[R, :] = 0
                lin.bias[R] = 0
            # sharper, stronger cross-attention so the output depends on the audio
            blk.cross_attn.query.weight.mul_(knobs["cross_qk"])
            blk.cross_attn.key.weight.mul_(knobs["cross_qk"])
            blk.cross_attn.out.weight.mul_(knobs["cross_out"])
            blk.mlp[2].weight.mul_(knobs["dec_mlp_out"])
            blk.attn.out.weight.mul_(knobs["dec_attn_out"])
        E[:, R] = 0
        p_idx = torch.arange(dims.n_text_ctx, dtype=torch.float32)
        pos[:, R_RAMP] = knobs["res_scale"] * torch.clamp(-1.0 + 2.0 * p_idx / knobs["ramp_len"], -1.0, 1.0)
        pos[:, R_PER] = knobs["res_scale"] * torch.cos(2 * np.pi * p_idx / knobs["period"])
        pos[:, R_CONST] = 0.0
        # final LayerNorm: constant feature via gain 0 / bias 1; amplify ramp + periodic
        dec.ln.weight[R_CONST] = 0.0
        dec.ln.bias[R_CONST] = 1.0
        dec.ln.weight[R_RAMP] = knobs["ramp_gain"]
        dec.ln.bias[R_RAMP] = 0.0
        dec.ln.weight[R_PER] = knobs["per_gain"]
        dec.ln.bias[R_PER] = 0.0
        # 3) output rows of timestamps + EOT
        tb = tok.timestamp_begin
        t = torch.arange(1501, dtype=torch.float32) / 1500.0
        E[tb:tb + 1501, R_RAMP] = knobs["ts_slope"] * t
        E[tb:tb + 1501, R_CONST] = knobs["ts_bias"] - knobs["ts_quad"] * t * t
        E[tb:tb + 1501, R_PER] = knobs["ts_periodic"]
        E[tok.eot, R_RAMP] = knobs["eot_ramp"]
        E[tok.eot, R_CONST] = knobs["eot_bias"]
    return model


def calibrate_final_ln(model: Whisper, seed: int):
    """Center + standardize the free dims of the final decoder LayerNorm output.

    Without this the hidden state has a persistent mean direction and the same few "hub" tokens win
    at every step.  Calibration input: 30 s of seeded Gaussian noise (std 0.05) as audio and a seeded
    random sequence of 200 text tokens after the SOT sequence; the per-dim mean/std of the final LN
    output (free dims only, all positions) are folded into that LN's bias/gain."""
    g = torch.Generator().manual_seed(seed + 1)
    dims = model.dims
    tok = tokenizer_for(dims)
    audio = torch.randn(whisper.audio.N_SAMPLES, generator=g) * 0.05
    mel = whisper.log_mel_spectrogram(audio, dims.n_mels)[None]
    toks = torch.randint(0, tok.eot, (1, 200), generator=g)
    toks = torch.cat([torch.tensor([list(tok.sot_sequence)]), toks], dim=1)
    ln = model.decoder.ln
    outs = []
    h = ln.register_forward_hook(lambda m, i, o: outs.append(o.detach()))
    with torch.no_grad():
        model(mel, toks)
        h.remove()
        y = outs[0][0]  # [T, D]
        mu, sd = y.mean(0), y.std(0)
        for d in FREE:
            # y' = (y - mu) / sd  ->  gain' = gain/sd, bias' = (bias - mu)/sd
            ln.weight[d] = ln.weight[d] / sd[d]
            ln.bias[d] = (ln.bias[d] - mu[d]) / sd[d]
        ln.weight.mul_(KNOBS["logit_scale"])
        ln.bias.mul_(KNOBS["logit_scale"])


def model_seed(name):
    # WHISPER_REF_SEEDS="tiny-multi=1,tiny-en=2" overrides (used only while searching for robust seeds)
    for kv in filter(None, os.environ.get("WHISPER_REF_SEEDS", "").split(",")):
        k, v = kv.split("=")
        if k == name:
            return int(v)
    return SPECS[name]["seed"]


def build_whisper(name):
    spec = SPECS[name]
    seed = model_seed(name)
    torch.manual_seed(seed)
    model = Whisper(spec["dims"])
    shape_init(model, seed)
    calibrate_final_ln(model, seed)
    model.eval()
    # alignment heads: all heads of the last decoder layer (as a sparse mask, like the real checkpoints)
    dims = spec["dims"]
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    mask[dims.n_text_layer // 2:] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model


# ---------------------------------------------------------------------------
# Hugging Face conversion, configs, tokenizer, ONNX export
# ---------------------------------------------------------------------------
def tiktoken_path(multi):
    name = "multilingual.tiktoken" if multi else "gpt2.tiktoken"
    p = os.path.join(assets_dir(), name)
    if not os.path.exists(p):
        p = os.path.join(os.path.dirname(whisper.__file__), "assets", name)
    return p


def hf_config_and_generation(model: Whisper):
    from transformers import GenerationConfig, WhisperConfig
    dims = model.dims
    tok = tokenizer_for(dims)
    multi = model.is_multilingual
    suppress = sorted(tok.non_speech_tokens)
    heads = model.alignment_heads.to_dense().nonzero().tolist()  # [[layer, head], ...]
    cfg = WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_text_state,
        encoder_layers=dims.n_audio_layer, encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        eos_token_id=tok.eot, bos_token_id=tok.eot, pad_token_id=tok.eot,
        decoder_start_token_id=tok.sot, begin_suppress_tokens=[220, tok.eot], suppress_tokens=suppress,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        use_cache=True, torch_dtype="float32",
    )
    gen = dict(
        alignment_heads=heads,
        begin_suppress_tokens=[220, tok.eot],
        bos_token_id=tok.eot, eos_token_id=tok.eot, pad_token_id=tok.eot,
        decoder_start_token_id=tok.sot,
        is_multilingual=multi,
        max_initial_timestamp_index=50,
        max_length=dims.n_text_ctx,
        no_timestamps_token_id=tok.no_timestamps,
        prev_sot_token_id=tok.sot_prev,
        return_timestamps=False,
        suppress_tokens=suppress,
    )
    if multi:
        langs = list(LANGUAGES)[: model.num_languages]
        gen["lang_to_id"] = {f"<|{l}|>": tok.special_tokens[f"<|{l}|>"] for l in langs}
        gen["task_to_id"] = {"transcribe": tok.transcribe, "translate": tok.translate}
        gen["forced_decoder_ids"] = [[1, None], [2, tok.transcribe]]
    else:
        gen["forced_decoder_ids"] = [[1, tok.no_timestamps]]
    return cfg, GenerationConfig(**gen)


_BPE_CACHE = {}


def write_tokenizer(model: Whisper, out_dir):
    from transformers import WhisperTokenizer
    import transformers.models.whisper.convert_openai_to_hf as conv
    from tiktoken.load import load_tiktoken_bpe
    conv.load_tiktoken_bpe = load_tiktoken_bpe  # the module only imports it under __main__
    convert_tiktoken_bpe_to_hf = conv.convert_tiktoken_bpe_to_hf
    multi = model.is_multilingual
    path = tiktoken_path(multi)
    if path not in _BPE_CACHE:
        _BPE_CACHE[path] = convert_tiktoken_bpe_to_hf(path)  # vocab: bytes_to_unicode(token) -> rank; merges in rank order
    vocab, merges = _BPE_CACHE[path]
    with tempfile.TemporaryDirectory() as td:
        vf, mf = os.path.join(td, "vocab.json"), os.path.join(td, "merges.txt")
        with open(vf, "w", encoding="utf-8") as f:
            f.write(json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        with open(mf, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for m in merges:
                f.write(m + "\n")
        hf = WhisperTokenizer(vf, mf, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                              eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                              model_max_length=model.dims.n_text_ctx)
    langs = [f"<|{k}|>" for k in list(LANGUAGES)[: model.num_languages]]
    control = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    hf.add_tokens(["<|endoftext|>", "<|startoftranscript|>"] + langs + control, special_tokens=True)
    hf.add_tokens([("<|%.2f|>" % (i * 0.02)) for i in range(1501)], special_tokens=False)
    hf.save_pretrained(out_dir)
    for extra in ("normalizer.json",):  # keep only the files the Go side reads
        p = os.path.join(out_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    # check ids + encoding against openai-whisper's tiktoken tokenizer
    tok = tokenizer_for(model.dims)
    hf2 = WhisperTokenizer.from_pretrained(out_dir)
    assert len(hf2) == model.dims.n_vocab, (len(hf2), model.dims.n_vocab)
    for name, tid in tok.special_tokens.items():
        if tid < model.dims.n_vocab:
            assert hf2.convert_tokens_to_ids(name) == tid, (name, tid, hf2.convert_tokens_to_ids(name))
    assert hf2.convert_tokens_to_ids("<|30.00|>") == tok.timestamp_begin + 1500
    for s in [" And so my fellow Americans, ask not what your country can do for you", " Grüße, 你好 — ça va? 123"]:
        a = tok.encode(s)
        b = hf2.encode(s, add_special_tokens=False)
        assert a == b, (s, a, b)
        assert hf2.decode(b) == s


def to_hf(model: Whisper):
    from transformers import WhisperForConditionalGeneration
    from transformers.models.whisper.convert_openai_to_hf import make_linear_from_emb, rename_keys
    import contextlib, io
    cfg, gen = hf_config_and_generation(model)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with contextlib.redirect_stdout(io.StringIO()):
        rename_keys(sd)
    hf = WhisperForConditionalGeneration(cfg)
    missing, unexpected = hf.model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_positions.weights", "decoder.embed_positions.weights"}, (missing, unexpected)
    hf.proj_out = make_linear_from_emb(hf.model.decoder.embed_tokens)
    hf.generation_config = gen
    hf.eval()
    return hf


def dedup_tied_embedding(path):
    """torch.onnx constant-folds proj_out (tied to embed_tokens) into a second, transposed [D, V] initializer.
    Replace it by a Transpose node of the embedding (halves the decoder files).  Works for plain and merged
    (If-node) decoders: the Transpose lives in the top graph, subgraphs see it as an outer-scope value."""
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(path)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    emb_name = next(n for n in inits if "embed_tokens.weight" in n)
    emb = numpy_helper.to_array(inits[emb_name])
    V, Dm = emb.shape
    for name, init in list(inits.items()):
        if list(init.dims) == [Dm, V]:
            arr = numpy_helper.to_array(init)
            assert np.array_equal(arr, emb.T), name
            g.initializer.remove(init)
            g.node.insert(0, helper.make_node("Transpose", [emb_name], [name], perm=[1, 0], name="tied_proj_out_transpose"))
    onnx.checker.check_model(m)
    onnx.save(m, path)


def export_model(name):
    from transformers import WhisperFeatureExtractor
    from optimum.exporters.onnx import main_export
    model = build_whisper(name)
    out = os.path.join(TESTDATA, name)
    hf_dir = os.path.join(WORK, name + "-hf")
    onnx_dir = os.path.join(WORK, name + "-onnx")
    for d in (hf_dir, onnx_dir):
        shutil.rmtree(d, ignore_errors=True)
    hf = to_hf(model)
    hf.save_pretrained(hf_dir)
    write_tokenizer(model, hf_dir)
    WhisperFeatureExtractor(feature_size=model.dims.n_mels).save_pretrained(hf_dir)
    main_export(hf_dir, output=onnx_dir, task="automatic-speech-recognition-with-past", device="cpu",
                do_validation=False, library_name="transformers")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    keep = ["encoder_model.onnx", "decoder_model_merged.onnx", "config.json", "generation_config.json",
            "preprocessor_config.json", "vocab.json", "merges.txt", "added_tokens.json",
            "special_tokens_map.json", "tokenizer_config.json"]
    if SPECS[name]["keep_unmerged"]:
        keep += ["decoder_model.onnx", "decoder_with_past_model.onnx"]
    for f in keep:
        src = os.path.join(onnx_dir, f)
        if not os.path.exists(src):
            src = os.path.join(hf_dir, f)
        shutil.copy(src, os.path.join(out, f))
        if f.startswith("decoder"):
            dedup_tied_embedding(os.path.join(out, f))
    print("exported", name, "->", out, "files:", sorted(os.listdir(onnx_dir)))
    return model, hf


def verify_onnx(name, model: Whisper, hf, steps=4):
    """ONNX Runtime (exported files) vs PyTorch (openai-whisper model) logits, greedy path over a few steps."""
    import onnxruntime as ort
    out = os.path.join(TESTDATA, name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    enc = ort.InferenceSession(os.path.join(out, "encoder_model.onnx"), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(out, "decoder_model_merged.onnx"), so, providers=["CPUExecutionProvider"])
    tok = tokenizer_for(model.dims)
    g = torch.Generator().manual_seed(7)
    audio = (torch.randn(whisper.audio.N_SAMPLES, generator=g) * 0.1).numpy()
    mel = whisper.log_mel_spectrogram(audio, model.dims.n_mels)[None]
    with torch.no_grad():
        feats_pt = model.encoder(mel)
    feats = enc.run(None, {"input_features": mel.numpy()})[0]
    worst = float(np.abs(feats - feats_pt.numpy()).max())
    L, H, hd = model.dims.n_text_layer, model.dims.n_text_head, model.dims.n_text_state // model.dims.n_text_head
    seq = list(tok.sot_sequence_including_notimestamps if False else tok.sot_sequence)
    past = {}
    for l in range(L):
        for kind in ("decoder", "encoder"):
            for kv in ("key", "value"):
                past[f"past_key_values.{l}.{kind}.{kv}"] = np.zeros((1, H, 0, hd), np.float32)
    ids = np.array([seq], np.int64)
    res = []
    in_names = {i.name for i in dec.get_inputs()}
    for step in range(steps):
        feeds = {"input_ids": ids, "encoder_hidden_states": feats, "use_cache_branch": np.array([step > 0])}
        feeds.update(past)
        if "cache_position" in in_names:
            start = len(seq) - ids.shape[1]
            feeds["cache_position"] = np.arange(start, len(seq), dtype=np.int64)
        outs = dec.run(None, feeds)
        names = [o.name for o in dec.get_outputs()]
        logits = outs[0][0, -1]
        with torch.no_grad():
            pt = model.logits(torch.tensor([seq]), feats_pt)[0, -1].numpy()
        d = float(np.abs(logits - pt).max())
        maxlog = max(locals().get("maxlog", 0.0), float(np.abs(pt).max()))
        worst = max(worst, d)
        res.append(d)
        nxt = int(pt.argmax())
        for n, v in zip(names[1:], outs[1:]):
            pn = n.replace("present", "past_key_values")
            if step > 0 and ".encoder." in n:
                continue  # merged decoder: keep the encoder KV from the first step
            past[pn] = v
        seq.append(nxt)
        ids = np.array([[nxt]], np.int64)
    print(f"verify {name}: max |onnx-torch| encoder+logits = {worst:.3g}, per step {['%.2g' % r for r in res]}, "
          f"max |logit| {maxlog:.1f}")
    # float error scales with the logits: 1e-4 at logit_scale 1 (checked before scaling) -> 1e-4 * logit_scale here
    assert worst < 1e-4 * KNOBS["logit_scale"], worst
    return worst


def io_signature(path):
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return {"inputs": [[i.name, i.type, i.shape] for i in s.get_inputs()],
            "outputs": [[o.name, o.type, o.shape] for o in s.get_outputs()]}


def stage_models():
    os.makedirs(WORK, exist_ok=True)
    info = {}
    for name in SPECS:
        model, hf = export_model(name)
        info[name] = {"max_abs_diff": verify_onnx(name, model, hf, steps=8)}
        out = os.path.join(TESTDATA, name)
        for f in sorted(os.listdir(out)):
            if f.endswith(".onnx"):
                info[name][f] = io_signature(os.path.join(out, f))
    with open(os.path.join(WORK, "onnx_io.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


# ---------------------------------------------------------------------------
# Reference vectors
# ---------------------------------------------------------------------------
LIBRIVOX = ["sense_and_sensibility_01_austen_64kb-%s.wav" % c for c in ("0870", "0880", "0890", "0920", "0930")]
LONG_ORDER = ["jfk.wav"] + ["librivox/" + f for f in LIBRIVOX]
LONG_GAP = 8000  # zeros (0.5 s) after every clip
LONG_REPEAT = 2
TRANSCRIBE_THRESHOLDS = dict(compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6)


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def load_wav(rel):
    """16 kHz mono s16 WAV -> float32 int16/32768.0 (exactly what the Go side does)."""
    import soundfile as sf
    p = os.path.join(assets_dir(), rel)
    x, sr = sf.read(p, dtype="int16", always_2d=False)
    assert sr == 16000 and x.ndim == 1, (p, sr, x.shape)
    return (x.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def input_info(rel):
    p = os.path.join(assets_dir(), rel)
    return {"file": "whisper/" + rel, "sha256": sha256_file(p), "samples": int(len(load_wav(rel)))}


def long_recipe():
    parts = []
    for _ in range(LONG_REPEAT):
        for rel in LONG_ORDER:
            parts.append({"file": "whisper/" + rel})
            parts.append({"zeros": LONG_GAP})
    return parts


def build_long():
    chunks = []
    for p in long_recipe():
        if "zeros" in p:
            chunks.append(np.zeros(p["zeros"], np.float32))
        else:
            chunks.append(load_wav(p["file"][len("whisper/"):]))
    return np.concatenate(chunks).astype(np.float32)


def write_f32(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(REF, name), "wb") as f:
        f.write(arr.tobytes())
    return {"file": name, "shape": list(arr.shape), "dtype": "float32-le", "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}


def dump_json(name, obj):
    with open(os.path.join(REF, name), "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---- robustness instrumentation -------------------------------------------------------------
class Gaps:
    """Collects decision margins along every T=0 reference decode path."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.greedy = float("inf")      # chosen vs runner-up logit (after all logit filters)
        self.ts_rule = float("inf")     # |logsumexp(timestamp logprobs) - max text logprob| (timestamp rule)
        self.beam = float("inf")        # adjacent unique candidate scores (beam search)
        self.rank = float("inf")        # best vs second final sequence score (beam search ranking)
        self.lang = float("inf")        # language detection top1 vs top2 logit
        self.active = True

    def summary(self):
        return {k: (None if v == float("inf") else v) for k, v in
                dict(greedy_logit_gap=self.greedy, timestamp_rule_margin=self.ts_rule, beam_score_gap=self.beam,
                     beam_rank_gap=self.rank, language_logit_gap=self.lang).items()}


GAPS = Gaps()
_T0 = {"on": True}


def _patched_ts_apply(self, logits, tokens):
    # verbatim copy of whisper.decoding.ApplyTimestampRules.apply (20240930) + margin recording
    if self.tokenizer.no_timestamps is not None:
        logits[:, self.tokenizer.no_timestamps] = -np.inf
    for k in range(tokens.shape[0]):
        sampled_tokens = tokens[k, self.sample_begin:]
        seq = [t for t in sampled_tokens.tolist()]
        last_was_timestamp = len(seq) >= 1 and seq[-1] >= self.tokenizer.timestamp_begin
        penultimate_was_timestamp = len(seq) < 2 or seq[-2] >= self.tokenizer.timestamp_begin
        if last_was_timestamp:
            if penultimate_was_timestamp:
                logits[k, self.tokenizer.timestamp_begin:] = -np.inf
            else:
                logits[k, : self.tokenizer.eot] = -np.inf
        timestamps = sampled_tokens[sampled_tokens.ge(self.tokenizer.timestamp_begin)]
        if timestamps.numel() > 0:
            if last_was_timestamp and not penultimate_was_timestamp:
                timestamp_last = timestamps[-1]
            else:
                timestamp_last = timestamps[-1] + 1
            logits[k, self.tokenizer.timestamp_begin: timestamp_last] = -np.inf
    if tokens.shape[1] == self.sample_begin:
        logits[:, : self.tokenizer.timestamp_begin] = -np.inf
        if self.max_initial_timestamp_index is not None:
            last_allowed = self.tokenizer.timestamp_begin + self.max_initial_timestamp_index
            logits[:, last_allowed + 1:] = -np.inf
    logprobs = F.log_softmax(logits.float(), dim=-1)
    for k in range(tokens.shape[0]):
        timestamp_logprob = logprobs[k, self.tokenizer.timestamp_begin:].logsumexp(dim=-1)
        max_text_token_logprob = logprobs[k, : self.tokenizer.timestamp_begin].max()
        if _T0["on"] and tokens[k, -1] != self.tokenizer.eot and torch.isfinite(timestamp_logprob) \
                and torch.isfinite(max_text_token_logprob):
            GAPS.ts_rule = min(GAPS.ts_rule, abs(float(timestamp_logprob - max_text_token_logprob)))
        if timestamp_logprob > max_text_token_logprob:
            logits[k, : self.tokenizer.timestamp_begin] = -np.inf


class GapRecorder(wdec.LogitFilter):
    def __init__(self, eot):
        self.eot = eot

    def apply(self, logits, tokens):
        if not _T0["on"]:
            return
        for k in range(logits.shape[0]):
            if tokens[k, -1] == self.eot:
                continue
            row = logits[k]
            fin = row[torch.isfinite(row)]
            if fin.numel() >= 2:
                top = torch.topk(fin, 2).values
                GAPS.greedy = min(GAPS.greedy, float(top[0] - top[1]))


_orig_task_init = wdec.DecodingTask.__init__
_orig_beam_update = wdec.BeamSearchDecoder.update
_orig_rank = wdec.MaximumLikelihoodRanker.rank


def _task_init(self, model, options):
    _orig_task_init(self, model, options)
    _T0["on"] = options.temperature == 0
    if options.beam_size is None:  # for beam search the per-row logit gap is not the decision; see _beam_update
        self.logit_filters.append(GapRecorder(self.tokenizer.eot))


def _beam_update(self, tokens, logits, sum_logprobs):
    if _T0["on"]:
        logprobs = F.log_softmax(logits.float(), dim=-1)
        n_audio = tokens.shape[0] // self.beam_size
        for i in range(n_audio):
            scores = {}
            for j in range(self.beam_size):
                idx = i * self.beam_size + j
                fs = self.finished_sequences or []
                if len(fs) > i and len(fs[i]) >= self.max_candidates:
                    continue
                prefix = tokens[idx].tolist()
                lp, tk = logprobs[idx].topk(self.beam_size + 1)
                for l, t in zip(lp.tolist(), tk.tolist()):
                    scores[tuple(prefix + [t])] = float(sum_logprobs[idx]) + l
            # decisive comparisons of whisper's update(): walk candidates by score until beam_size non-EOT ones
            # are kept; the kept/not-kept boundary must be robust, and so must the order among EOT candidates
            # that are collected on the way (they compete for max_candidates finished slots)
            order = sorted(scores.items(), key=lambda kv: -kv[1])
            kept = 0
            for n, (seq, sc) in enumerate(order):
                if seq[-1] != self.eot:
                    kept += 1
                elif n + 1 < len(order):
                    GAPS.beam = min(GAPS.beam, sc - order[n + 1][1])
                if kept == self.beam_size:
                    if n + 1 < len(order):
                        GAPS.beam = min(GAPS.beam, sc - order[n + 1][1])
                    break
    return _orig_beam_update(self, tokens, logits, sum_logprobs)


def _rank(self, tokens, sum_logprobs):
    out = _orig_rank(self, tokens, sum_logprobs)
    if _T0["on"]:
        for t, lp in zip(tokens, sum_logprobs):
            lengths = [len(s) for s in t]
            if self.length_penalty is None:
                sc = [l / n for l, n in zip(lp, lengths)]
            else:
                sc = [l / (((5 + n) / 6) ** self.length_penalty) for l, n in zip(lp, lengths)]
            sc = sorted(sc, reverse=True)
            if len(sc) >= 2:
                GAPS.rank = min(GAPS.rank, sc[0] - sc[1])
    return out


def install_hooks():
    wdec.ApplyTimestampRules.apply = _patched_ts_apply
    wdec.DecodingTask.__init__ = _task_init
    wdec.BeamSearchDecoder.update = _beam_update
    wdec.MaximumLikelihoodRanker.rank = _rank


# ---- transcribe with per-window recording ------------------------------------------------------
def result_dict(r):
    return {"language": r.language, "tokens": [int(t) for t in r.tokens], "text": r.text,
            "avg_logprob": r.avg_logprob, "sum_logprob": r.sum_logprob if hasattr(r, "sum_logprob") else None,
            "no_speech_prob": r.no_speech_prob, "compression_ratio": r.compression_ratio,
            "temperature": r.temperature}


def fallback_flags(r, th):
    cr = th["compression_ratio_threshold"] is not None and r.compression_ratio > th["compression_ratio_threshold"]
    lp = th["logprob_threshold"] is not None and r.avg_logprob < th["logprob_threshold"]
    ns = th["no_speech_threshold"] is not None and r.no_speech_prob > th["no_speech_threshold"]
    return {"fails_compression_ratio": bool(cr), "fails_logprob": bool(lp), "no_speech_override": bool(ns),
            "needs_fallback": bool((cr or lp) and not ns)}


def run_transcribe(model, audio, **kw):
    """whisper.transcribe + per-window records (all decode calls, T=0 result, fallback + no-speech decisions)."""
    tmod = sys.modules["whisper.transcribe"]
    th = dict(TRANSCRIBE_THRESHOLDS)
    th.update({k: kw[k] for k in th if k in kw})
    calls = []
    last_seg = {}
    orig_pot = tmod.pad_or_trim
    orig_decode = Whisper.decode

    def pot_hook(array, *a, **k):
        # transcribe slices mel[:, seek:seek+segment_size] (a view) and pads it: the view's storage offset is seek
        if torch.is_tensor(array) and array.dim() == 2:
            last_seg["seek"] = int(array.storage_offset())
            last_seg["frames"] = int(array.shape[1])
        return orig_pot(array, *a, **k)

    def decode_hook(self, mel, options):
        res = orig_decode(self, mel, options)
        calls.append((dict(last_seg), options, res))
        return res

    tmod.pad_or_trim = pot_hook
    Whisper.decode = decode_hook
    GAPS.reset()
    try:
        out = whisper.transcribe(model, audio, verbose=None, fp16=False, **kw)
    finally:
        tmod.pad_or_trim = orig_pot
        Whisper.decode = orig_decode
    windows = []
    for seg, opts, res in calls:
        if opts.temperature == 0 or not windows or windows[-1]["decodes"][-1]["temperature"] >= opts.temperature:
            windows.append({"seek": seg["seek"], "segment_frames": seg["frames"],
                            "prompt": [int(t) for t in (opts.prompt or [])], "decodes": []})
        d = result_dict(res)
        d.update(fallback_flags(res, th))
        windows[-1]["decodes"].append(d)
    for w in windows:
        final = w["decodes"][-1]
        w["t0"] = w["decodes"][0]
        w["t0_would_fall_back"] = w["decodes"][0]["needs_fallback"]
        w["final_temperature"] = final["temperature"]
        skip = th["no_speech_threshold"] is not None and final["no_speech_prob"] > th["no_speech_threshold"]
        if th["logprob_threshold"] is not None and final["avg_logprob"] > th["logprob_threshold"]:
            skip = False
        w["skipped_as_no_speech"] = bool(skip)
    segs = [{k: s[k] for k in ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                               "compression_ratio", "no_speech_prob")} for s in out["segments"]]
    return {"result": {"text": out["text"], "language": out["language"], "segments": segs},
            "windows": windows, "min_gaps": GAPS.summary()}


def options_json(kw):
    o = dict(kw)
    if "temperature" in o:
        o["temperature"] = list(o["temperature"]) if isinstance(o["temperature"], (tuple, list)) else o["temperature"]
    return o


def stage_refs():
    install_hooks()
    os.makedirs(REF, exist_ok=True)
    for f in os.listdir(REF):
        os.remove(os.path.join(REF, f))
    torch.manual_seed(0)
    models = {n: build_whisper(n) for n in SPECS}
    multi, en = models["tiny-multi"], models["tiny-en"]
    summary = {"versions": versions(), "models": {}, "min_gaps": {}}
    for n in SPECS:
        d = os.path.join(TESTDATA, n)
        summary["models"][n] = {f: sha256_file(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".onnx")}
    gaps_all = {}

    # (a) log-mel --------------------------------------------------------------------------------------------
    mels = []
    for rel, n_mels in (("jfk.wav", 80), ("jfk.wav", 128), ("librivox/" + LIBRIVOX[0], 80)):
        audio = load_wav(rel)
        m = whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels, padding=whisper.audio.N_SAMPLES).numpy()
        keep = len(audio) // whisper.audio.HOP_LENGTH + 100
        tag = "%s_%d" % (os.path.splitext(os.path.basename(rel))[0].split("-")[-1], n_mels)
        mels.append({"name": tag, "input": input_info(rel), "n_mels": n_mels,
                     "call": "whisper.log_mel_spectrogram(audio, n_mels=%d, padding=480000)" % n_mels,
                     "total_frames": int(m.shape[1]), "stored_frames": [0, keep],
                     "note": "stored = mel[:, 0:%d] (row-major [n_mels, frames]); total_frames = (len(audio)+480000)//160" % keep,
                     "data": write_f32("mel_%s.f32" % tag, m[:, :keep])})
    dump_json("log_mel.json", {"items": mels})

    # (b) long audio -------------------------------------------------------------------------------------------
    long = build_long()
    recipe = long_recipe()
    files = {p["file"]: input_info(p["file"][len("whisper/"):]) for p in recipe if "file" in p}
    long_info = {"recipe": recipe, "inputs": files, "samples": int(len(long)),
                 "seconds": len(long) / 16000.0, "float32_sha256": hashlib.sha256(long.astype("<f4").tobytes()).hexdigest(),
                 "note": "concatenate in order: each file loaded as int16/32768.0 float32, {zeros: n} = n float32 zeros"}
    cases = [
        ("multi_greedy_auto", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language=None)),
        ("multi_greedy_en", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language="en")),
        ("multi_beam5_en", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language="en", beam_size=5)),
        ("multi_translate_auto", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language=None, task="translate")),
        ("multi_initial_prompt_en", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language="en",
                                                       initial_prompt="The quick brown fox jumps over the lazy dog.")),
        ("multi_without_timestamps_en", "tiny-multi", dict(temperature=(0.0,), condition_on_previous_text=True, language="en",
                                                           without_timestamps=True)),
        ("en_greedy", "tiny-en", dict(temperature=(0.0,), condition_on_previous_text=True)),
        # the openai-whisper CLI defaults: beam 5 at T=0, best_of 5 when sampling at T>0
        ("multi_default_schedule_beam5_en", "tiny-multi", dict(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                                                               condition_on_previous_text=True, language="en",
                                                               beam_size=5, best_of=5)),
        ("en_default_schedule", "tiny-en", dict(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), condition_on_previous_text=True)),
    ]
    out_cases = []
    for name, mname, kw in cases:
        torch.manual_seed(0)
        r = run_transcribe(models[mname], long, **kw)
        rec = {"name": name, "model": mname, "options": options_json(kw), "thresholds": TRANSCRIBE_THRESHOLDS,
               "call": "whisper.transcribe(model, audio, verbose=None, fp16=False, **options)", **r}
        if name.startswith("multi_default_schedule"):
            rec["note"] = ("temperature > 0 uses torch sampling (not reproducible outside torch): compare only the "
                           "T=0 decodes and WHERE fallback triggers, up to and including the first window that fell back.")
        else:
            gaps_all[name] = r["min_gaps"]
        out_cases.append(rec)
        nfb = sum(w["t0_would_fall_back"] for w in r["windows"])
        print(f"  {name}: {len(r['result']['segments'])} segments, {len(r['windows'])} windows, "
              f"{nfb} would fall back, lang={r['result']['language']}, gaps={r['min_gaps']}")
    dump_json("transcribe_long.json", {"audio": long_info, "cases": out_cases})

    # (c) language detection -------------------------------------------------------------------------------------
    items = []
    GAPS.reset()
    tok = tokenizer_for(multi.dims)
    for rel in ["jfk.wav", "librivox/" + LIBRIVOX[0], "librivox/" + LIBRIVOX[1], "librivox/" + LIBRIVOX[3]]:
        audio = load_wav(rel)
        mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), 80, padding=whisper.audio.N_SAMPLES)
        seg = whisper.pad_or_trim(mel, whisper.audio.N_FRAMES)
        _, probs = multi.detect_language(seg)
        with torch.no_grad():
            logits = multi.logits(torch.tensor([[tok.sot]]), multi.embed_audio(seg[None]))[0, 0]
        lang_ids = list(tok.all_language_tokens)
        ll = logits[lang_ids]
        top2 = torch.topk(ll, 2).values
        GAPS.lang = min(GAPS.lang, float(top2[0] - top2[1]))
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:5]
        items.append({"input": input_info(rel),
                      "mel": "pad_or_trim(log_mel_spectrogram(audio, 80, padding=480000), 3000)  (= transcribe's first window)",
                      "language": top[0][0], "top5": [[k, v] for k, v in top],
                      "language_logits": {tok.decode([t]).strip("<|>"): float(x) for t, x in zip(lang_ids, ll.tolist())}})
        print("  detect", rel, top[:3])
    gaps_all["detect_language"] = GAPS.summary()
    dump_json("detect_language.json", {"model": "tiny-multi", "call": "model.detect_language(mel)", "items": items,
                                       "min_gaps": GAPS.summary()})

    # (d) batched decode -----------------------------------------------------------------------------------------
    batch_files = ["jfk.wav", "librivox/" + LIBRIVOX[0], "librivox/" + LIBRIVOX[2]]
    mel_b = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(load_wav(f))), 80) for f in batch_files])
    dec_cases = []
    for name, kw in (("greedy", dict(language="en", temperature=0.0, without_timestamps=False)),
                     ("beam5", dict(language="en", temperature=0.0, without_timestamps=False, beam_size=5))):
        GAPS.reset()
        if kw.get("beam_size"):
            # openai-whisper 20240930 cannot beam-search a batch > 1 (audio_features are not repeated per beam:
            # "size of tensor a (15) must match ... (3)"), so each window is decoded on its own (batch of 1).
            res = [whisper.decode(multi, mel_b[i:i + 1], whisper.DecodingOptions(fp16=False, **kw))[0]
                   for i in range(mel_b.shape[0])]
        else:
            res = whisper.decode(multi, mel_b, whisper.DecodingOptions(fp16=False, **kw))
        gaps_all["decode_batch_" + name] = GAPS.summary()
        dec_cases.append({"name": name, "options": dict(kw, fp16=False), "results": [result_dict(r) for r in res],
                          "min_gaps": GAPS.summary()})
        print("  batch", name, [len(r.tokens) for r in res], GAPS.summary())
    dump_json("decode_batch.json", {"model": "tiny-multi", "inputs": [input_info(f) for f in batch_files],
                                    "mel": "log_mel_spectrogram(pad_or_trim(audio), 80)  (audio zero-padded/trimmed to 480000 samples first; 3000 frames)",
                                    "call": "whisper.decode(model, mel_batch, DecodingOptions(fp16=False, **options))",
                                    "cases": dec_cases})

    # (e) short clips --------------------------------------------------------------------------------------------
    clips = []
    for f in LIBRIVOX:
        kw = dict(temperature=(0.0,), condition_on_previous_text=True, language=None)
        r = run_transcribe(multi, load_wav("librivox/" + f), **kw)
        gaps_all["short_" + f[-8:-4]] = r["min_gaps"]
        clips.append({"input": input_info("librivox/" + f), "model": "tiny-multi", "options": options_json(kw),
                      "thresholds": TRANSCRIBE_THRESHOLDS, **r})
        print("  short", f[-8:], r["result"]["language"], len(r["result"]["segments"]), r["min_gaps"])
    dump_json("transcribe_short.json", {"call": "whisper.transcribe(model, audio, verbose=None, fp16=False, **options)",
                                        "cases": clips})

    # (f) first decoder step logits --------------------------------------------------------------------------------
    sot = []
    for mname, m in models.items():
        t = tokenizer_for(m.dims)
        audio = load_wav("jfk.wav")
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), m.dims.n_mels)
        seq = list(t.sot_sequence)
        with torch.no_grad():
            feats = m.embed_audio(mel[None])
            lg = m.logits(torch.tensor([seq]), feats)[0]
        sot.append({"model": mname, "input": input_info("jfk.wav"),
                    "mel": "log_mel_spectrogram(pad_or_trim(audio), n_mels)", "input_ids": seq,
                    "encoder_out_first8": feats[0, 0, :8].tolist(),
                    "positions": [{"pos": i, "logits_first10": lg[i, :10].tolist(), "argmax": int(lg[i].argmax()),
                                   "max": float(lg[i].max())} for i in range(len(seq))]})
    dump_json("sot_logits.json", {"note": "raw decoder logits (no logit filters) for input_ids = SOT sequence "
                                          "(multi: sot, <|en|>, <|transcribe|>; en: sot)", "items": sot})

    summary["min_gaps"] = gaps_all
    keys = ["greedy_logit_gap", "timestamp_rule_margin", "beam_score_gap", "beam_rank_gap", "language_logit_gap"]
    summary["overall_min"] = {k: min([g[k] for g in gaps_all.values() if g.get(k) is not None], default=None) for k in keys}
    dump_json("summary.json", summary)
    print("overall min gaps:", summary["overall_min"])
    return summary


def versions():
    import importlib.metadata as md
    return {p: md.version(p) for p in ("torch", "transformers", "optimum", "onnx", "onnxruntime", "openai-whisper",
                                       "numpy", "tiktoken", "soundfile")}


# ---------------------------------------------------------------------------
# End-to-end robustness check: rerun reference cases with ONNX Runtime doing the model math
# ---------------------------------------------------------------------------
class _OrtEncoder(torch.nn.Module):
    def __init__(self, sess):
        super().__init__()
        self.sess = sess

    def forward(self, mel):
        return torch.from_numpy(self.sess.run(None, {"input_features": mel.float().numpy()})[0])


def _ort_inference_class(dec, dims):
    L, H, hd = dims.n_text_layer, dims.n_text_head, dims.n_text_state // dims.n_text_head
    out_names = [o.name for o in dec.get_outputs()]

    class OrtInference(wdec.Inference):
        def __init__(self, model, initial_token_length):
            self.past = None
            self.n = 0

        def logits(self, tokens, audio_features):
            B = tokens.shape[0]
            af = audio_features.numpy()
            if af.shape[0] != B:  # whisper broadcasts one audio over n beams; ONNX needs the batch spelled out
                af = np.repeat(af, B // af.shape[0], axis=0)
            feeds = {"encoder_hidden_states": af}
            if self.past is None:
                ids = tokens.numpy()
                feeds["use_cache_branch"] = np.array([False])
                for l in range(L):
                    for kind in ("decoder", "encoder"):
                        for kv in ("key", "value"):
                            feeds[f"past_key_values.{l}.{kind}.{kv}"] = np.zeros((B, H, 0, hd), np.float32)
                feeds["cache_position"] = np.arange(ids.shape[1], dtype=np.int64)
            else:
                ids = tokens[:, -1:].numpy()
                feeds["use_cache_branch"] = np.array([True])
                feeds.update(self.past)
                feeds["cache_position"] = np.array([self.n], np.int64)
            feeds["input_ids"] = ids.astype(np.int64)
            outs = dict(zip(out_names, dec.run(None, feeds)))
            new = {}
            for k, v in outs.items():
                if k == "logits":
                    continue
                pk = k.replace("present", "past_key_values")
                new[pk] = self.past[pk] if (self.past is not None and ".encoder." in k) else v
            self.past = new
            self.n = tokens.shape[1]
            return torch.from_numpy(outs["logits"])

        def rearrange_kv_cache(self, source_indices):
            if self.past is not None and list(source_indices) != list(range(len(source_indices))):
                self.past = {k: v[source_indices] for k, v in self.past.items()}

        def cleanup_caching(self):
            self.past = None

    return OrtInference


def stage_check_ort():
    """Re-run the long-audio and short-clip transcribe cases with ORT (encoder + merged decoder, KV cache) in place
    of PyTorch inside openai-whisper's decoder and compare all T=0 decodes with the stored references."""
    import onnxruntime as ort
    install_hooks()
    long = build_long()
    ref = json.load(open(os.path.join(REF, "transcribe_long.json")))
    short = json.load(open(os.path.join(REF, "transcribe_short.json")))
    models = {}
    orig_inf = wdec.PyTorchInference
    report = []
    for name in SPECS:
        m = build_whisper(name)
        d = os.path.join(TESTDATA, name)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        m.encoder = _OrtEncoder(ort.InferenceSession(os.path.join(d, "encoder_model.onnx"), so))
        models[name] = (m, _ort_inference_class(ort.InferenceSession(os.path.join(d, "decoder_model_merged.onnx"), so), m.dims))
    jobs = [(c["name"], c["model"], c["options"], long, c) for c in ref["cases"]]
    jobs += [("short_" + c["input"]["file"][-8:-4], c["model"], c["options"], load_wav(c["input"]["file"][len("whisper/"):]), c)
             for c in short["cases"]]
    ok_all = True
    for cname, mname, opts, audio, c in jobs:
        m, inf = models[mname]
        kw = dict(opts)
        if isinstance(kw.get("temperature"), list):
            kw["temperature"] = tuple(kw["temperature"])
        wdec.PyTorchInference = inf
        try:
            torch.manual_seed(0)
            r = run_transcribe(m, audio, **kw)
        finally:
            wdec.PyTorchInference = orig_inf
        n = 0
        ok = True
        for wa, wb in zip(r["windows"], c["windows"]):
            ta, tb = wa["t0"], wb["t0"]
            if ta["tokens"] != tb["tokens"] or wa["seek"] != wb["seek"]:
                ok = False
                break
            n += 1
            if wb["final_temperature"] != 0.0:
                break  # after a sampled fallback, nothing is comparable
        ok_all &= ok
        report.append((cname, ok, n))
        print(f"  ORT check {cname}: {'OK' if ok else 'MISMATCH'} ({n} windows compared)")
    print("ORT end-to-end:", "all OK" if ok_all else "MISMATCHES")
    return ok_all


# Stored gzipped (gzip -n: byte for byte reproducible); the Go tests read
# name.gz as name. tiny-multi stays as written: servers and clients import it
# as a folder (weights import -dir).
GZIP_MODEL_FILES = {"tiny-en": ["vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json",
                                "decoder_model_merged.onnx", "encoder_model.onnx"]}


def stage_gzip():
    """The last stage: every reference file and tiny-en's large files gzipped (check reads them plain)."""
    paths = [os.path.join(REF, f) for f in sorted(os.listdir(REF)) if not f.endswith(".gz")]
    for name, files in GZIP_MODEL_FILES.items():
        paths += [p for p in (os.path.join(TESTDATA, name, f) for f in files) if os.path.exists(p)]
    if paths:
        subprocess.check_call(["gzip", "-n", "-9", "-f"] + paths)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stages", nargs="*", default=["models", "refs", "check", "gzip"])
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "models" in a.stages:
        stage_models()
    if "refs" in a.stages:
        stage_refs()
    if "check" in a.stages:
        stage_check_ort()
    if "gzip" in a.stages:
        stage_gzip()


if __name__ == "__main__":
    main()
