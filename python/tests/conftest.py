"""Shared helpers: a float64 reference of attention, paths, and `need`,
which skips a test when something optional is missing, or fails it when
ATTN_TEST_STRICT=1 (tests/test_python.sh sets it: in CI nothing skips)."""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def need(cond, why):
    if cond:
        return
    if os.environ.get("ATTN_TEST_STRICT") == "1":
        pytest.fail("missing in a strict run (ATTN_TEST_STRICT=1): " + why)
    pytest.skip(why)


def ref_scores(q, k, *, mask=None, causal=False, align="top-left", window=None, scale=None,
               softcap=None, kv_len=None, alibi=None, global_tokens=None):
    """float64 scores [B, H, T, S] with -inf where hidden; q [B,H,T,D], k [B,Hkv,S,D].
    global_tokens [S] or [B|1, S]: a global key, or a query at a global key's
    position, passes the window (nothing else)."""
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    k = np.repeat(k, H // Hkv, axis=1)
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    s = sc * np.einsum("bhtd,bhsd->bhts", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    i = np.arange(T)[:, None]
    j = np.arange(S)[None, :]
    p = i + (S - T if align == "bottom-right" else 0)
    hide = np.zeros((B, H, T, S), bool)
    if mask is not None:
        m = np.broadcast_to(mask, (B, H, T, S)) if mask.ndim == 4 else mask
        if mask.dtype == np.bool_:
            hide |= ~np.broadcast_to(m, (B, H, T, S))
        else:
            s = s + m.astype(np.float64)
    if alibi is not None:
        s = s - np.asarray(alibi, np.float64)[None, :, None, None] * np.abs(p - j)[None, None]
    if causal:
        hide |= (j > p)[None, None]
    if window is not None:
        L, R = window
        out = np.zeros((T, S), bool)
        if L >= 0:
            out |= j < p - L
        if R >= 0:
            out |= j > p + R
        out = np.broadcast_to(out, (B, H, T, S))
        if global_tokens is not None:
            g = np.broadcast_to(np.asarray(global_tokens).reshape(-1, S) != 0, (B, S))
            pi = np.broadcast_to(p, (T, 1))[:, 0]
            gq = np.zeros((B, T), bool)
            inside = (pi >= 0) & (pi < S)
            gq[:, inside] = g[:, pi[inside]]
            out = out & ~(gq[:, None, :, None] | g[:, None, None, :])
        hide |= out
    if kv_len is not None:
        hide |= (j[None, None] >= np.asarray(kv_len)[:, None, None, None])
    return np.where(hide, -np.inf, s)


def ref_sdpa(q, k, v, **kw):
    """float64 out [B,H,T,Dv] and lse [B,H,T]; rows with no key: 0 and -inf."""
    s = ref_scores(q, k, **kw)
    H, Hkv = q.shape[1], k.shape[1]
    v = np.repeat(v.astype(np.float64), H // Hkv, axis=1)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    l = e.sum(axis=-1, keepdims=True)
    p = np.where(l > 0, e / np.where(l > 0, l, 1), 0.0)
    lse = np.where(l[..., 0] > 0, np.log(np.where(l > 0, l, 1))[..., 0] + m[..., 0], -np.inf)
    return p @ v, lse, p


def ref_backward(dout, q, k, v, scale=None, **kw):
    """float64 dq, dk, dv (no softcap)."""
    out, lse, p = ref_sdpa(q, k, v, scale=scale, **kw)
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    g = H // Hkv
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    do = dout.astype(np.float64)
    vv = np.repeat(v.astype(np.float64), g, axis=1)
    kk = np.repeat(k.astype(np.float64), g, axis=1)
    dv = np.einsum("bhts,bhtd->bhsd", p, do)
    dp = np.einsum("bhtd,bhsd->bhts", do, vv)
    ds = p * (dp - (do * out).sum(-1, keepdims=True))
    dq = sc * ds @ kk
    dk = sc * np.einsum("bhts,bhtd->bhsd", ds, q.astype(np.float64))
    fold = lambda x: x.reshape(B, Hkv, g, *x.shape[2:]).sum(2)
    return dq, fold(dk), fold(dv)


def close(got, want, tol=2e-5):
    """max |got - want| <= tol * (1 + max |want|): fp32 kernels against float64."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    fin = np.isfinite(want)
    assert np.array_equal(fin, np.isfinite(got)), "non-finite entries differ"
    err = np.abs(got[fin] - want[fin]).max(initial=0.0)
    scale = 1.0 + np.abs(want[fin]).max(initial=0.0)
    assert err <= tol * scale, "max error %.3g > %.3g" % (err, tol * scale)


def long_call(make, seconds=0.1, sizes=(512, 1024, 2048, 4096)):
    """make(T) -> a callable; the first of T in sizes whose call takes over
    `seconds` (so the scalar kernels do not run a problem sized for the
    vector ones), called once to time it"""
    import time

    for T in sizes:
        call = make(T)
        t0 = time.perf_counter()
        call()
        if time.perf_counter() - t0 > seconds:
            break
    return call


def ticks_during(call):
    """How many times another Python thread ran its loop in the middle half
    of call() (by the wall clock). With the GIL held through the computation
    that is 0: the other thread runs only before the call takes the GIL back
    and after it returns, which the switch interval (made 0.1 ms here) keeps
    short and the middle half leaves out; call() must take over 50 ms."""
    import sys
    import threading
    import time

    done = threading.Event()
    started = threading.Event()
    ticks = []

    def spin():
        started.set()
        while not done.is_set():
            ticks.append(time.perf_counter())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    try:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        done.set()
        t.join()
        sys.setswitchinterval(interval)
    assert t1 - t0 > 0.05, "call() took %.3f s: too short to tell" % (t1 - t0)
    lo, hi = t0 + 0.25 * (t1 - t0), t0 + 0.75 * (t1 - t0)
    return sum(1 for x in ticks if lo < x < hi)
