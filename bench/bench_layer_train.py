#!/usr/bin/env python3
"""The layer of bench/bench_layer_train.c in PyTorch (pre-LN, causal
F.scaled_dot_product_attention, GELU-tanh MLP), forward and backward timed
by process CPU time, medians of --reps rounds after one warm-up.

  python3 bench/bench_layer_train.py [--threads N] [--B 8] [--T 256] [--E 256] [--H 8] [--I 1024]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(threads=1, B=8, T=256, E=256, H=8, I=1024, reps=21).items():
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, T, E, H, I = a.B, a.T, a.E, a.H, a.I

    def p(*shape, s=0.05):
        return (torch.randn(*shape) * s).requires_grad_()

    wqkv, bqkv, wo, bo = p(3 * E, E), p(3 * E), p(E, E), p(E)
    w1, b1, w2, b2 = p(I, E), p(I), p(E, I), p(E)
    g1, be1, g2, be2 = p(E, s=1.0), p(E), p(E, s=1.0), p(E)

    def layer(x):
        h = F.layer_norm(x, (E,), g1, be1)
        q, k, v = (h @ wqkv.T + bqkv).split(E, -1)
        q, k, v = [t.view(B, T, H, E // H).transpose(1, 2) for t in (q, k, v)]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + o.transpose(1, 2).reshape(B, T, E) @ wo.T + bo
        h = F.layer_norm(x, (E,), g2, be2)
        return x + F.gelu(h @ w1.T + b1, approximate="tanh") @ w2.T + b2

    x0 = torch.randn(B, T, E)
    dy = torch.full((B, T, E), 0.01)
    tf, tb = [], []
    for r in range(a.reps + 1):
        x = x0.clone().requires_grad_()
        t0 = time.process_time()
        y = layer(x)
        t1 = time.process_time()
        y.backward(dy)
        t2 = time.process_time()
        if r:
            tf.append(t1 - t0)
            tb.append(t2 - t1)
    print(f"torch {torch.__version__} layer B={B} T={T} E={E} H={H} I={I} threads={a.threads}: "
          f"forward {statistics.median(tf) * 1e3:.2f} ms, backward "
          f"{statistics.median(tb) * 1e3:.2f} ms, CPU time, median of {a.reps}")


if __name__ == "__main__":
    main()
