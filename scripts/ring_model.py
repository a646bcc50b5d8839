#!/usr/bin/env python3
"""The ring-attention time model of docs/SCALING.md, and its tables.

Per ring step a rank attends its c = T/P query rows to one K/V chunk of c
rows while that chunk's successor arrives:
  compute   t_c = f * B * H * c^2 * (D + Dv) / R     f = 2 full, 1 causal (zig-zag)
  transfer  t_x = alpha + 4 * B * Hkv * c * (D + Dv) / BW   (fp32 K and V)
A step takes max(t_c, t_x); P steps make the forward. The transfer hides
behind the compute when c >= c_min = 4 * R * Hkv / (f * H * BW) (alpha
aside): independent of D and B. The backward computes 2.5x and sends 2x
(K, V ahead; dK, dV behind), so its c_min is 0.8x the forward's.

  python3 scripts/ring_model.py            # the tables of docs/SCALING.md
  python3 scripts/ring_model.py --check R BW T P [causal]
                                           # one configuration, e.g. a run here
"""
import math
import sys

ALPHA = 5e-6  # per-message latency, s (typical MPI over InfiniBand/RoCE)


def step(c, R, BW, B=1, H=8, Hkv=8, D=64, Dv=64, f=1.0, alpha=ALPHA):
    tc = f * B * H * c * c * (D + Dv) / R
    tx = alpha + 4.0 * B * Hkv * c * (D + Dv) / BW
    return tc, tx


def c_min(R, BW, H=8, Hkv=8, f=1.0, alpha=ALPHA, B=1, D=64, Dv=64):
    # smallest c with t_c >= t_x: f*B*H*(D+Dv)/R c^2 - 4*B*Hkv*(D+Dv)/BW c - alpha >= 0
    a = f * B * H * (D + Dv) / R
    b = 4.0 * B * Hkv * (D + Dv) / BW
    return (b + math.sqrt(b * b + 4 * a * alpha)) / (2 * a)


def forward_time(T, P, R, BW, **kw):
    tc, tx = step(T / P, R, BW, **kw)
    return P * max(tc, tx)


def longest(P, R, BW, budget=60.0, **kw):
    lo, hi = float(P), 1e12
    while hi / lo > 1.0001:
        mid = math.sqrt(lo * hi)
        if forward_time(mid, P, R, BW, **kw) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def fmt(n):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def tables():
    links = [("25 Gbit/s", 25e9 / 8), ("100 Gbit/s", 100e9 / 8), ("400 Gbit/s", 400e9 / 8)]
    ranks = [8, 16, 32, 64, 128, 256, 512, 1024]
    for name, R in (("one core (0.2 TFLOP/s, as measured here)", 0.2e12),
                    ("one 64-core node (11.5 TFLOP/s)", 11.5e12)):
        for hname, Hkv in (("MHA H=Hkv=8", 8), ("GQA H=8, Hkv=2", 2)):
            print(f"\nrank = {name}, {hname}, D=Dv=64, B=1, causal forward")
            print("| link | c_min (rows/rank) | " + " | ".join(f"P={p}" for p in ranks) + " |")
            print("|---|---|" + "---|" * len(ranks))
            for lname, BW in links:
                cm = c_min(R, BW, Hkv=Hkv)
                cells = []
                for p in ranks:
                    T = longest(p, R, BW, Hkv=Hkv)
                    tc, tx = step(T / p, R, BW, Hkv=Hkv)
                    cells.append(fmt(T) + ("" if tc >= tx else " (comm)"))
                print(f"| {lname} | {cm:,.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "--check":
        R, BW, T, P = map(float, sys.argv[2:6])
        f = 1.0 if len(sys.argv) > 6 and sys.argv[6] == "causal" else 2.0
        tc, tx = step(T / P, R, BW, f=f, alpha=0)
        print(f"c={T / P:.0f}: t_c={tc:.4f} s t_x={tx:.4f} s per step; "
              f"c_min={c_min(R, BW, f=f, alpha=0):.0f}; forward {P * max(tc, tx):.3f} s")
    else:
        tables()
