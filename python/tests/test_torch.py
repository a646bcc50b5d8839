"""attn.torch.scaled_dot_product_attention against PyTorch's own, outputs and
gradients through autograd, over random cases; its errors; a model trained
with it."""

import math

import numpy as np
import pytest

import torch  # required: CI installs it (scripts/setup.sh), nothing here skips
import torch.nn.functional as F

import attn.torch as at

GEN = torch.Generator().manual_seed(4321)


def rand(*shape, grad=True):
    return torch.randn(*shape, generator=GEN).requires_grad_(grad)


def compare(got, want, tol):
    scale = 1.0 + want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= tol * scale, "max error %.3g > %.3g" % (err, tol * scale)


def run(fn, q, k, v, mask, kw, dout):
    for t in (q, k, v, mask):
        if t is not None and t.grad is not None:
            t.grad = None
    out = fn(q, k, v, attn_mask=mask, **kw)
    out.backward(dout)
    grads = [None if t is None or t.grad is None else t.grad.clone() for t in (q, k, v, mask)]
    return out.detach(), grads


def mask_of(kind, B, H, T, S):
    if kind is None:
        return None
    shape = {"TS": (T, S), "B11S": (B, 1, 1, S), "1HTS": (1, H, T, S), "BHTS": (B, H, T, S),
             "B1T1": (B, 1, T, 1), "HTS": (H, T, S)}[kind[1]]
    if kind[0] == "bool":
        m = torch.rand(*shape, generator=GEN) > 0.3
        m[..., 0] = True  # no fully hidden rows (PyTorch's kernels disagree among themselves there)
        return m
    return rand(*shape, grad=kind[0] == "float_grad")


CASES = []
for shape in [(2, 4, 4, 13, 13, 16, 16), (1, 8, 2, 31, 47, 64, 32), (3, 6, 3, 1, 20, 40, 40),
              (2, 2, 1, 70, 9, 8, 24)]:
    for mask in [None, ("bool", "TS"), ("bool", "B11S"), ("bool", "BHTS"), ("float", "TS"),
                 ("float_grad", "B11S"), ("float_grad", "1HTS"), ("float", "HTS"),
                 ("float_grad", "B1T1")]:
        CASES.append((shape, mask, dict()))
    CASES.append((shape, None, dict(is_causal=True)))
    CASES.append((shape, None, dict(scale=0.125)))
    CASES.append((shape, None, dict(scale=0.0)))
    CASES.append((shape, ("float", "TS"), dict(scale=2.0)))


@pytest.mark.parametrize("shape,mask,kw", CASES,
                         ids=lambda x: str(x).replace(" ", "") if not isinstance(x, dict)
                         else ",".join("%s=%s" % i for i in x.items()))
def test_parity_with_torch(shape, mask, kw):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = rand(B, H, T, D), rand(B, Hkv, S, D), rand(B, Hkv, S, Dv)
    m = mask_of(mask, B, H, T, S)
    kw = dict(kw, enable_gqa=H != Hkv)
    dout = torch.randn(B, H, T, Dv, generator=GEN)
    want, wgrads = run(F.scaled_dot_product_attention, q, k, v, m, kw, dout)
    got, ggrads = run(at.scaled_dot_product_attention, q, k, v, m, kw, dout)
    compare(got, want, 2e-5)
    for name, g, w in zip(("dq", "dk", "dv", "dmask"), ggrads, wgrads):
        assert (g is None) == (w is None), name
        if w is not None:
            assert g.shape == w.shape, name
            compare(g, w, 1e-4)


def test_3d_and_strided_inputs():
    B, T, H, D = 2, 21, 4, 32
    x = rand(B, T, 3 * H * D)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in x.split(H * D, dim=-1))
    dout = torch.randn(B, H, T, D, generator=GEN)
    o1 = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    o1.backward(dout)
    gx_w, x.grad = x.grad.clone(), None
    o2 = at.scaled_dot_product_attention(q, k, v, is_causal=True)
    o2.backward(dout)
    compare(o2.detach(), o1.detach(), 2e-5)
    compare(x.grad, gx_w, 1e-4)
    # 3 dims [B, T, D]
    q3, k3, v3 = rand(2, 9, 16), rand(2, 11, 16), rand(2, 11, 8)
    compare(at.scaled_dot_product_attention(q3, k3, v3).detach(),
            F.scaled_dot_product_attention(q3, k3, v3).detach(), 2e-5)


