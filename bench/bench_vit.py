#!/usr/bin/env python3
"""ViT-Base image classification speed, attn vs transformers, side by side.

A ViTForImageClassification of ViT-Base shape (224 x 224, patch 16, 12
layers, width 768, 12 heads, MLP 3072, 1000 labels) with random weights is
built locally (nothing downloaded) and saved once as F32 into --dir. Both
sides then classify the same batch of 8 JPEG photographs (scikit-learn's
china.jpg and flower.jpg, 640 x 427, four copies each as separate files),
timed from the file bytes to the logits: decoding, ViTImageProcessor
preprocessing (bilinear resize to 224, rescale, normalise) and the forward.
  attn          `attn classify --bench R --threads T` (its median)
  transformers  PIL decode + ViTImageProcessorPil + model(pixel_values) under
                torch.inference_mode, torch.set_num_threads(T)
For each thread count the two alternate, --rounds rounds of 3 runs each, and
the median images/s of each side is reported with their ratio, in wall time
and per CPU second (the process's CPU time over all its threads: the figure
that holds when other work shares the cores).

  python3 bench/bench_vit.py --attn build/attn [--threads 1,2] [--rounds 5]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import time

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil


def make_model(d):
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return
    torch.manual_seed(0)
    cfg = ViTConfig(num_labels=1000, id2label={i: f"class {i}" for i in range(1000)},
                    label2id={f"class {i}": i for i in range(1000)})
    model = ViTForImageClassification(cfg).eval()
    model.save_pretrained(d)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(d)


def make_images(d):
    os.makedirs(d, exist_ok=True)
    files = []
    names = ["china.jpg", "flower.jpg"]
    for i in range(8):
        p = os.path.join(d, f"img{i}.jpg")
        if not os.path.exists(p):
            shutil.copy(os.path.join(os.path.dirname(load_sample_images.__code__.co_filename),
                                     "images", names[i % 2]), p)
        files.append(p)
    return files


def torch_run(model, proc, files):
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        ims = [Image.open(f).convert("RGB") for f in files]
        px = torch.from_numpy(proc(ims, return_tensors="np")["pixel_values"])
        logits = model(px).logits
    return (time.perf_counter() - t0, time.process_time() - c0), logits


def attn_run(attn, d, files, threads, reps):
    r = subprocess.run([attn, "classify", "--model", d, "--threads", str(threads), "--bench",
                        str(reps), "--top-k", "1"] + files, capture_output=True, text=True,
                       check=True)
    m = re.search(r"median ([0-9.]+) s .* CPU time ([0-9.]+) s", r.stderr)
    return (float(m.group(1)), float(m.group(2))), r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attn", default="build/attn")
    ap.add_argument("--dir", default="/tmp/attn-vit-base")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    make_model(a.dir)
    files = make_images(os.path.join(a.dir, "images"))
    model = ViTForImageClassification.from_pretrained(a.dir).eval()
    proc = ViTImageProcessorPil.from_pretrained(a.dir)
    print(f"torch {torch.__version__}, attention implementation "
          f"{model.config._attn_implementation}; batch {len(files)} JPEGs of 640 x 427")
    # the two agree on the labels
    _, lt = torch_run(model, proc, files)
    _, out = attn_run(a.attn, a.dir, files, 2, 1)
    ours = [line.split("\t")[1] for line in out.splitlines()]
    theirs = [f"class {int(i)}" for i in lt.argmax(1)]
    print("same top-1 labels:", ours == theirs)
    for t in [int(x) for x in a.threads.split(",")]:
        torch.set_num_threads(t)
        torch_run(model, proc, files)  # warm-up
        ta, tt = [], []
        for _ in range(a.rounds):
            ta.append(attn_run(a.attn, a.dir, files, t, 3)[0])
            runs = [torch_run(model, proc, files)[0] for _ in range(3)]
            tt.append((statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
        n = len(files)
        for k, what in ((0, "images/s (wall)"), (1, "images per CPU second")):
            ia = n / statistics.median(x[k] for x in ta)
            it = n / statistics.median(x[k] for x in tt)
            print(f"threads {t}: {what}: attn {ia:.2f}, transformers {it:.2f}, "
                  f"ratio {ia / it:.2f}x  (medians of {a.rounds} rounds of 3)")


if __name__ == "__main__":
    main()
