#!/usr/bin/env python3
"""Parity fixtures of the GPT-2 decoder (tests/test_gpt2.c, tests/test_generate.sh).

Builds everything locally (nothing is downloaded):
  - a byte-level BPE tokenizer trained by `tokenizers` on the text below
    (GPT-2's pre-tokenizer and byte mapping, 512 ids, <|endoftext|> last);
  - a GPT2LMHeadModel from a small random config (seed fixed), saved by
    save_pretrained twice:
      tests/data/gpt2-tiny/      F32, tensor names without a prefix (as GPT2Model saves them)
      tests/data/gpt2-tiny-f16/  F16, names with the "transformer." prefix (as
                                 GPT2LMHeadModel saves them)
    each with the tokenizer (tokenizer.json) and expected.safetensors:
      ids_<i>    I32 [T_i]           prompt i
      logits_<i> F32 [T_i, V]        transformers' logits of prompt i (full forward)
      gen_<i>    I32 [64]            greedy generate() of 64 new tokens after prompt i
                                     (do_sample=False, use_cache=True)
      margin     F32 [1]             smallest top-1 minus top-2 logit over the greedy
                                     steps (how far from a tie the greedy fixture is)
    and, for the command-line test, generate.tsv: one line per prompt,
      <prompt text> TAB <prompt ids> TAB <greedy ids>   (ids space-separated)
    and gen_<i>.txt, the greedy tokens decoded by the tokenizer (raw bytes).
    The F16 directory's expectations come from the model with its weights rounded
    to F16 and run in F32, which is what attn computes after loading them.
  - a LlamaForCausalLM from a small random config (grouped-query attention, 4
    query heads on 2 key/value heads; RoPE with llama3 frequency scaling whose
    original context, 32, is shorter than the prompts + generation; untied
    head), F32, in tests/data/llama-tiny/ with the same tokenizer and the same
    expected.safetensors / generate.tsv / gen_<i>.txt.

Run from the repository root:  python3 scripts/make_gpt_fixtures.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data")
VOCAB = 512
NEW = 64

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it? We'll see.",
    "Attention is all you need: queries, keys and values; softmax of the scores.",
    "Numbers 0 1 2 3 42 1234 3.14159 and dates 2024-01-31 appear in text too.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe \u4f60\u597d\u4e16\u754c \U0001F600 emoji.",
    "   leading spaces, tabs\tand\nnewlines\n\n matter to a byte-level tokenizer.",
    "A language model predicts the next token from the previous ones, one at a time.",
    "The cat sat on the mat. The dog sat on the log. The fox sat on the box.",
]


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 1, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20 + zen(), trainer=trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def zen():
    """The Zen of Python (the `this` module, decoded without printing it)."""
    import codecs
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13").splitlines()


PROMPTS = [
    "The",
    "The quick brown fox",
    "Attention is all you need: queries, keys",
    " A language model predicts the next token from the previous ones, one at a time. The cat sat on the mat",
]


def expectations(model, tok):
    out = {}
    worst = float("inf")
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            ids = tok.encode(p).ids
            x = torch.tensor([ids])
            out[f"ids_{i}"] = torch.tensor(ids, dtype=torch.int32)
            out[f"logits_{i}"] = model(x).logits[0].float().contiguous()
            g = model.generate(x, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                               use_cache=True, pad_token_id=VOCAB - 1, eos_token_id=None,
                               output_scores=True, return_dict_in_generate=True)
            out[f"gen_{i}"] = g.sequences[0, len(ids):].to(torch.int32).contiguous()
            for s in g.scores:
                top = torch.topk(s[0], 2).values
                worst = min(worst, float(top[0] - top[1]))
    out["margin"] = torch.tensor([worst], dtype=torch.float32)
    return out, worst


def write_cli_expectations(path, exp, tok):
    with open(os.path.join(path, "generate.tsv"), "w", encoding="utf-8") as f:
        for i, p in enumerate(PROMPTS):
            ids = " ".join(str(int(x)) for x in exp[f"ids_{i}"])
            gen = exp[f"gen_{i}"].tolist()
            f.write(f"{p}\t{ids}\t{' '.join(str(x) for x in gen)}\n")
            with open(os.path.join(path, f"gen_{i}.txt"), "wb") as g:
                g.write(tok.decode(gen).encode("utf-8"))


def write_llama(path, tok):
    torch.manual_seed(4321)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.1,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                      tie_word_embeddings=False, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    if os.path.isdir(path):
        shutil.rmtree(path)
    model.save_pretrained(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    exp, margin = expectations(model, tok)
    save_file(exp, os.path.join(path, "expected.safetensors"))
    write_cli_expectations(path, exp, tok)
    back = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        got = back(exp["ids_3"].long()[None]).logits[0]
    assert torch.allclose(got, exp["logits_3"], atol=1e-6), path
    return margin


def write_dir(path, model, tok, prefix, dtype):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    model.config.save_pretrained(path)
    sd = {k: v for k, v in model.state_dict().items()
          if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias") and k != "lm_head.weight"}
    tensors = {}
    for k, v in sd.items():
        name = k if prefix else k[len("transformer."):]
        tensors[name] = v.to(dtype).contiguous()
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(path, "tokenizer.json"))


def main():
    torch.manual_seed(1234)
    tok = make_tokenizer()
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5,
                     initializer_range=0.15, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    # LayerNorm gains and biases away from 1 and 0, so the test sees them used
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "ln_" in n or n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))

    d32 = os.path.join(OUT, "gpt2-tiny")
    write_dir(d32, model, tok, prefix=False, dtype=torch.float32)
    exp, m32 = expectations(model, tok)
    save_file(exp, os.path.join(d32, "expected.safetensors"))
    write_cli_expectations(d32, exp, tok)

    # the F16 variant: the same model with weights rounded to F16, run in F32
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    d16 = os.path.join(OUT, "gpt2-tiny-f16")
    write_dir(d16, model, tok, prefix=True, dtype=torch.float16)
    exp16, m16 = expectations(model, tok)
    save_file(exp16, os.path.join(d16, "expected.safetensors"))

    # the saved directories load back in transformers with the same logits
    for d, e in ((d32, exp), (d16, exp16)):
        back = GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            got = back(e["ids_3"].long()[None]).logits[0]
        assert torch.allclose(got, e["logits_3"], atol=1e-6), d
    dl = os.path.join(OUT, "llama-tiny")
    ml = write_llama(dl, tok)
    print(f"greedy margins: f32 {m32:.3g}, f16 {m16:.3g}, llama {ml:.3g}")
    for d in (d32, d16, dl):
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{os.path.relpath(d, ROOT)}: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
