#!/usr/bin/env python3
"""attn against its peers, side by side in one run, on the same shapes.

For each case it runs `attn bench --json` (the FMA peak and attn's median),
then PyTorch's CPU torch.nn.functional.scaled_dot_product_attention and, when
the libggml-python wheel (prebuilt ggml CPU libraries) is installed, ggml's
CPU flash attention (ggml_flash_attn_ext, fp32 Q/K/V, fp32 precision), each
with the same thread count, and prints medians, % of the peak and the ratios
attn/peer (> 1 means attn is faster). FLOPs are attn's convention for all
three: 2*B*H*T*S*(D+Dv) over the unmasked area (causal counts half), so a peer
that computes the masked half of a causal problem shows it as lower GFLOP/s.

    pip install torch libggml-python      # the peers (either may be absent)
    python3 bench/peers.py                # default grid
    python3 bench/peers.py --T 4096 --D 64 128 --causal 0 1 --threads 1 2 --json
    python3 bench/peers.py --cpu-time     # on a busy machine
    ATEN_CPU_CAPABILITY=avx2 python3 bench/peers.py   # PyTorch limited to AVX2 as attn is
"""
import argparse
import ctypes
import glob
import json
import os
import statistics
import subprocess
import sys
import time


CPU_CLOCK = False  # --cpu-time: process CPU time / threads instead of the wall clock


def median_time(fn, reps, threads, warmup=1):
    clock = time.process_time if CPU_CLOCK else time.perf_counter
    div = threads if CPU_CLOCK else 1
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append((clock() - t0) / div)
    return statistics.median(ts)


def reference(q, k, v, causal):
    """float64 attention of [B, H, T|S, D] arrays (top-left causal)."""
    import numpy as np
    s = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k.astype(np.float64))
    s /= np.sqrt(q.shape[-1])
    if causal:
        T, S = s.shape[-2:]
        s[..., np.triu_indices(T, 1, S)[0], np.triu_indices(T, 1, S)[1]] = -np.inf
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhts,bhsd->bhtd", s / s.sum(-1, keepdims=True), v.astype(np.float64))


def flops(B, H, T, S, D, Dv, causal):
    """attn_sdpa_flops for top-left causal or no mask."""
    if causal:
        pairs = sum(min(i + 1, S) for i in range(T))
    else:
        pairs = T * S
    return 2.0 * B * H * pairs * (D + Dv)


# ---- attn -------------------------------------------------------------------
def run_attn(exe, c, reps):
    cmd = [exe, "bench", "--json", "--B", str(c["B"]), "--H", str(c["H"]), "--T", str(c["T"]),
           "--S", str(c["S"]), "--D", str(c["D"]), "--Dv", str(c["Dv"]),
           "--threads", str(c["threads"]), "--reps", str(reps)]
    if c["causal"]:
        cmd.append("--causal")
    if CPU_CLOCK:
        cmd.append("--cpu-time")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---- PyTorch ----------------------------------------------------------------
def torch_runner():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        return None, "PyTorch not installed (%s)" % e

    def run(c, reps):
        torch.set_num_threads(c["threads"])
        g = torch.Generator().manual_seed(0)
        q = torch.rand(c["B"], c["H"], c["T"], c["D"], generator=g) * 2 - 1
        k = torch.rand(c["B"], c["H"], c["S"], c["D"], generator=g) * 2 - 1
        v = torch.rand(c["B"], c["H"], c["S"], c["Dv"], generator=g) * 2 - 1
        with torch.inference_mode():
            def f():
                return F.scaled_dot_product_attention(q, k, v, is_causal=bool(c["causal"]))
            return median_time(f, reps, c["threads"])

    try:  # ATen uses AVX-512 where the CPU has it; ATEN_CPU_CAPABILITY=avx2 limits it
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:
        cap = "?"
    return run, "PyTorch %s (ATen CPU capability: %s)" % (torch.__version__, cap)


# ---- ggml (ctypes over the libggml-python wheel) ----------------------------
class GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p),
                ("no_alloc", ctypes.c_bool)]


