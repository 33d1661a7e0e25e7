#!/usr/bin/env python3
"""Writes tests/fixtures/dtype/goldens.bin: PyTorch's (CPU) dtype conversions, bit for bit.

    python3 tools/make_dtype_goldens.py [--out tests/fixtures/dtype/goldens.bin]

Needs torch and numpy; never needed by CI (the output is committed). Reproducible: the random
inputs come from a fixed seed.

What is in it
-------------
Encodings f32 -> {e4m3fn, e5m2, f16, bf16} for several groups of float32 inputs, and decodings
of every e4m3fn / e5m2 (256) and f16 / bf16 (65536) code to f32. PyTorch's NaN *bits* depend on the
code path it takes (the ATen CPU capability, vectorised body vs tail); the script runs every
conversion under ATEN_CPU_CAPABILITY=default/avx2/avx512 (those this CPU has), whole-tensor,
misaligned and element by element, keeps the result of the first run as the golden value and lists,
per stream, the entries on which the runs disagree (all of them NaN; asserted), with a flag saying
whether at least the sign agreed. Non-NaN results must agree everywhere (asserted).

File format (little-endian)
---------------------------
    magic    8 bytes  "FFDTGLD1"
    u32      number of streams
    stream*:
      u8     name length, then the name (ASCII), e.g. "in/random", "e4m3/random", "dec/e4m3"
      u8     element width in bytes (1, 2 or 4); values are unsigned bit patterns
      u32    element count
      u32    payload length in bytes, then the payload (below)
      u32    number of nondeterministic entries, then per entry: u32 index, u8 flags
             (flags bit 0: torch's sign bit was the same on every path)
Payload: a sequence of records, decoding to `count` values; `prev` starts at 0 and arithmetic is
modulo 2^(8*width):
      u8 kind = 0:       u32 n, then n literal values of `width` bytes (prev = the last one)
      u8 kind = p>=1:    u32 reps, then p deltas of `width` bytes; emits reps*p values,
                         prev += delta[k] for k = 0..p-1, repeated reps times.
Stream names: "in/<group>" (f32 input bits), "<target>/<group>" with target in e4m3, e5m2, f16,
bf16 (PyTorch's `.to(torch.float8_e4m3fn / float8_e5m2 / float16 / bfloat16)`), and
"dec/<fmt>" for fmt in e4m3, e5m2, f16, bf16 (PyTorch's `.to(torch.float32)` of code i at index i).
"""

import argparse
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

TARGETS = ["e4m3", "e5m2", "f16", "bf16"]
WIDTH = {"e4m3": 1, "e5m2": 1, "f16": 2, "bf16": 2, "f32": 4}
NCODES = {"e4m3": 256, "e5m2": 256, "f16": 65536, "bf16": 65536}
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}
CAPS = ["default", "avx2", "avx512"]


# ---------------------------------------------------------------------------------------------
# torch side (runs in a worker process so that ATEN_CPU_CAPABILITY can differ per run)

def torch_dtype(torch, name):
    return {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "f16": torch.float16,
            "bf16": torch.bfloat16, "f32": torch.float32}[name]


def to_bits(torch, t, name):
    w = WIDTH[name]
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[w]
    return t.contiguous().view(view).numpy().view(UINT[w]).copy()


def from_bits(torch, arr, name):
    w = WIDTH[name]
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[w]
    signed = {1: np.uint8, 2: np.int16, 4: np.int32}[w]
    return torch.from_numpy(np.ascontiguousarray(arr).view(signed).copy()).view(view).view(
        torch_dtype(torch, name))


def is_nan(bits, name):
    b = bits.astype(np.uint64)
    if name == "e4m3":
        return (b & 0x7F) == 0x7F
    if name == "e5m2":
        return (b & 0x7F) > 0x7C
    if name == "f16":
        return (b & 0x7FFF) > 0x7C00
    if name == "bf16":
        return (b & 0x7FFF) > 0x7F80
    return (b & 0x7FFFFFFF) > 0x7F800000


