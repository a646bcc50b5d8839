#!/usr/bin/env python3
"""The Python package's speed, side by side on this machine (docs/PERFORMANCE.md,
"Python package"):

  overhead  a tiny problem (B=1, H=1, T=S=16, D=64): the C call in a C loop
            (attn._attn.time_forward, no Python in between), attn.sdpa on
            numpy (into out=, and allocating), attn.torch's function and
            PyTorch's own F.scaled_dot_product_attention, per call, and
            the two torch calls again with a query that requires grad
            (the forward only; autograd records the call)
  large     B=1, H=8, T=S=2048, D=64 (and causal): the C loop against attn.sdpa
            (into out=) and attn.torch's function (no autograd)
  train     a training step of a small causal transformer (pre-LN blocks:
            attention + GELU MLP; AdamW) with F.scaled_dot_product_attention
            swapped for attn.torch.scaled_dot_product_attention: forward,
            backward and the whole step, each timed, the two attentions
            alternating run by run

Every figure is the median of --rounds rounds (each a mean over a loop);
threads: --threads for attn and torch.set_num_threads alike. --cpu-time
times by the process's CPU time divided by the thread count (as `attn bench
--cpu-time`): on a loaded shared machine the wall clock mostly measures the
scheduler. With more than one thread, CPU time also counts threads that spin
waiting (OpenMP teams, PyTorch's pool), so use it with --threads 1.

  PYTHONPATH=build/python python3 bench/bench_python.py [--threads N] [--rounds R]
                                                        [--only X] [--cpu-time]

Needs numpy and torch; attn from `pip install .` or the build tree.
"""
import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import attn
import attn.torch


CLOCK = time.perf_counter  # --cpu-time: time.process_time
CPU = False


def per_call(fn, calls, rounds):
    """median over rounds of the mean seconds per call of fn()"""
    ts = []
    for _ in range(rounds):
        t0 = CLOCK()
        for _ in range(calls):
            fn()
        ts.append((CLOCK() - t0) / calls)
    return statistics.median(ts)


def c_forward(q, k, v, out, causal, threads, calls, rounds):
    t = attn._attn.time_forward(q, k, v, out, None, None, None, None, causal, 0, 0, -1, -1, 0.0,
                                0.0, 0.0, 0, threads, calls, rounds, CPU)
    return t / threads if CPU else t  # as CLOCK: CPU time per thread


def interleaved(fns, rounds):
    """{name: median seconds}: every round runs each timer once, in turn,
    so a load change on this shared machine hits all of them alike"""
    ts = {name: [] for name in fns}
    for _ in range(rounds):
        for name, timer in fns.items():
            ts[name].append(timer())
    return {name: statistics.median(t) for name, t in ts.items()}


def overhead(args):
    th = args.threads
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 16, 64)).astype(np.float32) for _ in range(3))
    out = np.empty_like(q)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    gq = tq.clone().requires_grad_()  # the forward then records autograd's graph
    n = args.calls
    fns = {
        "C attn_sdpa_forward (C loop)": lambda: c_forward(q, k, v, out, 0, th, n, 1),
        "attn.sdpa(q, k, v, out=out)":
            lambda: per_call(lambda: attn.sdpa(q, k, v, out=out, threads=th), n, 1),
        "attn.sdpa(q, k, v)": lambda: per_call(lambda: attn.sdpa(q, k, v, threads=th), n, 1),
        "attn.torch.scaled_dot_product_attention":
            lambda: per_call(lambda: attn.torch.scaled_dot_product_attention(tq, tk, tv), n, 1),
        "torch F.scaled_dot_product_attention":
            lambda: per_call(lambda: F.scaled_dot_product_attention(tq, tk, tv), n, 1),
        "attn.torch, query requires grad":
            lambda: per_call(lambda: attn.torch.scaled_dot_product_attention(gq, tk, tv), n, 1),
        "torch F, query requires grad":
            lambda: per_call(lambda: F.scaled_dot_product_attention(gq, tk, tv), n, 1),
    }
    interleaved(fns, 2)  # warm-up
    med = interleaved(fns, args.rounds)
    c = med["C attn_sdpa_forward (C loop)"]
    print("## overhead: B=1 H=1 T=S=16 D=64, %d thread(s), median of %d interleaved rounds of "
          "%d calls" % (th, args.rounds, n))
    print("%-42s %10s %12s" % ("call", "us/call", "above C, us"))
    for name, t in med.items():
        print("%-42s %10.2f %12.2f" % (name, t * 1e6, (t - c) * 1e6))


