#!/usr/bin/env python3
"""Writes the seed inputs of the GGUF fuzzer (docs/model.md, "Fuzzing the GGUF reader").

    /tmp/ggufenv/bin/python tools/make_gguf_fuzz_seeds.py [--out tests/fixtures/gguf_fuzz/corpus]

(the venv of tools/make_gguf_fixtures.py: python -m venv /tmp/ggufenv &&
/tmp/ggufenv/bin/pip install gguf numpy). CI never runs it; its output is committed in the corpus
as seed-*.gguf next to the fuzzer's own finds (named by their SHA-1) and the reproducers of fixed
bugs (crash-*.gguf).

Valid files come from the gguf package's writer: the tiny fixture of make_gguf_fixtures.py, its
v2 twin, every metadata value type as a scalar and an array, one file per tensor type (each type
with a dequantizer, and a few without), no tensors, other alignments. Malformed files are byte
edits of the tiny fixture: truncations at many offsets, huge counts and lengths, bad alignment,
misaligned and overlapping tensors, unknown type ids, bad and overflowing dims.
"""

import argparse
import os
import struct
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

import make_gguf_fixtures
import make_gguf_model

SEED = 2027


def written(build):
    """Bytes of a GGUF file that build(writer) fills."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.gguf")
        w = gguf.GGUFWriter(path, "deepseek2")
        build(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(path, "rb") as f:
            return f.read()


def tiny():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny.gguf")
        make_gguf_fixtures.write_gguf(path)
        with open(path, "rb") as f:
            return f.read()


SCALARS = [(V.UINT8, 200), (V.INT8, -100), (V.UINT16, 60000), (V.INT16, -30000),
           (V.UINT32, 4000000000), (V.INT32, -2000000000), (V.FLOAT32, 1.5),
           (V.BOOL, True), (V.STRING, "wörld"), (V.UINT64, 1 << 63), (V.INT64, -(1 << 62)),
           (V.FLOAT64, -2.25)]


def value_types(w):
    for vt, val in SCALARS:
        w.add_key_value(f"fuzz.scalar.{vt.name.lower()}", val, vt)
        w.add_key_value(f"fuzz.array.{vt.name.lower()}", [val, val, val], V.ARRAY, sub_type=vt)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "", "a\nb", "\u00e9", "x" * 40])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, 2.5])


def raw_blocks(rng, t, n_blocks):
    """n_blocks random blocks of quant type t with small finite f16 scales where it has them."""
    size = gguf.GGML_QUANT_SIZES[t][1]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, 2)) * 0.01).astype(np.float16).view(np.uint8)
    if t == T.Q6_K:
        b[:, 208:210] = scales.reshape(n_blocks, 4)[:, :2]
    elif t in (T.Q8_0, T.Q4_K, T.Q5_K):
        b[:, 0:4] = scales.reshape(n_blocks, 4)
    return b


def one_type(t, rows=2):
    rng = np.random.default_rng(SEED + int(t))
    block = gguf.GGML_QUANT_SIZES[t][0]
    cols = 256 if block > 1 else 8

    def build(w):
        if t == T.F32:
            w.add_tensor("w", rng.standard_normal((rows, cols)).astype(np.float32))
        elif t == T.F16:
            w.add_tensor("w", rng.standard_normal((rows, cols)).astype(np.float16))
        else:
            n_blocks = rows * cols // block
            data = raw_blocks(rng, t, n_blocks).reshape(rows, -1)
            w.add_tensor("w", data, raw_dtype=t)
        w.add_tensor("v", rng.standard_normal((3,)).astype(np.float32))
    return written(build)


def kv(key, vtype, payload):
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", vtype) + payload


def header(version, n_tensors, kvs):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kvs)) + b"".join(kvs)


MICRO = dict(num_hidden_layers=2, max_position_embeddings=256, hidden_size=32,
             intermediate_size=64, num_attention_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
             n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
             scoring_func="sigmoid", first_k_dense_replace=1, vocab_size=32, q_lora_rank=32,
             kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
             moe_intermediate_size=32, n_shared_experts=1, routed_scaling_factor=2.5,
             norm_topk_prob=True,
             rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                           "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
                           "mscale_all_dim": 0.707})


def micro_model(qtype, file_type):
    """A whole deepseek2 model small enough for the fuzzer (a few tens of KB): the converter's
    names, split attn_k_b / attn_v_b, stacked experts and keys (make_gguf_model.py), random data."""
    c = MICRO
    rng = np.random.default_rng(SEED)
    H, hid, r, rope = c["num_attention_heads"], c["hidden_size"], c["kv_lora_rank"], 8
    nope, v, ql = c["qk_nope_head_dim"], c["v_head_dim"], c["q_lora_rank"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], hid), "model.norm.weight": (hid,),
              "lm_head.weight": (c["vocab_size"], hid)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (hid,),
                       p + "post_attention_layernorm.weight": (hid,),
                       p + "self_attn.q_a_proj.weight": (ql, hid),
                       p + "self_attn.q_a_layernorm.weight": (ql,),
                       p + "self_attn.q_b_proj.weight": (H * (nope + rope), ql),
                       p + "self_attn.kv_a_proj_with_mqa.weight": (r + rope, hid),
                       p + "self_attn.kv_a_layernorm.weight": (r,),
                       p + "self_attn.kv_b_proj.weight": (H * (nope + v), r),
                       p + "self_attn.o_proj.weight": (hid, H * v)})
        if l < c["first_k_dense_replace"]:
            inter, mlps = c["intermediate_size"], [p + "mlp."]
        else:
            inter = c["moe_intermediate_size"]
            mlps = [f"{p}mlp.experts.{e}." for e in range(c["n_routed_experts"])]
            mlps.append(p + "mlp.shared_experts.")
            shapes[p + "mlp.gate.weight"] = (c["n_routed_experts"], hid)
            shapes[p + "mlp.gate.e_score_correction_bias"] = (c["n_routed_experts"],)
        for m in mlps:
            shapes.update({m + "gate_proj.weight": (inter, hid), m + "up_proj.weight": (inter, hid),
                           m + "down_proj.weight": (hid, inter)})
    t = {k: (rng.standard_normal(sh) * 0.1).astype(np.float32) for k, sh in shapes.items()}

    def build(w):
        make_gguf_model.add_params(w, c, file_type)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("deepseek-v3")
        w.add_token_list([chr(ord("a") + i) for i in range(26)] + ["ab", "<s>", "</s>", "c d",
                                                                   "[PAD30]", "[PAD31]"])
        w.add_token_types([1] * 27 + [3, 3, 4, 5, 5])
        w.add_token_merges(["a b"])
        w.add_bos_token_id(27)
        w.add_eos_token_id(28)
        for name, a in make_gguf_model.tensors_in_gguf_order(c, t):
            ty = make_gguf_model.tensor_type(name, a, qtype)
            w.add_tensor(name, gguf.quants.quantize(a, ty), raw_dtype=ty)
    return written(build)


def valid_seeds():
    base = tiny()
    seeds = {"tiny": base, "tiny-v2": base[:4] + struct.pack("<I", 2) + base[8:]}
    seeds["value-types"] = written(value_types)
    seeds["model-q8_0"] = micro_model(T.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)
    seeds["no-tensors"] = written(lambda w: w.add_uint32("deepseek2.block_count", 1))
    seeds["header-only"] = header(3, 0, [])
    seeds["empty-arrays"] = header(3, 0, [
        kv("a.u8", V.ARRAY, struct.pack("<IQ", V.UINT8, 0)),
        kv("a.str", V.ARRAY, struct.pack("<IQ", V.STRING, 0)),
        kv("s.empty", V.STRING, struct.pack("<Q", 0)),
        kv("", V.UINT32, struct.pack("<I", 1))])
    for t in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K,  # with a dequantizer
              T.Q4_0, T.Q2_K, T.I8, T.F64, T.IQ4_XS):                 # without
        seeds[f"type-{t.name.lower()}"] = one_type(t)
    for al in (1, 8, 64):
        def build(w, al=al):
            w.add_custom_alignment(al)
            w.add_tensor("a", np.arange(3, dtype=np.float32))
            w.add_tensor("b", np.arange(5, dtype=np.float16))
        seeds[f"alignment-{al}"] = written(build)
    return seeds


def malformed_seeds(base):
    def find(s):
        i = base.index(s.encode())
        assert base.find(s.encode(), i + 1) == -1, s
        return i + len(s)

    def patch(at, fmt, v, data=None):
        b = bytearray(base if data is None else data)
        struct.pack_into(fmt, b, at, v)
        return bytes(b)

    def n_dims_at(name):
        return find(name)

    seeds = {}
    for n in sorted(set([0, 3, 4, 7, 8, 15, 16, 23, 24, 30, 40, 64, 100, 200, 333, 500, 700,
                         find("tokenizer.ggml.tokens") + 6, find("token_embd.weight") + 2,
                         find("token_embd.weight") + 12, len(base) - 1, len(base) - 700,
                         len(base) - 1500])):
        seeds[f"truncated-{n}"] = base[:n]
    seeds["huge-tensor-count"] = patch(8, "<Q", 1 << 60)
    seeds["huge-kv-count"] = patch(16, "<Q", (1 << 64) - 1)
    seeds["huge-array-count"] = patch(find("tokenizer.ggml.tokens") + 8, "<Q", 1 << 59)
    seeds["huge-string-length"] = patch(24, "<Q", 1 << 40)
    seeds["alignment-48"] = patch(find("general.alignment") + 4, "<I", 48)
    seeds["alignment-0"] = patch(find("general.alignment") + 4, "<I", 0)
    seeds["alignment-i32"] = patch(find("general.alignment"), "<I", int(V.INT32))
    seeds["alignment-2g"] = patch(find("general.alignment") + 4, "<I", 1 << 31)
    seeds["unknown-value-type"] = patch(find("fireflyer.test.bool"), "<I", 77)
    seeds["unknown-elem-type"] = patch(find("tokenizer.ggml.tokens") + 4, "<I", 13)
    seeds["array-of-arrays"] = patch(find("tokenizer.ggml.tokens") + 4, "<I", 9)
    seeds["bool-2"] = patch(find("fireflyer.test.bool") + 4, "<B", 2)
    seeds["unknown-tensor-type"] = patch(n_dims_at("token_embd.weight") + 20, "<I", 5)
    seeds["tensor-type-max"] = patch(n_dims_at("token_embd.weight") + 20, "<I", 0xFFFFFFFF)
    seeds["n-dims-0"] = patch(n_dims_at("token_embd.weight"), "<I", 0)
    seeds["n-dims-5"] = patch(n_dims_at("token_embd.weight"), "<I", 5)
    seeds["dim-0"] = patch(n_dims_at("token_embd.weight") + 12, "<Q", 0)
    d = patch(n_dims_at("token_embd.weight") + 4, "<Q", 1 << 62)
    seeds["dims-overflow"] = patch(n_dims_at("token_embd.weight") + 12, "<Q", 4, d)
    d = patch(n_dims_at("token_embd.weight") + 4, "<Q", 1 << 62)
    seeds["dim0-2e62-f32"] = patch(n_dims_at("token_embd.weight") + 12, "<Q", 1, d)
    seeds["dims-too-big"] = patch(n_dims_at("token_embd.weight") + 12, "<Q", 1 << 40)
    seeds["dim0-not-block"] = patch(n_dims_at("blk.0.ffn_down.weight") + 4, "<Q", 48)
    off = n_dims_at("blk.0.attn_norm.weight") + 24
    cur = struct.unpack_from("<Q", base, off)[0]
    seeds["offset-misaligned"] = patch(off, "<Q", cur + 4)
    seeds["offset-past-end"] = patch(off, "<Q", 1 << 62)
    seeds["offset-overlap"] = patch(off, "<Q", 32)
    seeds["offset-same"] = patch(off, "<Q", 0)
    i = find("blk.1.attn_norm.weight") - len("blk.1.attn_norm.weight")
    seeds["duplicate-tensor"] = patch(i + 4, "<B", ord("0"))
    i = find("fireflyer.test.u64") - 3
    b = bytearray(base)
    b[i:i + 3] = b"i32"
    seeds["duplicate-key"] = bytes(b)
    # Control bytes in names: each message must still be one line.
    i = find("token_embd.weight") - len("embd.weight") - 1
    b = bytearray(base)
    b[i] = ord("\n")
    seeds["newline-in-tensor-name"] = patch(n_dims_at("token_embd.weight") + 20, "<I", 5, b)
    i = find("fireflyer.test.u64") - 3
    b = bytearray(base)
    b[i:i + 3] = b"i\r\x7f"
    seeds["control-bytes-in-key"] = bytes(b)
    return seeds


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "gguf_fuzz",
                                                  "corpus"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    seeds = valid_seeds()
    seeds.update(malformed_seeds(seeds["tiny"]))
    for name, data in sorted(seeds.items()):
        with open(os.path.join(args.out, f"seed-{name}.gguf"), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {args.out}")


if __name__ == "__main__":
    main()