def convert_all_ways(torch, src_bits, src, dst, special):
    """Returns a list of result arrays (one per code path) for converting src_bits (format src)
    to format dst. `special` are the indices to also convert element by element."""
    x = from_bits(torch, src_bits, src)
    dt = torch_dtype(torch, dst)
    whole = to_bits(torch, x.to(dt), dst)
    runs = [whole]
    if len(x) > 1:  # misaligned storage and a different tail split
        shifted = whole.copy()
        shifted[1:] = to_bits(torch, x[1:].to(dt), dst)
        runs.append(shifted)
    for size in (1, 3, 17):
        r = whole.copy()
        for i in special:
            r[i] = to_bits(torch, x[i:i + size].to(dt), dst)[0]
        runs.append(r)
    return runs


def worker(in_path, out_path):
    import torch
    torch.set_num_threads(1)
    data = dict(np.load(in_path))
    out = {"cap": np.array(torch.backends.cpu.get_cpu_capability())}
    for key in [k for k in data if k.startswith("in/")]:
        group = key[3:]
        bits = data[key]
        special = np.nonzero(is_nan(bits, "f32"))[0]
        for t in TARGETS:
            for j, r in enumerate(convert_all_ways(torch, bits, "f32", t, special)):
                out[f"{t}/{group}#{j}"] = r
    for f in TARGETS:
        codes = np.arange(NCODES[f], dtype=np.uint32).astype(UINT[WIDTH[f]])
        special = np.nonzero(is_nan(codes, f))[0]
        for j, r in enumerate(convert_all_ways(torch, codes, f, "f32", special)):
            out[f"dec/{f}#{j}"] = r
    np.savez(out_path, **out)


# ---------------------------------------------------------------------------------------------
# inputs

def f32(x):
    return np.float32(x)


def bits_of(values):
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def nextafter_bits(b, k):
    """f32 bits k ulps away from b (b a positive finite pattern), clipped at 0."""
    return np.uint32(max(0, int(b) + k))


def with_neighbours(bits_list, ks=(-2, -1, 0, 1, 2)):
    out = []
    for b in bits_list:
        for k in ks:
            out.append(nextafter_bits(b, k))
    return out


def both_signs(pos_bits):
    pos = np.asarray(pos_bits, dtype=np.uint32)
    return np.concatenate([pos, pos | np.uint32(0x80000000)])


def decode_table(torch, fmt):
    codes = np.arange(NCODES[fmt], dtype=np.uint32).astype(UINT[WIDTH[fmt]])
    return to_bits(torch, from_bits(torch, codes, fmt).to(torch.float32), "f32").view(np.float32)


def finite_positive_values(torch, fmt):
    v = decode_table(torch, fmt).astype(np.float64)
    v = v[np.isfinite(v) & ~np.signbit(v)]
    return np.unique(v)


