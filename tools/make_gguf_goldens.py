#!/usr/bin/env python3
"""Writes tests/fixtures/gguf_quant/: GGUF block data and the gguf package's dequantisation of it.

    python -m venv /tmp/ggufenv && /tmp/ggufenv/bin/pip install gguf numpy
    /tmp/ggufenv/bin/python tools/make_gguf_goldens.py [--out tests/fixtures/gguf_quant]

CI never runs it (the output is committed). Reproducible: every random input comes from a fixed
seed, and the script checks the gguf package's GGML_QUANT_SIZES against the sizes it assumes.

For each type T in F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K
it writes
    T.blocks.bin   raw GGUF data: whole blocks, as they lie in a GGUF tensor
    T.f32.bin      gguf.quants.dequantize(blocks, T) as little-endian float32
and manifest.json (type id, block size, type size, block and element counts, the gguf version).
For our quantizers it also writes Q8_0.quant_in.f32.bin (float32 inputs: seeded random blocks at
several magnitudes plus edge blocks) and Q8_0.quant_out.bin (gguf.quants.quantize of them, which
fireflyer's quantize_q8_0 must reproduce byte for byte).

Where the package can quantize (F32, F16, BF16, Q8_0) the blocks come from its quantizer applied
to seeded random floats plus edge values; the K-quants it can only dequantize, so their blocks are
random bytes with the fp16 scale fields (d, dmin) overwritten by finite values, plus hand-made
blocks for the edge cases: zero / negative / subnormal scales, all-minimum and all-maximum
quants, and 6-bit scale / min fields packed with distinct values for all 8 sub-blocks (both the
low-6-bit path of sub-blocks 0..3 and the split 4+2-bit path of sub-blocks 4..7). No input holds a
NaN (numpy keeps an f16 NaN's signalling bit, the F16C conversion ggml and fireflyer use quiets it).
"""

import argparse
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

QK_K = 256
SIZES = {  # type: (block elements, block bytes)
    T.F32: (1, 4), T.F16: (1, 2), T.BF16: (1, 2), T.Q8_0: (32, 34),
    T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210),
    T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22), T.Q5_1: (32, 24),
    T.Q2_K: (256, 84), T.Q3_K: (256, 110),
}
# Byte offsets of the f16 scale fields (d, and the min / dmin where the type has one).
SCALE_FIELDS = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q2_K: (80, 82),
                T.Q3_K: (108,)}


def f16_bytes(x):
    return np.array([x], dtype=np.float16).view(np.uint8)


def pack_k_scales(sc, mn):
    """The 12-byte 6-bit packing of Q4_K / Q5_K: 8 scales and 8 mins, each in 0..63."""
    out = np.zeros(12, dtype=np.uint8)
    for j in range(4):
        out[j] = (sc[j] & 0x3F) | ((sc[j + 4] >> 4) << 6)
        out[j + 4] = (mn[j] & 0x3F) | ((mn[j + 4] >> 4) << 6)
        out[8 + j] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4)
    return out


def float_inputs(rng, n):
    x = (rng.standard_normal(n) * rng.choice([1e-3, 0.1, 1.0, 30.0], n)).astype(np.float32)
    return x


def make_plain(rng, qtype):
    specials = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 65504.0, -65504.0, 6.1e-5, 6e-8, 1e-40,
                         np.inf, -np.inf, 3.4e38, -1.17549435e-38, 1.0009765625], dtype=np.float32)
    x = np.concatenate([specials, float_inputs(rng, 256 - len(specials))]).astype(np.float32)
    if qtype == T.F16:
        # every f16 subnormal boundary and a sweep of codes (NaN codes left out, see the docstring)
        codes = np.concatenate([np.arange(0, 64), np.arange(0x3bf0, 0x3c10), np.arange(0x7bf0, 0x7c01),
                                np.arange(0x8000, 0x8040), np.arange(0xfbf0, 0xfc01)]).astype(np.uint16)
        return np.concatenate([quantize(x, T.F16).view(np.uint8), codes.view(np.uint8)])
    if qtype == T.BF16:
        codes = np.array([0x0001, 0x007f, 0x0080, 0x8001, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x3f80],
                         dtype=np.uint16)
        return np.concatenate([quantize(x, T.BF16).view(np.uint8), codes.view(np.uint8)])
    return quantize(x, T.F32).view(np.uint8)