def test_last_dim_not_contiguous_is_copied():
    q = rand(1, 2, 8, 16)
    k = rand(1, 2, 16, 10).transpose(-1, -2)  # stride(-1) != 1
    v = rand(1, 2, 10, 16)
    assert k.stride(-1) != 1
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            compare(at.scaled_dot_product_attention(q, k, v).detach(),
                    F.scaled_dot_product_attention(q, k, v).detach(), 2e-5)


def test_no_grad_path_is_zero_copy_of_inputs():
    q = torch.randn(1, 2, 8, 16)
    with torch.no_grad():
        out = at.scaled_dot_product_attention(q, q, q)
    compare(out, F.scaled_dot_product_attention(q, q, q), 2e-5)
    assert not out.requires_grad


def test_dropout_reproducible_under_manual_seed():
    q, k, v = rand(1, 2, 16, 8), rand(1, 2, 16, 8), rand(1, 2, 16, 8)
    torch.manual_seed(3)
    a = at.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    torch.manual_seed(3)
    b = at.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    c = at.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_unsupported_inputs_name_what_is_unsupported():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="device 'meta'.*CUDA"):
        at.scaled_dot_product_attention(q.to("meta"), q, q)
    with pytest.raises(ValueError, match="torch.float64"):
        at.scaled_dot_product_attention(q.double(), q, q)
    with pytest.raises(ValueError, match="torch.float16"):
        at.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(4, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="enable_gqa"):
        at.scaled_dot_product_attention(q, torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8))
    with pytest.raises(ValueError, match="is_causal"):
        at.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.bool),
                                        is_causal=True)
    with pytest.raises(ValueError, match="broadcast"):
        at.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(3, 4, dtype=torch.bool))


class Block(torch.nn.Module):
    def __init__(self, E, H, sdpa):
        super().__init__()
        self.H, self.sdpa = H, sdpa
        self.qkv = torch.nn.Linear(E, 3 * E)
        self.proj = torch.nn.Linear(E, E)

    def forward(self, x):
        B, T, E = x.shape
        q, k, v = (t.view(B, T, self.H, E // self.H).transpose(1, 2)
                   for t in self.qkv(x).split(E, dim=-1))
        y = self.sdpa(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, E))


def test_training_matches_torch():
    # the same model, init and data trained 5 steps with each attention
    torch.manual_seed(0)
    x = torch.randn(4, 24, 32)
    target = torch.randn(4, 24, 32)
    losses = {}
    for name, fn in (("torch", F.scaled_dot_product_attention),
                     ("attn", at.scaled_dot_product_attention)):
        torch.manual_seed(1)
        model = Block(32, 4, fn)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ls = []
        for _ in range(5):
            loss = F.mse_loss(model(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ls.append(loss.item())
        losses[name] = ls
    assert losses["attn"][-1] < losses["attn"][0]
    np.testing.assert_allclose(losses["attn"], losses["torch"], rtol=1e-4)


def test_refcounts_and_memory_flat_over_100k_calls():
    import gc
    import os
    import sys

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    q, k, v = torch.randn(1, 1, 16, 64), torch.randn(1, 1, 16, 64), torch.randn(1, 1, 16, 64)
    m = torch.rand(16, 16) > 0.2
    objs = (q, k, v, m)
    import attn

    threads = attn.get_num_threads()
    attn.set_num_threads(1)  # tiny calls: no thread team to wake 100,000 times
    try:
        _flat(q, k, v, m, objs, rss, gc, sys)
    finally:
        attn.set_num_threads(threads)


def _flat(q, k, v, m, objs, rss, gc, sys):
    with torch.no_grad():
        for _ in range(2000):
            at.scaled_dot_product_attention(q, k, v, attn_mask=m)
        gc.collect()
        refs = [sys.getrefcount(o) for o in objs]
        mem = rss()
        for _ in range(100_000):
            at.scaled_dot_product_attention(q, k, v, attn_mask=m)
        gc.collect()
    assert [sys.getrefcount(o) for o in objs] == refs
    assert rss() - mem < 1 << 20, "resident memory grew by %d bytes" % (rss() - mem)
    # the autograd path keeps nothing after backward
    qg = q.clone().requires_grad_()
    for _ in range(2000):
        at.scaled_dot_product_attention(qg, k, v).sum().backward()
    gc.collect()
    mem = rss()
    for _ in range(5000):
        at.scaled_dot_product_attention(qg, k, v).sum().backward()
    gc.collect()
    assert rss() - mem < 1 << 20
