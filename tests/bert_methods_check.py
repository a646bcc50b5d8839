"""An independent reference of `attn embed --attention/--prune-after` in PyTorch.

usage: bert_methods_check.py MODEL_DIR TEXTS OUTDIR SPEC...

Runs Hugging Face's BertModel layer by layer on each line of TEXTS (alone,
truncated to 256 tokens as sentence-transformers' all-MiniLM-L6-v2) and
writes mean-pooled, L2-normalised embeddings as JSON lines to
OUTDIR/SPEC.jsonl, with every layer's self-attention changed as each SPEC
says (the names of
`attn embed --attention`):
  exact, window-W, window-W+cls   a boolean mask: |i - j| <= W (and token 0
                                  sees and is seen by every token)
  topk-K                          each query keeps its K highest scores
                                  (ties: the lower key index), exact softmax
  prune-L-F                       after layer L keep ceil(F n) tokens: the
                                  first and last, then the most attended
                                  (probabilities summed over heads and
                                  queries; ties: the earlier), in order;
                                  later layers and pooling on those only
  NAME+prune-L-F                  window or top-k with pruning: the tokens
                                  ranked by that method's probabilities
Into OUTDIR/SPEC.info: for pruning the smallest gap between a kept and a pruned
token's score, and for top-k each text's smallest gap between a row's k-th
and (k+1)-th score, so a caller can tell a near tie (where float32
rounding may choose the other key) from a disagreement.
"""
import json
import os
import math
import sys

import torch
from transformers import BertModel, BertTokenizerFast

d, texts_path, outdir = sys.argv[1:4]
texts = open(texts_path, encoding="utf-8").read().split("\n")
if texts and texts[-1] == "":
    texts.pop()
tok = BertTokenizerFast.from_pretrained(d)
model = BertModel.from_pretrained(d, attn_implementation="eager").eval()
H = model.config.num_attention_heads
Dh = model.config.hidden_size // H

def run(spec):
    window, cls, topk, prune_after, keep = -1, False, 0, 0, 1.0
    base = spec
    if "+prune-" in spec:  # the method with pruning, ranked by its own probabilities
        base, pr = spec.split("+prune-")
        L, F = pr.split("-")
        prune_after, keep = int(L), float(F)
    if base.startswith("window-"):
        cls = base.endswith("+cls")
        window = int(base[len("window-"):].replace("+cls", ""))
    elif base.startswith("topk-"):
        topk = int(base[len("topk-"):])
    elif base.startswith("prune-") and not prune_after:
        _, L, F = base.split("-")
        prune_after, keep = int(L), float(F)
    elif base != "exact":
        sys.exit("unknown spec " + spec)
    out_path = os.path.join(outdir, spec + ".jsonl")


    def self_attention(sa, x, n, gaps):
        q = sa.query(x).view(1, n, H, Dh).transpose(1, 2)
        k = sa.key(x).view(1, n, H, Dh).transpose(1, 2)
        v = sa.value(x).view(1, n, H, Dh).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(Dh)
        if window >= 0:
            i = torch.arange(n)
            vis = (i[:, None] - i[None, :]).abs() <= window
            if cls:
                vis[0, :] = True
                vis[:, 0] = True
            s = s.masked_fill(~vis, float("-inf"))
        if topk and topk < n:
            # the k largest per row, ties to the lower index: sort stably on -s
            srt = torch.sort(-s, dim=-1, stable=True)
            gaps.append((srt.values[..., topk] - srt.values[..., topk - 1]).min().item())
            order = srt.indices[..., :topk]
            keepm = torch.zeros_like(s, dtype=torch.bool).scatter_(-1, order, True)
            s = s.masked_fill(~keepm, float("-inf"))
        p = torch.softmax(s, dim=-1)
        return (p @ v).transpose(1, 2).reshape(1, n, H * Dh), p


    margin = math.inf
    text_gaps = []
    with torch.no_grad(), open(out_path, "w") as out:
        for t in texts:
            gaps = [math.inf]
            ids = tok(t, truncation=True, max_length=256, return_tensors="pt")["input_ids"]
            x = model.embeddings(input_ids=ids)
            for li, layer in enumerate(model.encoder.layer):
                n = x.shape[1]
                a, p = self_attention(layer.attention.self, x, n, gaps)
                x = layer.attention.output(a, x)  # dense, dropout, LayerNorm(x + .)
                x = layer.output(layer.intermediate(x), x)
                if li + 1 == prune_after:
                    recv = p.sum(dim=(0, 1, 2)).double()
                    k = min(n, max(min(n, 2), math.ceil(keep * n - 1e-9)))
                    order = sorted(range(1, n - 1), key=lambda j: (-recv[j].item(), j))
                    kept, dropped = order[: k - 2], order[k - 2 :]
                    if kept and dropped:
                        margin = min(margin, recv[kept[-1]].item() - recv[dropped[0]].item())
                    x = x[:, sorted([0] + kept + ([n - 1] if n > 1 else []))]
            e = x.mean(1)[0]
            e = e / e.norm().clamp_min(1e-12)
            out.write(json.dumps([float(v) for v in e]) + "\n")
            text_gaps.append(min(gaps))
    info = open(os.path.join(outdir, spec + ".info"), "w")
    if prune_after:
        print("smallest score gap between kept and pruned tokens: %.3g" % margin, file=info)
    if topk:  # per text: the smallest gap between a row's k-th and (k+1)-th score
        print("top-k gaps: " + " ".join("%.3g" % g for g in text_gaps), file=info)
    info.close()


for spec in sys.argv[4:]:
    run(spec)
