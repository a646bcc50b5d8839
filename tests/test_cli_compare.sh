#!/usr/bin/env bash
# attn compare: a small sweep of every method gives one JSON object per
# (method, length) with the fields filled (exact's error 0, the methods'
# errors finite, top-k with k >= N exact, coverage in [0, 1] where it
# applies), the table prints every method, --plot writes an SVG with a line
# per method, and bad usage exits 2 naming the option with nothing written.
# Needs ATTN.
set -u
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_compare.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

"$ATTN" compare --T 64,160 --H 2 --D 16 --reps 1 --threads 1 --block 16 --json \
    --plot "$W/c.svg" >"$W/out.json" 2>"$W/err" || fail "compare --json exit $? ($(cat "$W/err"))"
python3 - "$W/out.json" <<'PY' || fail "JSON content"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = {"exact", "window", "bigbird", "linear", "performer-64", "performer-128",
         "performer-256", "nystrom-32", "nystrom-64", "nystrom-128", "topk-32", "topk-64"}
assert {r["method"] for r in rows} == names, sorted({r["method"] for r in rows})
assert len(rows) == 2 * len(names), len(rows)
for r in rows:
    assert r["time_s"] > 0 and r["flops"] > 0 and r["peak_mem_mb"] is not None, r
    assert math.isfinite(r["rel_fro_err"]) and math.isfinite(r["max_abs_err"]), r
    if r["method"] == "exact":
        assert r["rel_fro_err"] == 0 and r["speedup_vs_exact"] == 1, r
    if r["method"].startswith(("window", "bigbird", "topk")):
        assert 0 <= r["mass_covered"] <= 1.0 + 1e-5, r
    else:
        assert r["mass_covered"] is None, r
    # top-k with k >= N keeps every key: exact attention
    if r["method"] == "topk-64" and r["N"] == 64:
        assert r["rel_fro_err"] < 1e-5 and r["mass_covered"] > 1 - 1e-5, r
    if r["method"] != "exact" and r["N"] == 160 and not r["method"].startswith("topk"):
        assert r["rel_fro_err"] > 1e-3, r  # an approximation, not exact
PY
grep -q "<svg" "$W/c.svg" && [ "$(grep -c "<polyline" "$W/c.svg")" -ge 20 ] || fail "svg"

# --causal: Nystrom and top-k (non-causal methods) give no row; the others do
"$ATTN" compare --causal --T 96 --H 2 --D 8 --reps 1 --threads 1 --block 16 --json >"$W/c.json" 2>"$W/err" ||
    fail "compare --causal exit $? ($(cat "$W/err"))"
python3 - "$W/c.json" <<'PY' || fail "--causal JSON"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert {r["method"] for r in rows} == {"exact", "window", "bigbird", "linear", "performer-64",
                                         "performer-128", "performer-256"}, rows
for r in rows:
    assert r["causal"] == 1 and math.isfinite(r["rel_fro_err"]), r
PY

"$ATTN" compare --T 64 --H 1 --D 8 --reps 1 --methods exact,linear,topk-32 >"$W/table" 2>&1 ||
    fail "table exit $?"
for m in exact linear topk-32; do grep -q "^$m " "$W/table" || fail "table lacks $m"; done

bad() { # expected-exit needle args...
    local want=$1 needle=$2
    shift 2
    "$ATTN" compare "$@" >"$W/o" 2>"$W/e"
    local rc=$?
    [ $rc -eq "$want" ] || fail "compare $* exit $rc, want $want"
    grep -q -- "$needle" "$W/e" || fail "compare $*: message lacks '$needle': $(cat "$W/e")"
}
bad 2 "--T" --T 0
bad 2 "--T" --T 64,32
bad 2 "--T" --T abc
bad 2 "--methods" --methods exact,bogus
bad 2 "--H" --H 0
bad 2 "--reps" --reps 0
bad 2 "--inputs" --inputs bogus
bad 2 "--plot" --T 8 --plot ""
bad 2 "attn: error: compare: --threads must be an integer in \[0, 4096\], got '-1'" --threads -1
bad 2 "attn: error: compare: unknown option '--bogus' (see attn compare --help)" --bogus=1
bad 2 "attn: error: compare: --seed must be an integer >= 0" --seed -1
"$ATTN" compare --help >"$W/help" 2>&1 && grep -q -- "--inputs" "$W/help" || fail "compare --help"
rm -f "$W/never.svg"
bad 2 "--methods" --T 8 --methods nope --plot "$W/never.svg"
[ ! -e "$W/never.svg" ] || fail "a plot was written on bad usage"

[ $fails -eq 0 ] || exit 1
echo "test_cli_compare: all passed"
