"""Check a directory saved by `attn train --task lm --out DIR` with transformers.

usage: lm_hf_check.py DIR CORPUS CTX BPC PROMPT N GENERATED

Loads DIR as GPT2LMHeadModel with its tokenizer.json, recomputes the held-out
bits per character exactly as attn does (the last 10% of CORPUS, windows of
CTX tokens starting one byte before the split) and compares with BPC (attn's
printed figure, 4 decimals), then checks that greedy decoding after PROMPT
for N tokens gives the bytes in the file GENERATED (the stdout of
`attn generate --temperature 0 --max-new-tokens N`, which ends with a newline).
"""
import math
import sys

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

d, corpus, T, bpc_attn, prompt, N, gen_file = sys.argv[1:8]
T, bpc_attn, N = int(T), float(bpc_attn), int(N)
model = GPT2LMHeadModel.from_pretrained(d).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=d + "/tokenizer.json")
text = open(corpus, "rb").read()
n = len(text)
split = n - n // 10
# the tokenizer is one id per byte
sample = text[split : split + 200].decode("utf-8", errors="ignore")
assert tok(sample)["input_ids"] == list(sample.encode()), "tokenizer is not byte-level"
nats, s = 0.0, split - 1
with torch.no_grad():
    while s + 1 < n:
        w = text[s : min(s + T + 1, n)]
        ids = torch.tensor([list(w)])
        logits = model(ids[:, :-1]).logits.double()
        nats += float(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
        s += len(w) - 1
chars = sum(1 for b in text[split:] if (b & 0xC0) != 0x80)
bpc = nats / math.log(2) / chars
print(f"bits per character: transformers {bpc:.6f}, attn {bpc_attn:.4f}")
ok = abs(bpc - bpc_attn) < 2e-4
want = open(gen_file, "rb").read()
assert want.endswith(b"\n"), "attn generate ends its output with a newline"
want = want[:-1]
ids = torch.tensor([list(prompt.encode())])
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=N, do_sample=False, pad_token_id=0)
got = bytes(out[0, ids.shape[1]:].tolist())
print("greedy: transformers %r, attn %r" % (got, want))
ok = ok and got == want
sys.exit(0 if ok else 1)
