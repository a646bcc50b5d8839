#!/usr/bin/env python3
"""Training steps per second: `attn train --task lm` against the same model
trained by PyTorch on the same threads, side by side in one run.

The PyTorch side is transformers' GPT2LMHeadModel (the very architecture
attn trains: learned positions, pre-LN blocks, causal attention through
F.scaled_dot_product_attention, GELU-tanh MLP, LM head tied to wte) built
from a config with attn's default sizes: 4 layers, width 128, 4 heads,
context 128, vocab 256 (byte tokens), dropout 0, batch 16. One step is what
attn's step is: random windows of 129 bytes from the first 90% of the same
corpus, logits of the first 128 positions, mean cross-entropy against the
next bytes, backward, gradient clipping to norm 1, AdamW (lr 2e-3, betas
0.9/0.999, eps 1e-8, weight decay 0.01 on every parameter, the learning
rate set each step as attn's warm-up/cosine schedule does). The loss is
computed from `.logits` with F.cross_entropy rather than `labels=`, which
would shift inside and differ by nothing but cost the same.

Both sides skip the first steps (attn: its `timing:` line starts after
min(10, steps/10) steps; PyTorch: --warmup steps) and report steps per
second of wall time and of CPU time / threads (the fairer figure on a
shared machine); the median over --reps runs of each is printed with the
ratio attn / PyTorch.

  python3 bench/bench_train_lm.py --attn build/attn --corpus FILE \\
      [--threads 1,2] [--steps 200] [--warmup 10] [--reps 3] [--optimizer foreach]
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time


def torch_run(a, threads, text):
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    cfg = GPT2Config(vocab_size=256, n_positions=a.ctx, n_embd=a.dim, n_layer=a.layers,
                     n_head=a.heads, n_inner=4 * a.dim, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                     tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)
    cfg._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(cfg).train()
    assert model.config._attn_implementation == "sdpa"
    params = list(model.parameters())
    kw = {}
    if a.optimizer == "fused":
        kw["fused"] = True
    elif a.optimizer == "foreach":
        kw["foreach"] = True
    else:
        kw["foreach"] = False
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                            **kw)
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    split = len(text) - len(text) // 10
    gen = torch.Generator().manual_seed(a.seed)
    T, B = a.ctx, a.batch
    offs = torch.arange(T + 1)
    warm = a.warmup
    total = a.steps

    def step(i):
        f = (i + 1) / 100 if i < 100 else 0.1 + 0.45 * (1 + math.cos(math.pi * i / total))
        for g in opt.param_groups:
            g["lr"] = a.lr * f
        s0 = torch.randint(0, split - T, (B,), generator=gen)
        w = data[(s0[:, None] + offs[None, :])].long()
        logits = model(input_ids=w[:, :T]).logits
        loss = F.cross_entropy(logits.reshape(B * T, -1), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for i in range(warm):
        step(i)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(warm, total):
        loss = step(i)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = total - warm
    return n / wall, n * threads / cpu, loss


def attn_run(a, threads):
    cmd = [a.attn, "train", "--task", "lm", "--corpus", a.corpus, "--steps", str(a.steps),
           "--threads", str(threads), "--log-every", str(a.steps), "--layers", str(a.layers),
           "--dim", str(a.dim), "--heads", str(a.heads), "--ctx", str(a.ctx), "--batch",
           str(a.batch), "--lr", str(a.lr), "--seed", str(a.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"^timing: .*steps_per_s=([0-9.]+) steps_per_cpu_s=([0-9.]+)", out, re.M)
    if not m:
        sys.exit("no timing line in attn's output:\n" + out)
    return float(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attn", default="build/attn")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--optimizer", choices=["loop", "foreach", "fused"], default="foreach",
                    help="PyTorch's AdamW implementation (default foreach)")
    for k, v in dict(layers=4, dim=128, heads=4, ctx=128, batch=16, seed=1).items():
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--lr", type=float, default=2e-3)
    a = ap.parse_args()
    if a.steps <= a.warmup:
        sys.exit("--steps must exceed --warmup")
    text = open(a.corpus, "rb").read()
    import torch
    import transformers

    print(f"model: GPT-2 layers={a.layers} E={a.dim} heads={a.heads} ctx={a.ctx} vocab=256 "
          f"(bytes), tied head; batch {a.batch}; {a.steps} steps, the first {a.warmup} not "
          f"timed; median of {a.reps} runs each")
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__} "
          f"(GPT2LMHeadModel, sdpa attention, AdamW {a.optimizer}); attn: {a.attn}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'threads':>7} {'attn st/s':>10} {'torch st/s':>10} {'ratio':>6} "
          f"{'attn st/cpu-s':>13} {'torch st/cpu-s':>14} {'ratio':>6}")
    for th in [int(x) for x in a.threads.split(",")]:
        aw, ac, tw, tc = [], [], [], []
        for _ in range(a.reps):  # interleaved, so both sides see the same load
            w, c = attn_run(a, th)
            aw.append(w), ac.append(c)
            w, c, _ = torch_run(a, th, text)
            tw.append(w), tc.append(c)
        runs = "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v)
                         for k, v in (("attn wall", aw), ("torch wall", tw), ("attn cpu", ac),
                                      ("torch cpu", tc)))
        aw, ac, tw, tc = (statistics.median(v) for v in (aw, ac, tw, tc))
        print(f"{th:>7} {aw:>10.2f} {tw:>10.2f} {aw / tw:>6.2f} {ac:>13.2f} {tc:>14.2f} "
              f"{ac / tc:>6.2f}   (runs: {runs})", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
