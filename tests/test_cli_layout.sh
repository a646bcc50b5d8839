#!/usr/bin/env bash
# attn sdpa with a block-sparse layout: from --layout SPEC (built patterns)
# and from a 'layout' tensor in the input file, forward and backward, close
# to the float64 reference (--ref) on the same layout and far from dense
# attention; the errors of every bad combination. (The tolerance rule
# itself is checked in the library's test_sdpa_layout.)
# Needs ATTN, ATTN_BUILD (tests/tools/st_tool).
set -u
ST="$ATTN_BUILD/tests/tools/st_tool"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_layout.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# max |a - b| over the tensors two safetensors files share, and the largest
# |a| (python3's standard library only)
maxdiff() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
d = m = 0.0
for k in a:
    for x, y in zip(a[k], b[k]):
        if x == x and y == y and abs(x) != float("inf"):
            d = max(d, abs(x - y)); m = max(m, abs(x))
print("%g %g" % (d, m))
PY
}

"$ST" gen "$W/in.st" 3 q=F32:2,4,150,16 k=F32:2,2,140,16 v=F32:2,2,140,8 dout=F32:2,4,150,8 \
    layout=U8:4,5:p=0.5 || exit 1
"$ST" gen "$W/nolayout.st" 3 q=F32:2,4,150,16 k=F32:2,2,140,16 v=F32:2,2,140,8 \
    dout=F32:2,4,150,8 || exit 1
# the same inputs without dout, for forward runs (a dout without --backward is an error)
"$ST" gen "$W/nolayout_f.st" 3 q=F32:2,4,150,16 k=F32:2,2,140,16 v=F32:2,2,140,8 || exit 1
"$ST" gen "$W/in_f.st" 3 q=F32:2,4,150,16 k=F32:2,2,140,16 v=F32:2,2,140,8 layout=U8:4,5:p=0.5 ||
    exit 1
for spec in "window=1" "window=1,global=1,random=1,seed=3" "stride=2,window=0" \
    "window=2,dilation=2,causal"; do
    for bw in "" "--backward"; do
        f="$W/nolayout.st"
        [ -z "$bw" ] && f="$W/nolayout_f.st"
        "$ATTN" sdpa "$f" "$W/f.st" --layout "$spec" --block 32,32 $bw 2>"$W/err" ||
            { fail "--layout $spec $bw: $(cat "$W/err")"; continue; }
        "$ATTN" sdpa "$f" "$W/r.st" --layout "$spec" --block 32,32 --ref $bw 2>"$W/err" ||
            { fail "--ref --layout $spec $bw: $(cat "$W/err")"; continue; }
        read -r d m < <(maxdiff "$W/f.st" "$W/r.st")
        awk -v d="$d" 'BEGIN { exit !(d < 1e-5) }' || fail "--layout $spec $bw: fast vs ref differ by $d"
    done
done
# the file's own layout tensor ([nqb, nkb] for blocks of 40 x 30: 4 x 5)
"$ATTN" sdpa "$W/in.st" "$W/f.st" --block 40,30 --backward 2>"$W/err" ||
    fail "layout tensor: $(cat "$W/err")"
"$ATTN" sdpa "$W/in.st" "$W/r.st" --block 40,30 --backward --ref 2>"$W/err" ||
    fail "layout tensor --ref: $(cat "$W/err")"
read -r d m < <(maxdiff "$W/f.st" "$W/r.st")
awk -v d="$d" 'BEGIN { exit !(d < 1e-5) }' || fail "layout tensor: fast vs ref differ by $d"
# and the layout matters: dense attention gives another answer
"$ST" gen "$W/dense.st" 3 q=F32:2,4,150,16 k=F32:2,2,140,16 v=F32:2,2,140,8 || exit 1
"$ATTN" sdpa "$W/dense.st" "$W/d.st" 2>/dev/null
"$ATTN" sdpa "$W/in_f.st" "$W/f.st" --block 40,30 2>/dev/null
read -r d m < <(maxdiff "$W/f.st" "$W/d.st")
awk -v d="$d" 'BEGIN { exit !(d > 1e-3) }' || fail "the layout tensor changed nothing ($d)"

# errors: exit status, message, no output
bad() { # bad CODE WANT ARGS...
    local code=$1 want=$2 rc
    shift 2
    rm -f "$W/o.st"
    "$ATTN" sdpa "$@" 2>"$W/err" >/dev/null
    rc=$?
    [ "$rc" = "$code" ] || fail "$*: exit $rc, want $code ($(cat "$W/err"))"
    grep -qF -- "$want" "$W/err" || fail "$*: message lacks '$want': $(cat "$W/err")"
    [ ! -e "$W/o.st" ] || fail "$*: left an output"
}
bad 2 "--block needs --layout" "$W/dense.st" "$W/o.st" --block 16
bad 2 "unknown key 'width'" "$W/dense.st" "$W/o.st" --layout width=2
bad 2 "is not key=N" "$W/dense.st" "$W/o.st" --layout window=-1
bad 2 "expected BQ or BQ,BK" "$W/dense.st" "$W/o.st" --layout window=1 --block 0
bad 2 "both --layout and a 'layout' tensor" "$W/in.st" "$W/o.st" --layout window=1
bad 1 "tensor 'layout' has shape [4, 5]" "$W/in.st" "$W/o.st" --block 64
echo "test_cli_layout: $fails failure(s)"
[ "$fails" = 0 ]
