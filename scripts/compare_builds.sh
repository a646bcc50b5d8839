#!/usr/bin/env bash
# Are two builds' `attn sdpa` outputs byte-identical? A sweep of shapes
# (GQA, T != S, odd sizes), masks (none, float, boolean, kv_len, ALiBi, all),
# options (causal in both alignments, windows, softcap, dropout), forward
# and --backward, 1 and 2 threads: 1152 runs. Prints each differing run and
# the count; exit 1 if any differ.
#   scripts/compare_builds.sh OLD/attn NEW/attn
# (docs/PERFORMANCE.md, "The architecture step": old = 4f66a0d.)
set -u
OLD=${1:?old attn binary}
NEW=${2:?new attn binary}
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_compare.XXXXXX")
trap 'rm -rf "$W"' EXIT
# random inputs, python3's standard library only
gen() { # gen SEED "B H Hkv T S D Dv" EXTRA OUT
    python3 - "$@" <<'PY'
import json, random, struct, sys
seed, dims, extra, out = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4]
B, H, Hkv, T, S, D, Dv = map(int, dims)
r = random.Random(seed)
def u(n, sc=1.0): return [r.uniform(-1, 1) * sc for _ in range(n)]
t = {"q": ("F32", [B, H, T, D], u(B * H * T * D, 2)), "k": ("F32", [B, Hkv, S, D], u(B * Hkv * S * D, 2)),
     "v": ("F32", [B, Hkv, S, Dv], u(B * Hkv * S * Dv))}
if "fmask" in extra: t["mask"] = ("F32", [B, 1, T, S], u(B * T * S))
if "bmask" in extra: t["mask"] = ("BOOL", [1, H, T, S], [int(r.random() < 0.7) for _ in range(H * T * S)])
if "kvlen" in extra: t["kv_len"] = ("I32", [B], [r.randint(0, S) for _ in range(B)])
if "alibi" in extra: t["alibi_slopes"] = ("F32", [H], [r.uniform(0, 0.5) for _ in range(H)])
if "dout" in extra: t["dout"] = ("F32", [B, H, T, Dv], u(B * H * T * Dv))
hdr, blobs, off = {}, [], 0
for name, (dt, shape, vals) in t.items():
    b = bytes(vals) if dt == "BOOL" else struct.pack("<%d%s" % (len(vals), "i" if dt == "I32" else "f"), *vals)
    hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(hdr).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(out, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
}
n=0
bad=0
for cfg in "1 2 2 7 7 8 8" "2 4 2 65 130 40 24" "1 3 1 257 100 64 64" "2 2 2 300 300 59 80" \
    "1 8 8 1000 1000 64 64" "1 2 1 33 513 128 128"; do
    for extra in none fmask bmask kvlen alibi fmask,kvlen,alibi; do
        for flags in "" "--causal" "--causal --align bottom-right" "--window 17,5" \
            "--window 3,-1 --align bottom-right" "--softcap 5" "--dropout 0.3 --seed 7" \
            "--causal --softcap 2 --window 40,0"; do
            for mode in "" "--backward"; do
                x=$extra
                [ -n "$mode" ] && x="$extra,dout"
                gen "$n" "$cfg" "$x" "$W/in.st"
                for th in 1 2; do
                    # shellcheck disable=SC2086
                    "$OLD" sdpa "$W/in.st" "$W/old.st" $flags $mode --threads $th >/dev/null 2>&1
                    r1=$?
                    # shellcheck disable=SC2086
                    "$NEW" sdpa "$W/in.st" "$W/new.st" $flags $mode --threads $th >/dev/null 2>&1
                    r2=$?
                    if [ "$r1" != "$r2" ]; then
                        echo "status $r1 vs $r2: $cfg $extra $flags $mode --threads $th"
                        bad=$((bad + 1))
                    elif [ "$r1" = 0 ] && ! cmp -s "$W/old.st" "$W/new.st"; then
                        echo "differ: $cfg $extra $flags $mode --threads $th"
                        bad=$((bad + 1))
                    fi
                    n=$((n + 1))
                done
            done
        done
    done
done
echo "compared $n runs, $bad differ"
[ "$bad" = 0 ]
