#!/usr/bin/env python3
"""Writes tests/fixtures/gguf/: a small GGUF file and what the gguf package's reader sees in it.

    python -m venv /tmp/ggufenv && /tmp/ggufenv/bin/pip install gguf numpy
    /tmp/ggufenv/bin/python tools/make_gguf_fixtures.py [--out tests/fixtures/gguf] [--check]

CI never runs it (the output is committed). Reproducible: the data comes from a fixed seed and
the script writes the file twice and requires identical bytes. --check writes into a temp dir and
compares with the committed files instead of overwriting them.

Writes
    tiny.gguf      architecture deepseek2; metadata of several value types (u32, i32, u64, f32,
                   bool, string, string array, i32 array; general.alignment written explicitly) and tensors of F32, F16, Q8_0 and Q4_K with
                   dims like [64, 4] and [256, 2] (dims as GGUF stores them, innermost first)
    manifest.json  from gguf.GGUFReader, an independent reader: version, alignment, every
                   metadata key with its GGUF value type and value, every tensor's name, dims,
                   type id, absolute file offset, byte size and its bytes in hex; plus the
                   package's dequantisation of the Q8_0 tensor (gguf.quants.dequantize).
"""

import argparse
import filecmp
import importlib.metadata
import json
import os
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

SEED = 2026


def q4_k_blocks(rng, n_blocks):
    """Random Q4_K blocks (the package cannot quantize to Q4_K) with finite f16 d and dmin."""
    b = rng.integers(0, 256, size=(n_blocks, 144), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, 2)) * 0.01).astype(np.float16)
    b[:, 0:4] = scales.view(np.uint8).reshape(n_blocks, 4)
    return b


def write_gguf(path):
    rng = np.random.default_rng(SEED)
    w = gguf.GGUFWriter(path, "deepseek2")
    w.add_name("fireflyer tiny gguf fixture")
    w.add_custom_alignment(32)
    w.add_uint32("deepseek2.block_count", 2)
    w.add_uint32("deepseek2.context_length", 4096)
    w.add_uint32("deepseek2.embedding_length", 64)
    w.add_int32("fireflyer.test.i32", -7)
    w.add_float32("deepseek2.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_bool("fireflyer.test.bool", True)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hello", "wörld", ""])
    w.add_array("tokenizer.ggml.token_type", [1, 3, 1, 1, -2])
    w.add_uint64("fireflyer.test.u64", 1 << 40)

    x = rng.standard_normal((4, 64)).astype(np.float32)
    w.add_tensor("token_embd.weight", x)                                     # F32 [64, 4]
    x = rng.standard_normal((2, 256)).astype(np.float32)
    w.add_tensor("blk.0.attn_norm.weight", x.astype(np.float16))             # F16 [256, 2]
    x = rng.standard_normal((4, 64)).astype(np.float32)
    q = quantize(x, T.Q8_0)
    w.add_tensor("blk.0.ffn_down.weight", q, raw_dtype=T.Q8_0)               # Q8_0 [64, 4]
    w.add_tensor("blk.1.ffn_up.weight", q4_k_blocks(rng, 2).reshape(2, 144),
                 raw_dtype=T.Q4_K)                                           # Q4_K [256, 2]
    x = rng.standard_normal((3,)).astype(np.float32)
    w.add_tensor("output_norm.weight", x)                                    # F32 [3]
    x = rng.standard_normal((2, 256)).astype(np.float32)
    w.add_tensor("blk.1.attn_norm.weight", x.astype(np.float16))             # F16 [256, 2]

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def value_of(field):
    vt = field.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        et = field.types[1] if len(field.types) > 1 else gguf.GGUFValueType.UINT8
        vals = [field.parts[i] for i in field.data]
        if et == gguf.GGUFValueType.STRING:
            return int(et), [bytes(v).decode("utf-8") for v in vals]
        return int(et), [v.tolist()[0] for v in vals]
    v = field.parts[field.data[0]]
    if vt == gguf.GGUFValueType.STRING:
        return None, bytes(v).decode("utf-8")
    return None, v.tolist()[0]


def manifest(path):
    r = gguf.GGUFReader(path)
    meta = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        et, v = value_of(f)
        entry = {"key": name, "type": int(f.types[0]), "value": v}
        if et is not None:
            entry["elem_type"] = et
        meta.append(entry)
    tensors = []
    q8 = None
    for t in r.tensors:
        raw = np.asarray(t.data).view(np.uint8).tobytes()
        assert len(raw) == t.n_bytes
        tensors.append({"name": t.name, "dims": [int(d) for d in t.shape],
                        "type": int(t.tensor_type), "offset": int(t.data_offset),
                        "nbytes": int(t.n_bytes), "hex": raw.hex()})
        if t.tensor_type == T.Q8_0:
            deq = dequantize(np.frombuffer(raw, dtype=np.uint8), T.Q8_0)
            q8 = {"name": t.name, "values": [float(v) for v in deq.reshape(-1)]}
    version = int(r.fields["GGUF.version"].parts[-1][0])
    return {"gguf_package": importlib.metadata.version("gguf"),
            "numpy": np.__version__, "seed": SEED, "version": version,
            "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "file_size": os.path.getsize(path), "metadata": meta, "tensors": tensors,
            "q8_0_dequantized": q8}


def generate(out):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "tiny.gguf")
    write_gguf(path)
    with tempfile.TemporaryDirectory() as tmp:
        again = os.path.join(tmp, "tiny.gguf")
        write_gguf(again)
        assert filecmp.cmp(path, again, shallow=False), "GGUF output is not deterministic"
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest(path), f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "gguf"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if not args.check:
        generate(args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        for name in ("tiny.gguf", "manifest.json"):
            same = filecmp.cmp(os.path.join(tmp, name), os.path.join(args.out, name), shallow=False)
            print(f"{name}: {'identical' if same else 'DIFFERS'}")
            if not same:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
