#!/usr/bin/env python3
"""PyTorch fixtures for the backward of the transformer pieces of src/nn
(tests/test_nn_backward.c).

Each case builds a small layer in PyTorch with fixed random weights, in the
weight layout of src/nn/block.h (PyTorch Linear [out, in]; the attention's
q | k | v weights stacked as one [E + 2KV, E] matrix; cross-attention's
Wq [E, E] and [Wk; Wv] [2KV, kdim] stored as w_q and w_kv, which block.h
keeps back to back in w_qkv), runs it forward and backward in float64
and again in float32 from the same (float32-rounded) values, and writes
tests/data/nn_bwd/<case>.safetensors holding
  in.<name>    F32 inputs, weights, the upstream gradient dy (I32 ids,
               targets, lengths)
  f64.<name>   F64 results: out (or loss), dx, denc, grad.<weight>
  t32.<name>   F32 results of the float32 run
and the case's options in the metadata. The C test compares its results
with f64 under the project's rule, PyTorch float32 as the plain fp32
implementation: max |attn - f64| <= 2 max |t32 - f64| + 1e-6.

Cases: gpt (pre-LN, causal, GELU-tanh), gpt_t1 (T = 1, H = 1), gqa (pre-LN,
grouped heads, exact GELU, E = 20), bert (post-LN, exact GELU, padded
batch), masked (post-LN, an additive float mask [T, T], one key/value head
for two query heads), dec (pre-LN decoder layer: causal self-attention, cross-attention to
encoder states of another length and width with padded encoder rows,
GELU-tanh), lm (token + position embedding, one GPT block, final LayerNorm,
tied LM head, mean cross-entropy with ignore_index = -100).

Run: python3 scripts/make_nn_bwd_fixtures.py  (needs torch, numpy, safetensors)
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "nn_bwd")
EPS = 1e-5


def ln(x, g, b):
    return F.layer_norm(x, (x.shape[-1],), g, b, EPS)


def attention(P, p, x, H, Hkv, causal, kv_len=None, enc=None, mask=None):
    """Multi-head attention of block.h: self (enc None) or cross."""
    B, T, E = x.shape
    Dh = E // H
    KV = Hkv * Dh
    b = P[p + "b_qkv"]
    if enc is None:
        qkv = x @ P[p + "w_qkv"].T + b
        q, k, v = qkv[..., :E], qkv[..., E:E + KV], qkv[..., E + KV:]
        S = T
    else:
        q = x @ P[p + "w_q"].T + b[:E]
        kv = enc @ P[p + "w_kv"].T + b[E:]
        k, v = kv[..., :KV], kv[..., KV:]
        S = enc.shape[1]
    q = q.reshape(B, T, H, Dh).transpose(1, 2)
    k = k.reshape(B, S, Hkv, Dh).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = v.reshape(B, S, Hkv, Dh).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    s = (q @ k.transpose(-1, -2)) * (1.0 / np.sqrt(Dh))
    allowed = torch.ones(B, 1, T, S, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(T, S, dtype=torch.bool).tril()
    if kv_len is not None:
        allowed &= (torch.arange(S)[None, :] < torch.tensor(kv_len)[:, None])[:, None, None, :]
    if mask is not None:  # additive float mask [T, S]
        s = s + mask
    s = s.masked_fill(~allowed, float("-inf"))
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, E)
    return o @ P[p + "w_out"].T + P[p + "b_out"]


def ffn(P, p, x, tanh):
    u = x @ P[p + "w1"].T + P[p + "b1"]
    a = F.gelu(u, approximate="tanh" if tanh else "none")
    return a @ P[p + "w2"].T + P[p + "b2"]


def layer(P, p, x, o, kv_len=None, mask=None):
    H, Hkv, causal, tanh = o["H"], o["Hkv"], o["causal"], o["tanh"]
    if o["pre_ln"]:
        h = ln(x, P[p + "ln1_g"], P[p + "ln1_b"])
        x = x + attention(P, p, h, H, Hkv, causal, kv_len, mask=mask)
        return x + ffn(P, p, ln(x, P[p + "ln2_g"], P[p + "ln2_b"]), tanh)
    x = ln(x + attention(P, p, x, H, Hkv, causal, kv_len, mask=mask), P[p + "ln1_g"],
           P[p + "ln1_b"])
    return ln(x + ffn(P, p, x, tanh), P[p + "ln2_g"], P[p + "ln2_b"])


def dec_layer(P, x, enc, enc_len, o):
    H, Hkv = o["H"], o["Hkv"]
    x = x + attention(P, "self.", ln(x, P["ln1_g"], P["ln1_b"]), H, Hkv, True)
    x = x + attention(P, "cross.", ln(x, P["lnc_g"], P["lnc_b"]), H, Hkv, False, enc_len, enc)
    return x + ffn(P, "", ln(x, P["ln2_g"], P["ln2_b"]), o["tanh"])


def attn_weights(rng, p, E, KV, I, kdim=None):
    w = {}
    if kdim is None:
        w[p + "w_qkv"] = rng.standard_normal((E + 2 * KV, E)) * 0.4
    else:
        w[p + "w_q"] = rng.standard_normal((E, E)) * 0.4
        w[p + "w_kv"] = rng.standard_normal((2 * KV, kdim)) * 0.4
    w[p + "b_qkv"] = rng.uniform(-0.5, 0.5, E + 2 * KV)
    w[p + "w_out"] = rng.standard_normal((E, E)) * 0.3
    w[p + "b_out"] = rng.uniform(-0.5, 0.5, E)
    return w


def ffn_weights(rng, p, E, I):
    return {p + "w1": rng.standard_normal((I, E)) * 0.4, p + "b1": rng.uniform(-0.5, 0.5, I),
            p + "w2": rng.standard_normal((E, I)) * 0.3, p + "b2": rng.uniform(-0.5, 0.5, E)}


def ln_weights(rng, names, E):
    w = {}
    for n in names:
        w[n + "_g"] = 1.0 + 0.2 * rng.standard_normal(E)
        w[n + "_b"] = 0.2 * rng.standard_normal(E)
    return w


def run(weights, inputs, fn, dtype):
    """fn(P, X) -> (result, scalar loss). Returns numpy results and grads."""
    P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in weights.items()}
    X = {k: (torch.tensor(v, dtype=dtype, requires_grad=True) if v.dtype == np.float32
             else torch.tensor(v)) for k, v in inputs.items()}
    res, loss = fn(P, X)
    loss.backward()
    out = {k: v.detach().numpy() for k, v in res.items()}
    for k, t in X.items():
        if t.dtype.is_floating_point and t.grad is not None and k != "dy":
            out["d" + k] = t.grad.numpy()
    for k, t in P.items():
        out["grad." + k] = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
    return out


def save(name, weights, inputs, fn, meta):
    w32 = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    r64 = run(w32, inputs, fn, torch.float64)
    r32 = run(w32, inputs, fn, torch.float32)
    t = {"in." + k: np.ascontiguousarray(v) for k, v in {**w32, **inputs}.items()}
    for k in r64:
        t["f64." + k] = np.ascontiguousarray(r64[k], dtype=np.float64)
        t["t32." + k] = np.ascontiguousarray(r32[k], dtype=np.float32)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".safetensors")
    save_file(t, path, metadata={k: str(v) for k, v in meta.items()})
    err = max(float(np.max(np.abs(r32[k] - r64[k]))) for k in r64)
    print(f"{name}: {os.path.getsize(path)} bytes, torch fp32 max err {err:.2e}")


def block_case(name, B, T, E, H, Hkv, I, pre_ln, causal, tanh, lens=None, mask=False, seed=0):
    rng = np.random.default_rng(seed)
    KV = E // H * Hkv
    w = {**attn_weights(rng, "", E, KV, I), **ffn_weights(rng, "", E, I),
         **ln_weights(rng, ["ln1", "ln2"], E)}
    real = np.ones((B, T, 1), dtype=np.float32)
    if lens is not None:
        for b, n in enumerate(lens):
            real[b, n:] = 0
    inputs = {"x": rng.standard_normal((B, T, E)).astype(np.float32),
              "dy": (rng.standard_normal((B, T, E)) * real).astype(np.float32)}
    if lens is not None:
        inputs["len"] = np.array(lens, dtype=np.int32)
    if mask:  # an additive float mask [T, T], as attn_sdpa_args.mask
        inputs["mask"] = (rng.standard_normal((T, T)) * 2).astype(np.float32)
    o = dict(H=H, Hkv=Hkv, causal=causal, tanh=tanh, pre_ln=pre_ln)

    def fn(P, X):
        m = X["mask"].detach() if mask else None
        y = layer(P, "", X["x"], o, lens, m)
        y = y * torch.tensor(real, dtype=y.dtype)  # padded rows: not compared
        return {"out": y}, (y * X["dy"]).sum()

    save(name, w, inputs, fn, dict(kind="layer", H=H, Hkv=Hkv, causal=int(causal),
                                   tanh=int(tanh), pre_ln=int(pre_ln), I=I))


def dec_case(name, B, T, S, E, kdim, H, Hkv, I, enc_len, seed=0):
    rng = np.random.default_rng(seed)
    KV = E // H * Hkv
    w = {**attn_weights(rng, "self.", E, KV, I), **attn_weights(rng, "cross.", E, KV, I, kdim),
         **ffn_weights(rng, "", E, I), **ln_weights(rng, ["ln1", "lnc", "ln2"], E)}
    inputs = {"x": rng.standard_normal((B, T, E)).astype(np.float32),
              "enc": rng.standard_normal((B, S, kdim)).astype(np.float32),
              "dy": rng.standard_normal((B, T, E)).astype(np.float32),
              "enc_len": np.array(enc_len, dtype=np.int32)}
    o = dict(H=H, Hkv=Hkv, tanh=True)

    def fn(P, X):
        y = dec_layer(P, X["x"], X["enc"], enc_len, o)
        return {"out": y}, (y * X["dy"]).sum()

    save(name, w, inputs, fn, dict(kind="dec", H=H, Hkv=Hkv, tanh=1, I=I, kdim=kdim))


def lm_case(name, B, T, E, H, I, V, P_len, seed=0):
    rng = np.random.default_rng(seed)
    w = {"tok": rng.standard_normal((V, E)) * 0.5, "pos": rng.standard_normal((P_len, E)) * 0.3,
         **attn_weights(rng, "l0.", E, E, I), **ffn_weights(rng, "l0.", E, I),
         **ln_weights(rng, ["l0.ln1", "l0.ln2", "lnf"], E)}
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    targets[0, 0] = targets[1, 3] = targets[1, T - 1] = -100
    inputs = {"ids": ids, "targets": targets}
    o = dict(H=H, Hkv=H, causal=True, tanh=True, pre_ln=True)

    def fn(P, X):
        x = P["tok"][X["ids"].long()] + P["pos"][:T][None]
        x = layer(P, "l0.", x, o)
        h = ln(x, P["lnf_g"], P["lnf_b"])
        logits = h @ P["tok"].T
        loss = F.cross_entropy(logits.reshape(-1, V), X["targets"].long().reshape(-1),
                               ignore_index=-100)
        return {"loss": loss.reshape(1)}, loss

    save(name, w, inputs, fn, dict(kind="lm", H=H, I=I, V=V, ignore_index=-100))


def main():
    torch.use_deterministic_algorithms(True)
    block_case("gpt", B=2, T=7, E=12, H=3, Hkv=3, I=24, pre_ln=True, causal=True, tanh=True,
               seed=1)
    block_case("gpt_t1", B=3, T=1, E=10, H=1, Hkv=1, I=20, pre_ln=True, causal=True, tanh=True,
               seed=2)
    block_case("gqa", B=2, T=7, E=20, H=4, Hkv=2, I=24, pre_ln=True, causal=True, tanh=False,
               seed=3)
    block_case("bert", B=2, T=7, E=12, H=2, Hkv=2, I=24, pre_ln=False, causal=False, tanh=False,
               lens=[7, 4], seed=4)
    block_case("masked", B=2, T=5, E=12, H=2, Hkv=1, I=16, pre_ln=False, causal=False,
               tanh=True, mask=True, seed=7)
    dec_case("dec", B=2, T=6, S=5, E=12, kdim=8, H=3, Hkv=3, I=24, enc_len=[5, 3], seed=5)
    lm_case("lm", B=2, T=7, E=12, H=3, I=24, V=11, P_len=9, seed=6)


if __name__ == "__main__":
    main()
