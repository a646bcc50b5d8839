"""Check a directory saved by `attn train --task lm --out DIR` with transformers.

usage: lm_hf_check.py DIR CORPUS CTX BPC PROMPT N GENERATED

Loads DIR as GPT2LMHeadModel with its tokenizer.json (byte tokens, or the
byte-level BPE of --tokenizer bpe), recomputes the held-out bits per
character exactly as attn does (the last 10% of CORPUS from the first
character boundary, tokenized apart from the training part; windows of CTX
tokens starting one token before the held-out ones; total nats / held-out
UTF-8 characters / ln 2) and compares with BPC (attn's printed figure, 4
decimals), then checks that greedy decoding after PROMPT for N tokens gives
the bytes in the file GENERATED (the stdout of `attn generate --temperature
0 --max-new-tokens N`, which ends with a newline).
"""
import math
import sys

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast


def byte_decoder():
    """GPT-2's byte-to-unicode map, inverted: spelling character -> byte."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, k = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    return {chr(c): b for b, c in zip(bs, cs)}


d, corpus, T, bpc_attn, prompt, N, gen_file = sys.argv[1:8]
T, bpc_attn, N = int(T), float(bpc_attn), int(N)
model = GPT2LMHeadModel.from_pretrained(d).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=d + "/tokenizer.json")
text = open(corpus, "rb").read()
n = len(text)
split = n - n // 10
while split < n and (text[split] & 0xC0) == 0x80:
    split += 1
byte_level = len(tok) == 256
if byte_level:
    # one id per byte
    sample = text[split : split + 200].decode("utf-8", errors="ignore")
    assert tok(sample)["input_ids"] == list(sample.encode()), "tokenizer is not byte-level"
    ids, ntrain = list(text), split
else:
    a = tok(text[:split].decode("utf-8"))["input_ids"]
    b = tok(text[split:].decode("utf-8"))["input_ids"]
    ids, ntrain = a + b, len(a)
    print(f"BPE: {len(tok)} ids; {len(a)} training tokens, {len(b)} held-out tokens")
nats, s = 0.0, ntrain - 1
with torch.no_grad():
    while s + 1 < len(ids):
        w = ids[s : min(s + T + 1, len(ids))]
        x = torch.tensor([w])
        logits = model(x[:, :-1]).logits.double()
        nats += float(torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum"))
        s += len(w) - 1
chars = sum(1 for c in text[split:] if (c & 0xC0) != 0x80)
bpc = nats / math.log(2) / chars
print(f"bits per character: transformers {bpc:.6f}, attn {bpc_attn:.4f}")
ok = abs(bpc - bpc_attn) < 2e-4
want = open(gen_file, "rb").read()
assert want.endswith(b"\n"), "attn generate ends its output with a newline"
want = want[:-1]
p = torch.tensor([tok(prompt)["input_ids"]])
with torch.no_grad():
    out = model.generate(p, max_new_tokens=N, do_sample=False, pad_token_id=0)
new = out[0, p.shape[1] :].tolist()
if byte_level:
    got = bytes(new)
else:
    dec = byte_decoder()
    got = bytes(dec[ch] for t in tok.convert_ids_to_tokens(new) for ch in t)
print("greedy: transformers %r, attn %r" % (got, want))
ok = ok and got == want
sys.exit(0 if ok else 1)
