"""attn.sdpa and attn.sdpa_backward on numpy arrays: results against a
float64 reference, zero copy, errors, reference counts and memory over
100,000 calls, concurrent threads, and the CLI's results on the same inputs."""

import gc
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import attn
from conftest import REPO, close, need, ref_backward, ref_sdpa

RNG = np.random.default_rng(1234)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CASES = [
    dict(),
    dict(causal=True),
    dict(causal=True, align="bottom-right"),
    dict(window=(3, 0)),
    dict(window=(2, 5), causal=False),
    dict(scale=0.37),
    dict(scale=0.0),
    dict(softcap=5.0),
    dict(kv_len=[7, 0]),
    dict(alibi=True),
    dict(mask="bool"),
    dict(mask="float"),
    dict(mask="float_bcast"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(sorted(c)) or "plain")
@pytest.mark.parametrize("shape", [(2, 4, 2, 9, 13, 16, 8), (2, 2, 2, 33, 33, 64, 64),
                                   (2, 3, 1, 1, 70, 40, 24)])
def test_forward_backward_reference(case, shape):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = rand(B, H, T, D), rand(B, Hkv, S, D), rand(B, Hkv, S, Dv)
    kw = dict(case)
    if kw.pop("alibi", False):
        kw["alibi_slopes"] = np.linspace(0.1, 1.0, H).astype(np.float32)
    m = kw.pop("mask", None)
    if m == "bool":
        kw["mask"] = RNG.random((B, H, T, S)) > 0.3
        kw["mask"][..., 0] = True  # no fully hidden rows here
    elif m == "float":
        kw["mask"] = rand(B, H, T, S)
    elif m == "float_bcast":
        kw["mask"] = np.broadcast_to(rand(1, 1, T, S), (B, 1, T, S))  # stride 0, in place
    ref_kw = {("alibi" if n == "alibi_slopes" else n): x for n, x in kw.items()}
    out, lse = attn.sdpa(q, k, v, return_lse=True, **kw)
    want, want_lse, _ = ref_sdpa(q, k, v, **ref_kw)
    close(out, want)
    close(lse, want_lse)
    if "softcap" in kw:
        return  # the reference backward has no softcap (the C suite checks it)
    dout = rand(B, H, T, Dv)
    dq, dk, dv = attn.sdpa_backward(dout, q, k, v, out, lse, **kw)
    wq, wk, wv = ref_backward(dout, q, k, v, **ref_kw)
    close(dq, wq, 1e-4)
    close(dk, wk, 1e-4)
    close(dv, wv, 1e-4)


def test_dmask_and_2d_3d_inputs():
    T, S, D = 12, 10, 8
    q, k, v = rand(T, D), rand(S, D), rand(S, D)
    m = rand(T, S)
    out, lse = attn.sdpa(q, k, v, mask=m, return_lse=True)
    assert out.shape == (T, D) and lse.shape == (T,)
    close(out, ref_sdpa(q[None, None], k[None, None], v[None, None], mask=m)[0][0, 0])
    dq, dk, dv, dm = attn.sdpa_backward(rand(T, D), q, k, v, out, lse, mask=m, return_dmask=True)
    assert dm.shape == m.shape and np.isfinite(dm).all()
    # 3 dims: [H, T, D]
    q3, k3, v3 = rand(3, T, D), rand(3, S, D), rand(3, S, D)
    close(attn.sdpa(q3, k3, v3, causal=True),
          ref_sdpa(q3[None], k3[None], v3[None], causal=True)[0][0])


def test_strided_views_read_in_place():
    # [B, T, H, D] activations read as [B, H, T, D] by strides, and a packed QKV buffer
    B, T, H, D = 2, 17, 4, 32
    qkv = rand(B, T, 3, H, D)
    q = qkv[:, :, 0].transpose(0, 2, 1, 3)
    k = qkv[:, :, 1].transpose(0, 2, 1, 3)
    v = qkv[:, :, 2].transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous
    got = attn.sdpa(q, k, v, causal=True)
    want = attn.sdpa(*(np.ascontiguousarray(x) for x in (q, k, v)), causal=True)
    assert np.array_equal(got, want)  # bitwise: the same arithmetic on other strides


def test_out_is_the_callers_buffer():
    q, k, v = rand(1, 2, 8, 16), rand(1, 2, 8, 16), rand(1, 2, 8, 16)
    out = np.full((1, 2, 8, 16), np.nan, np.float32)
    r = attn.sdpa(q, k, v, out=out)
    assert r is out and np.isfinite(out).all()
    # a strided out: a [B, T, H, Dv] buffer written through a transposed view
    buf = np.zeros((1, 8, 2, 16), np.float32)
    r = attn.sdpa(q, k, v, out=buf.transpose(0, 2, 1, 3))
    assert np.shares_memory(r, buf)
    assert np.array_equal(buf.transpose(0, 2, 1, 3), out)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    o, lse = attn.sdpa(q, k, v, return_lse=True)
    r = attn.sdpa_backward(rand(1, 2, 8, 16), q, k, v, o, lse, dq=dq, dk=dk, dv=dv)
    assert r[0] is dq and r[1] is dk and r[2] is dv


def test_inputs_are_not_copied():
    # 3 x 16 MiB of inputs: a copy of any would show in numpy's traced allocations
    q, k, v = rand(1, 1, 65536, 64), rand(1, 1, 65536, 64), rand(1, 1, 65536, 64)
    # a slice is a view too; 64 queries keep the call short under the scalar kernels
    qs, ks, vs = q[:, :, :64], k, v
    out = np.empty((1, 1, 64, 64), np.float32)
    attn.sdpa(qs, ks, vs, out=out, threads=1)
    tracemalloc.start()
    try:
        attn.sdpa(qs, ks, vs, out=out, threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, "peak traced allocation %d bytes" % peak


def test_errors_carry_the_library_message():
    q = rand(1, 2, 4, 8)
    with pytest.raises(ValueError, match="not a multiple"):
        attn.sdpa(q, rand(1, 3, 4, 8), rand(1, 3, 4, 8))
    with pytest.raises(ValueError, match="D=8 but k has D=7"):
        attn.sdpa(q, rand(1, 2, 4, 7), rand(1, 2, 4, 8))
    with pytest.raises(TypeError, match="float32"):
        attn.sdpa(q.astype(np.float64), q, q)
    with pytest.raises(ValueError, match="last stride"):
        attn.sdpa(np.asfortranarray(q), q, q)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty_like(q)
        ro.flags.writeable = False
        attn.sdpa(q, q, q, out=ro)
    with pytest.raises(ValueError, match="dropout_p"):
        attn.sdpa(q, q, q, dropout_p=1.5)
    with pytest.raises(ValueError, match="window"):
        attn.sdpa(q, q, q, window=(-2, 0))
    with pytest.raises(ValueError, match="kv_len"):
        attn.sdpa(q, q, q, kv_len=[1, 2])
    with pytest.raises(ValueError, match="align"):
        attn.sdpa(q, q, q, align="middle")
    with pytest.raises(TypeError, match="expected an array"):
        attn.sdpa([[1.0]], q, q)
    # an explicit copy only where asked
    got = attn.sdpa(q.astype(np.float64), np.asfortranarray(q), q, copy=True)
    assert np.array_equal(got, attn.sdpa(q, q, q))


def test_dropout_is_reproducible_and_differentiable():
    q, k, v = rand(1, 2, 16, 8), rand(1, 2, 16, 8), rand(1, 2, 16, 8)
    a, lse = attn.sdpa(q, k, v, dropout_p=0.3, seed=7, return_lse=True)
    b = attn.sdpa(q, k, v, dropout_p=0.3, seed=7)
    c = attn.sdpa(q, k, v, dropout_p=0.3, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    g = attn.sdpa_backward(rand(1, 2, 16, 8), q, k, v, a, lse, dropout_p=0.3, seed=7)
    assert all(np.isfinite(x).all() for x in g)


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_refcounts_and_memory_flat_over_100k_calls():
    q, k, v = rand(1, 1, 16, 64), rand(1, 1, 16, 64), rand(1, 1, 16, 64)
    out = np.empty_like(q)
    mask = RNG.random((16, 16)) > 0.2
    objs = (q, k, v, out, mask)
    for _ in range(2000):
        attn.sdpa(q, k, v, out=out, mask=mask, threads=1)
    gc.collect()
    refs = [sys.getrefcount(o) for o in objs]
    mem = rss()
    for _ in range(100_000):
        attn.sdpa(q, k, v, out=out, mask=mask, threads=1)
    gc.collect()
    assert [sys.getrefcount(o) for o in objs] == refs
    grew = rss() - mem
    assert grew < 1 << 20, "resident memory grew by %d bytes over 100,000 calls" % grew
    # the allocating path and the backward too (fewer calls: each allocates its results)
    o, lse = attn.sdpa(q, k, v, return_lse=True, threads=1)
    for _ in range(2000):
        attn.sdpa(q, k, v, return_lse=True, threads=1)
        attn.sdpa_backward(out, q, k, v, o, lse, threads=1)
    gc.collect()
    mem = rss()
    for _ in range(10_000):
        attn.sdpa(q, k, v, return_lse=True, threads=1)
        attn.sdpa_backward(out, q, k, v, o, lse, threads=1)
    gc.collect()
    assert rss() - mem < 1 << 20


def test_threads_at_once_give_the_serial_results():
    inputs = [(rand(2, 4, 40, 32), rand(2, 2, 50, 32), rand(2, 2, 50, 16)) for _ in range(8)]
    want = [attn.sdpa(q, k, v, causal=True, threads=1) for q, k, v in inputs]
    errors = []

    def work(i):
        try:
            q, k, v = inputs[i]
            for _ in range(100):
                got = attn.sdpa(q, k, v, causal=True, threads=1 + i % 2)
                if not np.array_equal(got, want[i]):
                    errors.append("thread %d: result differs" % i)
                    return
        except Exception as e:  # pragma: no cover - reported below
            errors.append("thread %d: %r" % (i, e))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_gil_is_released():
    # another Python thread runs while the library computes (conftest.ticks_during)
    from conftest import long_call, ticks_during

    def forward(T):
        q = rand(1, 4, T, 64)
        return lambda: attn.sdpa(q, q, q, threads=1)

    def backward(T):
        q = rand(1, 4, T, 64)
        o, lse = attn.sdpa(q, q, q, return_lse=True, threads=1)
        return lambda: attn.sdpa_backward(o, q, q, q, o, lse, threads=1)

    assert ticks_during(long_call(forward)) > 100
    assert ticks_during(long_call(backward)) > 100


# ---- the CLI on the same inputs ---------------------------------------------

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = {np.float32: "F32", np.int32: "I32", np.bool_: "BOOL"}[a.dtype.type]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, d in header.items():
        if name == "__metadata__":
            continue
        assert d["dtype"] == "F32"
        a, b = d["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], np.float32).reshape(d["shape"])
    return out


def cli():
    exe = os.environ.get("ATTN") or shutil.which("attn") or str(REPO / "build" / "attn")
    need(os.access(exe, os.X_OK), "the attn CLI (set ATTN=<path>)")
    return exe


@pytest.mark.parametrize("flags,kw", [([], {}), (["--causal"], dict(causal=True)),
                                      (["--causal", "--align", "bottom-right", "--scale", "0.2"],
                                       dict(causal=True, align="bottom-right", scale=0.2)),
                                      (["--window", "4,1", "--softcap", "3"],
                                       dict(window=(4, 1), softcap=3.0))])
def test_cli_gives_the_same_results(tmp_path, flags, kw):
    exe = cli()
    q, k, v = rand(2, 4, 19, 32), rand(2, 2, 23, 32), rand(2, 2, 23, 16)
    mask = RNG.random((2, 1, 19, 23)) > 0.2
    dout = rand(2, 4, 19, 16)
    write_safetensors(tmp_path / "in.safetensors", dict(q=q, k=k, v=v, mask=mask, dout=dout))
    subprocess.run([exe, "sdpa", str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"),
                    "--backward"] + flags, check=True)
    got = read_safetensors(tmp_path / "out.safetensors")
    out, lse = attn.sdpa(q, k, v, mask=mask, return_lse=True, **kw)
    dq, dk, dv = attn.sdpa_backward(dout, q, k, v, out, lse, mask=mask, **kw)
    # the same library on the same inputs: bitwise (results do not depend on threads)
    for name, mine in dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv).items():
        assert np.array_equal(got[name], mine), name


# ---- global tokens (attn_sdpa_args.global_tokens) ---------------------------

@pytest.mark.parametrize("kw", [dict(window=(2, 2)), dict(window=(3, 0), causal=True),
                                dict(window=(1, 1), kv_len=[11, 6]),
                                dict(window=(0, 0), causal=True, align="bottom-right"),
                                dict(window=(2, 1), mask="bool")],
                         ids=["window", "causal", "kv_len", "bottom-right", "bool-mask"])
@pytest.mark.parametrize("per_batch", [False, True], ids=["[S]", "[B,S]"])
def test_global_tokens_against_reference(kw, per_batch):
    B, H, Hkv, T, S, D, Dv = 2, 4, 2, 11, 13, 16, 8
    q, k, v = rand(B, H, T, D), rand(B, Hkv, S, D), rand(B, Hkv, S, Dv)
    kw = dict(kw)
    if kw.pop("mask", None):
        kw["mask"] = RNG.random((B, 1, T, S)) > 0.3
        kw["mask"][..., 0] = True
    if per_batch:  # rows may differ; uint8 flags
        g = np.zeros((B, S), np.uint8)
        g[0, [0, 7]] = 1
        g[1, [3, 12]] = 2  # nonzero = global
    else:
        g = np.zeros(S, bool)
        g[[0, 5]] = True
    out, lse = attn.sdpa(q, k, v, global_tokens=g, return_lse=True, **kw)
    want, want_lse, _ = ref_sdpa(q, k, v, global_tokens=g, **kw)
    close(out, want)
    close(lse, want_lse)
    plain = attn.sdpa(q, k, v, **kw)
    assert np.abs(plain - out).max() > 1e-3  # the flags matter
    dout = rand(B, H, T, Dv)
    dq, dk, dv = attn.sdpa_backward(dout, q, k, v, out, lse, global_tokens=g, **kw)
    wq, wk, wv = ref_backward(dout, q, k, v, global_tokens=g, **kw)
    close(dq, wq, 1e-4)
    close(dk, wk, 1e-4)
    close(dv, wv, 1e-4)


def test_global_tokens_forms():
    B, H, T, S, D = 2, 2, 9, 9, 8
    q, k, v = rand(B, H, T, D), rand(B, H, S, D), rand(B, H, S, D)
    flags = np.zeros(S, bool)
    flags[[0, 4]] = True
    want = attn.sdpa(q, k, v, window=(1, 1), global_tokens=flags)
    # the same flags as [1, S], [B, S], uint8, int64 (Hugging Face's mask), a list
    for g in (flags[None], np.broadcast_to(flags, (B, S)), flags.astype(np.uint8),
              flags.astype(np.int64), flags.astype(int).tolist()):
        assert np.array_equal(attn.sdpa(q, k, v, window=(1, 1), global_tokens=g), want)
    # no global token: the window alone, bitwise
    assert np.array_equal(attn.sdpa(q, k, v, window=(1, 1), global_tokens=np.zeros(S, bool)),
                          attn.sdpa(q, k, v, window=(1, 1)))
    # every token global: full attention through any window
    close(attn.sdpa(q, k, v, window=(0, 0), global_tokens=np.ones(S, bool)),
          ref_sdpa(q, k, v)[0])
    # 2-dim q, k, v: [T, D]
    close(attn.sdpa(q[0, 0], k[0, 0], v[0, 0], window=(1, 1), global_tokens=flags),
          ref_sdpa(q[:1, :1], k[:1, :1], v[:1, :1], window=(1, 1), global_tokens=flags)[0][0, 0])


def test_global_tokens_bad_input():
    B, H, T, S, D = 2, 2, 6, 7, 8
    q, k, v = rand(B, H, T, D), rand(B, H, S, D), rand(B, H, S, D)
    out = np.full((B, H, T, D), 7.0, np.float32)
    bad = [
        (np.zeros(S + 1, bool), ValueError, "global_tokens: one flag per key.*S = 7"),
        (np.zeros((3, S), bool), ValueError, r"global_tokens: expected \[2, 7\] or \[1, 7\]"),
        (np.zeros((1, 1, S), bool), ValueError, "global_tokens: expected .*got 3 dims"),
        (np.zeros((), bool), ValueError, "global_tokens: expected .*got 0 dims"),
        (np.zeros(S, np.float32), TypeError, "global_tokens: expected bool or integer"),
        (["a"] * S, TypeError, "global_tokens: expected bool or integer"),
        (np.zeros((S, 2), bool)[:, 0], ValueError, "global_tokens.*stride"),
    ]
    for g, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            attn.sdpa(q, k, v, window=(1, 1), global_tokens=g, out=out)
        assert (out == 7.0).all()  # nothing written
    o, lse = attn.sdpa(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match="global_tokens: one flag per key"):
        attn.sdpa_backward(rand(B, H, T, D), q, k, v, o, lse, global_tokens=np.zeros(S - 1, bool))


def test_global_tokens_cli_gives_the_same_results(tmp_path):
    exe = cli()
    q, k, v = rand(2, 4, 19, 32), rand(2, 2, 19, 32), rand(2, 2, 19, 16)
    g = np.zeros((2, 19), bool)
    g[0, [0, 9]] = True
    g[1, [2, 3, 18]] = True
    dout = rand(2, 4, 19, 16)
    write_safetensors(tmp_path / "in.safetensors",
                      dict(q=q, k=k, v=v, global_tokens=g, dout=dout))
    subprocess.run([exe, "sdpa", str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"),
                    "--backward", "--window", "2,1"], check=True)
    got = read_safetensors(tmp_path / "out.safetensors")
    out, lse = attn.sdpa(q, k, v, window=(2, 1), global_tokens=g, return_lse=True)
    dq, dk, dv = attn.sdpa_backward(dout, q, k, v, out, lse, window=(2, 1), global_tokens=g)
    for name, mine in dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv).items():
        assert np.array_equal(got[name], mine), name
    # --global-tokens on the command line: the same as a [S] array
    write_safetensors(tmp_path / "in2.safetensors", dict(q=q, k=k, v=v))
    subprocess.run([exe, "sdpa", str(tmp_path / "in2.safetensors"),
                    str(tmp_path / "out2.safetensors"), "--window", "2,1", "--global-tokens",
                    "0,5-6"], check=True)
    flags = np.zeros(19, bool)
    flags[[0, 5, 6]] = True
    assert np.array_equal(read_safetensors(tmp_path / "out2.safetensors")["out"],
                          attn.sdpa(q, k, v, window=(2, 1), global_tokens=flags))


class DLPackOnly:
    """An array offering DLPack and no buffer protocol (as JAX's CPU arrays)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_inputs_read_in_place():
    q, k, v = rand(1, 2, 9, 16), rand(1, 2, 11, 16), rand(1, 2, 11, 8)
    kt = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # strided
    out = np.empty((1, 2, 9, 8), np.float32)
    attn._attn.forward(DLPackOnly(q), DLPackOnly(kt), DLPackOnly(v), out, None, None, None, None,
                       1, 0, 0, -1, -1, 0.0, 0.0, 0.0, 0, 1)
    assert np.array_equal(out, attn.sdpa(q, k, v, causal=True))
    with pytest.raises(TypeError, match="DLPack dtype"):
        attn._attn.forward(DLPackOnly(q.astype(np.float64)), k, v, out, None, None, None, None,
                           0, 0, 0, -1, -1, 0.0, 0.0, 0.0, 0, 1)
