"""attn.torch: attn's attention as PyTorch's scaled_dot_product_attention.

``attn.torch.scaled_dot_product_attention`` has the signature and the
semantics of ``torch.nn.functional.scaled_dot_product_attention`` and is
differentiable (a torch.autograd.Function whose backward is attn's), so a
model can swap it in for training::

    import attn.torch
    F.scaled_dot_product_attention = attn.torch.scaled_dot_product_attention  # or call it

CPU float32 tensors are shared with the C library zero-copy: it reads
and writes their memory in place (through data_ptr(), shape and stride()).
The forward of the plain call runs in C from start to end, output
allocation included (with autograd, a torch.autograd.Function then records
it), so a tiny call costs no more than PyTorch's own. What attn does not run raises ValueError
naming it: tensors on another device (CUDA, ...), dtypes other than
float32 (masks: bool or float32), inputs of other than 3 or 4 dims, batch
dims that differ between query and key (PyTorch broadcasts those).

Copies made where attn's C API cannot take PyTorch's form (documented, as
PyTorch itself copies in the same places): an input whose last dim is not
contiguous (stride(-1) != 1) is made contiguous; a mask broadcast along the
key dim ([..., T, 1]) is expanded to [..., T, S]. A mask broadcast along
the batch, head or query dims is read in place (stride 0).
"""

from __future__ import annotations

import math

import torch

from . import _attn, _threads, _zero_query

__all__ = ["scaled_dot_product_attention"]

_attn.torch_setup(torch.Tensor, torch.float32, torch.bool, torch.empty, torch.is_grad_enabled)
_torch_sdpa = _attn.torch_sdpa


def _check(name, t, bool_ok=False):
    if not isinstance(t, torch.Tensor):
        raise TypeError("attn.torch: %s must be a torch.Tensor, got %s" % (name, type(t).__name__))
    if not t.is_cpu:
        raise ValueError("attn.torch: %s is on device '%s': attn runs on the CPU only "
                         "(CUDA and other devices are not supported)" % (name, t.device))
    if t.dtype != torch.float32 and not (bool_ok and t.dtype == torch.bool):
        raise ValueError("attn.torch: %s has dtype %s: attn supports torch.float32%s only" % (
            name, t.dtype, " (and torch.bool masks)" if bool_ok else ""))
    if t.layout != torch.strided:
        raise ValueError("attn.torch: %s has layout %s: attn supports dense (strided) tensors "
                         "only" % (name, t.layout))


def _q(q, zero):
    """The query attn reads: q itself (its memory, through data_ptr()), or a
    zero view for scale == 0.0 (attn's scale 0 means the default)."""
    return _zero_query(q) if zero else q


def _last_contiguous(t):
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _mask4(mask, B, H, T, S):
    """The mask as a 4-dim view attn reads: [B|1, H|1, T, S], broadcast
    query dim by stride 0, the key dim by a copy."""
    if mask.dim() > 4 or mask.dim() < 1:
        raise ValueError("attn.torch: attn_mask must have 1 to 4 dims, got %d" % mask.dim())
    shape = (1,) * (4 - mask.dim()) + tuple(mask.shape)
    m = mask.reshape(shape) if mask.dim() != 4 else mask
    full = (B, H, T, S)
    for i, (got, want) in enumerate(zip(shape, full)):
        if got != 1 and got != want:
            raise ValueError("attn.torch: attn_mask of shape %s does not broadcast to %s" % (
                tuple(mask.shape), full))
    if shape[2] != T or shape[3] != S:
        m = m.expand(shape[0], shape[1], T, S)
        if shape[3] != S:
            m = m.contiguous()  # attn reads the key dim with stride 1
    return _last_contiguous(m)


class _SDPA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, dropout_p, seed, threads):
        B, H, T, _ = q.shape
        out = torch.empty((B, H, T, v.shape[-1]), dtype=torch.float32, device="cpu")
        lse = torch.empty((B, H, T), dtype=torch.float32, device="cpu")
        zero = scale == 0.0
        _attn.forward(_q(q, zero), k, v, out, lse, mask, None, None, causal, 0, 0, -1, -1,
                      1.0 if zero else (0.0 if scale is None else scale), 0.0, dropout_p, seed,
                      threads)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.opts = (causal, scale, dropout_p, seed, threads)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, mask, out, lse = ctx.saved_tensors
        causal, scale, dropout_p, seed, threads = ctx.opts
        dout = _last_contiguous(dout)
        dq = torch.empty(q.shape, dtype=torch.float32, device="cpu")
        dk = torch.empty(k.shape, dtype=torch.float32, device="cpu")
        dv = torch.empty(v.shape, dtype=torch.float32, device="cpu")
        want_dmask = mask is not None and ctx.needs_input_grad[3]
        dmask = torch.empty(mask.shape, dtype=torch.float32, device="cpu") if want_dmask else None
        zero = scale == 0.0
        _attn.backward(_q(q, zero), k, v, out, lse, mask, None, None, causal, 0, 0, -1, -1,
                       1.0 if zero else (0.0 if scale is None else scale), 0.0, dropout_p, seed,
                       threads, dout, dq, dk, dv, dmask)
        if zero:
            dq.zero_()
        # dmask has the shape of the [B|1, H|1, T, S] view attn read (summed over
        # its broadcast B, H dims); autograd sums it back to attn_mask's shape
        # through the reshape / expand that made the view
        return dq, dk, dv, dmask, None, None, None, None, None


