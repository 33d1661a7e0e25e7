#!/usr/bin/env python3
"""Generate the tiny DeepSeek-V3 / V2 test fixtures under tests/fixtures/.

Every fixture is a small random checkpoint laid out exactly like a real DeepSeek Hugging Face checkpoint
(per-expert tensors, real config.json spelling, FP8 block quantization where applicable), a byte-level BPE
tokenizer, and golden outputs computed with the official transformers modeling code
(DeepseekV3ForCausalLM / DeepseekV2ForCausalLM, eager attention, float32, CPU).

    python3 tools/make_fixtures.py            # regenerate everything (a minute or two on 2 cores)
    python3 tools/make_fixtures.py --check    # regenerate into a temp dir and compare with the committed files

Requirements (PyPI): torch, transformers (5.x), tokenizers, safetensors; accelerate optionally (lets the
script also cross-check the FP8 checkpoint through transformers' own FP8 loader). Never needed by CI.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
DS_TOKENIZER = os.environ.get("DS_V3_TOKENIZER_DIR", "/work/shared/data/deepseek-v3-tokenizer")

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
CHAT_TOKENS = [
    "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
]
BPE_VOCAB = 368          # byte alphabet (256) + 3 leading special tokens + learned merges
MODEL_VOCAB = 384        # >= tokenizer size (368 + 11 added = 379), padded like the real 129280
PROMPT_LENGTHS = [1, 7, 33, 70]
N_GREEDY = 32
N_DECODE_LOGITS = 16
MIN_GREEDY_GAP = 3e-3    # top1 - top2 logit gap along every greedy path (logits have std ~2)
MIN_ROUTER_GAP = 5e-5    # score gap at every group / expert selection boundary along the golden paths
FP8_MAX = 448.0
BLOCK = 128

# Extra training text (digits, punctuation, CJK, chat-ish prose) so every pre-tokenizer branch has merges.
EXTRA_CORPUS = """
The quick brown fox jumps over the lazy dog. A tiny model can still say something: 12345678 is a number,
and 3.14159 is another one. Tokenizers split digits in runs of up to three, so 2024 becomes 202 and 4.
Hello, world! How are you today? I am fine, thank you. The weather is nice and the sky is blue.
Mixture-of-experts models route every token to a few experts; the router picks them by score.
Attention reads keys and values from a cache, page by page, sixty-four tokens at a time.
你好，世界。今天天气很好。我们在测试一个很小的模型。こんにちは、カタカナとひらがな。
def main():\n    print("hello")\n    return 0\n
"""

PROMPT_TEXT = (
    "Once upon a time, in a small town by the sea, there lived an old clockmaker who repaired "
    "watches for everyone. Every morning at 7 o'clock he opened his shop, and by noon the table was "
    "covered with 23 tiny gears, springs and screws. Children came to watch him work, asking "
    "questions about time, numbers and the stars; he answered each one with a story."
)
CHAT_CONTENT = "Why?"


# ----------------------------------------------------------------------------------------------
# tokenizer


def training_corpus():
    parts = []
    lic = os.path.join(sysconfig.get_paths()["stdlib"], "LICENSE.txt")
    if os.path.exists(lic):
        with open(lic, encoding="utf-8") as f:
            parts.append(f.read())
    else:
        print(f"warning: {lic} not found; tokenizer will differ from the committed one", file=sys.stderr)
    parts.append(EXTRA_CORPUS)
    parts.append(PROMPT_TEXT)
    text = "\n".join(parts)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    with open(os.path.join(DS_TOKENIZER, "tokenizer.json"), encoding="utf-8") as f:
        real = json.load(f)
    text, corpus_sha = training_corpus()

    # Pre-tokenizer, normalizer, decoder and post-processor are DeepSeek-V3's own JSON, copied verbatim.
    shell = json.loads(Tokenizer(models.BPE()).to_str())
    shell["pre_tokenizer"] = real["pre_tokenizer"]
    shell["normalizer"] = real["normalizer"]
    shell["decoder"] = real["decoder"]
    shell["post_processor"] = real["post_processor"]
    tok = Tokenizer.from_str(json.dumps(shell))

    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in (BOS, EOS, PAD)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=True) for t in CHAT_TOKENS])

    # Re-serialise in the real file's shape: merges as "a b" strings, no keys the real file lacks.
    j = json.loads(tok.to_str())
    model = j["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    j["model"] = {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
        "vocab": model["vocab"], "merges": merges,
    }
    j["pre_tokenizer"] = real["pre_tokenizer"]
    j["normalizer"] = real["normalizer"]
    j["decoder"] = real["decoder"]
    j["post_processor"] = real["post_processor"]
    tok_json = json.dumps(j, ensure_ascii=False, indent=2)
    tok2 = Tokenizer.from_str(tok_json)
    probe = "Hello, my dog is cute 12345678  spaces\n\nnew 你好 <｜User｜>x<｜Assistant｜>"
    assert tok2.encode(probe).ids == tok.encode(probe).ids
    assert tok2.token_to_id(BOS) == 0 and tok2.token_to_id(EOS) == 1 and tok2.token_to_id(PAD) == 2
    assert tok2.get_vocab_size() <= MODEL_VOCAB
    return tok2, tok_json, corpus_sha


def tokenizer_config(max_len):
    with open(os.path.join(DS_TOKENIZER, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.pop("added_tokens_decoder", None)
    cfg["model_max_length"] = max_len
    return json.dumps(cfg, ensure_ascii=False, indent=2)


def find_prefix(tok, text, n_tokens, wrap=lambda s: s):
    """Longest word-boundary prefix of text whose encoding (BOS prepended) has exactly n_tokens ids."""
    bos = tok.token_to_id(BOS)
    cands = [i for i in range(1, len(text) + 1) if i == len(text) or text[i] == " "]
    cands += [i for i in range(1, len(text) + 1) if i not in cands]
    for i in cands:
        s = wrap(text[:i])
        ids = [bos] + tok.encode(s).ids
        if len(ids) == n_tokens:
            return s, ids
    raise RuntimeError(f"no prefix of the prompt text encodes to {n_tokens} tokens")


def make_prompts(tok):
    bos = tok.token_to_id(BOS)
    prompts = [("", [bos])]
    # p1: a chat turn, so the added tokens appear in a prompt.
    s, ids = find_prefix(tok, CHAT_CONTENT, 7, wrap=lambda c: f"<｜User｜>{c}<｜Assistant｜>")
    prompts.append((s, ids))
    for n in PROMPT_LENGTHS[2:]:
        prompts.append(find_prefix(tok, PROMPT_TEXT, n))
    for (s, ids), n in zip(prompts, PROMPT_LENGTHS):
        assert len(ids) == n
    return prompts


# ----------------------------------------------------------------------------------------------
# configs (real DeepSeek config.json spelling; transformers reads rope_scaling/rope_theta too)


def v3_config():
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "ep_size": 1,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "hidden_size": 96,
        "initializer_range": 0.02,
        "intermediate_size": 160,
        "kv_lora_rank": 48,
        "max_position_embeddings": 16384,
        "moe_intermediate_size": 16,
        "moe_layer_freq": 1,
        "n_group": 4,
        "n_routed_experts": 16,
        "n_shared_experts": 1,
        "norm_topk_prob": True,
        "num_attention_heads": 4,
        "num_experts_per_tok": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 4,
        "num_nextn_predict_layers": 0,
        "q_lora_rank": 64,
        "qk_nope_head_dim": 24,
        "qk_rope_head_dim": 16,
        "rms_norm_eps": 1e-06,
        "rope_interleave": True,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 4.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
        "rope_theta": 10000.0,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": 2,
        "topk_method": "noaux_tc",
        "torch_dtype": "float32",
        "use_cache": True,
        "v_head_dim": 24,
        "vocab_size": MODEL_VOCAB,
    }


def v2_lite_config():
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "aux_loss_alpha": 0.001,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 144,
        "kv_lora_rank": 48,
        "max_position_embeddings": 16384,
        "moe_intermediate_size": 16,
        "moe_layer_freq": 1,
        "n_group": 1,
        "n_routed_experts": 12,
        "n_shared_experts": 2,
        "norm_topk_prob": False,
        "num_attention_heads": 4,
        "num_experts_per_tok": 3,
        "num_hidden_layers": 3,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "q_lora_rank": None,
        "qk_nope_head_dim": 24,
        "qk_rope_head_dim": 16,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 16.0,
            "mscale": 1.0,
            "mscale_all_dim": 0.707,
            "original_max_position_embeddings": 1024,
            "type": "yarn",
        },
        "rope_theta": 10000.0,
        "routed_scaling_factor": 1.5,
        "scoring_func": "softmax",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": 1,
        "topk_method": "greedy",
        "torch_dtype": "float32",
        "use_cache": True,
        "v_head_dim": 32,
        "vocab_size": MODEL_VOCAB,
    }


def v2_glg_config():
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "aux_loss_alpha": 0.001,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "hidden_size": 160,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "kv_lora_rank": 40,
        "max_position_embeddings": 4096,
        "moe_intermediate_size": 8,
        "moe_layer_freq": 1,
        "n_group": 4,
        "n_routed_experts": 16,
        "n_shared_experts": 1,
        # HF's DeepseekV2TopkRouter ignores norm_topk_prob (always scales by routed_scaling_factor), while
        # DeepSeek's own V2 code normalises instead of scaling when it is true. False keeps both agreeing.
        "norm_topk_prob": False,
        "num_attention_heads": 4,
        "num_experts_per_tok": 3,
        "num_hidden_layers": 3,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "q_lora_rank": 48,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 16,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "routed_scaling_factor": 2.0,
        "scoring_func": "softmax",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": 2,
        "topk_method": "group_limited_greedy",
        "torch_dtype": "float32",
        "use_cache": True,
        "v_head_dim": 24,
        "vocab_size": MODEL_VOCAB,
    }


FP8_QUANT_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [BLOCK, BLOCK],
}


def write_config(cfg, d):
    import transformers

    c = dict(cfg)
    c["transformers_version"] = transformers.__version__
    with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
        json.dump(dict(sorted(c.items())), f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# weights: canonical per-expert state dict (real checkpoint names) <-> transformers' fused modules


def hf_model(d):
    """Build the transformers model exactly as from_pretrained would configure it from d/config.json."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(d)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def per_expert_shapes(model):
    shapes = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            n_exp, two_i, hid = t.shape
            for e in range(n_exp):
                shapes[f"{prefix}{e}.gate_proj.weight"] = (two_i // 2, hid)
                shapes[f"{prefix}{e}.up_proj.weight"] = (two_i // 2, hid)
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            n_exp, hid, inter = t.shape
            for e in range(n_exp):
                shapes[f"{prefix}{e}.down_proj.weight"] = (hid, inter)
        else:
            shapes[name] = tuple(t.shape)
    return shapes


def natural_key(name):
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def random_weights(shapes, hidden, seed, router_gain):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name in sorted(shapes, key=natural_key):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name == "model.embed_tokens.weight":
            t = torch.randn(shape, generator=g)
        elif name == "lm_head.weight":
            t = 0.2 * torch.randn(shape, generator=g)
        elif name.endswith("mlp.gate.weight"):
            t = (router_gain / math.sqrt(hidden)) * torch.randn(shape, generator=g)
        elif name.endswith("e_score_correction_bias"):
            t = 0.2 * torch.rand(shape, generator=g) - 0.1
        elif name.endswith(".weight") and len(shape) == 2:
            std = min(0.2, max(0.05, 1.0 / math.sqrt(shape[1])))
            t = std * torch.randn(shape, generator=g)
        else:
            raise ValueError(f"no init rule for {name} {shape}")
        sd[name] = t.float().contiguous()
    return sd


def fuse_experts(model, sd):
    """Per-expert (real-layout) tensors -> the state dict of transformers' fused-expert modules."""
    fused = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            fused[name] = torch.stack([
                torch.cat([sd[f"{prefix}{e}.gate_proj.weight"], sd[f"{prefix}{e}.up_proj.weight"]], 0)
                for e in range(t.shape[0])
            ])
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            fused[name] = torch.stack([sd[f"{prefix}{e}.down_proj.weight"] for e in range(t.shape[0])])
        else:
            fused[name] = sd[name]
    return fused


def load_into(model, sd):
    model.load_state_dict({k: v.float() for k, v in fuse_experts(model, sd).items()}, strict=True)


# ----------------------------------------------------------------------------------------------
# FP8 block quantization, exactly as DeepSeek's FP8 checkpoints store it


def is_fp8_linear(name):
    if not name.endswith(".weight"):
        return False
    if ".self_attn." in name:
        return name.split(".")[-2] in ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
    if ".mlp." in name:
        return name.split(".")[-2] in ("gate_proj", "up_proj", "down_proj")
    return False


def fp8_quantize(w):
    out_f, in_f = w.shape
    rows, cols = -(-out_f // BLOCK), -(-in_f // BLOCK)
    padded = torch.zeros(rows * BLOCK, cols * BLOCK, dtype=torch.float32)
    padded[:out_f, :in_f] = w
    blocks = padded.view(rows, BLOCK, cols, BLOCK)
    amax = blocks.abs().amax(dim=(1, 3))
    scale = amax / FP8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(rows * BLOCK, cols * BLOCK)[:out_f, :in_f].contiguous(), scale.float().contiguous()


def fp8_dequantize(q, scale):
    out_f, in_f = q.shape
    s = scale.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:out_f, :in_f]
    return q.float() * s


def fp8_state_dicts(sd):
    """Returns (on-disk tensors, float32 tensors the golden model runs with)."""
    disk, eff = {}, {}
    for name, t in sd.items():
        if is_fp8_linear(name):
            q, s = fp8_quantize(t)
            disk[name] = q
            disk[name + "_scale_inv"] = s
            eff[name] = fp8_dequantize(q, s)
        elif name.endswith("e_score_correction_bias"):
            disk[name] = t.float()
            eff[name] = t.float()
        else:
            b = t.to(torch.bfloat16)
            disk[name] = b
            eff[name] = b.float()
    return disk, eff


def bf16_state_dicts(sd):
    disk, eff = {}, {}
    for name, t in sd.items():
        if name.endswith("e_score_correction_bias"):
            disk[name] = t.float()
        else:
            disk[name] = t.to(torch.bfloat16)
        eff[name] = disk[name].float()
    return disk, eff


# ----------------------------------------------------------------------------------------------
# writing checkpoints


def save_single(disk, d):
    from safetensors.torch import save_file

    ordered = {k: disk[k].contiguous() for k in sorted(disk, key=natural_key)}
    save_file(ordered, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def save_sharded(disk, d, n_shards=2):
    from safetensors.torch import save_file

    names = sorted(disk, key=natural_key)
    nbytes = {k: disk[k].numel() * disk[k].element_size() for k in names}
    total = sum(nbytes.values())
    shards, cur, acc = [], [], 0
    for k in names:
        if cur and acc >= total * (len(shards) + 1) / n_shards and len(shards) < n_shards - 1:
            shards.append(cur)
            cur = []
        cur.append(k)
        acc += nbytes[k]
    shards.append(cur)
    assert len(shards) == n_shards
    weight_map = {}
    for i, keys in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: disk[k].contiguous() for k in keys}, os.path.join(d, fname), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# goldens


class RouterProbe:
    """Records the smallest score gap at every routing decision (group and expert boundaries)."""

    def __init__(self, model):
        self.min_gap = math.inf
        self.enabled = True
        self.handles = []
        for name, mod in model.named_modules():
            if name.endswith("mlp.gate"):
                self.handles.append(mod.register_forward_hook(self.hook))

    def hook(self, mod, inputs, output):
        if not self.enabled:
            return
        logits = output[0].detach().double()
        k = mod.top_k
        n_exp = mod.num_experts
        if hasattr(mod, "e_score_correction_bias"):  # V3 noaux_tc
            scores = logits.sigmoid() + mod.e_score_correction_bias.double()
            grouped = scores.view(-1, mod.num_group, n_exp // mod.num_group)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        else:
            scores = logits.softmax(-1)
            grouped = scores.view(-1, mod.num_group or 1, n_exp // (mod.num_group or 1))
            group_scores = grouped.max(-1).values
        limited = hasattr(mod, "e_score_correction_bias") or mod.topk_method == "group_limited_greedy"
        if limited and mod.topk_group < group_scores.shape[1]:
            gs = group_scores.sort(-1, descending=True).values
            self.min_gap = min(self.min_gap, float((gs[:, mod.topk_group - 1] - gs[:, mod.topk_group]).min()))
            keep = group_scores.topk(mod.topk_group, dim=-1).indices
            mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            allowed = grouped.masked_fill(~mask[..., None], -math.inf).view(-1, n_exp)
        else:
            allowed = scores
        s = allowed.sort(-1, descending=True).values
        self.min_gap = min(self.min_gap, float((s[:, k - 1] - s[:, k]).min()))

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def run_goldens(model, prompts):
    from transformers import DynamicCache, GenerationConfig

    probe = RouterProbe(model)
    tensors, stats = {}, {"greedy_gap": math.inf, "cache_vs_full": 0.0}
    for i, (_, ids) in enumerate(prompts):
        x = torch.tensor([ids], dtype=torch.long)
        cache = DynamicCache(config=model.config)
        prefill = model(input_ids=x, past_key_values=cache, use_cache=True).logits[0].float()
        logits = prefill[-1]
        greedy, decode, gaps = [], [], []
        for j in range(N_GREEDY):
            top = logits.topk(2)
            gaps.append(float(top.values[0] - top.values[1]))
            tok = int(top.indices[0])
            greedy.append(tok)
            if j == N_GREEDY - 1:
                break
            logits = model(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True).logits[0, -1].float()
            if j < N_DECODE_LOGITS:
                decode.append(logits.clone())
        tensors[f"p{i}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"p{i}.prefill_logits"] = prefill.contiguous()
        tensors[f"p{i}.greedy_ids"] = torch.tensor(greedy, dtype=torch.int64)
        tensors[f"p{i}.decode_logits"] = torch.stack(decode).contiguous()
        tensors[f"p{i}.greedy_gaps"] = torch.tensor(gaps, dtype=torch.float32)
        stats["greedy_gap"] = min(stats["greedy_gap"], min(gaps))
        stats[f"p{i}.greedy_gap"] = min(gaps)
        stats["eos_in_greedy"] = stats.get("eos_in_greedy", False) or (model.config.eos_token_id in greedy)

        # The cached path must agree with one uncached forward over prompt + greedy tokens.
        probe.enabled = False
        full_ids = torch.tensor([ids + greedy[:N_DECODE_LOGITS]], dtype=torch.long)
        full = model(input_ids=full_ids, use_cache=False).logits[0].float()
        t = len(ids)
        diff = max(float((full[:t] - prefill).abs().max()),
                   float((full[t : t + N_DECODE_LOGITS] - tensors[f"p{i}.decode_logits"]).abs().max()))
        stats["cache_vs_full"] = max(stats["cache_vs_full"], diff)

        # Cross-check the manual loop against transformers' own greedy generate() (which masks EOS until
        # min_new_tokens, so only comparable when the path has no EOS -- such seeds are rejected anyway).
        gen_cfg = GenerationConfig(max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY, do_sample=False, pad_token_id=2)
        out = model.generate(x, generation_config=gen_cfg, attention_mask=torch.ones_like(x))
        gen = out[0, len(ids):].tolist()
        assert gen == greedy or stats["eos_in_greedy"], f"generate() disagrees with the manual greedy loop for prompt {i}: {gen} vs {greedy}"
        probe.enabled = True
    stats["router_gap"] = probe.min_gap
    probe.close()
    return tensors, stats


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer with a deterministic header (the library orders __metadata__ by hash)."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hdr = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(len(hdr).to_bytes(8, "little"))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def save_golden(tensors, prompts, d, extra_meta):
    import transformers

    meta = {
        "generator": "tools/make_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
        "decode_logits": (
            "decode_logits[j] = logits after feeding greedy_ids[j] at position T+j with the KV cache holding "
            "input_ids and greedy_ids[:j]; argmax(decode_logits[j]) == greedy_ids[j+1]; "
            "greedy_ids[0] == argmax(prefill_logits[T-1])"
        ),
    }
    for i, (text, _) in enumerate(prompts):
        meta[f"p{i}.text"] = text
    meta.update({k: str(v) for k, v in extra_meta.items()})
    ordered = {}
    for i in range(len(prompts)):
        for f in ("input_ids", "prefill_logits", "greedy_ids", "decode_logits", "greedy_gaps"):
            ordered[f"p{i}.{f}"] = tensors[f"p{i}.{f}"]
    write_safetensors(os.path.join(d, "golden.safetensors"), ordered, meta)
    from safetensors.torch import load_file

    back = load_file(os.path.join(d, "golden.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in ordered.items())


@torch.no_grad()
def verify_reload(d, tensors, prompts):
    """from_pretrained on the written directory must reproduce the golden prefill logits bit for bit."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    for i, (_, ids) in enumerate(prompts):
        got = model(input_ids=torch.tensor([ids])).logits[0].float()
        if not torch.equal(got, tensors[f"p{i}.prefill_logits"]):
            worst = float((got - tensors[f"p{i}.prefill_logits"]).abs().max())
            raise AssertionError(f"{d}: from_pretrained logits differ from the golden by {worst}")


@torch.no_grad()
def verify_fp8_files(d, eff):
    """Cross-check the FP8 files against transformers' own readers of the DeepSeek FP8 format.

    1. transformers.integrations.finegrained_fp8._dequantize_fp8_weight (the ceil-grid 128x128 rule that its
       GPU kernels use) must give exactly our float32 dequantized weights.
    2. from_pretrained on CPU (dequantizes while loading) must give our weights rounded to its dtype -- for
       the tensors where its loader derives the right block size. That loader takes block = rows / scale_rows,
       which is wrong for dims that are not multiples of 128 spanning more than one block (e.g. 160 rows with
       2 scale rows -> blocks of 80); those tensors are counted, not compared.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from transformers.integrations.finegrained_fp8 import _dequantize_fp8_weight

    with open(os.path.join(d, "model.safetensors.index.json"), encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    disk = {}
    for fname in files:
        disk.update(load_file(os.path.join(d, fname)))
    n_fp8 = 0
    for name, t in disk.items():
        if t.dtype != torch.float8_e4m3fn:
            continue
        n_fp8 += 1
        w = _dequantize_fp8_weight(t.clone(), disk[name + "_scale_inv"], [BLOCK, BLOCK], torch.float32)
        if not torch.equal(w, eff[name]):
            raise AssertionError(f"{name}: transformers' block dequantization differs from ours")

    model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
    got = model.state_dict()
    dtype = got["lm_head.weight"].dtype
    per_expert_got = {}
    for name, t in got.items():  # unfuse experts back to checkpoint names
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            for e in range(t.shape[0]):
                gate, up = t[e].chunk(2, 0)
                per_expert_got[f"{prefix}{e}.gate_proj.weight"] = gate
                per_expert_got[f"{prefix}{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                per_expert_got[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            per_expert_got[name] = t
    compared, skipped = 0, 0
    for name, ref in eff.items():
        if name + "_scale_inv" in disk:
            rows = ref.shape[0]
            scale_rows, scale_cols = disk[name + "_scale_inv"].shape
            if rows // scale_rows != min(rows, BLOCK) or ref.shape[1] // scale_cols != min(ref.shape[1], BLOCK):
                skipped += 1
                continue
        if not torch.equal(per_expert_got[name].float(), ref.to(per_expert_got[name].dtype).float()):
            raise AssertionError(f"{name}: transformers' FP8 loader gives different weights")
        compared += 1
    return (f"transformers' ceil-grid dequantizer matches all {n_fp8} FP8 tensors exactly; its CPU loader "
            f"({dtype}) matches {compared} tensors, {skipped} unaligned multi-block tensors not comparable")


# ----------------------------------------------------------------------------------------------
# driver


def write_tokenizer_files(d, tok_json, max_len):
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
        f.write("\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer_config(max_len))
        f.write("\n")


def fresh_dir(d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


def build_family(name, cfg, variants, prompts, seed0, router_gain, log):
    """Tries seeds from seed0 until every variant's golden has clear greedy and routing margins."""
    scratch = tempfile.mkdtemp(prefix="fixture-")
    write_config(cfg, scratch)
    model = hf_model(scratch)
    shutil.rmtree(scratch)
    shapes = per_expert_shapes(model)
    for seed in range(seed0, seed0 + 50):
        sd = random_weights(shapes, cfg["hidden_size"], seed, router_gain)
        results = []
        ok = True
        for vname, transform in variants:
            disk, eff = transform(sd)
            load_into(model, eff)
            tensors, stats = run_goldens(model, prompts)
            results.append((vname, disk, eff, tensors, stats))
            if (stats["greedy_gap"] < MIN_GREEDY_GAP or stats["router_gap"] < MIN_ROUTER_GAP
                    or stats["eos_in_greedy"]):
                log(f"  {name}/{vname} seed {seed}: greedy gap {stats['greedy_gap']:.3g}, router gap "
                    f"{stats['router_gap']:.3g}, EOS on a greedy path: {stats['eos_in_greedy']} -- trying the next seed")
                ok = False
                break
        if ok:
            return seed, results
    raise RuntimeError(f"{name}: no seed gave clear margins")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=FIXTURES, help="fixtures root (default: tests/fixtures)")
    ap.add_argument("--check", action="store_true", help="generate into a temp dir and diff with --out")
    args = ap.parse_args()

    torch.set_num_threads(1)  # bit-reproducible float32 results
    torch.manual_seed(0)
    import transformers

    out_root = tempfile.mkdtemp(prefix="fixtures-") if args.check else args.out
    os.makedirs(out_root, exist_ok=True)
    log = lambda s: print(s, flush=True)
    log(f"transformers {transformers.__version__}, torch {torch.__version__}")

    tok, tok_json, corpus_sha = build_tokenizer()
    prompts = make_prompts(tok)
    log(f"tokenizer: {tok.get_vocab_size()} tokens, corpus sha256 {corpus_sha[:16]}")
    for i, (text, ids) in enumerate(prompts):
        log(f"  p{i}: {len(ids)} tokens {text[:60]!r}")

    identity = lambda sd: ({k: v.float() for k, v in sd.items()}, {k: v.float() for k, v in sd.items()})
    plan = [
        ("tiny-v3", v3_config(), [("tiny-v3", identity), ("tiny-v3-fp8", fp8_state_dicts), ("tiny-v3-bf16", bf16_state_dicts)], 1000, 1.0),
        ("tiny-v2-lite", v2_lite_config(), [("tiny-v2-lite", identity)], 2000, 2.0),
        ("tiny-v2-glg", v2_glg_config(), [("tiny-v2-glg", identity)], 3000, 2.0),
    ]
    summary = {}
    for family, cfg, variants, seed0, gain in plan:
        seed, results = build_family(family, cfg, variants, prompts, seed0, gain, log)
        for vname, disk, eff, tensors, stats in results:
            d = os.path.join(out_root, vname)
            fresh_dir(d)
            vcfg = dict(cfg)
            if vname.endswith("-fp8"):
                vcfg["torch_dtype"] = "bfloat16"
                vcfg["quantization_config"] = FP8_QUANT_CONFIG
                save_sharded(disk, d)
            else:
                if vname.endswith("-bf16"):
                    vcfg["torch_dtype"] = "bfloat16"
                save_single(disk, d)
            write_config(vcfg, d)
            write_tokenizer_files(d, tok_json, vcfg["max_position_embeddings"])
            save_golden(tensors, prompts, d, {"seed": seed, "weights": vname,
                                             "min_greedy_gap": f"{stats['greedy_gap']:.6g}",
                                             "min_router_gap": f"{stats['router_gap']:.6g}"})
            if vname.endswith("-fp8"):
                try:
                    import accelerate  # noqa: F401
                    reload_note = verify_fp8_files(d, eff)
                except ImportError:
                    reload_note = "FP8 reload check skipped (pip install accelerate to enable)"
            else:
                verify_reload(d, tensors, prompts)
                reload_note = "from_pretrained reload: identical logits"
            summary[vname] = (seed, stats, reload_note)
            log(f"{vname}: seed {seed}, min greedy gap {stats['greedy_gap']:.4g}, min router gap "
                f"{stats['router_gap']:.3g}, cached-vs-uncached max |diff| {stats['cache_vs_full']:.3g}; {reload_note}")

    total = 0
    for root, _, files in os.walk(out_root):
        if os.path.basename(root).startswith("tiny-"):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    log(f"total size of tiny-* fixtures: {total / 1e6:.2f} MB")

    if args.check:
        bad = []
        for vname in summary:
            committed = os.path.join(args.out, vname)
            extra = set(os.listdir(committed)) if os.path.isdir(committed) else set()
            extra -= set(os.listdir(os.path.join(out_root, vname)))
            bad += [f"{vname}/{f} (stale)" for f in sorted(extra)]
            for f in sorted(os.listdir(os.path.join(out_root, vname))):
                a, b = os.path.join(out_root, vname, f), os.path.join(args.out, vname, f)
                if not os.path.exists(b) or open(a, "rb").read() != open(b, "rb").read():
                    bad.append(f"{vname}/{f}")
        shutil.rmtree(out_root)
        if bad:
            log("differs from committed: " + ", ".join(bad))
            return 1
        log("regenerated fixtures are byte-identical to the committed ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
