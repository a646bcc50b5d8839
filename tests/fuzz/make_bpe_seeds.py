#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_bpe.c (tests/fuzz/corpus/bpe): texts for the
fixture tokenizers (first byte: which one) and tokenizer.json files, valid
and broken. Run from the repository root after scripts/make_bpe_fixtures.py.
The committed corpus also holds what 10 minutes of fuzzing added, minimized
with libFuzzer's -merge=1 (see tests/fuzz/fuzz_bpe.c)."""
import hashlib
import json
import os

OUT = "tests/fuzz/corpus/bpe"
seeds = []
texts = [b"Hello, world! It's 2026.", "caf\u00e9 \u4f60\u597d \U0001F600 \u00a0x".encode(),
         b"  \n\n\t  trailing   ", b"<|endoftext|>a<|begin_of_text|>b<|eot_id|>",
         b"'S 'LL 're 1234567 \xc5\xbf", b"bad \xff utf8 \xc3", b"\xed\xa0\x80\xf4\x90\x80\x80",
         b"a" * 200, b"\x00\x01\x02 nul"]
for i, t in enumerate(texts):
    seeds.append(bytes([i % 4]) + t)
    seeds.append(bytes([(i + 2) % 4]) + t)
for name in ("gpt2", "llama3"):
    with open(f"tests/data/bpe/{name}/tokenizer.json", "rb") as f:
        seeds.append(f.read())
tiny = {
    "version": "1.0", "added_tokens": [{"id": 3, "content": "<s>", "single_word": False,
                                        "lstrip": True, "rstrip": True, "normalized": False,
                                        "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}},
                                  {"SpecialToken": {"id": "<s>", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [3], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 5},
              "merges": ["a b"], "ignore_merges": True},
}
seeds.append(json.dumps(tiny).encode())
bad = json.loads(json.dumps(tiny))
bad["model"]["merges"] = [["a", "zz"]]
seeds.append(json.dumps(bad).encode())
bad = json.loads(json.dumps(tiny))
bad["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated"}
seeds.append(json.dumps(bad).encode())
seeds.append(b'{"model": {"type": "BPE", "vocab": {"a": 16777215}, "merges": []}, '
             b'"pre_tokenizer": {"type": "ByteLevel"}}')
seeds.append(b'{"model": {"type": "BPE", "vocab": {"a": 0}}')
os.makedirs(OUT, exist_ok=True)
for s in seeds:
    with open(f"{OUT}/{hashlib.sha1(s).hexdigest()}", "wb") as f:
        f.write(s)
print(len(seeds), "seeds")
