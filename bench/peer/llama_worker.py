#!/usr/bin/env python3
"""llama.cpp's side of the peer benchmark (bench/peer/run_peer.py), through llama-cpp-python's
low-level API: no sampling, no detokenizing, only llama_decode.

    llama_worker.py serve --model F.gguf --threads N [--prompt 128] [--gen 64]
        Loads the model, warms up with one round, prints {"ready": ...}, then answers each
        "round" line on stdin with {"prefill_s": .., "decode_s": ..}: a prompt of `prompt` tokens
        in one llama_decode call into an empty KV cache, then `gen` calls of one token each (the
        logits of the last token of each call are computed, as fireflyer's worker does).
    llama_worker.py quantize IN.gguf OUT.gguf q8_0|q4_k_m --threads N
        llama_model_quantize with llama-quantize's defaults (output tensor quantized, Q4_K_M's
        per-tensor mix): the files as users download them.

The protocol and the token ids are bench_peer --worker's (bench/peer.cc): prompt token i is
2 + (i * 7919) % (vocab - 2), decode token i is 2 + (i * 31) % (vocab - 2).
"""

import argparse
import ctypes
import json
import logging
import sys
import time

import llama_cpp as L

FTYPES = {"q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": L.LLAMA_FTYPE_MOSTLY_Q4_K_M}


def quantize(a):
    p = L.llama_model_quantize_default_params()
    p.ftype = FTYPES[a.type]
    p.nthread = a.threads
    rc = L.llama_model_quantize(a.inp.encode(), a.out.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize {a.inp} -> {a.out} ({a.type}) failed: {rc}")


def bytes_per_token(path):
    """Weight bytes one decoded token reads: every tensor but the embedding table, the routed
    expert tensors scaled by experts used / experts (bench_peer reports the same quantity)."""
    import gguf
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def field(key, default):
        f = r.fields.get(f"{arch}.{key}")
        return int(f.parts[-1][0]) if f is not None else default
    n_exp, used = field("expert_count", 1), field("expert_used_count", 1)
    total = 0.0
    for t in r.tensors:
        if t.name.startswith("token_embd"):
            continue
        total += int(t.n_bytes) * (used / n_exp if "_exps." in t.name else 1.0)
    return total


class Engine:
    def __init__(self, path, threads, prompt, gen):
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit(f"llama.cpp cannot load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = (prompt + gen + 255) // 256 * 256
        cp.n_batch = max(512, prompt)
        cp.n_ubatch = max(512, prompt)
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            sys.exit("llama_init_from_model failed")
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.prompt, self.gen = prompt, gen
        self.batch = L.llama_batch_init(max(prompt, 1), 0, 1)

    def _decode(self, tokens, pos0):
        b = self.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if i == len(tokens) - 1 else 0
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            sys.exit(f"llama_decode failed: {rc}")
        L.llama_synchronize(self.ctx)

    def round(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        prompt = [2 + (i * 7919) % (self.vocab - 2) for i in range(self.prompt)]
        decode = [2 + (i * 31) % (self.vocab - 2) for i in range(self.gen)]
        t0 = time.perf_counter()
        self._decode(prompt, 0)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, t in enumerate(decode):
            self._decode([t], self.prompt + i)
        return prefill_s, time.perf_counter() - t0


def serve(a):
    # llama-cpp-python routes llama.cpp's log through a Python callback that prints every level;
    # errors only (the system info goes to stderr, the worker's log file).
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    print(L.llama_print_system_info().decode(), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    e = Engine(a.model, a.threads, a.prompt, a.gen)
    load_s = time.perf_counter() - t0
    e.round()  # warm-up
    print(json.dumps({"ready": True, "engine": "llama.cpp", "version": L.__version__,
                      "load_s": round(load_s, 3), "threads": a.threads,
                      "bytes_per_token": bytes_per_token(a.model)}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd != "round":
            print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
            continue
        p, d = e.round()
        print(json.dumps({"prefill_s": p, "decode_s": d}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--model", required=True)
    s.add_argument("--threads", type=int, required=True)
    s.add_argument("--prompt", type=int, default=128)
    s.add_argument("--gen", type=int, default=64)
    q = sub.add_parser("quantize")
    q.add_argument("inp")
    q.add_argument("out")
    q.add_argument("type", choices=sorted(FTYPES))
    q.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    serve(a) if a.cmd == "serve" else quantize(a)


if __name__ == "__main__":
    main()
