#!/usr/bin/env python3
"""Decode speed of a GPT-2-small-shaped model: attn generate vs transformers'
generate (KV cache), side by side in one run, against the memory-bandwidth
bound measured in the same run.

The model (12 layers, n_embd 768, 12 heads, vocab 50257, n_positions 1024,
random weights, seed fixed) is built locally by transformers and saved with
save_pretrained (nothing downloaded). For each thread count:
  - streaming read bandwidth: torch.sum over a 1 GiB float32 array on that
    many threads (median of --reps);
  - transformers: prefill of the prompt, then greedy generate() of --new
    tokens with use_cache=True; decode tokens/s = (new - 1) / (generate time
    - prefill time), median of --reps;
  - attn: `attn generate --prompt-ids ... --temperature 0 --ignore-eos --ids`,
    whose stderr reports prompt and decode speed (decode: new - 1 steps),
    median of --reps; with fp32 weights and, in the same run, with
    `--weights bf16` (the weight matrices stored as bfloat16);
  - the bound: bytes read per decoded token (every weight once: the layers,
    the final LayerNorm and the tied head = wte; plus the K/V rows of the
    context, at the mean context of the decode) / the bandwidth; for bf16
    weights the matrices count 2 bytes each, biases and norms 4.

Usage: python3 bench/bench_generate.py [--attn build/attn] [--threads 1 2]
       [--prompt 32] [--new 64] [--reps 5] [--dir /tmp/attn-gpt2-small]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def make_model(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)


def bandwidth(threads, reps):
    torch.set_num_threads(threads)
    x = torch.ones(1 << 28, dtype=torch.float32)  # 1 GiB
    x.sum()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum()
        ts.append(time.perf_counter() - t0)
    return x.numel() * 4 / statistics.median(ts)


def hf_decode(model, prompt, new, threads, reps):
    torch.set_num_threads(threads)
    ids = torch.tensor([prompt])
    pre, gen = [], []
    with torch.no_grad():
        model(ids)  # warm-up
        model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        for _ in range(reps):
            t0 = time.perf_counter()
            model(ids, use_cache=True)
            pre.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                           use_cache=True, pad_token_id=0)
            gen.append(time.perf_counter() - t0)
    p, g = statistics.median(pre), statistics.median(gen)
    return len(prompt) / p, (new - 1) / (g - p)


LINE = re.compile(r"prompt: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\); "
                  r"generated: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\)")


def attn_decode(attn, path, prompt, new, threads, reps, weights="f32"):
    cmd = [attn, "generate", "--model", path, "--prompt-ids", ",".join(map(str, prompt)),
           "--temperature", "0", "--ignore-eos", "--ids", "--max-new-tokens", str(new),
           "--threads", str(threads), "--weights", weights]
    pp, dd = [], []
    for r in range(reps + 1):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        m = LINE.search(out.stderr)
        if not m:
            sys.exit("attn generate: no speed line in: " + out.stderr)
        if r:  # the first run warms the page cache
            pp.append(float(m.group(3)))
            dd.append(float(m.group(6)))
    return statistics.median(pp), statistics.median(dd)


def bytes_per_token(cfg, ctx_len, wbytes=4):
    """wbytes: bytes of a weight-matrix element (4 fp32, 2 bf16); biases
    and norms are fp32 either way."""
    E, L, V, I = cfg.n_embd, cfg.n_layer, cfg.vocab_size, 4 * cfg.n_embd
    mats = 3 * E * E + E * E + I * E + E * I
    small = 2 * E + 3 * E + E + 2 * E + I + E
    weights = (L * mats + V * E) * wbytes + (L * small + 2 * E) * 4  # layers, ln_f, head (= wte)
    kv = 2 * L * ctx_len * E * 4
    return weights, kv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attn", default="build/attn")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/attn-gpt2-small")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    make_model(a.dir)
    model = GPT2LMHeadModel.from_pretrained(a.dir, torch_dtype=torch.float32).eval()
    cfg = model.config
    prompt = [(i * 7919) % cfg.vocab_size for i in range(a.prompt)]
    w, kv = bytes_per_token(cfg, a.prompt + a.new // 2)
    wb, _ = bytes_per_token(cfg, a.prompt + a.new // 2, wbytes=2)
    rows = []
    print(f"GPT-2-small shape (12 x 768, 12 heads, V 50257), prompt {a.prompt}, {a.new} new tokens; "
          f"bytes read per decoded token: weights {w / 1e6:.1f} MB fp32, {wb / 1e6:.1f} MB bf16, "
          f"+ KV {kv / 1e6:.2f} MB")
    print(f"{'threads':>7} {'GB/s':>6} | {'bound':>5} {'attn f32':>8} {'%bnd':>4} | {'bound':>5} "
          f"{'attn bf16':>9} {'%bnd':>4} | {'HF f32':>6} {'f32/HF':>6} {'bf16/HF':>7} | "
          f"{'prompt tok/s f32 / bf16 / HF':>28} {'bf16/HF':>7}")
    for t in a.threads:
        bw = bandwidth(t, a.reps)
        bound, bound_b = bw / (w + kv), bw / (wb + kv)
        hp, hd = hf_decode(model, prompt, a.new, t, a.reps)
        ap_, ad = attn_decode(a.attn, a.dir, prompt, a.new, t, a.reps)
        bp, bd = attn_decode(a.attn, a.dir, prompt, a.new, t, a.reps, "bf16")
        row = dict(threads=t, bandwidth_gbs=bw / 1e9, bound_tps=bound, bound_bf16_tps=bound_b,
                   attn_decode_tps=ad, attn_bf16_decode_tps=bd, hf_decode_tps=hd,
                   attn_prompt_tps=ap_, attn_bf16_prompt_tps=bp, hf_prompt_tps=hp)
        rows.append(row)
        print(f"{t:>7} {bw / 1e9:>6.1f} | {bound:>5.1f} {ad:>8.1f} {100 * ad / bound:>3.0f}% | "
              f"{bound_b:>5.1f} {bd:>9.1f} {100 * bd / bound_b:>3.0f}% | {hd:>6.1f} {ad / hd:>5.2f}x "
              f"{bd / hd:>6.2f}x | {ap_:>10.0f} / {bp:>5.0f} / {hp:>5.0f}      {bp / hp:>6.2f}x",
              flush=True)
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
