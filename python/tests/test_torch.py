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
    # the forward ran in C (and autograd recorded it) where the C path takes the case
    from attn import _attn

    c = _attn.torch_sdpa(q, k, v, m, 0.0, kw.get("is_causal", False), kw.get("scale"),
                         kw["enable_gqa"])
    not_along_queries = mask is None or mask[1] != "B11S" or T == 1
    assert (type(c) is tuple) == (expect_fast(mask, kw) and not_along_queries)
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
    refs = [sys.getrefcount(o) for o in (qg, k, v, m)]
    mem = rss()
    for _ in range(5000):
        at.scaled_dot_product_attention(qg, k, v).sum().backward()
        at.scaled_dot_product_attention(qg, k, v, attn_mask=m).sum().backward()
    gc.collect()
    assert rss() - mem < 1 << 20
    assert [sys.getrefcount(o) for o in (qg, k, v, m)] == refs


# ---- the call without autograd, in C (attn._attn.torch_sdpa) ----------------

def expect_fast(mask, kw):
    """Does the C path take this case? Everything but a mask broadcast along
    the key dim (copied first), a zero scale (a zero query) and dropout
    (seeded from torch's generator)."""
    return (mask is None or mask[1] != "B1T1") and kw.get("scale") != 0.0


@pytest.mark.parametrize("shape,mask,kw", CASES,
                         ids=lambda x: str(x).replace(" ", "") if not isinstance(x, dict)
                         else ",".join("%s=%s" % i for i in x.items()))
def test_no_grad_parity_and_the_c_path(shape, mask, kw):
    from attn import _attn

    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = (rand(*s, grad=False) for s in ((B, H, T, D), (B, Hkv, S, D), (B, Hkv, S, Dv)))
    m = mask_of(mask, B, H, T, S)
    if m is not None:
        m = m.detach()
    kw = dict(kw, enable_gqa=H != Hkv)
    args = (q, k, v, m, 0.0, kw.get("is_causal", False), kw.get("scale"), kw["enable_gqa"])
    fast = _attn.torch_sdpa(*args)
    assert (fast is not None) == expect_fast(mask, kw)
    got = at.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw)
    general = at._general(*args)
    assert got.dtype == torch.float32 and got.shape == (B, H, T, Dv) and not got.requires_grad
    assert torch.equal(got, general)  # both paths: the same library call
    if fast is not None:
        assert torch.equal(fast, general)
    compare(got, F.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw), 2e-5)


def test_c_path_with_autograd_and_what_it_leaves_to_python():
    from attn import _attn

    q = rand(1, 2, 8, 16)  # requires grad
    k, v = rand(1, 2, 8, 16, grad=False), rand(1, 2, 8, 16, grad=False)
    out, lse = _attn.torch_sdpa(q, k, v, None, 0.0, False, None, False)  # the lse too
    assert lse.shape == (1, 2, 8) and not out.requires_grad
    s = (q.detach() @ k.transpose(-1, -2) / 4.0).double()
    compare(lse, s.logsumexp(-1).float(), 1e-6)
    with torch.no_grad():
        out = _attn.torch_sdpa(q, k, v, None, 0.0, False, None, False)
        assert isinstance(out, torch.Tensor) and not out.requires_grad
    # with autograd: 3-dim inputs and a mask broadcast along the queries go
    # through the Python path's views
    assert _attn.torch_sdpa(q[0], k[0], v[0], None, 0.0, False, None, False) is None
    m = torch.zeros(1, 1, 1, 8)
    assert _attn.torch_sdpa(q, k, v, m, 0.0, False, None, False) is None
    assert type(_attn.torch_sdpa(q, k, v, m.expand(1, 1, 8, 8), 0.0, False, None, False)) is tuple
    assert _attn.torch_sdpa(k, k, v, None, 0.1, False, None, False) is None
    assert _attn.torch_sdpa(k, k, v, None, 0.0, False, None, False) is not None
    # a subclass of torch.Tensor (a Parameter, say): the Python path
    p = torch.nn.Parameter(k.clone(), requires_grad=False)
    assert _attn.torch_sdpa(p, k, v, None, 0.0, False, None, False) is None
    compare(at.scaled_dot_product_attention(p, k, v), F.scaled_dot_product_attention(k, k, v),
            2e-5)
    # 3-dim query, key, value and masks of 1 to 4 dims, read in place
    q3, k3, v3 = rand(2, 9, 16, grad=False), rand(2, 11, 16, grad=False), rand(2, 11, 8, grad=False)
    for m in (torch.rand(11, generator=GEN) > 0.2, torch.randn(9, 11, generator=GEN),
              torch.randn(1, 1, 11, generator=GEN), torch.randn(2, 1, 11, generator=GEN),
              torch.randn(2, 9, 11, generator=GEN)):
        m[..., 0] = True if m.dtype == torch.bool else m[..., 0]
        got = _attn.torch_sdpa(q3, k3, v3, m, 0.0, False, None, False)
        assert got is not None and got.shape == (2, 9, 8)
        compare(got, F.scaled_dot_product_attention(q3, k3, v3, attn_mask=m), 2e-5)
        qg = q3.clone().requires_grad_()
        compare(at.scaled_dot_product_attention(qg, k3, v3, attn_mask=m).detach(), got, 0)
    with pytest.raises(ValueError, match="4 dims"):
        at.scaled_dot_product_attention(q3, k3, v3, attn_mask=torch.zeros(1, 1, 9, 11))