def ggml_runner():
    try:
        import libggml
    except ImportError as e:
        return None, "ggml not installed (pip install libggml-python): %s" % e
    import numpy as np
    libdir = os.path.join(os.path.dirname(libggml.__file__), "lib64")
    try:
        base = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-base.so"))[0],
                           mode=ctypes.RTLD_GLOBAL)
        cpu = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-cpu.so"))[0],
                          mode=ctypes.RTLD_GLOBAL)
    except (IndexError, OSError) as e:
        return None, "ggml libraries not loadable: %s" % e
    P = ctypes.c_void_p
    base.ggml_init.restype = P
    base.ggml_init.argtypes = [GgmlInitParams]
    base.ggml_free.argtypes = [P]
    base.ggml_new_tensor_4d.restype = P
    base.ggml_new_tensor_4d.argtypes = [P, ctypes.c_int] + [ctypes.c_int64] * 4
    base.ggml_get_data.restype = P
    base.ggml_get_data.argtypes = [P]
    base.ggml_flash_attn_ext.restype = P
    base.ggml_flash_attn_ext.argtypes = [P, P, P, P, P, ctypes.c_float, ctypes.c_float,
                                         ctypes.c_float]
    base.ggml_flash_attn_ext_set_prec.argtypes = [P, ctypes.c_int]
    base.ggml_new_graph.restype = P
    base.ggml_new_graph.argtypes = [P]
    base.ggml_build_forward_expand.argtypes = [P, P]
    cpu.ggml_graph_compute_with_ctx.restype = ctypes.c_int
    cpu.ggml_graph_compute_with_ctx.argtypes = [P, P, ctypes.c_int]
    cpu.ggml_cpu_init()
    F32, F16, PREC_F32 = 0, 1, 10
    isa = ",".join(n for n in ("avx2", "fma", "avx512")
                   if getattr(cpu, "ggml_cpu_has_" + n)())

    def build(c, ctx, inputs=None):
        """The graph of one case; inputs (q, k, v as [B, H, T|S, D] arrays) or random."""
        B, H, T, S, D, Dv = c["B"], c["H"], c["T"], c["S"], c["D"], c["Dv"]
        # ggml dims are innermost first: q [D, T, H, B], k [D, S, H, B], v [Dv, S, H, B]
        q = base.ggml_new_tensor_4d(ctx, F32, D, T, H, B)
        k = base.ggml_new_tensor_4d(ctx, F32, D, S, H, B)
        v = base.ggml_new_tensor_4d(ctx, F32, Dv, S, H, B)
        rng = np.random.default_rng(0)
        for i, (t, n) in enumerate(((q, B * H * T * D), (k, B * H * S * D),
                                    (v, B * H * S * Dv))):
            a = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(t),
                                                  ctypes.POINTER(ctypes.c_float)), (n,))
            a[:] = (inputs[i].reshape(-1) if inputs is not None
                    else rng.uniform(-1, 1, n).astype(np.float32))
        mask = None
        if c["causal"]:  # F16 additive mask [S, T]: ggml has no causal flag
            mask = base.ggml_new_tensor_4d(ctx, F16, S, T, 1, 1)
            m = np.zeros((T, S), np.float16)
            m[np.triu_indices(T, 1, S)] = -np.inf
            np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(mask),
                                              ctypes.POINTER(ctypes.c_uint16)),
                                  (T * S,))[:] = m.reshape(-1).view(np.uint16)
        out = base.ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0 / D ** 0.5, 0.0, 0.0)
        base.ggml_flash_attn_ext_set_prec(out, PREC_F32)
        gf = base.ggml_new_graph(ctx)
        base.ggml_build_forward_expand(gf, out)
        return gf, out

    def new_ctx(c):
        B, H, T, S, D, Dv = c["B"], c["H"], c["T"], c["S"], c["D"], c["Dv"]
        nbytes = 4 * (B * H * (T * D + S * D + S * Dv + T * Dv)) + 2 * S * T
        ctx = base.ggml_init(GgmlInitParams(nbytes + (256 << 20), None, False))
        if not ctx:
            raise MemoryError("ggml_init failed")
        return ctx

    def compute(ctx, gf, threads):
        if cpu.ggml_graph_compute_with_ctx(ctx, gf, threads) != 0:
            raise RuntimeError("ggml_graph_compute failed")

    def run(c, reps):
        ctx = new_ctx(c)
        try:
            gf, _ = build(c, ctx)
            return median_time(lambda: compute(ctx, gf, c["threads"]), reps, c["threads"])
        finally:
            base.ggml_free(ctx)

    # Self-check of the calls above against a float64 reference (small case,
    # both mask modes): a misused peer would make every ratio meaningless.
    for causal in (0, 1):
        c = dict(B=1, H=2, T=37, S=37, D=16, Dv=16, causal=causal, threads=1)
        rng = np.random.default_rng(1)
        qkv = [rng.uniform(-1, 1, (1, 2, 37, 16)).astype(np.float32) for _ in range(3)]
        ctx = new_ctx(c)
        try:
            gf, out = build(c, ctx, qkv)
            compute(ctx, gf, 1)
            got = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(out),
                                                    ctypes.POINTER(ctypes.c_float)),
                                        (1 * 37 * 2 * 16,)).reshape(1, 37, 2, 16)
            got = got.transpose(0, 2, 1, 3)  # ggml's result is [Dv, H, T, B]
            err = np.abs(got - reference(*qkv, causal)).max()
        finally:
            base.ggml_free(ctx)
        if not err < 1e-4:
            return None, "ggml self-check failed (causal=%d, max error %g)" % (causal, err)

    try:
        from importlib.metadata import version
        ver = version("libggml-python")
    except Exception:
        ver = "?"
    return run, "ggml (libggml-python %s, CPU: %s; self-check vs float64 passed)" % (ver, isa)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--attn", default=os.path.join(root, "build", "attn"),
                    help="path of the attn binary (default: build/attn)")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--D", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--causal", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--reps", type=int, default=5, help="timed runs per case (median)")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time everything (attn's peak too) by process CPU time / threads, "
                         "which leaves out time other processes held the cores")
    args = ap.parse_args()
    global CPU_CLOCK
    CPU_CLOCK = args.cpu_time
    if not os.access(args.attn, os.X_OK):
        sys.exit("peers.py: error: attn binary not found at %s (build first or pass --attn)"
                 % args.attn)

    peers = []
    for make in (torch_runner, ggml_runner):
        fn, desc = make()
        print("# " + desc, file=sys.stderr)
        if fn:
            peers.append((desc.split()[0].lower(), fn))

    threads = sorted(set(args.threads))
    if not args.json:
        hdr = "%3s %6s %4s %6s %3s | %9s %6s" % ("H", "T=S", "D", "causal", "thr",
                                                 "attn_ms", "%peak")
        for name, _ in peers:
            hdr += " | %9s %6s %10s" % (name + "_ms", "%peak", "attn/" + name)
        print(hdr)
    for th in threads:
        for D in args.D:
            for causal in args.causal:
                for T in args.T:
                    c = dict(B=args.B, H=args.H, T=T, S=T, D=D, Dv=D, causal=causal,
                             threads=th)
                    a = run_attn(args.attn, c, args.reps)
                    fl = flops(args.B, args.H, T, T, D, D, causal)
                    row = dict(c, attn_ms=a["ms"], peak_gflops=a["peak_gflops"],
                               attn_pct_peak=a["pct_peak"], arch=a["arch"])
                    for name, fn in peers:
                        try:
                            t = fn(c, args.reps)
                            row[name + "_ms"] = t * 1e3
                            row[name + "_pct_peak"] = 100.0 * fl / t * 1e-9 / a["peak_gflops"]
                            row["attn_over_" + name] = t * 1e3 / a["ms"]
                        except Exception as e:  # report and keep going
                            row[name + "_error"] = str(e)
                    if args.json:
                        print(json.dumps(row), flush=True)
                        continue
                    line = "%3d %6d %4d %6s %3d | %9.2f %5.1f%%" % (
                        c["H"], T, D, "yes" if causal else "no", th, a["ms"], a["pct_peak"])
                    for name, _ in peers:
                        if name + "_ms" in row:
                            line += " | %9.2f %5.1f%% %10.2f" % (
                                row[name + "_ms"], row[name + "_pct_peak"],
                                row["attn_over_" + name])
                        else:
                            line += " | %27s" % ("error: " + row[name + "_error"])[:27]
                    print(line, flush=True)


if __name__ == "__main__":
    main()
