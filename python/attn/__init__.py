"""attn: exact, fast self-attention on the CPU, from Python.

A thin layer over the C library libattn (its public API, nothing else):

- ``attn.sdpa`` / ``attn.sdpa_backward``: scaled dot-product attention and
  its gradients on numpy float32 arrays (or any buffer-protocol or DLPack
  array), read and written in place: no copy of inputs, results written
  into ``out`` when given.
- ``attn.torch.scaled_dot_product_attention``: a drop-in for
  ``torch.nn.functional.scaled_dot_product_attention`` on CPU float32
  tensors, with autograd (``import attn.torch``; needs PyTorch).
- ``attn.Model``: a Hugging Face model directory (all-MiniLM-L6-v2 and other
  BERT sentence encoders) with ``encode`` and ``tokenize``.

The GIL is released while the library computes; every OS thread gets its
own library context, so calls from several Python threads run in parallel.
Errors are exceptions carrying the library's message: ValueError (shapes,
dtypes, values), TypeError (an object of the wrong kind), MemoryError,
OSError / FileNotFoundError (files and model directories).
"""

from __future__ import annotations

import math as _math
import sys as _sys

import numpy as _np


def _load_bundled_libraries():
    """A wheel carries the shared libraries libattn needs (oneDNN, jansson,
    utf8proc, libgomp and what they need in turn). Load them by path first:
    a library already loaded satisfies a later lookup of its name, so a
    bundled library's own dependencies are found in the package as well,
    whatever its RPATH. A build-tree or system install has none of them."""
    import ctypes
    import glob
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    todo = [p for p in glob.glob(os.path.join(here, "lib*.so*"))
            if not os.path.basename(p).startswith("libattn.")]
    while todo:  # in dependency order: retry what failed until nothing loads
        left = []
        for p in todo:
            try:
                ctypes.CDLL(p)
            except OSError:
                left.append(p)
        if len(left) == len(todo):
            break  # importing _attn below reports what is missing
        todo = left


_load_bundled_libraries()

from . import _attn  # noqa: E402

__all__ = ["sdpa", "sdpa_backward", "Model", "set_num_threads", "get_num_threads", "info"]
__version__ = "0.1.0"

_ALIGN = {"top-left": 0, "bottom-right": 1}
_num_threads = 0  # 0: the library's default (ATTN_NUM_THREADS, else every core)
_zeros_cache: dict = {}


def set_num_threads(n: int) -> None:
    """Set the threads every later call uses when it gets ``threads=None``.

    ``0`` restores the library's default: ``ATTN_NUM_THREADS`` from the
    environment, else every core. The count is per call, not per process
    state of the C library (each thread's context is set to it).
    """
    global _num_threads
    n = int(n)
    if n < 0:
        raise ValueError("set_num_threads: n must be >= 0, got %d" % n)
    _attn.set_default_threads(n)  # what attn.torch's C call path reads
    _num_threads = n


def get_num_threads() -> int:
    """The count set by ``set_num_threads`` (0 = the library's default)."""
    return _num_threads


def info() -> dict:
    """The library: version, kernel family in use ('avx512', 'avx2',
    'scalar'), the families this CPU runs, default threads and the GEMM."""
    return _attn.info()


def _threads(threads):
    if threads is None:
        return _num_threads
    threads = int(threads)
    if threads < 0:
        raise ValueError("threads must be >= 0 (0 = the library's default), got %d" % threads)
    return threads


def _window(window):
    """(window flag, left, right) from None or (L, R); None in a pair = -1."""
    if window is None:
        return 0, -1, -1
    try:
        left, right = window
    except (TypeError, ValueError):
        raise ValueError("window must be None or a pair (left, right), got %r" % (window,))
    left = -1 if left is None else int(left)
    right = -1 if right is None else int(right)
    return 1, left, right


