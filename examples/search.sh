#!/usr/bin/env bash
# Embed a file of texts (one per line) and search it.
#   examples/search.sh FILE "query" [K]
# Uses `attn` from PATH (or $ATTN) and the default model (all-MiniLM-L6-v2,
# `make setup`), or the model directory in $ATTN_MODEL_DIR.
set -euo pipefail
attn=${ATTN:-attn}
file=${1:?usage: search.sh FILE QUERY [K]}
query=${2:?usage: search.sh FILE QUERY [K]}
k=${3:-5}
out=${OUT_DIR:-.}

# 1. every line's embedding as one float32 [N, dim] matrix (numpy.load reads it),
#    and as JSON lines with each row's line number
"$attn" embed --input "$file" --format npy --output "$out/embeddings.npy"
"$attn" embed --input "$file" --id line --output "$out/embeddings.jsonl"
echo "wrote $out/embeddings.npy and $out/embeddings.jsonl ($(wc -l < "$file") lines)"

# 2. the K lines closest to the query, as a table and as JSON
"$attn" similarity --input "$file" --query "$query" --top-k "$k"
"$attn" similarity --input "$file" --query "$query" --top-k "$k" --json > "$out/results.json"
echo "wrote $out/results.json"
