#!/usr/bin/env python3
"""PyTorch -> safetensors -> `attn sdpa` -> PyTorch, checked against
torch.nn.functional.scaled_dot_product_attention.

Tensors keep PyTorch's names and meanings: `attn_mask` is SDPA's (bool True =
attend, float = added) and broadcasts as PyTorch does, so the padding mask
[B, 1, 1, S] goes in as is; `key_padding_mask` [B, S] is
nn.MultiheadAttention's (True = padding, ignored) and can say left padding.

    python3 examples/torch_roundtrip.py [path/to/attn]

Needs torch and safetensors (pip install torch safetensors). Exits 77 when
they are missing (the tests report that as skipped).
"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
except ImportError as e:
    print(f"torch_roundtrip: skipped ({e.name} is not installed)")
    sys.exit(77)

attn = sys.argv[1] if len(sys.argv) > 1 else "attn"
torch.manual_seed(0)
B, H, T, S, D = 2, 4, 5, 7, 16
q, k, v = torch.randn(B, H, T, D), torch.randn(B, H, S, D), torch.randn(B, H, S, D)
# batch 0: the last two keys are padding; batch 1: the first one (left padding)
keep = torch.ones(B, S, dtype=torch.bool)
keep[0, -2:] = False
keep[1, 0] = False
bias = torch.randn(B, 1, 1, S)  # a float mask [B, 1, 1, S]: broadcast, no expand

with tempfile.TemporaryDirectory() as tmp:
    cases = {
        "attn_mask bool [B,1,1,S]": ({"attn_mask": keep[:, None, None, :]}, keep[:, None, None, :]),
        "attn_mask float [B,1,1,S]": ({"attn_mask": bias}, bias),
        "key_padding_mask [B,S]": ({"key_padding_mask": ~keep}, keep[:, None, None, :]),
    }
    worst = 0.0
    for name, (extra, torch_mask) in cases.items():
        src, dst = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        save_file({"q": q, "k": k, "v": v, **{n: t.contiguous() for n, t in extra.items()}}, src)
        subprocess.run([attn, "sdpa", src, dst], check=True)
        got = load_file(dst)["out"]
        want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                              attn_mask=torch_mask if torch_mask.dtype == torch.bool
                                              else torch_mask.double())
        err = (got.double() - want).abs().max().item()
        worst = max(worst, err)
        print(f"{name:28s} max |attn - torch| = {err:.2e}")
    sys.exit(0 if worst < 1e-5 else 1)