def make_inputs():
    import torch
    groups = {}

    # Specials and per-format edges: max finite, the rounding thresholds above it (saturation),
    # min subnormal, half of it (ties to zero), min normal; each +-2 ulps, both signs.
    edges = [0.0, 1.0, 2.0, 0.5, 1.5, 3.0, 1e-45, 1.1754942e-38, 1.1754944e-38,
             float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny),
             448.0, 464.0, 480.0, 496.0, 512.0,             # e4m3fn: max, tie, NaN threshold
             57344.0, 61440.0, 65536.0, 73728.0,           # e5m2: max, tie (-> inf), 2^16
             65504.0, 65520.0, 65536.0,                     # f16: max, tie (-> inf)
             3.3895314e38, 3.3961775e38,                    # bf16: max, its halfway to 2^128
             2.0 ** -9, 2.0 ** -10, 2.0 ** -6, 2.0 ** -7,   # e4m3: min subnormal, half, min normal
             2.0 ** -16, 2.0 ** -17, 2.0 ** -14, 2.0 ** -15,  # e5m2 (and f16 min normal)
             2.0 ** -24, 2.0 ** -25, 2.0 ** -26,            # f16 min subnormal, half
             2.0 ** -133, 2.0 ** -134, 2.0 ** -126, 2.0 ** -127]  # bf16 subnormal / normal
    pos = with_neighbours(bits_of(edges))
    pos += [np.uint32(0x7F800000)]  # inf
    pos += [np.uint32(x) for x in (0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x7F7F8001, 0x00000001,
                                   0x007FFFFF, 0x00008000, 0x00018000, 0x00010000)]
    nans = [0x7FC00000, 0x7F800001, 0x7FA00000, 0x7FFFFFFF, 0x7FC01234, 0x7F812345, 0x7FBFFFFF,
            0x7FE00000, 0x7F802000, 0x7F801FFF, 0x7F810000, 0x7F808000, 0x7FC0FFFF, 0x7F900000]
    groups["specials"] = both_signs(pos + [np.uint32(x) for x in nans])

    # Every halfway point between adjacent fp8 values (ties), +-2 ulps, each value +-2 ulps;
    # the "next value" past the largest finite one is the first overflowing one.
    fp8 = []
    for fmt, past_max in (("e4m3", 480.0), ("e5m2", 65536.0)):
        v = list(finite_positive_values(torch, fmt)) + [past_max]
        mids = [(a + b) / 2 for a, b in zip(v[:-1], v[1:])]
        fp8 += with_neighbours(bits_of(mids))
        fp8 += with_neighbours(bits_of(v[1:]), ks=(-2, -1, 1, 2))
    groups["fp8_ties"] = both_signs(np.unique(np.array(fp8, dtype=np.uint32)))

    # All fp16 codes widened (in code order) and all bf16 codes widened.
    groups["f16_values"] = decode_table(torch, "f16").view(np.uint32).copy()
    groups["bf16_values"] = np.arange(65536, dtype=np.uint32) << np.uint32(16)

    # Every halfway point between adjacent fp16 values, and 1 ulp either side (as three blocks,
    # each a regular grid over the normal range), both signs.
    v = list(finite_positive_values(torch, "f16")) + [65536.0]
    mids = bits_of([(a + b) / 2 for a, b in zip(v[:-1], v[1:])])
    f16_ties = np.concatenate([mids, mids - np.uint32(1), mids + np.uint32(1)])
    groups["f16_ties"] = both_signs(f16_ties)

    # bf16 ties: every halfway point between adjacent bf16 values (+-1 ulp), both signs (the
    # negative ones are the upper half of the code space).
    hb = (np.arange(65536, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x8000)
    groups["bf16_ties"] = np.concatenate([hb, hb - np.uint32(1), hb + np.uint32(1)])

    # Random floats over a wide exponent range, and random ties at each format's rounding point.
    rng = np.random.default_rng(20240611)
    n = 100000
    sign = rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    mant = rng.integers(0, 1 << 23, n, dtype=np.uint32)
    exp = np.concatenate([
        rng.integers(127 - 30, 127 + 20, n // 2),     # where fp8/f16 live (incl. subnormals)
        rng.integers(0, 255, n // 4),                 # every f32 exponent (incl. f32 subnormals)
        rng.integers(127 - 27, 127 + 18, n - n // 2 - n // 4),  # edges of f16 / e5m2 range
    ]).astype(np.uint32)
    rnd = sign | (exp << np.uint32(23)) | mant
    # Force exact ties in a fifth of them at the rounding position of e4m3 (20), e5m2 (21),
    # f16 (13), bf16 (16) mantissa bits.
    k = n // 20
    for j, shift in enumerate((20, 21, 13, 16)):
        sl = slice(j * k, (j + 1) * k)
        low = np.uint32((1 << shift) - 1)
        rnd[sl] = (rnd[sl] & ~low) | np.uint32(1 << (shift - 1))
    groups["random"] = rnd
    return groups


# ---------------------------------------------------------------------------------------------
# file writing

def encode_payload(values, width):
    """Records as described in the module docstring; greedy, periods 1..8."""
    n = len(values)
    mod = 1 << (8 * width)
    vals = values.astype(np.int64)
    prev = np.concatenate([[0], vals[:-1]])
    d = (vals - prev) % mod
    maxp = 8
    # run[p][i]: how many consecutive j >= i have d[j] == d[j + p]
    run = {}
    for p in range(1, maxp + 1):
        eq = np.zeros(n, dtype=np.int64)
        if n > p:
            eq[: n - p] = d[: n - p] == d[p:]
        r = np.zeros(n + 1, dtype=np.int64)
        # reverse cumulative run length
        idx = np.arange(n)
        breaks = np.where(eq == 0, idx, n)
        nxt = np.minimum.accumulate(breaks[::-1])[::-1]
        r[:n] = nxt - idx
        run[p] = r
    out = bytearray()
    lit = []
    fmt = {1: "B", 2: "H", 4: "I"}[width]

    def flush():
        if lit:
            out.extend(struct.pack("<BI", 0, len(lit)))
            out.extend(struct.pack("<%d%s" % (len(lit), fmt), *lit))
            lit.clear()

    i = 0
    while i < n:
        best = None
        for p in range(1, maxp + 1):
            if i + p > n:
                break
            reps = (int(run[p][i]) + p) // p
            reps = min(reps, (n - i) // p)
            covered = reps * p
            saved = covered * width - (5 + p * width)
            if reps >= 2 and saved > 0 and (best is None or saved > best[0]):
                best = (saved, p, reps)
        if best is None:
            lit.append(int(vals[i]))
            i += 1
            continue
        flush()
        _, p, reps = best
        out.extend(struct.pack("<BI", p, reps))
        out.extend(struct.pack("<%d%s" % (p, fmt), *[int(x) for x in d[i:i + p]]))
        i += reps * p
    flush()
    return bytes(out)


def decode_payload(payload, width, count):
    """Inverse of encode_payload (used to self-check the file)."""
    mod = 1 << (8 * width)
    fmt = {1: "B", 2: "H", 4: "I"}[width]
    out = []
    prev = 0
    pos = 0
    while pos < len(payload):
        kind, m = struct.unpack_from("<BI", payload, pos)
        pos += 5
        if kind == 0:
            lits = struct.unpack_from("<%d%s" % (m, fmt), payload, pos)
            pos += m * width
            out.extend(lits)
            prev = lits[-1]
        else:
            ds = struct.unpack_from("<%d%s" % (kind, fmt), payload, pos)
            pos += kind * width
            for _ in range(m):
                for dd in ds:
                    prev = (prev + dd) % mod
                    out.append(prev)
    assert len(out) == count
    return np.array(out, dtype=np.uint64)


def sign_bit(name):
    return {1: 0x80, 2: 0x8000, 4: 0x80000000}[WIDTH[name]]


def write_stream(f, name, values, width, nondet):
    payload = encode_payload(values, width)
    assert np.array_equal(decode_payload(payload, width, len(values)), values.astype(np.uint64))
    nb = name.encode()
    f.write(struct.pack("<B", len(nb)) + nb)
    f.write(struct.pack("<BII", width, len(values), len(payload)))
    f.write(payload)
    f.write(struct.pack("<I", len(nondet)))
    for idx, flags in nondet:
        f.write(struct.pack("<IB", idx, flags))
    return len(payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                   "fixtures", "dtype", "goldens.bin"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    groups = make_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        in_path = os.path.join(tmp, "in.npz")
        np.savez(in_path, **{f"in/{g}": v for g, v in groups.items()})
        results = []  # one dict per capability
        for cap in CAPS:
            out_path = os.path.join(tmp, f"out_{cap}.npz")
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
            subprocess.run([sys.executable, __file__, "--worker", in_path, out_path], env=env,
                           check=True)
            r = dict(np.load(out_path))
            got = str(r.pop("cap")).lower()
            if got != cap:
                print(f"capability {cap}: not available here (got {got}), skipped")
                continue
            results.append(r)
            print(f"capability {cap}: done")
    assert results, "no capability ran"

    streams = []  # (name, values, width, nondet)
    keys = sorted({k.split("#")[0] for k in results[0]})
    for key in keys:
        target = key.split("/")[0]
        dst = "f32" if target == "dec" else target
        runs = [r[k] for r in results for k in sorted(r) if k.split("#")[0] == key]
        golden = runs[0]
        differ = np.zeros(len(golden), dtype=bool)
        sign_differ = np.zeros(len(golden), dtype=bool)
        sb = sign_bit(dst)
        for other in runs[1:]:
            differ |= other != golden
            sign_differ |= (other & sb) != (golden & sb)
        for other in runs:
            assert np.all(is_nan(other[differ], dst)), f"{key}: non-NaN results depend on the path"
        nondet = [(int(i), 0 if sign_differ[i] else 1) for i in np.nonzero(differ)[0]]
        streams.append((key, golden, WIDTH[dst], nondet))
        print(f"{key}: {len(golden)} values, {len(nondet)} path-dependent NaNs")
    for g, v in groups.items():
        streams.append((f"in/{g}", v, 4, []))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(b"FFDTGLD1")
        f.write(struct.pack("<I", len(streams)))
        for name, values, width, nondet in streams:
            write_stream(f, name, values, width, nondet)
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, {len(streams)} streams")


if __name__ == "__main__":
    main()