def make_q8_0(rng):
    blocks = []
    x = float_inputs(rng, 32 * 24).reshape(24, 32)
    x[0] = 0.0                                   # zero block: d = 0
    x[1] = np.linspace(-1, 1, 32)                # -127 and 127
    x[2] = 1e-6                                  # d subnormal in f16
    x[3] = -5e4                                  # large d
    blocks.append(quantize(x, T.Q8_0).reshape(-1))
    # hand-made: d negative, quants -128 (the quantizer never makes it) .. 127
    b = np.zeros(34, dtype=np.uint8)
    b[0:2] = f16_bytes(-0.75)
    b[2:] = np.arange(-128, 128, 8, dtype=np.int8).view(np.uint8)
    blocks.append(b)
    b = rng.integers(0, 256, 34, dtype=np.uint8)
    b[0:2] = f16_bytes(0.0123)
    blocks.append(b)
    return np.concatenate(blocks)


def k_blocks(rng, qtype, nrand):
    """Random K-quant blocks with finite scales, plus the edge cases of the docstring."""
    size = SIZES[qtype][1]
    out = []
    d_vals = [0.03, -0.002, 1.5, 6e-8, 0.0, -7.25, 1e-4, 0.5]
    for i in range(nrand):
        b = rng.integers(0, 256, size, dtype=np.uint8)
        set_d(b, qtype, d_vals[i % len(d_vals)], d_vals[(i * 3 + 1) % len(d_vals)])
        out.append(b)
    if qtype in (T.Q4_K, T.Q5_K):
        distinct_sc = [1, 17, 33, 63, 0, 31, 48, 62]     # 0..3: low path, 4..7: split path
        distinct_mn = [63, 2, 40, 9, 61, 16, 35, 3]
        for fill, sc, mn in [(0x00, distinct_sc, distinct_mn), (0xFF, distinct_sc, distinct_mn),
                             (0xFF, [63] * 8, [63] * 8), (0x5A, [0] * 8, [0] * 8)]:
            b = np.full(size, fill, dtype=np.uint8)
            set_d(b, qtype, -0.0625, 0.25)
            b[4:16] = pack_k_scales(sc, mn)
            out.append(b)
        b = rng.integers(0, 256, size, dtype=np.uint8)     # zero d, nonzero dmin
        set_d(b, qtype, 0.0, -1.0)
        out.append(b)
    else:  # Q6_K: int8 scales, quants -32..31
        for fill, scales in [(0x00, np.arange(-128, 128, 16)), (0xFF, np.arange(127, -129, -16)),
                             (0xFF, np.full(16, -128)), (0x00, np.full(16, 127))]:
            b = np.full(size, fill, dtype=np.uint8)
            b[192:208] = np.asarray(scales, dtype=np.int8).view(np.uint8)
            set_d(b, qtype, 0.125, 0)
            out.append(b)
        b = rng.integers(0, 256, size, dtype=np.uint8)
        set_d(b, qtype, -0.0, 0)
        out.append(b)
    return np.concatenate(out)


def quant_inputs(rng):
    """Finite float32 inputs for the Q8_0 quantizer, 32 per block: random blocks at magnitudes
    from f16-subnormal scales to near the f16 limit, ties of the rounding, and edge blocks."""
    blocks = [float_inputs(rng, 32 * 200).reshape(200, 32)]
    for scale in [1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e5, 8e6]:
        blocks.append((rng.standard_normal((4, 32)) * scale).astype(np.float32))
    edge = np.zeros((8, 32), dtype=np.float32)
    edge[1] = 3.25                                    # constant block
    edge[2] = -7.0                                    # constant negative block
    edge[3] = (np.arange(32) - 16) * (127 / 16) / 127 * 0.5   # x * id lands on halves
    edge[4, 0] = 1e-30                                # one tiny value, the rest zero
    edge[5] = np.linspace(-1e-5, 2e-5, 32)
    edge[6] = (np.arange(32) % 2 * 2 - 1) * 0.5       # +-0.5
    edge[7, ::3] = -1.0
    blocks.append(edge)
    return np.concatenate(blocks).astype(np.float32).reshape(-1)


