#!/usr/bin/env python3
"""Byte-level BPE encode throughput, attn against Hugging Face `tokenizers`
(the Rust library behind the fast tokenizers), side by side in one run on
one text file, one thread each.

The tokenizers are trained here with `tokenizers` on the text itself
(nothing is downloaded): GPT-2 style (ByteLevel pre-tokenizer, GPT-2's
regex) and Llama-3 style (Split with Llama 3's regex, then ByteLevel,
ignore_merges), --vocab ids each. Each side encodes the file --reps times
after a warm-up, as one string ("whole") and line by line ("lines": HF's
encode_batch on one thread, attn a loop of attn_bpe_encode); the table gives the median MB/s by
process CPU time (the steadier figure on a shared machine) and by wall
clock. The ids of both sides are compared (count and checksum).

  python3 bench/bench_bpe.py [--build build] [--file F] [--reps 5] [--vocab 32000]
Default text: the repository's *.md files and /usr/share/common-licenses,
repeated to at least 4 MB. Needs `tokenizers` (PyPI) and a built libattn.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def default_text(path):
    parts = []
    for f in sorted(glob.glob(os.path.join(ROOT, "**", "*.md"), recursive=True)) + \
            sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            with open(f, encoding="utf-8") as fh:
                parts.append(fh.read())
        except (UnicodeDecodeError, IsADirectoryError):
            pass
    text = "\n".join(parts)
    out = text
    while len(out.encode()) < 4 << 20:
        out += "\n" + text
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(out)


def train(kind, text_file, vocab, out_dir):
    tok = Tokenizer(models.BPE())
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train([text_file], tr)
    if kind == "llama3":
        j = json.loads(tok.to_str())
        j["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(j))
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return tok


def checksum(ids):
    P = (1 << 61) - 1
    return sum(i * (k + 1) % P for k, i in enumerate(ids)) % P


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--file")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="attn_bench_bpe_")
    text_file = a.file or os.path.join(tmp, "text.txt")
    if not a.file:
        default_text(text_file)
    with open(text_file, encoding="utf-8") as fh:
        text = fh.read()
    nbytes = len(text.encode())
    exe = os.path.join(tmp, "bench_bpe")
    lib = os.path.abspath(a.build)
    subprocess.run(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-I",
                    os.path.join(ROOT, "include"), os.path.join(ROOT, "bench", "bench_bpe.c"),
                    "-o", exe, "-L", lib, "-lattn", "-Wl,-rpath," + lib], check=True)
    print(f"text: {text_file}, {nbytes / 1e6:.2f} MB; {a.reps} runs after a warm-up; 1 thread")
    print(f"{'tokenizer':13} {'side':5} {'ids':>9} {'MB/s cpu':>9} {'MB/s wall':>9}")
    for kind in ("gpt2", "llama3"):
        d = os.path.join(tmp, kind)
        tok = train(kind, text_file, a.vocab, d)
        lines = text.split("\n")
        for mode in ("whole", "lines"):
            def hf():
                if mode == "whole":
                    return tok.encode(text, add_special_tokens=False).ids
                out = []
                for e in tok.encode_batch(lines, add_special_tokens=False):
                    out.extend(e.ids)
                return out
            hf_ids = hf()  # warm-up
            cpu, wall = [], []
            for _ in range(a.reps):
                w0, c0 = time.perf_counter(), time.process_time()
                hf()
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            args = [exe, d, text_file, str(a.reps)] + (["lines"] if mode == "lines" else [])
            r = json.loads(subprocess.run(args, check=True, capture_output=True,
                                          text=True).stdout)
            same = r["ids"] == len(hf_ids) and r["checksum"] == checksum(hf_ids)
            mb = nbytes / 1e6
            name = f"{kind}/{mode}"
            print(f"{name:13} {'HF':5} {len(hf_ids):9d} {mb / statistics.median(cpu):9.2f} "
                  f"{mb / statistics.median(wall):9.2f}")
            print(f"{name:13} {'attn':5} {r['ids']:9d} "
                  f"{mb / statistics.median(x[1] for x in r['runs']):9.2f} "
                  f"{mb / statistics.median(x[0] for x in r['runs']):9.2f}"
                  f"   ids {'identical' if same else 'DIFFER'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