def _zero_query(q):
    """A read-only all-zero view shaped like q (stride 0 but the last dim):
    scale=0.0 is computed as zero scores, which the C API's scale (where 0
    means the default 1/sqrt(D)) cannot say directly."""
    d = q.shape[-1]
    z = _zeros_cache.get(d)
    if z is None:
        z = _zeros_cache[d] = _np.zeros(d, _np.float32)
    return _np.broadcast_to(z, q.shape)


def _options(q, align, window, scale, softcap, dropout_p, seed):
    """The scalar arguments of _attn.forward / backward, and the query the
    call reads (a zero view when scale == 0.0)."""
    try:
        al = _ALIGN[align]
    except (KeyError, TypeError):
        raise ValueError("align must be 'top-left' or 'bottom-right', got %r" % (align,))
    w, wl, wr = _window(window)
    if scale is None:
        s = 0.0  # the library's default, 1/sqrt(D)
    else:
        s = float(scale)
        if s == 0.0:
            q, s = _zero_query(q), 1.0
    sc = 0.0 if softcap is None else float(softcap)
    return q, al, w, wl, wr, s, sc, float(dropout_p), int(seed)


def _shape(x, name):
    try:
        return tuple(x.shape)
    except AttributeError:
        raise TypeError("%s: expected an array (buffer protocol, e.g. numpy, or DLPack), got %s"
                        % (name, type(x).__name__)) from None


def _as_f32(x, name, dtype=_np.float32):
    if x is None:
        return None
    return _np.ascontiguousarray(x, dtype=dtype)


def _aux(kv_len, alibi_slopes):
    # bare [B] / [H] arrays in the C API: take lists and other int/float
    # types here (small, converted, never the attention tensors themselves)
    if kv_len is not None and not (isinstance(kv_len, _np.ndarray) and kv_len.dtype == _np.int32):
        kv_len = _np.ascontiguousarray(kv_len, dtype=_np.int32)
    if alibi_slopes is not None and not (
        isinstance(alibi_slopes, _np.ndarray) and alibi_slopes.dtype == _np.float32
    ):
        alibi_slopes = _np.ascontiguousarray(alibi_slopes, dtype=_np.float32)
    return kv_len, alibi_slopes


def _global_tokens(g, q, k):
    """global_tokens as bool or uint8 flags [S] or [B|1, S], checked against
    q's batch B and k's key count S (errors name the argument). Integer
    flags of another type (Hugging Face's int64 global_attention_mask, a
    list) are converted to bool, nonzero = global: a small [B, S] array."""
    if g is None:
        return None
    if not (isinstance(g, _np.ndarray) and g.dtype in (_np.bool_, _np.uint8)):
        if hasattr(g, "dtype") and not isinstance(g, _np.ndarray) and str(g.dtype) in (
                "torch.bool", "torch.uint8"):
            pass  # a torch bool/uint8 tensor is read in place, as masks are
        else:
            a = _np.asarray(g)
            if a.dtype != _np.bool_ and not _np.issubdtype(a.dtype, _np.integer):
                raise TypeError("global_tokens: expected bool or integer flags (nonzero = "
                                "global), got dtype %s" % a.dtype)
            g = a if a.dtype in (_np.bool_, _np.uint8) else a != 0
    sq, sk = _shape(q, "q"), _shape(k, "k")
    B = sq[0] if len(sq) == 4 else 1
    S = sk[-2] if len(sk) >= 2 else None
    shape = tuple(g.shape)
    if len(shape) not in (1, 2):
        raise ValueError("global_tokens: expected [S] or [B|1, S] flags (B = %d, S = %s keys), "
                         "got %d dims %s" % (B, S, len(shape), shape))
    if shape[-1] != S:
        raise ValueError("global_tokens: one flag per key: expected %s in the last dim (k has "
                         "S = %s keys), got shape %s" % (S, S, shape))
    if len(shape) == 2 and shape[0] not in (1, B):
        raise ValueError("global_tokens: expected [%d, %s] or [1, %s] (q's batch B = %d), got "
                         "shape %s" % (B, S, S, B, shape))
    return g


