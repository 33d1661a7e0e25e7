#!/usr/bin/env python3
"""Writes an HF DeepSeek-V3 / V2 checkpoint directory as a GGUF file, the way llama.cpp's
convert_hf_to_gguf.py writes the `deepseek2` architecture (checked against the copy that
llama-cpp-python 0.3.36 vendors: conversion/deepseek.py, DeepseekV2Model, and conversion/base.py).

    python -m venv /tmp/ggufenv && /tmp/ggufenv/bin/pip install gguf numpy
    /tmp/ggufenv/bin/python tools/make_gguf_model.py --model DIR --out FILE.gguf --type bf16|f16|f32|q8_0

What it follows from the converter (so that llama.cpp loads the file and fireflyer is tested on the
layout users download):
  - names: token_embd, output_norm, output, blk.N.{attn_norm, attn_q_a, attn_q_a_norm, attn_q_b |
    attn_q, attn_kv_a_mqa, attn_kv_a_norm, attn_k_b, attn_v_b, attn_output, ffn_norm, ffn_gate,
    ffn_up, ffn_down, ffn_gate_inp, exp_probs_b.bias, ffn_{gate,up,down}_exps, ffn_*_shexp};
  - kv_b_proj split per head into attn_k_b = W_UK(h)^T [H, kv_lora, nope] and attn_v_b = W_UV(h)
    [H, v, kv_lora]; the routed experts of a layer stacked into one 3-D tensor per projection;
  - types: 1-D tensors, *_norm.weight, ffn_gate_inp and exp_probs_b in F32, the rest in --type
    (q8_0 through gguf.quants.quantize, as the converter's --outtype q8_0);
  - metadata keys of DeepseekV2Model.set_gguf_parameters (head_count_kv 1, key_length kv_lora +
    rope, value_length kv_lora, key_length_mla / value_length_mla, yarn_log_multiplier
    0.1 * mscale_all_dim, ...), and the vocabulary as _set_vocab_gpt2 writes it (tokens with
    NORMAL / CONTROL / USER_DEFINED / UNUSED types, merges, bos / eos ids, add_bos_token,
    chat_template). The pre-tokenizer name is given by --pre (the converter detects it by hashing
    the tokenizer's output; the DeepSeek-V3 regex gives "deepseek-v3").
Deterministic: the same input gives the same bytes.
"""

import argparse
import json
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

