#!/usr/bin/env bash
# examples/torch_roundtrip.py: PyTorch -> safetensors -> attn sdpa -> PyTorch
# against F.scaled_dot_product_attention. Skipped (exit 77) when torch or
# safetensors is not installed, as in CI.
set -u
: "${ATTN:?}" "${ATTN_SRC:?}"
python3 "$ATTN_SRC/examples/torch_roundtrip.py" "$ATTN"