class _SDPAFromC(torch.autograd.Function):
    """The C path's forward (out and lse already computed, in a tuple that
    autograd does not look into), recorded for _SDPA's backward: the
    inputs are 4-dim and the mask has 2 to 4 dims, as attn's backward
    reads them (attn._attn.torch_sdpa sends other cases to _general)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, done):
        (out, lse), causal, scale = done
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.opts = (causal, scale, 0.0, 0, _threads(None))
        return out

    @staticmethod
    def backward(ctx, dout):
        return _SDPA.backward(ctx, dout)[:4] + (None,)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, computed by attn.

    Same signature and semantics as PyTorch's::

        query [B, H, T, D] or [B, T, D]     float32, CPU
        key   [B, Hkv, S, D]                Hkv == H, or H % Hkv == 0 with enable_gqa
        value [B, Hkv, S, Dv]
        ->    [B, H, T, Dv]

    attn_mask: bool (True = attend) or float32 (added to the scores),
    broadcastable to [B, H, T, S] ([B, T, S] for 3-dim inputs, with at
    most 3 dims); its gradient is computed when it
    requires grad (float masks). is_causal: query i sees keys j <= i
    (top-left, as PyTorch), and attn_mask must then be None. scale: None is
    1/sqrt(D), 0.0 is a real zero scale. dropout_p: dropout on the
    attention probabilities (attn's own counter-based stream, seeded from
    torch's default generator, so torch.manual_seed makes runs repeatable;
    the kept set is not PyTorch's). Pass dropout_p=0.0 when not training, as
    with PyTorch's function.

    Differentiable with respect to query, key, value and a float attn_mask
    through attn's backward (recomputes probabilities from the saved
    log-sum-exp; no T x S buffer). Threads: attn.set_num_threads (default:
    ATTN_NUM_THREADS, else every core). Unsupported inputs raise ValueError
    (see the module's doc).
    """
    # the plain call without autograd runs in C (checks, output, attention:
    # the tiny-call overhead, docs/PERFORMANCE.md); it returns None for
    # whatever it does not take, and _general decides and reports
    out = _torch_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if out is None:
        return _general(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if type(out) is tuple:  # computed with its lse: autograd records it
        return _SDPAFromC.apply(query, key, value, attn_mask, (out, bool(is_causal), scale))
    return out


def _general(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """scaled_dot_product_attention's every case: autograd, dropout, masks
    to reshape or copy, and the checks that name what is unsupported."""
    f32 = torch.float32
    try:  # the checks of _check, cheaply; _check names what is wrong
        ok = (query.dtype is f32 and key.dtype is f32 and value.dtype is f32 and query.is_cpu
              and key.is_cpu and value.is_cpu)
    except AttributeError:
        ok = False
    if not ok:
        _check("query", query)
        _check("key", key)
        _check("value", value)
    nd = query.dim()
    if nd not in (3, 4) or key.dim() != nd or value.dim() != nd:
        raise ValueError("attn.torch: query, key and value must all have 3 or 4 dims, got %d, "
                         "%d, %d" % (query.dim(), key.dim(), value.dim()))
    if attn_mask is not None:
        _check("attn_mask", attn_mask, bool_ok=True)
    if nd == 3:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if attn_mask is not None and attn_mask.dim() == 4:
            raise ValueError("attn.torch: attn_mask has 4 dims but query, key and value 3: "
                             "the result would have 4 (pass 4-dim inputs)")
        if attn_mask is not None and attn_mask.dim() == 3:  # [B, T, S] like the scores
            attn_mask = attn_mask.unsqueeze(1)
    B, H, T, D = query.shape
    Bk, Hkv, S, Dk = key.shape
    if Bk != B or value.shape[0] != B:
        raise ValueError("attn.torch: batch sizes differ (query %d, key %d, value %d): attn "
                         "does not broadcast batch dims" % (B, Bk, value.shape[0]))
    if Hkv != H and not enable_gqa:
        raise ValueError("attn.torch: query has %d heads and key %d: pass enable_gqa=True for "
                         "grouped-query attention" % (H, Hkv))
    if Dk != D:
        raise ValueError("attn.torch: query has head dim %d but key %d" % (D, Dk))
    if is_causal and attn_mask is not None:
        raise ValueError("attn.torch: attn_mask must be None when is_causal=True (as in "
                         "PyTorch)")
    mask = None
    if attn_mask is not None:
        mask = _mask4(attn_mask, B, H, T, S)
    dropout_p = float(dropout_p)
    seed = 0
    if dropout_p > 0.0:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if scale is not None:
        scale = float(scale)
    threads = _threads(None)
    needs_grad = torch.is_grad_enabled() and (
        query.requires_grad or key.requires_grad or value.requires_grad
        or (mask is not None and mask.requires_grad))
    # attn reads the last dim with stride 1: an input with another is copied
    # (as PyTorch's kernels do); the mask was made so by _mask4
    query, key, value = (_last_contiguous(t) for t in (query, key, value))
    if needs_grad:
        out = _SDPA.apply(query, key, value, mask, bool(is_causal), scale, dropout_p, seed,
                          threads)
    else:
        out = torch.empty(B, H, T, value.shape[-1], dtype=torch.float32, device="cpu")
        zero = scale == 0.0
        _attn.forward(_q(query, zero), key, value, out, None, mask, None, None, bool(is_causal),
                      0, 0, -1, -1, 1.0 if zero else (0.0 if scale is None else scale), 0.0,
                      dropout_p, seed, threads)
    return out.squeeze(1) if nd == 3 else out
