#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/{goldens.json,small-bpe.json} for tests/text/tokenizer_test.cc
and tests/text/chat_template_test.cc.

References (PyPI): `tokenizers` for the raw pipeline, `transformers` for AutoTokenizer and
apply_chat_template with the real DeepSeek-V3 template.

  python3 tools/make_tokenizer_goldens.py [--tokenizer-dir /work/shared/data/deepseek-v3-tokenizer]

BOS: DeepSeek-V3's tokenizer_config.json names LlamaTokenizerFast with add_bos_token=true, so
transformers 4.x prepends BOS (id 0) when add_special_tokens=True. transformers 5.x loads this
file as a generic TokenizersBackend and no longer reads add_bos_token from the config; passing the
config's add_bos_token / add_eos_token explicitly gives 4.x's result on both (checked against
transformers 4.57.1: identical ids).
"""
import argparse
import json
import os
import shutil
import tempfile

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers import processors, trainers
from transformers import AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "tokenizer")
SHARED = os.path.join(os.path.dirname(REPO), "shared")

B, E, U, A = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"

CORPUS = [
    # empty and tiny
    "", " ", "a", "\n", "  ", "\t",
    # ASCII prose, contractions, punctuation
    "The quick brown fox jumps over the lazy dog.",
    "Hello, my dog is cute 12345678  spaces\n\nnew",
    "I'm sure you've seen it; they'll say we'd done it, isn't it? DON'T 'S 's",
    "Wait... what?!? (really) [yes] {no} <maybe> \"quoted\" 'single' `tick`",
    "@user #hashtag $100 50% a&b c|d e~f g^h i_j k+l=m n*o/p\\q",
    "email: someone@example.com, url: https://example.org/path?q=1&r=two#frag",
    "--flag=value -x ... --- *** ___ ===",
    # code
    "def f(x):\n    if x > 0:\n        return x ** 2\n    return -x\n",
    "int main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2;\n\treturn 0;\n}\n",
    '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b"}}',
    "<div class=\"x\"><p>Hi &amp; bye</p></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    # CJK
    "你是谁？", "你好，世界！我是DeepSeek。", "2024年3月15日，天气晴朗。",
    "こんにちは、世界。カタカナとひらがなを混ぜる。", "東京タワーは333メートルです",
    "안녕하세요 세계", "中文English混合text测试",
    # emoji
    "😀😃😄😁", "family: 👨‍👩‍👧‍👦 and 👩🏽‍💻", "flags 🇺🇸🇯🇵🇩🇪", "👍🏽 ok ✔️ 1️⃣ #️⃣", "❤️‍🔥",
    # scripts, combining marks
    "e\u0301 A\u0308 n\u0303o", "\u0301 lone combining", "नमस्ते दुनिया", "مرحبا بالعالم",
    "שלום עולם", "สวัสดีครับ", "Tiếng Việt có dấu", "Ελληνικά Русский язык",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    # whitespace
    " leading", "trailing ", "a    b", "\t\t\tx", "\n\n\n", "line1\r\nline2\r\n", " \n \n ",
    "x  \n  y", " " * 50, "a" + " " * 17 + "b", "\t \t \n\t", "end\n\n\n\n\n\n\n\n",
    "a\u00a0b\u00a0\u00a0c", "wide\u3000space", "nel\u0085x", "mvs\u180ex", "ls\u2028ps\u2029",
    "zw\u200bj\u200dn\u200cx", "\ufeffbom", "v\x0bt\x0cf",
    # digits
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3.14159 2.71828", "1,000,000", "a1b22c333d4444", "０１２３４", "٣٤٥", "x²³ Ⅻ ½",
    "2024-01-01T12:34:56Z", "v1.2.3-rc4",
    # special / added tokens inline
    B + "hello", "a" + U + "b" + A + "c" + E, " " + U + " ", U + U, "<｜User" + U + "｜>",
    "<｜fim▁begin｜>def f():<｜fim▁hole｜><｜fim▁end｜>", "<|EOT|>x", "<｜place▁holder▁no▁1｜>",
    "<｜place▁holder▁no▁10｜>0", "<｜tool▁calls▁begin｜><｜tool▁sep｜>", "< ｜User｜>", "<<|>>",
    # odd characters
    "\x00\x01\x7f", "\ufffd", "\U0010ffff\ue000", "\U0001d400\U0001d7d8", "ﬁ ﬂ ﬀ",
    "!!!???...,,,;;;", "'s 's 'S 't 're 've 'm 'll 'd",
]

LONG = (
    "DeepSeek-V3 is a Mixture-of-Experts language model with 671B total parameters, of which 37B "
    "are activated for each token. 它采用多头潜在注意力（MLA）和DeepSeekMoE架构。\n\n"
    "```python\nfor i in range(10):\n\tprint(i, i * i)  # squares\n```\n"
    "Numbers: 1 22 333 4444 55555 666666; emoji 🤖🚀; 日本語のテキスト。\n"
) * 12

SMALL_CORPUS = [
    "", "hello world", "Hello hello HELLO hellos", "say hello, then hello!", "hello_world",
    "the <mask> was here", "the<mask>   there", "<s>inside</s>", "<|im_start|>user\nhi<|im|>",
    "<|im<|im_start|>", "``hi`` and \"hi\" and ``quoted``", "tab\tand\u00a0\u00a0nbsp",
    "[SEP]   after", "x [SEP]y", "Numbers 1234567 and 89", "你好世界こんにちは", "emoji 😀👨‍👩‍👧",
    "The pipeline splits digits, CJK runs and punctuation first.", "  leading and trailing  ",
    "a,b,,c", "don't stop believing", "CamelCaseWords and snake_case_words",
]


def ids_of(encoding):
    return encoding["input_ids"] if isinstance(encoding, dict) or hasattr(encoding, "keys") else encoding


def deepseek_goldens(tok_dir):
    config = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_dir, name), tmp)
        tok = AutoTokenizer.from_pretrained(
            tmp, add_bos_token=config.get("add_bos_token", True),
            add_eos_token=config.get("add_eos_token", False))
    raw = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    cases = []
    for text in CORPUS + [LONG]:
        plain = tok(text, add_special_tokens=False)["input_ids"]
        special = tok(text, add_special_tokens=True)["input_ids"]
        assert plain == raw.encode(text, add_special_tokens=False).ids, repr(text)
        assert special[:1] == [0] and special[1:] == plain, repr(text)
        case = {"text": text, "ids": plain, "ids_special": special}
        if any(i >= 128000 or i < 3 for i in special):
            case["decoded"] = tok.decode(special)
            case["decoded_skip_special"] = tok.decode(special, skip_special_tokens=True)
        cases.append(case)
    # Id sequences that cut UTF-8 sequences apart: decode must repair them like tokenizers.
    byte_ids = [raw.token_to_id(c) for c in ("ð", "Ł", "ĺ", "Ģ", "â", "Ģ", "Ļ", "a")]
    decode_cases = []
    for ids in ([byte_ids[0]], byte_ids[:2], byte_ids[:4], byte_ids[1:4], byte_ids[4:6] + [byte_ids[7]],
                [byte_ids[3], byte_ids[3]], byte_ids, [0, 6366, 1, 128803, 200000, 2]):
        decode_cases.append({"ids": ids, "text": tok.decode(ids),
                             "text_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return tok, cases, decode_cases


CONVERSATIONS = [
    ([{"role": "user", "content": "Hello"}], True),
    ([{"role": "user", "content": "Hello"}], False),
    ([{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "system", "content": "Be terse."},
      {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Write a haiku about 東京.\nMake it rhyme 🙂"}], True),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], False),
    ([{"role": "system", "content": "First."}, {"role": "user", "content": "q"},
      {"role": "system", "content": "Second, late."}, {"role": "assistant", "content": ""}], True),
    ([{"role": "user", "content": "  spaces  \n\n"}, {"role": "assistant", "content": "\tok "}], True),
    ([{"role": "user", "content": "Weather?"},
      {"role": "tool", "content": "{\"temp\": 21}"},
      {"role": "tool", "content": "sunny"},
      {"role": "assistant", "content": "21 degrees and sunny."}], True),
    ([{"role": "user", "content": "call"}, {"role": "tool", "content": "result"}], True),
    ([{"role": "user", "content": "u1"}, {"role": "tool", "content": "t1"},
      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
      {"role": "tool", "content": "t2"}, {"role": "tool", "content": "t3"},
      {"role": "user", "content": "u3"}], True),
    ([{"role": "system", "content": "Only a system prompt."}], False),
]


def chat_goldens(tok):
    out = []
    for messages, gen in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ids = ids_of(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen))
        out.append({"messages": messages, "add_generation_prompt": gen, "text": text, "ids": ids})
    return out


def train_small_bpe(deepseek_json):
    texts = []
    for name in ("ARCHITECTURE.md", "STYLE.md"):
        path = os.path.join(SHARED, name)
        if os.path.exists(path):
            texts.append(open(path, encoding="utf-8").read())
    texts += CORPUS + SMALL_CORPUS + [LONG]
    # An untrained BPE with DeepSeek-V3's pre-tokenizer and decoder, read from its tokenizer.json.
    ds = json.load(open(deepseek_json, encoding="utf-8"))
    tok = Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": ds["pre_tokenizer"], "post_processor": None,
        "decoder": ds["decoder"],
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": {}, "merges": []},
    }))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace("``", '"'), normalizers.Replace(Regex("\u00a0+"), " ")])
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>", "<pad>"])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([
        AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False),
        AddedToken("[SEP]", rstrip=True, normalized=False),
        AddedToken("<|im_start|>", normalized=False),
    ])
    tok.add_tokens([
        AddedToken("hello", single_word=True, normalized=True),
        AddedToken("``hi``", normalized=True),
        AddedToken("<|im", normalized=True),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return tok


# Pipeline variants of the small tokenizer: the test writes tokenizer.json with these top-level
# fields replaced and expects these ids.
VARIANTS = {
    "gpt2_byte_level": {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                                          "trim_offsets": True, "use_regex": True}},
    "split_behaviors": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Contiguous", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"String": ","}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\w+|\\s+"}, "behavior": "Removed", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}},
    "digits_whitespace": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]}},
    "strip_prepend_roberta": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Strip", "strip_left": True, "strip_right": True},
            {"type": "Prepend", "prepend": "> "}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 1], "cls": ["<s>", 0],
                           "trim_offsets": True, "add_prefix_space": False}},
    "legacy_merges_no_post": {"post_processor": None, "normalizer": None},
}


def small_goldens(small_path):
    base = json.load(open(small_path))
    out = {}
    for name, patch in [("base", {})] + list(VARIANTS.items()):
        spec = dict(base, **patch)
        if name == "legacy_merges_no_post":
            spec["model"] = dict(base["model"], merges=[" ".join(m) for m in base["model"]["merges"]])
        tok = Tokenizer.from_str(json.dumps(spec))
        cases = []
        for text in SMALL_CORPUS + CORPUS[:60]:
            ids = tok.encode(text, add_special_tokens=False).ids
            ids_special = tok.encode(text, add_special_tokens=True).ids
            cases.append({"text": text, "ids": ids, "ids_special": ids_special,
                          "decoded": tok.decode(ids_special, skip_special_tokens=False),
                          "decoded_skip_special": tok.decode(ids_special, skip_special_tokens=True)})
        out[name] = {"patch": patch, "cases": cases}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-dir", default=os.path.join(SHARED, "data", "deepseek-v3-tokenizer"))
    args = ap.parse_args()
    os.makedirs(OUT_DIR, exist_ok=True)

    tok, cases, decode_cases = deepseek_goldens(args.tokenizer_dir)
    chats = chat_goldens(tok)

    small = train_small_bpe(os.path.join(args.tokenizer_dir, "tokenizer.json"))
    small_path = os.path.join(OUT_DIR, "small-bpe.json")
    small.save(small_path, pretty=False)
    small_cases = small_goldens(small_path)

    goldens = {
        "generator": f"tools/make_tokenizer_goldens.py (tokenizers {tokenizers.__version__}, "
                     f"transformers {transformers.__version__})",
        "deepseek_v3": {"cases": cases, "decode_cases": decode_cases, "chats": chats},
        "small_bpe": small_cases,
    }
    with open(os.path.join(OUT_DIR, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for name in ("goldens.json", "small-bpe.json"):
        print(name, os.path.getsize(os.path.join(OUT_DIR, name)), "bytes")


if __name__ == "__main__":
    main()
