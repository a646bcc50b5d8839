#!/usr/bin/env bash
# The Python package (python/), twice:
# 1. pytest over python/tests against the package as built in
#    $ATTN_BUILD/python (the extension CMake built beside copies of the .py
#    files), with ATTN_TEST_STRICT=1: whatever a test needs (torch, the
#    model package, the CLI) must be there, nothing skips;
# 2. `pip wheel` of the source tree (scikit-build-core over the same CMake),
#    installed into a fresh virtual environment, checked from outside the
#    source tree: it imports from the environment, loads the libraries it
#    bundles (not the system's), and computes what the build tree does.
# A sanitized build has no extension (a Python without the sanitizer
# runtime cannot load one): this test then reports itself skipped (77).
set -euo pipefail
: "${ATTN_BUILD:?set ATTN_BUILD to the build directory}"
: "${ATTN_SRC:?set ATTN_SRC to the source directory}"
cache="$ATTN_BUILD/CMakeCache.txt"
if grep -q '^ATTN_SANITIZE:BOOL=ON' "$cache"; then
    echo "test_python: skipped: sanitized build (the extension is not built)"
    exit 77
fi
if ! grep -q '^ATTN_PYTHON:BOOL=ON' "$cache"; then
    echo "test_python: skipped: configured with -DATTN_PYTHON=OFF"
    exit 77
fi
py=$(sed -n 's/^ATTN_PYTHON_EXECUTABLE:INTERNAL=//p' "$cache")
[ -x "$py" ] || { echo "test_python: no ATTN_PYTHON_EXECUTABLE in $cache" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. the suite (pytest's exit status 5, "no tests ran", fails too)
cd "$tmp"
PYTHONPATH="$ATTN_BUILD/python" ATTN_TEST_STRICT=1 \
    "$py" -m pytest -q -p no:cacheprovider "$ATTN_SRC/python/tests"

# 2. the wheel, in a fresh environment (build directory kept in the build
# tree, so later runs rebuild only what changed)
"$py" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/wheel" \
    -C build-dir="$ATTN_BUILD/python-wheel/{wheel_tag}" "$ATTN_SRC" >"$tmp/wheel.log" 2>&1 ||
    { cat "$tmp/wheel.log" >&2; echo "test_python: pip wheel failed" >&2; exit 1; }
# --system-site-packages: numpy and torch come from the base Python
"$py" -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --no-deps --no-index "$tmp"/wheel/attn-*.whl
"$tmp/venv/bin/python" - "$tmp/venv" <<'PY'
import os, sys
import numpy as np
import attn, attn.torch, torch

venv = os.path.realpath(sys.argv[1])
pkg = os.path.dirname(os.path.realpath(attn.__file__))
assert pkg.startswith(venv), "attn imported from %s, not the environment" % pkg
maps = [l.split()[-1] for l in open("/proc/self/maps") if "/" in l]
for lib in ("libattn.so", "libdnnl.so", "libjansson.so", "libutf8proc.so"):
    where = {os.path.dirname(os.path.realpath(p)) for p in maps if os.path.basename(p).startswith(lib)}
    assert where == {pkg}, "%s loaded from %s, not the package" % (lib, where or "nowhere")
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((2, 4, 33, 64)).astype(np.float32) for _ in range(3))
out = attn.sdpa(q, k, v, causal=True)
t = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
o = attn.torch.scaled_dot_product_attention(*t, is_causal=True)
o.sum().backward()
assert np.array_equal(o.detach().numpy(), out)
ref = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(x) for x in (q, k, v)), is_causal=True)
assert (ref - o).abs().max().item() < 1e-5
e = attn.Model.open().encode(["The wheel works.", "Hello world"])
assert e.shape == (2, 384) and abs(float(np.linalg.norm(e[0])) - 1) < 1e-5
print("ok    wheel %s: attention, autograd and embeddings from %s" % (attn.__version__, pkg))
PY
