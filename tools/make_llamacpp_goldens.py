#!/usr/bin/env python3
"""Writes tests/fixtures/gguf-models/llamacpp_goldens.json: what llama.cpp itself does with the
GGUF fixtures, for tests/model/gguf_model_test.cc to compare against.

    python -m venv /tmp/lcpenv && /tmp/lcpenv/bin/pip install llama-cpp-python numpy
    /tmp/lcpenv/bin/python tools/make_llamacpp_goldens.py [--out tests/fixtures/gguf-models/llamacpp_goldens.json]

(llama-cpp-python 0.3.36 was used: it builds the llama.cpp it vendors; LLAMA_CPP_LIB_PATH may
point at a libllama.so built from that source instead). CI never runs it; the output is committed.

For each fixture: the prompt's token ids (given, so that the model and not the tokenizer is
compared), then greedy decoding with llama.cpp's own logits, one token at a time, on 1 thread:
the token ids and, per step, the gap between llama.cpp's top two logits relative to the row's
largest |logit| (the test skips steps whose gap is small: a near tie may flip between engines).
Also llama.cpp's tokenization of a few texts with the GGUF's vocabulary (BOS added as the file
says), to compare with fireflyer's tokenizer built from the same keys.
"""

import argparse
import json
import os

import numpy as np
import llama_cpp

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

CASES = [
    # "It is a truth universally acknowledged" in the default model's tokenizer, BOS first.
    ("default-model-q8_0.gguf", [0, 1424, 366, 260, 1917, 475, 74, 1179, 556, 2761], 24),
    ("tiny-v3-bf16.gguf", [1, 17, 5, 99, 250, 3, 42, 7, 300, 11, 64], 16),
]
TEXTS = ["It is a truth universally acknowledged, that a single man",
         "Hello world 12345 <｜User｜>hi<｜Assistant｜>",
         "  spaces\n\nnewlines\ttabs 3.14159 ünïcödé 你好"]


def run(path, prompt, steps):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=1,
                          logits_all=True, verbose=False)
    llm.eval(prompt)
    tokens, gaps = [], []
    for _ in range(steps):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        order = np.argsort(-logits)
        top = int(order[0])
        gaps.append(float((logits[order[0]] - logits[order[1]]) / np.max(np.abs(logits))))
        tokens.append(top)
        llm.eval([top])
    tok = [llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) for t in TEXTS]
    return {"prompt": prompt, "greedy": tokens, "gaps": gaps,
            "tokenize": [{"text": t, "ids": ids} for t, ids in zip(TEXTS, tok)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FIXTURES, "gguf-models", "llamacpp_goldens.json"))
    a = ap.parse_args()
    out = {"llama_cpp_python": llama_cpp.__version__, "cases": {}}
    for name, prompt, steps in CASES:
        out["cases"][name] = run(os.path.join(FIXTURES, "gguf-models", name), prompt, steps)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
