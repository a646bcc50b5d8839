#!/usr/bin/env python3
"""One multi-head attention layer, attn against PyTorch's
nn.MultiheadAttention(batch_first=True), side by side on this machine with
the same thread count: forward and forward + backward (input and parameter
gradients), median milliseconds of --reps timed runs after one warm-up, as
wall-clock time and as process CPU time (all threads; on a shared, loaded
machine the 1-thread CPU time is the steadier comparison).

Default shape: B=1, T=1024, E=768, 12 heads (BERT-base width), self-attention,
need_weights off (PyTorch's fast path). PyTorch's forward runs under
torch.no_grad() (its inference fast path); its forward + backward with
autograd. attn is timed by bench/bench_mha.c, compiled here against the
build's libattn.

  python3 bench/bench_mha.py [--build build] [--threads 1,2] [--reps 10]
                             [--T 1024] [--E 768] [--heads 12] [--causal]
Needs torch (PyPI) and a built libattn.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_timer(build):
    exe = os.path.join(build, "bench_mha")
    src = os.path.join(ROOT, "bench", "bench_mha.c")
    lib = os.path.abspath(build)
    subprocess.run(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-I",
                    os.path.join(ROOT, "include"), src, "-o", exe, "-L", lib, "-lattn",
                    "-Wl,-rpath," + lib], check=True)
    return exe


def attn_times(exe, B, T, E, H, threads, reps, causal):
    args = [exe, str(B), str(T), str(E), str(H), str(threads), str(reps)]
    if causal:
        args.append("causal")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out)
    return (r["forward_ms"], r["forward_backward_ms"], r["forward_cpu_ms"],
            r["forward_backward_cpu_ms"])


def torch_times(B, T, E, H, threads, reps, causal):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = torch.nn.MultiheadAttention(E, H, batch_first=True)
    x = torch.rand(B, T, E) * 2 - 1
    dy = -0.5 * x
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T) if causal else None

    def fwd():
        with torch.no_grad():
            m(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)

    def fwd_bwd():
        xg = x.clone().requires_grad_(True)
        m.zero_grad(set_to_none=False)
        y, _ = m(xg, xg, xg, need_weights=False, attn_mask=mask, is_causal=causal)
        y.backward(dy)

    wall, cpu = [], []
    for fn in (fwd, fwd_bwd):
        fn()
        ts, cs = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            ts.append(1e3 * (time.perf_counter() - t0))
            cs.append(1e3 * (time.process_time() - c0))
        wall.append(statistics.median(ts))
        cpu.append(statistics.median(cs))
    return wall + cpu, torch.__version__


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--threads", default="1,%d" % os.cpu_count())
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--E", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--causal", action="store_true")
    a = p.parse_args()
    exe = build_timer(a.build)
    threads = sorted({int(t) for t in a.threads.split(",")})
    print(f"MHA layer B={a.B} T={a.T} E={a.E} H={a.heads}"
          f"{' causal' if a.causal else ''}, median of {a.reps} runs (ms)")
    print(f"{'threads':>7} {'pass':>17} {'attn':>9} {'torch':>9} {'torch/attn':>10}"
          f" {'attn cpu':>9} {'torch cpu':>9} {'ratio':>6}")
    for th in threads:
        af, ab, afc, abc = attn_times(exe, a.B, a.T, a.E, a.heads, th, a.reps, a.causal)
        (tf, tb, tfc, tbc), ver = torch_times(a.B, a.T, a.E, a.heads, th, a.reps, a.causal)
        for name, x, y, xc, yc in (("forward", af, tf, afc, tfc),
                                   ("forward+backward", ab, tb, abc, tbc)):
            print(f"{th:>7} {name:>17} {x:>9.2f} {y:>9.2f} {y / x:>10.2f}"
                  f" {xc:>9.2f} {yc:>9.2f} {yc / xc:>6.2f}")
    print(f"torch {ver}")


if __name__ == "__main__":
    main()
