#!/usr/bin/env bash
# attn compare: a small sweep of every method gives one JSON object per
# (method, length) with the fields filled (exact's error 0, the methods'
# errors finite, top-k with k >= N exact, coverage in [0, 1] where it
# applies), the table prints every method, --plot writes an SVG with a line
# per method or a PNG that decodes with its lines drawn, and bad usage
# (a --plot name not ending in .svg or .png too) exits 2 naming the option
# with nothing written.
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

# --plot FILE.png: the same chart rasterised; it must decode (PNG signature,
# IHDR, CRCs, zlib stream, scanline filters: a decoder in Python's standard
# library) to 1000 x 460 RGB with ink in several colours on the white
"$ATTN" compare --T 64,160 --H 1 --D 16 --reps 1 --threads 1 --block 16 \
    --methods exact,linear,performer-64,topk-32 --plot "$W/c.PNG" >/dev/null 2>"$W/err" ||
    fail "compare --plot png exit $? ($(cat "$W/err"))"
python3 - "$W/c.PNG" <<'PY' || fail "png content"
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
pos, chunks = 8, []
while pos < len(b):
    n, = struct.unpack(">I", b[pos:pos + 4]); t = b[pos + 4:pos + 8]; d = b[pos + 8:pos + 8 + n]
    crc, = struct.unpack(">I", b[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(t + d) & 0xffffffff == crc, t
    chunks.append((t, d)); pos += 12 + n
assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
w, h, depth, ctype = struct.unpack(">IIBB", chunks[0][1][:10])
assert (w, h, depth, ctype) == (1000, 460, 8, 2), (w, h, depth, ctype)
raw = zlib.decompress(b"".join(d for t, d in chunks if t == b"IDAT"))
stride, prev, px = w * 3, bytearray(w * 3), []
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - 3] if i >= 3 else 0; up = prev[i]; c = prev[i - 3] if i >= 3 else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + up) & 255
        elif f == 3: line[i] = (line[i] + (a + up) // 2) & 255
        elif f == 4:
            p = a + up - c; pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        else: assert f == 0, f
    px.append(bytes(line)); prev = line
colours = {row[i:i + 3] for row in px for i in range(0, stride, 3)}
ink = sum(1 for row in px for i in range(0, stride, 3) if row[i:i + 3] != b"\xff\xff\xff")
assert ink > 5000, ink
# the line colours of exact, linear, performer-64 and top-k-32
for c in ("000000", "ff7f0e", "d62728", "9467bd"):
    assert bytes.fromhex(c) in colours, c
PY

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
bad 2 "--plot: '$W/c.jpg': the name must end in .svg or .png" --T 8 --plot "$W/c.jpg"
bad 2 "--plot" --T 8 --plot "$W/png"
[ ! -e "$W/c.jpg" ] && [ ! -e "$W/png" ] || fail "a plot was written for a bad extension"

[ $fails -eq 0 ] || exit 1
echo "test_cli_compare: all passed"
