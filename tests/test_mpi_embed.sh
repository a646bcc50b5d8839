#!/usr/bin/env bash
# `mpirun -np P attn embed` (lines split over ranks, libattn_mpi's
# attn_mpi_lines_run) on localhost, with a tiny BERT written here:
# - the output is byte for byte the single process's, for jsonl (file and
#   stdout, --id line, --id tab), npy and safetensors, on 1-4 ranks; inputs
#   with more lines than one 1024-line block (so ranks really split them),
#   block-aligned sizes, fewer lines than ranks, empty lines, CRLF, UTF-8,
#   no final newline;
# - every error path: a missing, directory, empty or rank-dependent input, a
#   bad UTF-8 line or a line without a tab far into the file (a later rank
#   fails), a rank out of memory, a bad model, an unwritable output, bad
#   usage: mpirun exits non-zero, every rank reports, no output file and no
#   temporary file is left.
# Reported skipped (exit 77) when this build has no MPI or mpirun is absent.
# Needs ATTN, ATTN_BUILD, ATTN_SRC.
set -u
if [ ! -x "$ATTN_BUILD/tests/tools/ring_check" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIPPED: this build has no MPI (libattn_mpi not built) or mpirun is missing"
    exit 77
fi
# a hang (a collective one rank skipped) fails the test instead of stalling it
MPIRUN=(timeout 300 mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
# an ASan build: as tests/test_ring.sh
export LSAN_OPTIONS="suppressions=${ATTN_SRC}/tests/mpi/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export OMPI_MCA_mca_base_component_disable_dlclose=1
[ -n "${ASAN_OPTIONS:-}" ] && export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"
for v in ATTN_ARCH ASAN_OPTIONS LSAN_OPTIONS; do
    [ -n "${!v:-}" ] && MPIRUN+=(-x "$v")
done
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_mpi_embed.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

python3 "$ATTN_SRC/tests/fixtures/tiny_bert.py" "$W/models" >/dev/null || {
    echo "cannot write the tiny model" >&2
    exit 1
}
M=(--model "$W/models/f32" --threads 1)

# inputs: lines of 0-40 words (ASCII, accented, CJK), some empty
python3 - "$W" <<'EOF'
import random, sys
d = sys.argv[1]
random.seed(7)
words = "the cat sat on a mat hello world data café naïve 東京 日本 über — 100% (yes)".split()
def lines(n):
    return [" ".join(random.choice(words) for _ in range(random.choice([0, 1, 3, 9, 25, 40])))
            for _ in range(n)]
def put(name, ls, end="\n", last=True):
    with open(f"{d}/{name}", "wb") as f:
        f.write((end.join(ls) + (end if last else "")).encode())
big = lines(2600)
put("big.txt", big)
put("crlf.txt", big, end="\r\n", last=False)   # CRLF, no final newline
put("b2048.txt", lines(2048))                  # exactly two blocks
put("b1025.txt", lines(1025))                  # one line past a block
put("tab.txt", [f"id{i}\t{t}" for i, t in enumerate(big[:1500])])
put("one.txt", ["a"])
put("two.txt", ["a", "b"], last=False)
put("empties.txt", ["", "", ""])
bad = list(big)
bad[2499] = "ok"
put("bad_utf8.txt", bad)
with open(f"{d}/bad_utf8.txt", "r+b") as f:     # line 2500 becomes \xff\xfe
    data = f.read()
    off = sum(len(l.encode()) + 1 for l in bad[:2499])
    f.seek(off)
    f.write(b"\xff\xfe")                      # in the last rank's lines on 2 and 4 ranks
put("no_tab.txt", [f"id{i}\t{t}" if i != 1499 else "no tab here" for i, t in enumerate(big[:1600])])
EOF
mkdir -p "$W/out"

# same NAME NP INPUT [OPTIONS]: P ranks write what one process writes
same() {
    local name=$1 np=$2 in=$3
    shift 3
    local fmt=jsonl a
    for a in "$@"; do [ "$a" = npy ] || [ "$a" = safetensors ] && fmt=$a; done
    "$ATTN" embed "${M[@]}" --input "$in" --output "$W/ref.$fmt" "$@" 2>"$W/err" || {
        fail "$name: single process: $(cat "$W/err")"
        return
    }
    rm -f "$W/out/o.$fmt"
    "${MPIRUN[@]}" -np "$np" "$ATTN" embed "${M[@]}" --input "$in" --output "$W/out/o.$fmt" "$@" \
        >"$W/log" 2>&1 || {
        fail "$name: mpirun -np $np: $(cat "$W/log")"
        return
    }
    cmp -s "$W/ref.$fmt" "$W/out/o.$fmt" || fail "$name: $np ranks differ from one process ($fmt)"
    if [ "$np" -gt 1 ]; then
        grep -qE "^embed: [0-9]+ lines on $np ranks" "$W/log" ||
            fail "$name: no summary from rank 0: $(cat "$W/log")"
        [ "$(grep -c "lines on $np ranks" "$W/log")" -eq 1 ] || fail "$name: summary not once"
    fi
}

nps="1 2 3 4"
[ -n "${ATTN_TEST_QUICK:-}" ] && nps="2 4"
for np in $nps; do
    for f in jsonl npy safetensors; do
        same "big $f" $np "$W/big.txt" --format $f
    done
    same "crlf" $np "$W/crlf.txt"
    same "b2048" $np "$W/b2048.txt" --format npy
    same "b1025" $np "$W/b1025.txt"
    same "one" $np "$W/one.txt"
    same "two" $np "$W/two.txt" --format safetensors
    same "empties" $np "$W/empties.txt"
    same "texts" $np "$ATTN_SRC/tests/data/bert/texts.txt"
    same "id line" $np "$W/big.txt" --id line
    same "id tab" $np "$W/tab.txt" --id tab
done
# the split is real: on 4 ranks rank 0 embeds its block, not the 2600 lines
"${MPIRUN[@]}" -np 4 "$ATTN" embed "${M[@]}" --input "$W/big.txt" --output "$W/out/o.jsonl" \
    >"$W/log" 2>&1 || fail "split: $(cat "$W/log")"
grep -q "2600 lines on 4 ranks (rank 0: 1024)" "$W/log" || fail "split: $(cat "$W/log")"
# boundaries go to the nearest block start: the byte middle of big.txt is
# near line 1300, so rank 0 of 2 takes 1024 lines, not 2048
"${MPIRUN[@]}" -np 2 "$ATTN" embed "${M[@]}" --input "$W/big.txt" --output "$W/out/o.jsonl" \
    >"$W/log" 2>&1 || fail "split 2: $(cat "$W/log")"
grep -q "2600 lines on 2 ranks (rank 0: 1024)" "$W/log" || fail "split 2: $(cat "$W/log")"
# jsonl to stdout (rank 0's)
"$ATTN" embed "${M[@]}" --input "$W/big.txt" >"$W/ref.stdout" 2>/dev/null
"${MPIRUN[@]}" -np 3 "$ATTN" embed "${M[@]}" --input "$W/big.txt" >"$W/out.stdout" 2>"$W/log" ||
    fail "stdout: $(cat "$W/log")"
cmp -s "$W/ref.stdout" "$W/out.stdout" || fail "stdout: 3 ranks differ from one process"
rm -f "$W/out/"*

# bad NAME CODE SUBSTRING NP ARGS...: mpirun exits CODE, every rank prints
# the message (runtime errors), no file is left in $W/out
bad() {
    local name=$1 code=$2 want=$3 np=$4
    shift 4
    "${MPIRUN[@]}" -np "$np" "$@" >"$W/log" 2>&1
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "$name: exit $rc, want $code ($(cat "$W/log"))"
    grep -qF -- "$want" "$W/log" || fail "$name: message lacks '$want': $(cat "$W/log")"
    local n
    n=$(grep "attn: error: " "$W/log" | grep -cF -- "$want")
    [ "$n" -eq "$np" ] || fail "$name: $n of $np ranks reported '$want': $(cat "$W/log")"
    [ -z "$(ls -A "$W/out")" ] || fail "$name: left files behind: $(ls -A "$W/out")"
}
E=("$ATTN" embed "${M[@]}")
O=(--output "$W/out/o.npy" --format npy)
for np in 2 4; do
    bad "missing $np" 1 "$W/none.txt: cannot open" $np "${E[@]}" --input "$W/none.txt" "${O[@]}"
    bad "directory $np" 1 "not a regular file" $np "${E[@]}" --input "$W/models" "${O[@]}"
    bad "bad utf-8 $np" 1 "bad_utf8.txt:2500: invalid UTF-8 at byte 0" $np \
        "${E[@]}" --input "$W/bad_utf8.txt" "${O[@]}"
    bad "no tab $np" 1 "no_tab.txt:1500: no tab" $np \
        "${E[@]}" --input "$W/no_tab.txt" --id tab --output "$W/out/o.jsonl"
done
# a later rank fails: the others name it
grep -q "rank 1 of 2: .*bad_utf8.txt:2500" <("${MPIRUN[@]}" -np 2 "${E[@]}" \
    --input "$W/bad_utf8.txt" "${O[@]}" 2>&1) || fail "bad utf-8: rank 0 does not name rank 1"
: >"$W/empty.txt"
bad "empty" 1 "empty input file" 2 "${E[@]}" --input "$W/empty.txt" "${O[@]}"
bad "model" 1 "config.json" 2 "$ATTN" embed --model "$W/models/none" --input "$W/big.txt" "${O[@]}"
bad "output dir" 1 "$W/out/no/o.npy" 2 "${E[@]}" --input "$W/big.txt" --output "$W/out/no/o.npy" \
    --format npy
bad "text args" 2 "texts come from --input FILE" 2 "${E[@]}" "some text" "${O[@]}"
bad "stdin" 2 "texts come from --input FILE" 2 "${E[@]}" --input - "${O[@]}"
bad "bench" 2 "--bench runs in one process" 2 "${E[@]}" --input "$W/big.txt" --bench 1
# the input differs between ranks
cat >"$W/per_rank.sh" <<EOF
#!/bin/sh
exec "$ATTN" embed --model "$W/models/f32" --threads 1 --input "$W/in\${OMPI_COMM_WORLD_RANK}.txt" \
    --output "$W/out/o.npy" --format npy
EOF
chmod +x "$W/per_rank.sh"
cp "$W/big.txt" "$W/in0.txt"
cp "$W/b2048.txt" "$W/in1.txt"
bad "differing" 1 "the input differs between ranks" 2 "$W/per_rank.sh"
# a rank that cannot read (rank 1's file is missing)
rm "$W/in1.txt"
bad "rank 1 unreadable" 1 "in1.txt: cannot open" 2 "$W/per_rank.sh"
# out of memory on rank 1 only: its first line is 20 MB, its data limit 25 MB
# (the sanitizer's shadow memory does not fit such a limit: not run there)
if [ -z "${ASAN_OPTIONS:-}" ] && ! ldd "$ATTN" 2>/dev/null | grep -q libasan; then
    python3 -c "
import sys
w = ('word ' * 4000)[:20000] + '\n'
sys.stdout.write(w * 1024 + 'x' * 20_000_000 + '\n' + 'bye\n' * 10)" >"$W/long.txt"
    cat >"$W/oom.sh" <<EOF
#!/bin/sh
if [ "\$OMPI_COMM_WORLD_RANK" = 1 ]; then ulimit -s 1024; ulimit -d 25000; fi
exec "$ATTN" embed --model "$W/models/f32" --threads 1 --input "$W/long.txt" \
    --output "$W/out/o.npy" --format npy
EOF
    chmod +x "$W/oom.sh"
    bad "out of memory" 1 "long.txt:1025: out of memory reading the line" 2 "$W/oom.sh"
    rm -f "$W/long.txt"
else
    echo "note: the out-of-memory case is not run under the sanitizer (its shadow memory exceeds the limit)"
fi

if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "ok: mpirun attn embed (1-4 ranks byte-identical to one process; every error path)"