def sdpa(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    align="top-left",
    window=None,
    scale=None,
    softcap=None,
    kv_len=None,
    alibi_slopes=None,
    global_tokens=None,
    dropout_p=0.0,
    seed=0,
    out=None,
    return_lse=False,
    threads=None,
    copy=False,
):
    """Scaled dot-product attention (attn_sdpa_forward), exact.

    Shapes (2 to 4 dims; missing leading dims are batch/head of size 1)::

        q    [B, H,   T, D ]     float32
        k    [B, Hkv, S, D ]     float32, H % Hkv == 0 (MHA, GQA, MQA)
        v    [B, Hkv, S, Dv]     float32
        out  [B, H,   T, Dv]     float32, returned (written in place if given)
        lse  [B, H,   T]         natural-log sum of exp per row (return_lse)

    Any strides whose last one is 1 are read in place through the buffer
    protocol (numpy slices, transposed [B, T, H, D] views, a packed QKV
    buffer, stride-0 broadcasts): inputs are never copied. An array of
    another dtype or with a last stride other than 1 is an error (TypeError
    or ValueError naming the argument) unless ``copy=True``, which converts
    q, k, v (and mask) to contiguous float32 copies first.

    Score of query i and key j, in this order::

        s = scale * dot(q_i, k_j)                 scale=None: 1/sqrt(D);
                                                  scale=0.0: exactly zero
        if softcap: s = softcap * tanh(s / softcap)
        s += mask[b, h, i, j]                     float mask (additive)
        s -= alibi_slopes[h] * |p(i) - j|
        s = -inf where key j is hidden: j > p(i) (causal), outside
            [p(i) - L, p(i) + R] (window=(L, R), -1 or None: unbounded) unless
            query i or key j is global (global_tokens), j >= kv_len[b], or
            mask[b, h, i, j] == False (bool mask)

    with p(i) = i for align="top-left" (PyTorch's is_causal) and
    p(i) = i + S - T for "bottom-right" (FlashAttention, KV caches).
    A query row that sees no key gives out = 0 and lse = -inf.

    Args:
        mask: float32 additive bias or bool keep-mask (True = attend), shape
            [T, S] or [B|1, H|1, T, S] (size-1 dims broadcast; stride-0
            views such as np.broadcast_to(m, ...) are read in place).
        kv_len: int [B], keys j >= kv_len[b] are masked (padding).
        alibi_slopes: float [H].
        global_tokens: bool or uint8 [S] or [B|1, S] (Hugging Face's
            global_attention_mask, Longformer): nonzero = the token at key
            position j is global, seen by every query and seeing every key
            (query i is global when its position p(i) is a global key's),
            through the window; causal, kv_len and mask still hide keys.
            Integer flags of another type are converted (nonzero = global);
            a wrong shape or dtype is an error naming global_tokens.
        dropout_p, seed: dropout on the attention probabilities, in [0, 1);
            the kept set is a pure function of (seed, b, h, i, j), so
            sdpa_backward with the same seed regenerates it.
        out: a writable float32 [B, H, T, Dv] array to write into; it is
            the array returned.
        return_lse: also return lse (needed by sdpa_backward).
        threads: threads for this call (None: set_num_threads' count, 0:
            ATTN_NUM_THREADS, else every core). Results do not depend on it.

    Returns:
        out, or (out, lse) with return_lse=True.

    The GIL is released while attention runs; concurrent calls from several
    threads are safe (each thread has its own library context).
    """
    if copy:
        q, k, v = _as_f32(q, "q"), _as_f32(k, "k"), _as_f32(v, "v")
        if mask is not None and _np.asarray(mask).dtype != _np.bool_:
            mask = _as_f32(mask, "mask")
    if out is None:
        out = _np.empty(_shape(q, "q")[:-1] + _shape(v, "v")[-1:], _np.float32)
    lse = _np.empty(_shape(q, "q")[:-1], _np.float32) if return_lse else None
    if kv_len is not None or alibi_slopes is not None:
        kv_len, alibi_slopes = _aux(kv_len, alibi_slopes)
    gt = _global_tokens(global_tokens, q, k)
    if scale is None and align == "top-left" and window is None and softcap is None:
        # the common case, without the option mapping below
        _attn.forward(q, k, v, out, lse, mask, kv_len, alibi_slopes, bool(causal), 0, 0, -1, -1,
                      0.0, 0.0, float(dropout_p), int(seed), _threads(threads), gt)
    else:
        qq, al, w, wl, wr, s, sc, dp, sd = _options(q, align, window, scale, softcap, dropout_p,
                                                    seed)
        _attn.forward(qq, k, v, out, lse, mask, kv_len, alibi_slopes, bool(causal), al, w, wl, wr,
                      s, sc, dp, sd, _threads(threads), gt)
    return (out, lse) if return_lse else out