def test_default_dtype_and_device_do_not_change_the_result():
    q = rand(1, 2, 8, 16, grad=False)
    want = F.scaled_dot_product_attention(q, q, q)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = at.scaled_dot_product_attention(q, q, q)
    finally:
        torch.set_default_dtype(old)
    assert got.dtype == torch.float32
    compare(got, want, 2e-5)
    with torch.device("meta"):  # torch.empty would make a tensor with no memory
        got = at.scaled_dot_product_attention(q, q, q)
    assert got.device.type == "cpu"
    compare(got, want, 2e-5)


def allocations(fn):
    """(names of the aten ops fn ran, bytes it allocated), by torch's profiler"""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    ev = prof.events()
    names = {e.name for e in ev if e.name.startswith("aten::")}
    # an op's own allocations (self_): a parent's total counts its children's
    return out, names, sum(e.self_cpu_memory_usage for e in ev if e.self_cpu_memory_usage > 0)


def test_inputs_are_read_in_place():
    B, T, H, D = 2, 64, 4, 32
    x = torch.randn(B, T, 3 * H * D)  # a packed QKV buffer read through transposed views
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in x.split(H * D, dim=-1))
    m = torch.rand(T, T) > 0.3
    m[:, 0] = True
    out_bytes = B * H * T * D * 4
    for kw in (dict(), dict(is_causal=True), dict(attn_mask=m), dict(attn_mask=m[:1])):
        out, names, nbytes = allocations(lambda: at.scaled_dot_product_attention(q, k, v, **kw))
        assert names == {"aten::empty"} and nbytes == out_bytes, (kw, names, nbytes)
        compare(out, F.scaled_dot_product_attention(q, k, v, **kw), 2e-5)
    # with autograd: the output and the log-sum-exp [B, H, T], no copy of an input
    qg = q.detach().clone().requires_grad_()
    out, names, nbytes = allocations(lambda: at.scaled_dot_product_attention(qg, k, v))
    assert names <= {"aten::empty", "aten::detach", "detach"} and \
        nbytes == out_bytes + B * H * T * 4, (names, nbytes)
    # a last dim that is not contiguous is the one copy (as PyTorch's kernels do)
    kt = torch.randn(B, H, D, T).transpose(-1, -2)
    _, names, nbytes = allocations(lambda: at.scaled_dot_product_attention(q, kt, v))
    assert "aten::copy_" in names and nbytes == out_bytes + kt.numel() * 4


def test_threads_at_once_give_the_serial_results():
    import threading

    inputs = [tuple(rand(*s, grad=False) for s in ((2, 4, 40, 32), (2, 2, 50, 32), (2, 2, 50, 16)))
              for _ in range(8)]
    want = [at.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            for q, k, v in inputs]
    errors = []

    def work(i):
        try:
            q, k, v = inputs[i]
            for j in range(100):
                if j % 10 == 0 and i % 2:  # the autograd path too
                    qg = q.clone().requires_grad_()
                    got = at.scaled_dot_product_attention(qg, k, v, is_causal=True,
                                                          enable_gqa=True)
                    got.sum().backward()
                    got = got.detach()
                else:
                    got = at.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                          enable_gqa=True)
                if not torch.equal(got, want[i]):
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
    from conftest import long_call, ticks_during

    import attn

    def call(T, grad=False):
        q = torch.randn(1, 4, T, 64)
        qg = q.clone().requires_grad_(grad)
        return lambda: at.scaled_dot_product_attention(qg, q, q)

    threads = attn.get_num_threads()
    attn.set_num_threads(1)
    try:
        assert ticks_during(long_call(call)) > 100
        assert ticks_during(long_call(lambda T: call(T, grad=True))) > 100
    finally:
        attn.set_num_threads(threads)
