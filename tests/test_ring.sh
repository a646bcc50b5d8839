#!/usr/bin/env bash
# Ring attention over MPI (libattn_mpi, `attn ring`) on localhost:
# - tests/mpi/ring_check with 1, 2, 3 and 4 ranks: forward and backward of
#   every supported option against the float64 oracle (project tolerance),
#   the backward's determinism, and bad inputs (the same status everywhere);
#   also the library called without MPI_Init;
# - `mpirun -np P attn ring` against `attn sdpa --ref` with the same rule
#   (st_tool check), both layouts, forward and backward, T not divisible by P;
# - the CLI's errors: every rank exits non-zero, no output file is left.
# Reported skipped (exit 77) when this build has no MPI or mpirun is absent.
# Needs ATTN, ATTN_BUILD.
set -u
ST="$ATTN_BUILD/tests/tools/st_tool"
RC="$ATTN_BUILD/tests/tools/ring_check"
if [ ! -x "$RC" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIPPED: this build has no MPI (libattn_mpi not built) or mpirun is missing"
    exit 77
fi
# Open MPI refuses root unless told; more ranks than cores need --oversubscribe
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
# an ASan build: Open MPI's own allocations live until exit (lsan.supp);
# to match them, leak stacks must reach into Open MPI (full unwinding) and
# its plugins must stay loaded at exit (no dlclose)
export LSAN_OPTIONS="suppressions=${ATTN_SRC:-$(dirname "$0")/..}/tests/mpi/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export OMPI_MCA_mca_base_component_disable_dlclose=1
[ -n "${ASAN_OPTIONS:-}" ] && export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"
for v in ATTN_TEST_SEED ATTN_TEST_QUICK ATTN_ARCH ASAN_OPTIONS LSAN_OPTIONS; do
    [ -n "${!v:-}" ] && MPIRUN+=(-x "$v")
done
# the shared-memory transport only: a test never needs a network
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_ring.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

"$RC" --no-init || fail "ring_check --no-init"
# sanitizer runs (ATTN_TEST_QUICK) take fewer rank counts: each is slow there
nps="1 2 3 4" clinps="1 2 4"
[ -n "${ATTN_TEST_QUICK:-}" ] && nps="1 4" clinps="2"
for np in $nps; do
    "${MPIRUN[@]}" -np $np "$RC" >"$W/rc.log" 2>&1 || {
        fail "ring_check on $np ranks:"
        cat "$W/rc.log" >&2
    }
done

gen() { "$ST" gen "$@" || { echo "st_tool gen failed: $*" >&2; exit 1; }; }
gen "$W/a.st" 1 q=F32:2,4,45,16 k=F32:2,2,45,16 v=F32:2,2,45,8 dout=F32:2,4,45,8
gen "$W/br.st" 2 q=F32:1,2,23,8 k=F32:1,2,61,8 v=F32:1,2,61,8 dout=F32:1,2,23,8
gen "$W/m.st" 3 q=F32:3,2,30,8 k=F32:3,2,30,8 v=F32:3,2,30,8 dout=F32:3,2,30,8 \
    mask=F32:1,2,30,30:ninf=0.1 kv_len=I32:3:vals=30,7,19
gen "$W/h3.st" 4 q=F32:2,33,8 k=F32:2,33,8 v=F32:2,33,8 mask=BOOL:33,33:p=0.6
# each rank reads only its rows from the file: F16, BF16, F64 inputs are
# converted per slice, and a mask with one row (broadcast) is read whole
gen "$W/f16.st" 8 q=F16:2,4,37,16 k=BF16:2,2,37,16 v=F64:2,2,37,8 mask=F16:1,1,1,37
gen "$W/f16b.st" 9 q=F16:1,2,29,8 k=F16:1,2,29,8 v=BF16:1,2,29,8 dout=F64:1,2,29,8 \
    mask=F64:1,2,29,29:ninf=0.2

# ring NAME IN NP "SDPA OPTIONS" [RING OPTIONS]: attn ring on NP ranks passes
# the tolerance check against attn sdpa --ref with the same options.
ring() {
    local name=$1 in=$2 np=$3 opts=$4
    shift 4
    "$ATTN" sdpa "$in" "$W/$name.ref.st" --ref $opts 2>"$W/err" || {
        fail "$name: attn sdpa --ref: $(cat "$W/err")"
        return
    }
    "${MPIRUN[@]}" -np "$np" "$ATTN" ring "$in" "$W/$name.st" --threads 1 $opts "$@" \
        >"$W/out" 2>&1 || {
        fail "$name: mpirun -np $np attn ring $opts $*: $(cat "$W/out")"
        return
    }
    "$ST" check "$in" "$W/$name.ref.st" "$W/$name.st" $opts >"$W/check" 2>&1 || {
        fail "$name: attn ring vs attn sdpa --ref ($opts $*):"
        cat "$W/check" >&2
    }
}

for np in $clinps; do
    ring "a$np" "$W/a.st" $np "--causal --backward"
    ring "ac$np" "$W/a.st" $np "--causal --backward" --split contiguous
    ring "an$np" "$W/a.st" $np "--backward --softcap 4"
    ring "br$np" "$W/br.st" $np "--causal --align bottom-right --backward"
    ring "w$np" "$W/br.st" $np "--window 3,2 --align bottom-right --backward"
    ring "m$np" "$W/m.st" $np "--causal --backward"
    ring "h3$np" "$W/h3.st" $np "--window 4,-1"
    ring "f16$np" "$W/f16.st" $np "--causal"
    ring "f16b$np" "$W/f16b.st" $np "--causal --backward"
done

# bad NAME CODE SUBSTRING NP ARGS...: every rank exits non-zero (mpirun
# returns CODE's class: non-zero), the message is printed, no output file.
bad() {
    local name=$1 code=$2 want=$3 np=$4
    shift 4
    rm -f "$W/out.st"
    "${MPIRUN[@]}" -np "$np" "$ATTN" ring "$@" >"$W/out" 2>&1
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "$name: exit $rc, want $code ($(cat "$W/out"))"
    grep -q "attn: error: " "$W/out" || fail "$name: no 'attn: error:' line: $(cat "$W/out")"
    grep -qF -- "$want" "$W/out" || fail "$name: message lacks '$want': $(cat "$W/out")"
    [ ! -e "$W/out.st" ] || fail "$name: left an output file behind"
    ls "$W" | grep -q '\.tmp-' && fail "$name: left a temporary file behind"
    # every rank reports a runtime failure, naming the first failing rank
    # (usage errors: rank 0 only); lines from ranks may interleave
    if [ "$code" -eq 1 ]; then
        local n
        n=$(grep -oE "rank [0-9]+ of [0-9]+: " "$W/out" | wc -l)
        [ "$n" -eq "$np" ] || fail "$name: $n of $np ranks reported the error: $(cat "$W/out")"
    fi
}
gen "$W/t3.st" 5 q=F32:1,2,3,8 k=F32:1,2,3,8 v=F32:1,2,3,8
gen "$W/al.st" 6 q=F32:1,2,8,8 k=F32:1,2,8,8 v=F32:1,2,8,8 alibi_slopes=F32:2
bad "P > T" 1 "more ranks than" 4 "$W/t3.st" "$W/out.st"
bad "alibi" 1 "ALiBi is not supported" 2 "$W/al.st" "$W/out.st"
bad "missing" 1 "rank 0 of 2" 2 "$W/none.st" "$W/out.st"
bad "window" 2 "--window" 2 "$W/a.st" "$W/out.st" --window 1
bad "layout" 2 "zigzag or contiguous" 2 "$W/a.st" "$W/out.st" --split stripes
bad "no dout" 1 "dout" 2 "$W/t3.st" "$W/out.st" --backward
# row dims the ranks slice are checked before slicing
gen "$W/vrows.st" 10 q=F32:1,2,8,8 k=F32:1,2,8,8 v=F32:1,2,9,8
gen "$W/mrows.st" 11 q=F32:1,2,8,8 k=F32:1,2,8,8 v=F32:1,2,8,8 mask=F32:1,1,5,8
gen "$W/drows.st" 12 q=F32:1,2,8,8 k=F32:1,2,8,8 v=F32:1,2,8,8 dout=F32:1,2,7,8
gen "$W/idt.st" 13 q=I32:1,2,8,8 k=F32:1,2,8,8 v=F32:1,2,8,8
bad "v rows" 1 "v has 9 rows, k has 8" 2 "$W/vrows.st" "$W/out.st"
bad "mask rows" 1 "mask has 5 query rows, expected T = 8" 2 "$W/mrows.st" "$W/out.st"
bad "dout rows" 1 "dout has 7 rows, q has 8" 2 "$W/drows.st" "$W/out.st" --backward
bad "int q" 1 "tensor 'q' has dtype I32" 2 "$W/idt.st" "$W/out.st"
# a rank that cannot read its input: only rank 1's file is missing
cp "$W/a.st" "$W/r0.st"
cat >"$W/per_rank.sh" <<EOF
#!/bin/sh
in="$W/r\${OMPI_COMM_WORLD_RANK}.st"
exec "$ATTN" ring "\$in" "$W/out.st" --causal
EOF
chmod +x "$W/per_rank.sh"
rm -f "$W/out.st"
"${MPIRUN[@]}" -np 2 "$W/per_rank.sh" >"$W/out" 2>&1 && fail "rank 1 unreadable: exit 0"
grep -q "rank 1 of 2" "$W/out" || fail "rank 1 unreadable: message: $(cat "$W/out")"
[ "$(grep -oE 'rank [0-9]+ of [0-9]+: ' "$W/out" | wc -l)" -eq 2 ] ||
    fail "rank 1 unreadable: not every rank reported: $(cat "$W/out")"
[ ! -e "$W/out.st" ] || fail "rank 1 unreadable: left an output file"
# files that differ between ranks
gen "$W/r1.st" 7 q=F32:2,4,44,16 k=F32:2,2,44,16 v=F32:2,2,44,8
"${MPIRUN[@]}" -np 2 "$W/per_rank.sh" >"$W/out" 2>&1 && fail "differing files: exit 0"
grep -q "differs between ranks" "$W/out" || fail "differing files: message: $(cat "$W/out")"
[ ! -e "$W/out.st" ] || fail "differing files: left an output file"

if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "ok: ring attention (library on 1-4 ranks, attn ring vs attn sdpa --ref, errors)"