def sdpa_backward(
    dout,
    q,
    k,
    v,
    out,
    lse,
    *,
    mask=None,
    causal=False,
    align="top-left",
    window=None,
    scale=None,
    softcap=None,
    kv_len=None,
    alibi_slopes=None,
    global_tokens=None,
    dropout_p=0.0,
    seed=0,
    dq=None,
    dk=None,
    dv=None,
    dmask=None,
    return_dmask=False,
    threads=None,
):
    """Gradients of sdpa (attn_sdpa_backward): (dq, dk, dv[, dmask]).

    dout is the gradient of the loss with respect to out [B, H, T, Dv];
    q, k, v, out and lse are the forward's (``out, lse = sdpa(...,
    return_lse=True)``), and every option (mask, causal, align, window,
    scale, softcap, kv_len, alibi_slopes, global_tokens, dropout_p, seed) must be the
    forward's. Probabilities are recomputed from lse tile by tile: nothing
    of size T x S is allocated.

    Returns dq [B, H, T, D], dk [B, Hkv, S, D] (summed over each group of
    query heads sharing a key head), dv [B, Hkv, S, Dv], and with
    ``return_dmask=True`` (float masks only) dmask, the gradient of the
    additive mask, shaped like the mask and summed over its broadcast dims.
    dq, dk, dv, dmask: optional writable float32 arrays to write into
    (overwritten, not accumulated). Rows that see no key get zero
    gradients. Results are bitwise the same for any thread count.
    """
    if dq is None:
        dq = _np.empty(_shape(q, "q"), _np.float32)
    if dk is None:
        dk = _np.empty(_shape(k, "k"), _np.float32)
    if dv is None:
        dv = _np.empty(_shape(v, "v"), _np.float32)
    if (return_dmask or dmask is not None) and mask is not None and dmask is None:
        dmask = _np.empty(_np.shape(mask), _np.float32)
    if kv_len is not None or alibi_slopes is not None:
        kv_len, alibi_slopes = _aux(kv_len, alibi_slopes)
    gt = _global_tokens(global_tokens, q, k)
    qq, al, w, wl, wr, s, sc, dp, sd = _options(q, align, window, scale, softcap, dropout_p, seed)
    _attn.backward(qq, k, v, out, lse, mask, kv_len, alibi_slopes, bool(causal), al, w, wl, wr, s,
                   sc, dp, sd, _threads(threads), dout, dq, dk, dv, dmask, gt)
    if scale is not None and float(scale) == 0.0:
        dq[...] = 0.0  # d(scale * q.k)/dq = 0 at scale 0 (computed on a zero query)
    if return_dmask:
        return dq, dk, dv, dmask
    return dq, dk, dv


from ._model import Model  # noqa: E402


def __getattr__(name):
    # attn.torch imports PyTorch, which takes seconds: only when asked
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError("module 'attn' has no attribute %r" % name)
