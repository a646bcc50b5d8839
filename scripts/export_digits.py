#!/usr/bin/env python3
"""Export scikit-learn's bundled handwritten digits (load_digits: 1,797 8x8
images, pixels 0..16, 10 classes; nothing downloaded) into
tools/attn/digits.bin, which `attn train --task digits` has built in:
1,797 records of 65 bytes, the label (0..9) then the 64 pixels row by row.
Run from the repository root."""
import numpy as np
from sklearn.datasets import load_digits

d = load_digits()
rec = np.concatenate([d.target.astype(np.uint8)[:, None], d.images.reshape(-1, 64).astype(np.uint8)], 1)
assert rec.shape == (1797, 65) and rec[:, 1:].max() == 16
rec.tofile("tools/attn/digits.bin")