def legacy_blocks(rng, qtype, nrand):
    """Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q2_K / Q3_K: random bytes with finite f16 scale fields (zero,
    negative and subnormal among them), plus all-0x00 and all-0xFF blocks."""
    size = SIZES[qtype][1]
    vals = [0.03, -0.002, 1.5, 6e-8, 0.0, -7.25, 1e-4, 0.5]
    out = []
    for i in range(nrand + 2):
        if i < nrand:
            b = rng.integers(0, 256, size, dtype=np.uint8)
        else:
            b = np.full(size, 0x00 if i == nrand else 0xFF, dtype=np.uint8)
        for f, off in enumerate(SCALE_FIELDS[qtype]):
            b[off:off + 2] = f16_bytes(vals[(i * (3 if f else 1) + f) % len(vals)])
        out.append(b)
    return np.concatenate(out)


def set_d(b, qtype, d, dmin):
    if qtype == T.Q6_K:
        b[208:210] = f16_bytes(d)
    else:
        b[0:2] = f16_bytes(d)
        b[2:4] = f16_bytes(dmin)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "gguf_quant"))
    args = ap.parse_args()
    for t, sz in SIZES.items():
        assert tuple(gguf.GGML_QUANT_SIZES[t]) == sz, (t, gguf.GGML_QUANT_SIZES[t])
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20)
    makers = {
        T.F32: lambda: make_plain(rng, T.F32), T.F16: lambda: make_plain(rng, T.F16),
        T.BF16: lambda: make_plain(rng, T.BF16), T.Q8_0: lambda: make_q8_0(rng),
        T.Q4_K: lambda: k_blocks(rng, T.Q4_K, 8), T.Q5_K: lambda: k_blocks(rng, T.Q5_K, 8),
        T.Q6_K: lambda: k_blocks(rng, T.Q6_K, 8),
    }
    for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K):
        makers[t] = (lambda t: lambda: legacy_blocks(rng, t, 24 if SIZES[t][0] == 32 else 10))(t)
    manifest = {"gguf_version": getattr(gguf, "__version__", None) or _dist_version(),
                "numpy_version": np.__version__, "types": {}}
    for t, make in makers.items():
        blocks = np.ascontiguousarray(make(), dtype=np.uint8)
        bs, ts = SIZES[t]
        assert blocks.size % ts == 0
        nblocks = blocks.size // ts
        ref = dequantize(blocks.reshape(nblocks, ts) if bs > 1 else blocks.copy(), t)
        ref = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
        assert ref.size == nblocks * bs
        assert not np.isnan(ref).any(), t.name
        with open(os.path.join(args.out, f"{t.name}.blocks.bin"), "wb") as f:
            f.write(blocks.tobytes())
        with open(os.path.join(args.out, f"{t.name}.f32.bin"), "wb") as f:
            f.write(ref.astype("<f4").tobytes())
        manifest["types"][t.name] = {"id": int(t), "block_size": bs, "type_size": ts,
                                     "blocks": int(nblocks), "elements": int(ref.size)}
        print(f"{t.name:5s} id {int(t):2d}: {nblocks} blocks, {ref.size} values")
    x = quant_inputs(np.random.default_rng(21))
    q = np.ascontiguousarray(quantize(x.reshape(-1, 32), T.Q8_0), dtype=np.uint8).reshape(-1)
    assert q.size == x.size // 32 * 34
    with open(os.path.join(args.out, "Q8_0.quant_in.f32.bin"), "wb") as f:
        f.write(x.astype("<f4").tobytes())
    with open(os.path.join(args.out, "Q8_0.quant_out.bin"), "wb") as f:
        f.write(q.tobytes())
    manifest["quantize"] = {"Q8_0": {"elements": int(x.size), "blocks": int(x.size // 32)}}
    print(f"Q8_0 quantize: {x.size // 32} blocks")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def _dist_version():
    from importlib.metadata import version
    return version("gguf")


if __name__ == "__main__":
    main()