def large(args):
    th = args.threads
    rng = np.random.default_rng(0)
    B, H, T, D = 1, 8, 2048, 64
    q, k, v = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3))
    out = np.empty_like(q)
    print("## large: B=%d H=%d T=S=%d D=%d, %d thread(s), median of %d interleaved rounds"
          % (B, H, T, D, th, args.rounds))
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    print("%-8s %12s %14s %8s %16s %8s" % ("causal", "C loop, ms", "attn.sdpa, ms", "ratio",
                                           "attn.torch, ms", "ratio"))
    for causal in (False, True):
        fns = {"c": lambda: c_forward(q, k, v, out, causal, th, 2, 1),
               "py": lambda: per_call(lambda: attn.sdpa(q, k, v, out=out, causal=causal,
                                                        threads=th), 2, 1),
               "torch": lambda: per_call(lambda: attn.torch.scaled_dot_product_attention(
                   tq, tk, tv, is_causal=causal), 2, 1)}
        interleaved(fns, 1)
        med = interleaved(fns, args.rounds)
        print("%-8s %12.2f %14.2f %8.3f %16.2f %8.3f" % (
            causal, med["c"] * 1e3, med["py"] * 1e3, med["py"] / med["c"],
            med["torch"] * 1e3, med["torch"] / med["c"]))


class Block(torch.nn.Module):
    def __init__(self, E, H, sdpa):
        super().__init__()
        self.H, self.sdpa = H, sdpa
        self.ln1 = torch.nn.LayerNorm(E)
        self.qkv = torch.nn.Linear(E, 3 * E)
        self.proj = torch.nn.Linear(E, E)
        self.ln2 = torch.nn.LayerNorm(E)
        self.fc1 = torch.nn.Linear(E, 4 * E)
        self.fc2 = torch.nn.Linear(4 * E, E)

    def forward(self, x):
        B, T, E = x.shape
        q, k, v = (t.view(B, T, self.H, E // self.H).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(E, dim=-1))
        y = self.sdpa(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, E))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Model(torch.nn.Module):
    def __init__(self, vocab, E, H, layers, T, sdpa):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, E)
        self.pos = torch.nn.Embedding(T, E)
        self.blocks = torch.nn.ModuleList(Block(E, H, sdpa) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(E)
        self.head = torch.nn.Linear(E, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def train(args):
    vocab, E, H, L, T, B = 512, 256, 4, 2, args.train_T, 8
    print("## train: %d layers, E=%d, H=%d (Dh=%d), T=%d, B=%d, vocab %d, AdamW; %d thread(s); "
          "median of %d steps" % (L, E, H, E // H, T, B, vocab, args.threads, args.steps))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (B, T), generator=gen)
    tgt = torch.randint(0, vocab, (B, T), generator=gen)
    impls = {"torch": F.scaled_dot_product_attention,
             "attn": attn.torch.scaled_dot_product_attention}
    models, opts = {}, {}
    for name, fn in impls.items():
        torch.manual_seed(1)
        models[name] = Model(vocab, E, H, L, T, fn)
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-3)
    times = {n: {"forward": [], "backward": [], "step": []} for n in impls}
    losses = {n: [] for n in impls}
    for step in range(args.steps + 2):
        for name in (impls if step % 2 == 0 else reversed(list(impls))):
            m, opt = models[name], opts[name]
            t0 = CLOCK()
            loss = F.cross_entropy(m(ids).view(-1, vocab), tgt.view(-1))
            t1 = CLOCK()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = CLOCK()
            opt.step()
            t3 = CLOCK()
            losses[name].append(loss.item())
            if step >= 2:  # the first two are warm-up
                times[name]["forward"].append(t1 - t0)
                times[name]["backward"].append(t2 - t1)
                times[name]["step"].append(t3 - t0)
    print("%-10s %12s %12s %12s" % ("", "forward, ms", "backward, ms", "step, ms"))
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    for n in impls:
        print("%-10s %12.1f %12.1f %12.1f" % (n, med[n]["forward"] * 1e3, med[n]["backward"] * 1e3,
                                             med[n]["step"] * 1e3))
    print("%-10s %12.2f %12.2f %12.2f" % ("torch/attn", *(med["torch"][k] / med["attn"][k]
                                                         for k in ("forward", "backward", "step"))))
    d = max(abs(a - b) for a, b in zip(losses["torch"], losses["attn"]))
    print("loss after %d steps: torch %.5f, attn %.5f (max |difference| over the run %.2e)"
          % (len(losses["attn"]), losses["torch"][-1], losses["attn"][-1], d))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--train-T", type=int, default=256)
    ap.add_argument("--only", choices=["overhead", "large", "train"])
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by the process's CPU time (divided by --threads), which leaves "
                         "out the time other processes held the cores of this shared machine")
    args = ap.parse_args()
    global CLOCK, CPU
    if args.cpu_time:
        CPU = True
        CLOCK = lambda: time.process_time() / args.threads  # noqa: E731
    torch.set_num_threads(args.threads)
    attn.set_num_threads(args.threads)
    print("attn %s: %s" % (attn.__version__, attn.info()))
    print("torch %s, numpy %s" % (torch.__version__, np.__version__))
    for name, fn in (("overhead", overhead), ("large", large), ("train", train)):
        if args.only in (None, name):
            fn(args)


if __name__ == "__main__":
    main()
