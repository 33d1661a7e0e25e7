#!/usr/bin/env python3
"""Train the small DeepSeek-V3 model that `make run` uses: tests/fixtures/default-model/.

What it does
  1. Reads Jane Austen's six novels (public domain, Project Gutenberg texts) from the Debian
     package `r-cran-janeaustenr` (1.0.0-1): the R lazy-load database
     /usr/lib/R/site-library/janeaustenr/data/Rdata.{rdx,rdb} is decoded here in pure Python
     (no R needed at run time). Install it with
         apt-get install --no-install-recommends r-cran-janeaustenr
     or, without R, unpack the .deb anywhere and point JANEAUSTENR_DIR at its
     usr/lib/R/site-library/janeaustenr directory:
         apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb /tmp/ja
         JANEAUSTENR_DIR=/tmp/ja/usr/lib/R/site-library/janeaustenr python3 tools/train_default_model.py
  2. Trains a byte-level BPE tokenizer (`tokenizers`, 3072 entries) with DeepSeek-V3's own
     pre-tokenizer, normalizer, post-processor and decoder (copied from
     shared/data/deepseek-v3-tokenizer/tokenizer.json) and DeepSeek's special tokens
     (<｜begin▁of▁sentence｜> = 0, <｜end▁of▁sentence｜> = 1, <｜User｜>, <｜Assistant｜>).
  3. Trains transformers' official `DeepseekV3ForCausalLM` on Pride and Prejudice, on CPU
     (AdamW, fixed step count, 1 thread by default: on the 2 shared cores, busy with compiles,
     2 intra-op threads measured 5-10x slower than 1 because each waits on the other):
     MLA with q_lora_rank and kv_lora_rank, interleaved RoPE with YaRN rope_scaling, 1 dense
     layer then MoE layers (sigmoid scoring, noaux_tc group-limited routing, 1 shared expert)
     whose e_score_correction_bias is trained with DeepSeek-V3's auxiliary-loss-free balancing.
  4. Writes the checkpoint in the real DeepSeek-V3 HF layout: config.json with DeepSeek's own
     field names (rope_scaling, not rope_parameters), model.safetensors with per-expert tensors
     model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight (BF16; e_score_correction_bias F32
     as in the official checkpoint), tokenizer.json, tokenizer_config.json (chat template copied
     from DeepSeek-V3), and checks that `DeepseekV3ForCausalLM.from_pretrained(dir)` reloads it
     to the same logits.
  5. Writes golden.safetensors: p0.input_ids (I64, BOS + prompt), p0.greedy_ids (I64 [32], the
     greedy continuation computed by transformers in float32 from the saved BF16 weights),
     p0.greedy_margins (F32 [32], top-1 minus top-2 logit at each greedy step) and
     p0.last_logits (F32 [vocab], logits at the prompt's last position).

How to run (from the repository root; 10-25 minutes on one CPU core, depending on load):
    python3 tools/train_default_model.py
Options: --out DIR (default tests/fixtures/default-model), --steps N, --threads N,
--max-minutes M (safety stop, default 25; hitting it makes the result depend on machine speed),
--smoke (a few steps into /tmp, to check the pipeline), --golden-only (no training: recompute
golden.safetensors and the README samples from the checkpoint in --out).
Requires: torch, transformers>=5, tokenizers, safetensors (pip), r-cran-janeaustenr (apt).

Deterministic: fixed seeds, fixed step count, fixed data order, fixed thread count.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import struct
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DS_TOKENIZER_DIR = Path(os.environ.get("DS_V3_TOKENIZER_DIR", "/work/shared/data/deepseek-v3-tokenizer"))
for _cand in (REPO / "shared" / "data" / "deepseek-v3-tokenizer", REPO.parent / "shared" / "data" / "deepseek-v3-tokenizer"):
    if "DS_V3_TOKENIZER_DIR" not in os.environ and not DS_TOKENIZER_DIR.is_dir() and _cand.is_dir():
        DS_TOKENIZER_DIR = _cand

CORPUS_PACKAGE = "r-cran-janeaustenr"
JANEAUSTENR_DIRS = [
    "/usr/lib/R/site-library/janeaustenr",
    "/usr/local/lib/R/site-library/janeaustenr",
    "/usr/lib/R/library/janeaustenr",
]
NOVELS = [  # R object names in the package; the tokenizer learns from all six
    "prideprejudice", "sensesensibility", "mansfieldpark", "emma", "northangerabbey", "persuasion",
]
# The model trains on Pride and Prejudice only: with ~20 CPU-minutes of compute, several passes
# over one novel give far more fluent text than a fraction of one pass over all six.
TRAIN_NOVELS = ["prideprejudice"]

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
VOCAB_SIZE = 3072  # BPE entries incl. BOS/EOS, plus <｜User｜>, <｜Assistant｜> at the end

GOLDEN_PROMPT = "It is a truth universally acknowledged"
GOLDEN_NEW_TOKENS = 32
EXTRA_PROMPTS = ["Mr. Darcy", "Once upon a time"]  # README samples only
SEED = 1234

MODEL_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=256,
    intermediate_size=640,          # dense MLP of layer 0
    moe_intermediate_size=64,       # each routed expert, and the shared expert
    num_hidden_layers=4,
    first_k_dense_replace=1,        # layer 0 dense, layers 1..3 MoE
    moe_layer_freq=1,
    num_attention_heads=4,
    num_key_value_heads=4,
    q_lora_rank=96,
    kv_lora_rank=64,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    topk_method="noaux_tc",
    scoring_func="sigmoid",
    norm_topk_prob=True,
    routed_scaling_factor=2.5,
    hidden_act="silu",
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    rope_scaling=dict(
        type="yarn", factor=4.0, original_max_position_embeddings=256, beta_fast=32, beta_slow=1,
        mscale=1.0, mscale_all_dim=1.0,
    ),
    max_position_embeddings=1024,
    attention_bias=False,
    attention_dropout=0.0,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
    initializer_range=0.02,
)

TRAIN = dict(
    steps=1200, batch=16, seq=128, lr=2e-3, min_lr_frac=0.1, warmup=50, weight_decay=0.1,
    betas=(0.9, 0.95), clip=1.0, bias_update_speed=1e-3,
)


def die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Corpus: a minimal reader of R's XDR serialization, enough for the character vectors that
# janeaustenr stores in its lazy-load database (data/Rdata.rdx index + data/Rdata.rdb blobs).


class _RReader:
    def __init__(self, buf: bytes):
        self.b, self.p, self.refs = buf, 0, []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def raw(self, n: int) -> bytes:
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def header(self) -> None:
        if self.raw(2) != b"X\n":
            raise ValueError("not an XDR R serialization")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self.raw(self.int())  # native encoding name

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in (254, 242, 253, 241, 252, 251, 247):  # NILVALUE, environments, unbound, missing
            return None
        if t == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1]
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.raw(n)
            return s.decode("latin-1") if flags & (1 << 13) else s.decode("utf-8")
        if t == 2:  # LISTSXP (pairlist) -> list of (tag, value)
            out = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
                if t == 254:
                    return out
                if t != 2:
                    raise ValueError(f"unexpected pairlist tail type {t}")
        if t in (16, 19):  # STRSXP, VECSXP
            v = [self.item() for _ in range(self.int())]
        elif t in (10, 13):  # LGLSXP, INTSXP
            n = self.int()
            v = list(struct.unpack(f">{n}i", self.raw(4 * n)))
        elif t == 14:  # REALSXP
            n = self.int()
            v = list(struct.unpack(f">{n}d", self.raw(8 * n)))
        else:
            raise ValueError(f"unsupported R object type {t}")
        if has_attr:
            attrs = {tag: val for tag, val in self.item()}
            if "names" in attrs and t == 19:
                return dict(zip(attrs["names"], v))
        return v


def _unserialize(buf: bytes):
    r = _RReader(buf)
    r.header()
    return r.item()


def _decompress_rdb(blob: bytes) -> bytes:
    (n,) = struct.unpack_from(">i", blob, 0)
    body = blob[4:]
    kind = body[:1]
    if kind == b"Z":
        data = zlib.decompress(body[1:])
    elif kind == b"2":
        import bz2
        data = bz2.decompress(body[1:])
    elif kind == b"X":
        import lzma
        data = lzma.decompress(body[1:])
    elif kind == b"0":
        data = body[1:]
    else:
        data = zlib.decompress(body)
    if len(data) != n:
        raise ValueError("corrupt lazy-load entry")
    return data


def find_janeaustenr() -> Path:
    cands = ([os.environ["JANEAUSTENR_DIR"]] if os.environ.get("JANEAUSTENR_DIR") else []) + JANEAUSTENR_DIRS
    for c in cands:
        p = Path(c)
        if (p / "data" / "Rdata.rdx").is_file() and (p / "data" / "Rdata.rdb").is_file():
            return p
    die(f"the training corpus comes from the Debian package '{CORPUS_PACKAGE}' (Jane Austen's novels), "
        f"which is not installed. Install it:\n"
        f"    apt-get install --no-install-recommends {CORPUS_PACKAGE}\n"
        f"or unpack it without R and set JANEAUSTENR_DIR:\n"
        f"    apt-get download {CORPUS_PACKAGE} && dpkg-deb -x {CORPUS_PACKAGE}_*.deb /tmp/ja\n"
        f"    export JANEAUSTENR_DIR=/tmp/ja/usr/lib/R/site-library/janeaustenr\n"
        f"(looked in: {', '.join(cands)})")


def load_novels() -> dict[str, list[str]]:
    """Returns {novel name: list of paragraphs} with line wraps joined and _italics_ marks dropped."""
    d = find_janeaustenr()
    index = _unserialize(gzip.decompress((d / "data" / "Rdata.rdx").read_bytes()))
    variables = index["variables"]
    rdb = (d / "data" / "Rdata.rdb").read_bytes()
    novels = {}
    for name in NOVELS:
        if name not in variables:
            die(f"{d}: no '{name}' in the janeaustenr data; expected {CORPUS_PACKAGE} 1.0.0")
        off, ln = variables[name]
        lines = _unserialize(_decompress_rdb(rdb[off:off + ln]))
        paras, cur = [], []
        for line in lines:
            line = (line or "").replace("_", "").strip()
            if line:
                cur.append(line)
            elif cur:
                paras.append(" ".join(cur))
                cur = []
        if cur:
            paras.append(" ".join(cur))
        novels[name] = paras
    return novels


# ---------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(novels: dict[str, list[str]]):
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers
    from tokenizers import AddedToken

    ds = json.loads((DS_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    tok = Tokenizer(models.BPE())
    # Copy DeepSeek-V3's normalizer, pre-tokenizer, post-processor and decoder verbatim.
    spec = json.loads(tok.to_str())
    for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        spec[k] = ds[k]
    tok = Tokenizer.from_str(json.dumps(spec))

    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 2,
        min_frequency=2,
        special_tokens=[AddedToken(BOS, normalized=False, special=True),
                        AddedToken(EOS, normalized=False, special=True)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [p + "\n\n" for name in NOVELS for p in novels[name]]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(USER, normalized=False, special=True),
                            AddedToken(ASSISTANT, normalized=False, special=True)])
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    assert tok.token_to_id(USER) == VOCAB_SIZE - 2 and tok.token_to_id(ASSISTANT) == VOCAB_SIZE - 1
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def write_tokenizer(tok, out: Path) -> None:
    spec = json.loads(tok.to_str())
    # Same key order/shape as DeepSeek's file; the BPE fields mirror theirs.
    spec["model"]["ignore_merges"] = spec["model"].get("ignore_merges", False)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    ds_cfg = json.loads((DS_TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))

    def added(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added(BOS),
        "clean_up_tokenization_spaces": False,
        "eos_token": added(EOS),
        "legacy": True,
        "model_max_length": MODEL_CONFIG["max_position_embeddings"],
        "pad_token": added(EOS),
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": ds_cfg["chat_template"],
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Model


def hf_config():
    from transformers import DeepseekV3Config

    c = dict(MODEL_CONFIG)
    rs = dict(c.pop("rope_scaling"))
    rs["rope_type"] = rs.pop("type")
    rs["rope_theta"] = c.pop("rope_theta")
    for k in ("topk_method", "scoring_func", "moe_layer_freq"):
        c.pop(k)  # transformers' DeepSeek-V3 always does sigmoid + noaux_tc, every layer MoE
    return DeepseekV3Config(rope_parameters=rs, rope_interleave=True, **c)


def deepseek_config_json() -> dict:
    """config.json as the official DeepSeek-V3 checkpoints spell it (minus auto_map / fp8)."""
    c = MODEL_CONFIG
    keys = ["attention_bias", "attention_dropout", "bos_token_id", "eos_token_id", "first_k_dense_replace",
            "hidden_act", "hidden_size", "initializer_range", "intermediate_size", "kv_lora_rank",
            "max_position_embeddings", "moe_intermediate_size", "moe_layer_freq", "n_group",
            "n_routed_experts", "n_shared_experts", "norm_topk_prob", "num_attention_heads",
            "num_experts_per_tok", "num_hidden_layers", "num_key_value_heads", "q_lora_rank",
            "qk_nope_head_dim", "qk_rope_head_dim", "rms_norm_eps", "rope_scaling", "rope_theta",
            "routed_scaling_factor", "scoring_func", "tie_word_embeddings", "topk_group", "topk_method",
            "v_head_dim", "vocab_size"]
    out = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    for k in keys:
        out[k] = c[k]
    out.update(ep_size=1, num_nextn_predict_layers=0, seq_aux=True, torch_dtype="bfloat16",
               use_cache=True)
    import transformers
    out["transformers_version"] = transformers.__version__
    return dict(sorted(out.items(), key=lambda kv: (kv[0] not in ("architectures",), kv[0])))


def per_expert_state_dict(model) -> dict:
    """HF state dict -> official DeepSeek tensor names (per-expert gate/up/down), BF16 weights."""
    import torch

    sd = {}
    I = MODEL_CONFIG["moe_intermediate_size"]
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]: gate rows first, then up
            prefix = name[: -len("gate_up_proj")]
            for e in range(t.shape[0]):
                sd[f"{prefix}{e}.gate_proj.weight"] = t[e, :I]
                sd[f"{prefix}{e}.up_proj.weight"] = t[e, I:]
        elif name.endswith("mlp.experts.down_proj"):  # [E, H, I]
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                sd[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            sd[name] = t
    for k in list(sd):
        if k.endswith("e_score_correction_bias"):
            sd[k] = sd[k].to(torch.float32).contiguous()
        else:
            sd[k] = sd[k].to(torch.bfloat16).contiguous()
    return dict(sorted(sd.items(), key=lambda kv: _tensor_order(kv[0])))


def _tensor_order(name: str):
    parts = name.split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def build_stream(tok, novels):
    """Training token stream: per novel BOS, paragraphs joined by blank lines, EOS; and paragraph starts."""
    import torch

    ids, starts = [], []
    for name in TRAIN_NOVELS:
        encs = tok.encode_batch([p + "\n\n" for p in novels[name]], add_special_tokens=False)
        ids.append(0)
        for e in encs:
            starts.append(len(ids))
            ids.extend(e.ids)
        ids.append(1)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def train(model, stream, starts, steps, batch, seq, max_minutes, log):
    import torch

    T = TRAIN
    gen = torch.Generator().manual_seed(SEED)
    starts = starts[starts + seq <= len(stream)]
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": T["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=T["lr"], betas=T["betas"], eps=1e-8)

    # Auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2): after each step, raise the bias of
    # under-loaded experts and lower it for over-loaded ones by a fixed speed.
    gates, loads = [], []
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):
            g = layer.mlp.gate
            gates.append(g)
            loads.append(torch.zeros(g.num_experts))

            def hook(mod, inp, out, i=len(gates) - 1):
                loads[i] += torch.bincount(out[2].flatten(), minlength=mod.num_experts).float()
            g.register_forward_hook(hook)

    def lr_at(step):
        if step < T["warmup"]:
            return T["lr"] * (step + 1) / T["warmup"]
        prog = (step - T["warmup"]) / max(1, steps - T["warmup"])
        return T["lr"] * (T["min_lr_frac"] + (1 - T["min_lr_frac"]) * 0.5 * (1 + math.cos(math.pi * prog)))

    model.train()
    t0 = time.time()
    ema, history = None, []
    for step in range(steps):
        sel = starts[torch.randint(len(starts), (batch,), generator=gen)]
        x = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), stream[s:s + seq - 1]]) for s in sel])
        for l in loads:
            l.zero_()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), T["clip"])
        opt.step()
        with torch.no_grad():
            for g, l in zip(gates, loads):
                g.e_score_correction_bias += T["bias_update_speed"] * torch.sign(l.mean() - l)
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        history.append(lv)
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"step {step:5d}/{steps}  loss {lv:.4f}  ema {ema:.4f}  lr {lr_at(step):.2e}  "
                f"{el:7.1f}s ({el / (step + 1):.2f}s/step)")
        if max_minutes and time.time() - t0 > max_minutes * 60:
            log(f"stopping at step {step + 1}: --max-minutes {max_minutes} reached")
            break
    model.eval()
    return history, time.time() - t0


def greedy(model, ids, n):
    """Plain greedy decoding on full-sequence logits (no cache, never stops early)."""
    import torch

    out, margins = [], []
    x = ids.clone()
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=x).logits[0, -1].float()
            top2 = torch.topk(logits, 2)
            nxt = int(top2.indices[0])
            margins.append(float(top2.values[0] - top2.values[1]))
            out.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    return out, margins


def min_router_gap(model, ids) -> float:
    """Smallest score gap at an expert- or group-selection boundary over all positions of `ids`
    (sigmoid + e_score_correction_bias; group score = sum of the group's top-2)."""
    import torch

    gaps = []

    def hook(mod, inp, out):
        h = inp[0].reshape(-1, mod.hidden_dim).float()
        s = torch.sigmoid(h @ mod.weight.float().t()) + mod.e_score_correction_bias
        g = s.view(-1, mod.num_group, mod.num_experts // mod.num_group)
        gs = g.topk(2, dim=-1)[0].sum(-1).sort(dim=-1, descending=True)[0]
        if mod.topk_group < mod.num_group:
            gaps.append(float((gs[:, mod.topk_group - 1] - gs[:, mod.topk_group]).min()))
        keep = torch.zeros_like(g, dtype=torch.bool)
        keep.scatter_(1, g.topk(2, dim=-1)[0].sum(-1).topk(mod.topk_group, dim=-1)[1].unsqueeze(-1)
                      .expand(-1, -1, g.shape[-1]), True)
        sel = s.masked_fill(~keep.view_as(s), float("-inf")).sort(dim=-1, descending=True)[0]
        gaps.append(float((sel[:, mod.top_k - 1] - sel[:, mod.top_k]).min()))

    hs = [l.mlp.gate.register_forward_hook(hook) for l in model.model.layers if hasattr(l.mlp, "gate")]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hs:
        h.remove()
    return min(gaps)


def finalize(out: Path, tok, summary: dict, log) -> dict:
    """Golden tensors and README samples, computed from the checkpoint as saved in `out`."""
    import torch
    from safetensors.torch import save_file
    from transformers import DeepseekV3ForCausalLM

    loaded = DeepseekV3ForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager")
    loaded.eval()
    prompt_ids = [0] + tok.encode(GOLDEN_PROMPT, add_special_tokens=False).ids
    x = torch.tensor([prompt_ids])
    g_ids, margins = greedy(loaded, x, GOLDEN_NEW_TOKENS)
    if 1 in g_ids:
        log("warning: the greedy path contains EOS (id 1)")
    with torch.no_grad():
        last_logits = loaded(input_ids=x).logits[0, -1].float()
        hf_gen = loaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=GOLDEN_NEW_TOKENS,
                                 do_sample=False, eos_token_id=None, pad_token_id=1)
    hf_ids = hf_gen[0, x.shape[1]:].tolist()
    if hf_ids != g_ids:
        log(f"warning: generate() with KV cache differs from full recompute: {hf_ids} vs {g_ids}")
    router_gap = min_router_gap(loaded, torch.tensor([prompt_ids + g_ids]))
    save_file({"p0.input_ids": torch.tensor(prompt_ids, dtype=torch.int64),
               "p0.greedy_ids": torch.tensor(g_ids, dtype=torch.int64),
               "p0.greedy_margins": torch.tensor(margins, dtype=torch.float32),
               "p0.last_logits": last_logits.contiguous()},
              str(out / "golden.safetensors"), metadata={"prompt": GOLDEN_PROMPT})
    log(f"golden prompt ids: {prompt_ids}")
    log(f"golden greedy ids: {g_ids}")
    log(f"min greedy margin: {min(margins):.4f}; min router gap: {router_gap:.2e}")

    samples = {}
    long_greedy, _ = greedy(loaded, x, 64)
    samples["greedy, 64 tokens"] = GOLDEN_PROMPT + tok.decode(long_greedy)
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            s = loaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=64, do_sample=True,
                                temperature=0.7, top_p=0.95, top_k=0, pad_token_id=1)
        samples[f"temperature 0.7, top_p 0.95, torch seed {seed}, 64 tokens"] = GOLDEN_PROMPT + tok.decode(
            s[0, x.shape[1]:].tolist(), skip_special_tokens=True)
    for p in EXTRA_PROMPTS:
        ids, _ = greedy(loaded, torch.tensor([[0] + tok.encode(p, add_special_tokens=False).ids]), 48)
        samples[f"prompt {p!r}, greedy, 48 tokens"] = p + tok.decode(ids)
    for k, v in samples.items():
        log(f"sample ({k}): {v!r}")

    summary["e_score_correction_bias"] = {
        f"layer {i}": [round(float(v), 4) for v in l.mlp.gate.e_score_correction_bias]
        for i, l in enumerate(loaded.model.layers) if hasattr(l.mlp, "gate")}
    summary.update(golden_prompt=GOLDEN_PROMPT, golden_input_ids=prompt_ids, golden_greedy_ids=g_ids,
                   golden_min_greedy_margin=round(min(margins), 4), golden_min_router_gap=router_gap,
                   samples=samples)
    summary["file_sizes"] = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()
                             and f.name not in ("training_summary.json", "README.md")}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {out}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in summary["file_sizes"].items()))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "default-model"))
    ap.add_argument("--steps", type=int, default=TRAIN["steps"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=25.0)
    ap.add_argument("--smoke", action="store_true", help="10 steps into /tmp/ff-default-model-smoke")
    ap.add_argument("--golden-only", action="store_true",
                    help="no training: recompute golden.safetensors and the samples from the checkpoint in --out")
    args = ap.parse_args()
    if args.smoke:
        args.out, args.steps = "/tmp/ff-default-model-smoke", 10

    import torch
    import transformers
    from safetensors.torch import save_file, load_file
    from tokenizers import Tokenizer
    from transformers import DeepseekV3ForCausalLM

    if not DS_TOKENIZER_DIR.is_dir():
        die(f"missing {DS_TOKENIZER_DIR} (shared/data/deepseek-v3-tokenizer beside the repository, "
            f"or set DS_V3_TOKENIZER_DIR)")
    if int(transformers.__version__.split(".")[0]) < 5:
        die(f"needs transformers >= 5 (found {transformers.__version__})")
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    random.seed(SEED)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(s):
        print(s, flush=True)

    if args.golden_only:
        summary = json.loads((out / "training_summary.json").read_text())
        finalize(out, Tokenizer.from_file(str(out / "tokenizer.json")), summary, log)
        return

    novels = load_novels()
    log(f"corpus: {CORPUS_PACKAGE}, {sum(len(p) for n in novels.values() for p in n):,} characters, "
        f"{sum(len(v) for v in novels.values()):,} paragraphs")
    tok = train_tokenizer(novels)
    write_tokenizer(tok, out)
    stream, starts = build_stream(tok, novels)
    log(f"tokenizer: {tok.get_vocab_size()} tokens; training stream = {len(stream):,} tokens")

    model = DeepseekV3ForCausalLM(hf_config())  # seeded init
    model.to(torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")

    history, secs = train(model, stream, starts, args.steps, TRAIN["batch"], TRAIN["seq"], args.max_minutes, log)
    final = sum(history[-50:]) / len(history[-50:])
    log(f"trained {len(history)} steps in {secs / 60:.1f} min; final train loss (mean of last 50 steps) {final:.4f}")

    # ---- save in the official layout
    sd = per_expert_state_dict(model)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(deepseek_config_json(), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "do_sample": True,
         "temperature": 0.6, "top_p": 0.95, "transformers_version": transformers.__version__}, indent=2) + "\n")

    # ---- reload through transformers and check it is the same model (BF16-rounded weights)
    ref = DeepseekV3ForCausalLM(hf_config())
    ref.load_state_dict({k: (v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16).float())
                         for k, v in model.state_dict().items()})
    ref.eval()
    loaded = DeepseekV3ForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    loaded.eval()
    lc = loaded.config
    assert lc.rope_parameters.get("rope_type") == "yarn", lc.rope_parameters
    assert lc.n_routed_experts == MODEL_CONFIG["n_routed_experts"] and lc.q_lora_rank == MODEL_CONFIG["q_lora_rank"]
    probe = stream[:200].unsqueeze(0)
    with torch.no_grad():
        a, b = ref(input_ids=probe).logits, loaded(input_ids=probe).logits
    diff = (a - b).abs().max().item()
    log(f"reload check: max |logit difference| = {diff:.3g}")
    if diff > 1e-4:
        die("the saved checkpoint does not reload to the trained model")
    ondisk = load_file(str(out / "model.safetensors"))
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in ondisk
    assert not any("gate_up_proj" in k for k in ondisk)
    del loaded, ref

    summary = {
        "corpus_package": CORPUS_PACKAGE, "corpus_novels_tokenizer": NOVELS, "corpus_novels_model": TRAIN_NOVELS,
        "train_stream_tokens": int(len(stream)), "parameters": n_params, "steps": len(history),
        "train_minutes": round(secs / 60, 1), "threads": args.threads, "final_train_loss": round(final, 4),
        "loss_every_100_steps": [round(h, 3) for h in history[::100]],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "train": {k: list(v) if isinstance(v, tuple) else v for k, v in TRAIN.items()},
    }
    finalize(out, tok, summary, log)


if __name__ == "__main__":
    main()
