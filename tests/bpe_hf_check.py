"""Check a BPE tokenizer saved by `attn train --task lm --tokenizer bpe --out DIR`
against Hugging Face.

usage: bpe_hf_check.py DIR CORPUS ATTN LOG

- DIR/tokenizer.json read by `tokenizers` (Tokenizer.from_file) and
  DIR/vocab.json + merges.txt alone read by transformers' GPT2 tokenizer give
  the ids `attn tokenize --model DIR -` gives, on every line of CORPUS;
- the training and held-out parts of CORPUS (split as attn does) encode to
  as many tokens as attn's log LOG says it trained and evaluated on;
- decoding the ids of the whole corpus gives the corpus back.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer
from transformers import GPT2TokenizerFast

d, corpus, attn, log = sys.argv[1:5]
raw = open(corpus, "rb").read()
text = raw.decode("utf-8")
hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
two = tempfile.mkdtemp()
try:
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(d, f), two)
    gp = GPT2TokenizerFast.from_pretrained(two)
finally:
    shutil.rmtree(two)
lines = text.split("\n")
if lines[-1] == "":
    lines.pop()
run = subprocess.run([attn, "tokenize", "--model", d, "-"], input=("\n".join(lines) + "\n").encode(),
                     capture_output=True, check=True)
got = [json.loads(x) for x in run.stdout.decode().splitlines()]
assert len(got) == len(lines), (len(got), len(lines))
bad = 0
for line, a in zip(lines, got):
    h, g = hf.encode(line).ids, gp(line)["input_ids"]
    if not (a == h == g):
        bad += 1
        if bad <= 3:
            print(f"differ on {line!r}: attn {a}, tokenizers {h}, GPT2TokenizerFast {g}")
print(f"{len(lines)} lines: {bad} differ (attn tokenize, tokenizers, vocab.json + merges.txt)")
ok = bad == 0
n = len(raw)
split = n - n // 10
while split < n and (raw[split] & 0xC0) == 0x80:
    split += 1
a = hf.encode(raw[:split].decode()).ids
b = hf.encode(raw[split:].decode()).ids
m = re.search(r"(\d+) training tokens .*, (\d+) held-out tokens", open(log).read())
print(f"tokens: Hugging Face {len(a)} training, {len(b)} held out; attn {m.group(1)}, {m.group(2)}")
ok = ok and (len(a), len(b)) == (int(m.group(1)), int(m.group(2)))
back = hf.decode(hf.encode(text).ids)
print("round trip of the corpus through Hugging Face:", back == text)
ok = ok and back == text
sys.exit(0 if ok else 1)