TYPES = {"f32": (T.F32, gguf.LlamaFileType.ALL_F32), "f16": (T.F16, gguf.LlamaFileType.MOSTLY_F16),
         "bf16": (T.BF16, gguf.LlamaFileType.MOSTLY_BF16),
         "q8_0": (T.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}


def read_safetensors(path):
    """name -> float32 numpy array (F32, BF16 and F16 tensors)."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(raw, dtype="<f4")
            elif dt == "F16":
                a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit(f"{path}: tensor {name} has dtype {dt}; only F32/F16/BF16 are converted")
            out[name] = a.reshape(info["shape"]).copy()
    return out


def load_checkpoint(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) \
        else ["model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(d, f)))
    return tensors


def looks_special(tok):
    return (tok.startswith("<|") and tok.endswith("|>")) or (tok.startswith("<｜") and tok.endswith("｜>")) \
        or (tok.startswith("<") and tok.endswith(">") and len(tok) > 2)


def add_vocab(w, d, vocab_size, pre):
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    cfg_path = os.path.join(d, "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    if tj["model"]["type"] != "BPE":
        raise SystemExit("only byte-level BPE tokenizers are converted")
    reverse = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            a = added[i]
            tokens.append(a["content"])
            types.append(gguf.TokenType.CONTROL if a["special"] or looks_special(a["content"])
                         else gguf.TokenType.USER_DEFINED)
        elif i in reverse:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)

    def token_id(key):
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is None:
            return None
        for i, t in enumerate(tokens):
            if t == v:
                return i
        raise SystemExit(f"{cfg_path}: {key} {v!r} is not a token")
    if (b := token_id("bos_token")) is not None:
        w.add_bos_token_id(b)
    if (e := token_id("eos_token")) is not None:
        w.add_eos_token_id(e)
    if (p := token_id("pad_token")) is not None:
        w.add_pad_token_id(p)
    if "add_bos_token" in cfg:
        w.add_add_bos_token(bool(cfg["add_bos_token"]))
    if "add_eos_token" in cfg:
        w.add_add_eos_token(bool(cfg["add_eos_token"]))
    if isinstance(cfg.get("chat_template"), str):
        w.add_chat_template(cfg["chat_template"])


def add_params(w, c, file_type, legacy=False):
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(1)  # MLA as MQA over the latents
    rs = c.get("rope_scaling") or {}
    if rs.get("type", rs.get("rope_type")) == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
        if "beta_fast" in rs:
            w.add_rope_scaling_yarn_beta_fast(rs["beta_fast"])
        if "beta_slow" in rs:
            w.add_rope_scaling_yarn_beta_slow(rs["beta_slow"])
    w.add_rope_freq_base(c.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    if c.get("n_routed_experts") is not None:
        w.add_expert_count(c["n_routed_experts"])
    if c.get("num_experts_per_tok") is not None:
        w.add_expert_used_count(c["num_experts_per_tok"])
    if c.get("n_group") is not None:
        w.add_expert_group_count(c["n_group"])
    if c.get("topk_group") is not None:
        w.add_expert_group_used_count(c["topk_group"])
    sf = c.get("scoring_func")
    if sf is not None:
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if sf == "sigmoid"
                                 else gguf.ExpertGatingFuncType.SOFTMAX)
    w.add_file_type(file_type)
    has_moe = c.get("n_routed_experts") is not None
    w.add_leading_dense_block_count(c.get("first_k_dense_replace",
                                          0 if has_moe else c["num_hidden_layers"]))
    w.add_vocab_size(c["vocab_size"])
    if c.get("q_lora_rank") is not None:
        w.add_q_lora_rank(c["q_lora_rank"])
    r = c.get("kv_lora_rank", 512)
    w.add_kv_lora_rank(r)
    if legacy:  # converters before MLA absorption: per-head lengths, no *_mla keys
        w.add_key_length(c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
        w.add_value_length(c["v_head_dim"])
    else:
        w.add_key_length(r + c["qk_rope_head_dim"])
        w.add_value_length(r)
        w.add_key_length_mla(c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
        w.add_value_length_mla(c["v_head_dim"])
    w.add_expert_feed_forward_length(c.get("moe_intermediate_size", c["intermediate_size"]))
    w.add_expert_shared_count(c.get("n_shared_experts", 0))
    if c.get("routed_scaling_factor") is not None:
        w.add_expert_weights_scale(c["routed_scaling_factor"])
    if c.get("norm_topk_prob"):
        w.add_expert_weights_norm(True)
    w.add_rope_dimension_count(c["qk_rope_head_dim"])
    if rs.get("mscale_all_dim") is not None:
        w.add_rope_scaling_yarn_log_mul(0.1 * rs["mscale_all_dim"])


def tensors_in_gguf_order(c, t, legacy=False):
    """(gguf name, float32 array in HF / numpy order) in the converter's order of names."""
    H, nope, v = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
    yield "token_embd.weight", t["model.embed_tokens.weight"]
    for bid in range(c["num_hidden_layers"]):
        p = f"model.layers.{bid}."
        g = f"blk.{bid}."
        simple = {"input_layernorm.weight": "attn_norm.weight",
                  "self_attn.q_a_proj.weight": "attn_q_a.weight",
                  "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
                  "self_attn.q_b_proj.weight": "attn_q_b.weight",
                  "self_attn.q_proj.weight": "attn_q.weight",
                  "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
                  "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
                  "self_attn.o_proj.weight": "attn_output.weight",
                  "post_attention_layernorm.weight": "ffn_norm.weight",
                  "mlp.gate_proj.weight": "ffn_gate.weight",
                  "mlp.up_proj.weight": "ffn_up.weight",
                  "mlp.down_proj.weight": "ffn_down.weight",
                  "mlp.gate.weight": "ffn_gate_inp.weight",
                  "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
                  "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
                  "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
                  "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight"}
        for hf, gg in simple.items():
            if p + hf in t:
                yield g + gg, t[p + hf]
        kvb = t[p + "self_attn.kv_b_proj.weight"]
        if legacy:
            yield g + "attn_kv_b.weight", kvb
        else:
            kv = kvb.reshape(H, nope + v, kvb.shape[-1])
            yield g + "attn_k_b.weight", np.ascontiguousarray(kv[:, :nope, :].transpose(0, 2, 1))
            yield g + "attn_v_b.weight", np.ascontiguousarray(kv[:, nope:, :])
        if p + "mlp.experts.0.gate_proj.weight" in t:
            n = c["n_routed_experts"]
            for proj, gg in (("down_proj", "ffn_down_exps"), ("gate_proj", "ffn_gate_exps"),
                             ("up_proj", "ffn_up_exps")):
                yield g + gg + ".weight", np.stack(
                    [t[f"{p}mlp.experts.{e}.{proj}.weight"] for e in range(n)])
    yield "output_norm.weight", t["model.norm.weight"]
    if not c.get("tie_word_embeddings", False):
        yield "output.weight", t["lm_head.weight"]


def tensor_type(name, a, qtype):
    if a.ndim <= 1 or name.endswith("_norm.weight") or ".ffn_gate_inp." in name \
            or not name.endswith(".weight"):
        return T.F32
    if a.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
        return T.F16  # the converter's fallback when a row is not a multiple of the block
    return qtype


def write(model_dir, out, type_name, pre, legacy=False):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    qtype, ftype = TYPES[type_name]
    t = load_checkpoint(model_dir)
    w = gguf.GGUFWriter(out, "deepseek2")
    w.add_name(os.path.basename(os.path.normpath(model_dir)))
    add_params(w, c, ftype, legacy)
    add_vocab(w, model_dir, c["vocab_size"], pre)
    for name, a in tensors_in_gguf_order(c, t, legacy):
        ty = tensor_type(name, a, qtype)
        data = gguf.quants.quantize(a.astype(np.float32), ty)
        w.add_tensor(name, data, raw_dtype=ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF checkpoint directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", default="bf16", choices=sorted(TYPES))
    ap.add_argument("--pre", default="deepseek-v3", help="tokenizer.ggml.pre")
    ap.add_argument("--legacy", action="store_true",
                    help="the layout of converters before MLA absorption (2024 - mid 2025 files): "
                         "attn_kv_b unsplit, per-head key_length / value_length, no *_mla keys")
    a = ap.parse_args()
    write(a.model, a.out, a.type, a.pre, a.legacy)
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
