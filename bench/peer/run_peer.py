#!/usr/bin/env python3
"""Peer benchmark: fireflyer against llama.cpp on the same CPU, thread count and weights.

Run through `bench_peer` (bench/peer.cc, what `make bench` calls), which passes its own path:

    bench_peer [--quick] [--rounds R] [--threads N] [--cases bf16,q8,q4] [--work DIR]
               [--venv DIR] [--tokenizer DIR]

Steps (every product is kept under --work, default <repo>/build/peer, and reused when present):
  1. a venv (--venv, default WORK/venv, or $FF_PEER_VENV) with llama-cpp-python, gguf and numpy
     from PyPI (pip compiles llama.cpp for this CPU, several minutes the first time); when that
     fails (no network) a SKIP line is printed and the exit status is 0;
  2. the synthetic DeepSeek-V3-shaped BF16 checkpoint of bench_model_decode (hidden 2048, 4
     layers, 32 experts, real MLA dims) with the DeepSeek-V3 tokenizer and its 129,280-token
     vocabulary when ../shared/data/deepseek-v3-tokenizer is there (else the default model's
     tokenizer and a 32,768 vocabulary), written by `bench_peer --write-synthetic`;
  3. the same weights as a BF16 GGUF (tools/make_gguf_model.py, llama.cpp's deepseek2 layout),
     and that file quantized by llama.cpp to Q8_0 and Q4_K_M (llama-quantize's defaults);
  4. per format, one fireflyer worker (`bench_peer --worker`: the HF checkpoint with
     --quantize none|q8|q4) and one llama.cpp worker (llama_worker.py on the GGUF), both with
     N threads; R rounds, the engines alternated (odd rounds llama.cpp first); a round is a
     128-token prompt into an empty KV cache, then 64 decode steps (llama-bench -p 128 -n 64);
  5. one line per case: BENCH peer <fmt>_{prefill,decode} ... baseline=llama.cpp ratio=R, where
     R is the median over rounds of fireflyer tok/s / llama.cpp tok/s (> 1: fireflyer faster).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROMPT, GEN = 128, 64
# format -> (fireflyer --quantize, GGUF file type, label of the llama.cpp file)
CASES = {"bf16": ("none", "bf16", "BF16"), "q8": ("q8", "q8_0", "Q8_0"),
         "q4": ("q4", "q4_k_m", "Q4_K_M")}


def log(msg):
    print(f"# peer: {msg}", flush=True)


def skip(msg):
    print(f"SKIP peer: {msg}", flush=True)
    sys.exit(0)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def venv_ready(py):
    return os.path.exists(py) and subprocess.run(
        [py, "-c", "import llama_cpp, gguf, numpy"], capture_output=True).returncode == 0


def ensure_venv(venv, work):
    py = os.path.join(venv, "bin", "python")
    if venv_ready(py):
        return py
    log(f"installing llama-cpp-python gguf numpy from PyPI into {venv} "
        "(pip compiles llama.cpp: several minutes)")
    pip_log = os.path.join(work, "pip.log")
    with open(pip_log, "w") as out:
        if not os.path.exists(py):
            r = subprocess.run([sys.executable, "-m", "venv", venv], stdout=out, stderr=out)
            if r.returncode != 0:
                skip(f"cannot create a venv at {venv} (python3-venv missing?); see {pip_log}")
        r = subprocess.run([py, "-m", "pip", "install", "--timeout", "30", "--retries", "2",
                            "llama-cpp-python", "gguf", "numpy"], stdout=out, stderr=out)
    if r.returncode != 0 or not venv_ready(py):
        tail = open(pip_log).read().strip().splitlines()[-1:] or [""]
        skip(f"cannot install llama-cpp-python, gguf, numpy from PyPI (no network?): {tail[0]} "
             f"(log: {pip_log})")
    return py


def cpu_name():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def build_files(a, py, bench_peer, threads):
    """The HF checkpoint and the three GGUF files; returns (hf dir, {gguf type: path})."""
    shared_tok = os.path.join(os.path.dirname(REPO), "shared", "data", "deepseek-v3-tokenizer")
    tok = a.tokenizer or (shared_tok if os.path.exists(os.path.join(shared_tok, "tokenizer.json"))
                          else os.path.join(REPO, "tests", "fixtures", "default-model"))
    # DeepSeek-V3's padded vocabulary for its tokenizer, else bench_model_decode's 32,768.
    tj = json.load(open(os.path.join(tok, "tokenizer.json"), encoding="utf-8"))
    ids = list(tj["model"]["vocab"].values()) + [t["id"] for t in tj.get("added_tokens", [])]
    vocab = 129280 if max(ids) >= 32768 else 32768
    layers, experts = (2, 16) if a.quick else (4, 32)
    d = os.path.join(a.work, f"synthetic-v{vocab}-l{layers}-e{experts}")
    hf = os.path.join(d, "hf")
    if not os.path.exists(os.path.join(hf, "tokenizer_config.json")):
        log(f"writing the synthetic checkpoint {hf} (tokenizer {tok})")
        run([bench_peer, "--write-synthetic", hf, "--vocab", str(vocab), "--layers", str(layers),
             "--experts", str(experts), "--tokenizer", tok], stdout=subprocess.DEVNULL)
    files = {"bf16": os.path.join(d, "bf16.gguf")}
    if not os.path.exists(files["bf16"]):
        log("converting it to GGUF BF16 (tools/make_gguf_model.py)")
        run([py, os.path.join(REPO, "tools", "make_gguf_model.py"), "--model", hf,
             "--out", files["bf16"] + ".tmp", "--type", "bf16"], stdout=subprocess.DEVNULL)
        os.replace(files["bf16"] + ".tmp", files["bf16"])
    for t in ("q8_0", "q4_k_m"):
        files[t] = os.path.join(d, f"{t}.gguf")
        if not os.path.exists(files[t]):
            log(f"quantizing it with llama.cpp to {t.upper()}")
            with open(os.path.join(a.work, f"quantize-{t}.log"), "w") as lg:
                run([py, os.path.join(HERE, "llama_worker.py"), "quantize", files["bf16"],
                     files[t] + ".tmp", t, "--threads", str(threads)], stdout=lg, stderr=lg)
            os.replace(files[t] + ".tmp", files[t])
    return hf, files


class Worker:
    def __init__(self, name, cmd, env, log_path):
        self.name = name
        self.err = open(log_path, "w")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, env=env)
        self.ready = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            raise RuntimeError(f"{self.name} worker exited ({self.p.returncode}); "
                               f"see {self.err.name}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.name} worker: {msg['error']}")
        return msg

    def round(self):
        self.p.stdin.write("round\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.close()
                self.p.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()
        self.err.close()


def median(xs):
    return statistics.median(xs)


def run_case(fmt, a, py, bench_peer, hf, files, threads, read_gbps):
    quant, gtype, glabel = CASES[fmt]
    env = dict(os.environ, FF_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    workers = []
    try:
        ff = Worker("fireflyer", [bench_peer, "--worker", "--model", hf, "--quantize", quant,
                                  "--prompt", str(PROMPT), "--gen", str(GEN)], env,
                    os.path.join(a.work, f"worker-fireflyer-{fmt}.log"))
        workers.append(ff)
        lc = Worker("llama.cpp", [py, os.path.join(HERE, "llama_worker.py"), "serve", "--model",
                                  files[gtype], "--threads", str(threads), "--prompt",
                                  str(PROMPT), "--gen", str(GEN)], env,
                    os.path.join(a.work, f"worker-llama-{fmt}.log"))
        workers.append(lc)
        times = {"ff": [], "lc": []}
        for r in range(a.rounds):
            order = [("ff", ff), ("lc", lc)] if r % 2 == 0 else [("lc", lc), ("ff", ff)]
            for key, w in order:
                times[key].append(w.round())
    finally:
        for w in workers:
            w.close()
    ff_file = "HF BF16 safetensors" + ("" if quant == "none" else f" --quantize {quant}")
    for phase, n in (("prefill", PROMPT), ("decode", GEN)):
        tps = {k: [n / t[f"{phase}_s"] for t in v] for k, v in times.items()}
        ratios = [f / l for f, l in zip(tps["ff"], tps["lc"])]
        fields = [f"tokens={n}", f"fireflyer_tok_s={median(tps['ff']):.2f}",
                  f"llama_cpp_tok_s={median(tps['lc']):.2f}"]
        if phase == "decode":
            fields.append(f"context={PROMPT}")
            for k, ready, name in (("ff", ff.ready, "fireflyer"), ("lc", lc.ready, "llama_cpp")):
                mb = ready["bytes_per_token"] / 1e6
                fields.append(f"{name}_MB_per_tok={mb:.1f} "
                              f"{name}_GBps={mb * median(tps[k]) / 1e3:.2f}")
            if read_gbps:
                fields.append(f"read_GBps={read_gbps:.2f}")
        fields += [f"fireflyer_weights=\"{ff_file}\"", f"llama_cpp_file={glabel}",
                   f"rounds={a.rounds}", f"threads={threads}",
                   f"ratio_min={min(ratios):.3f}", f"ratio_max={max(ratios):.3f}",
                   "baseline=llama.cpp", f"ratio={median(ratios):.3f}"]
        print(f"BENCH peer {fmt}_{phase} " + " ".join(fields), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-peer", required=True, help="the bench_peer binary (passed by it)")
    ap.add_argument("--quick", action="store_true",
                    help="a smaller model (2 layers, 16 experts) and 2 rounds")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per case (default 8, quick 2)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of both engines (default: the CPUs this process may use)")
    ap.add_argument("--cases", default="bf16,q8,q4")
    ap.add_argument("--work", default=os.path.join(REPO, "build", "peer"))
    ap.add_argument("--venv", default=os.environ.get("FF_PEER_VENV", ""))
    ap.add_argument("--tokenizer", default="", help="dir with tokenizer.json, tokenizer_config.json")
    a = ap.parse_args()
    a.rounds = a.rounds or (2 if a.quick else 8)
    threads = a.threads or len(os.sched_getaffinity(0))
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"run_peer.py: unknown case {c!r} (bf16, q8, q4)")
    os.makedirs(a.work, exist_ok=True)
    py = ensure_venv(a.venv or os.path.join(a.work, "venv"), a.work)
    version = subprocess.run([py, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    hf, files = build_files(a, py, a.bench_peer, threads)
    bw = subprocess.run([a.bench_peer, "--read-bandwidth"], capture_output=True, text=True,
                        env=dict(os.environ, FF_NUM_THREADS=str(threads)))
    read_gbps = float(bw.stdout) if bw.returncode == 0 else 0.0
    log(f"CPU {cpu_name()}; {threads} threads; llama-cpp-python {version}; model {hf}; "
        f"read bandwidth {read_gbps:.1f} GB/s; {a.rounds} rounds per case")
    failed = False
    for fmt in cases:
        t0 = time.time()
        try:
            run_case(fmt, a, py, a.bench_peer, hf, files, threads, read_gbps)
        except (RuntimeError, ValueError, KeyError) as e:
            failed = True
            print(f"# peer: {fmt}_prefill, {fmt}_decode not measured: {e}", flush=True)
        log(f"{fmt}: {time.time() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        print(f"# peer: failed: {' '.join(map(str, e.cmd))} exited {e.returncode}", flush=True)
        sys.exit(1)
