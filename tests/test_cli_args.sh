#!/usr/bin/env bash
# One option parser for every attn subcommand (tools/attn/cli_args.c):
#  1. "--opt=value" means the same as "--opt value" in every command;
#  2. the same bad value gets the same exit status (2: bad usage) and the same
#     message in every command that takes the option;
#  3. every command that computes takes --threads N.
# embed and similarity need a model directory: their successful runs are in
# test_bert_cli.sh (tiny model); their usage errors are checked here, before
# any model is looked for.
# Needs ATTN, ATTN_BUILD (for tests/tools/st_tool) and ATTN_TEST_DATA.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_BUILD:?}" "${ATTN_TEST_DATA:?}"
ST="$ATTN_BUILD/tests/tools/st_tool"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_args.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
run() { # run NAME CMD...: must exit 0
    local name=$1 rc
    shift
    "$@" >"$W/out" 2>"$W/err"
    rc=$?
    [ "$rc" = 0 ] || fail "$name: '$*' exited $rc: $(cat "$W/err")"
}

"$ST" gen "$W/sdpa.st" 1 q=F32:1,2,9,8 k=F32:1,2,11,8 v=F32:1,2,11,4 || exit 1
"$ST" gen "$W/mha.st" 2 x=F32:2,5,8 in_proj_weight=F32:24,8 out_proj.weight=F32:8,8 \
    dy=F32:2,5,8 || exit 1

# ---- 1. --opt=value is --opt value, in every command --------------------------
run sdpa_space "$ATTN" sdpa "$W/sdpa.st" "$W/a.st" --threads 2 --window 3,1 --scale 0.5 \
    --softcap 4 --dropout 0.2 --seed 9 --align bottom-right
run sdpa_eq "$ATTN" sdpa "$W/sdpa.st" "$W/b.st" --threads=2 --window=3,1 --scale=0.5 \
    --softcap=4 --dropout=0.2 --seed=9 --align=bottom-right
"$ST" equal "$W/a.st" "$W/b.st" >/dev/null 2>&1 || fail "sdpa: --opt=value differs from --opt value"

run mha_space "$ATTN" mha "$W/mha.st" "$W/a.st" --heads 2 --kv-heads 2 --threads 2 --window 2,0 \
    --align top-left --dropout 0.1 --seed 4 --need-weights
run mha_eq "$ATTN" mha "$W/mha.st" "$W/b.st" --heads=2 --kv-heads=2 --threads=2 --window=2,0 \
    --align=top-left --dropout=0.1 --seed=4 --need-weights
"$ST" equal "$W/a.st" "$W/b.st" >/dev/null 2>&1 || fail "mha: --opt=value differs from --opt value"

# bench: the smallest case, one timed run (no timing is asserted)
run bench_eq "$ATTN" bench --json --threads=1 --B=1 --H=1 --T=16 --S=16 --D=8 --Dv=8 --reps=1
grep -q '"T":16,"S":16,"D":8,"Dv":8,"causal":false,"threads":1,"reps":1,' "$W/out" ||
    fail "bench --opt=value: $(cat "$W/out")"
run bench_space "$ATTN" bench --json --threads 2 --H 1 --T 16 --D 8 --reps 1
grep -q '"threads":2,"reps":1,' "$W/out" || fail "bench --threads 2: $(cat "$W/out")"

# train: the same seed gives the same losses and accuracy either way
targs=(--task recall --steps 4 --batch 8 --eval 16 --log-every 2 --pairs 2 --keys 4 --values 4
       --dim 8 --heads 2 --layers 1 --mlp 8 --lr 0.01 --weight-decay 0 --token-shift 1 --seed 5)
run train_space "$ATTN" train "${targs[@]}" --threads 2
sed 's/ *[0-9.]* s\( in all\)*$//' "$W/out" >"$W/train_a"
teq=()
for ((i = 0; i < ${#targs[@]}; i += 2)); do teq+=("${targs[i]}=${targs[i + 1]}"); done
run train_eq "$ATTN" train "${teq[@]}" --threads=2
sed 's/ *[0-9.]* s\( in all\)*$//' "$W/out" >"$W/train_b"
grep -q '^accuracy: ' "$W/train_a" || fail "train: no accuracy line: $(cat "$W/train_a")"
cmp -s "$W/train_a" "$W/train_b" || fail "train: --opt=value differs: $(diff "$W/train_a" "$W/train_b")"

# tokenize (no --threads: it does not compute in parallel)
tok="$ATTN_TEST_DATA/tokenizer"
a=$("$ATTN" tokenize --model "$tok" --max-len 4 --tokens "Hello, world!") || fail "tokenize"
b=$("$ATTN" tokenize --model="$tok" --max-len=4 --tokens "Hello, world!") || fail "tokenize ="
[ "$a" = "$b" ] && [ -n "$a" ] || fail "tokenize: '$a' vs '$b'"

# ---- 2. the same bad value: the same status and message everywhere --------------
# same_error WANT-STATUS MESSAGE OPTION-ARGS... : every command in $CMDS
# exits WANT-STATUS with "attn: error: <cmd>: MESSAGE"
declare -A PRE=(
    [sdpa]="sdpa $W/sdpa.st $W/out.st"
    [mha]="mha $W/mha.st $W/out.st --heads 2"
    [bench]="bench --T 16"
    [train]="train --task recall"
    [embed]="embed --model $W/nomodel"
    [similarity]="similarity --model $W/nomodel"
    [tokenize]="tokenize --model $tok"
)
same_error() {
    local want=$1 msg=$2 cmd rc
    shift 2
    for cmd in $CMDS; do
        rm -f "$W/out.st"
        # shellcheck disable=SC2086
        "$ATTN" ${PRE[$cmd]} "$@" x >"$W/out" 2>"$W/err"
        rc=$?
        [ "$rc" = "$want" ] || fail "$cmd $*: exit $rc, want $want ($(cat "$W/err"))"
        grep -qxF -- "attn: error: $cmd: $msg" "$W/err" ||
            fail "$cmd $*: message is '$(cat "$W/err")', want 'attn: error: $cmd: $msg'"
        [ -s "$W/out" ] && fail "$cmd $*: printed to stdout"
        [ ! -e "$W/out.st" ] || fail "$cmd $*: left an output file"
    done
}
# (the trailing x is a TEXT for embed/similarity/tokenize; for the others it
# is an extra argument, which comes after the option error)
CMDS="sdpa mha bench train embed similarity"
same_error 2 "--threads must be an integer in [0, 4096], got '-1'" --threads -1
same_error 2 "--threads must be an integer in [0, 4096], got '-1'" --threads=-1
same_error 2 "--threads must be an integer in [0, 4096], got '4097'" --threads 4097
same_error 2 "--threads must be an integer in [0, 4096], got '2x'" --threads=2x
same_error 2 "--threads must be an integer in [0, 4096], got ''" --threads=
CMDS="sdpa mha train"
same_error 2 "--seed must be an integer >= 0, got '-1'" --seed -1
same_error 2 "--seed must be an integer >= 0, got '1.5'" --seed=1.5
CMDS="sdpa mha"
same_error 2 "--dropout must be a number in [0, 1), got '1.5'" --dropout 1.5
same_error 2 "--dropout must be a number in [0, 1), got '-0.1'" --dropout=-0.1
same_error 2 "--window -2,0: each side must be >= 0, or -1 for unbounded" --window -2,0
same_error 2 "--window takes L,R (e.g. 128,0), got '3'" --window=3
same_error 2 "--align must be top-left or bottom-right, got 'middle'" --align middle
CMDS="sdpa mha bench"
same_error 2 "option --causal takes no value" --causal=1
CMDS="sdpa mha bench train embed similarity tokenize"
for cmd in $CMDS; do # the message names the command's own help
    # shellcheck disable=SC2086
    "$ATTN" ${PRE[$cmd]} --bogus=1 x >/dev/null 2>"$W/err"
    rc=$?
    [ "$rc" = 2 ] || fail "$cmd --bogus=1: exit $rc, want 2"
    grep -qxF "attn: error: $cmd: unknown option '--bogus' (see attn $cmd --help)" "$W/err" ||
        fail "$cmd --bogus=1: $(cat "$W/err")"
done
for cmd in sdpa mha bench train embed similarity tokenize; do # a value is missing
    "$ATTN" $cmd --threads >/dev/null 2>"$W/err"
    rc=$?
    [ "$rc" = 2 ] || fail "$cmd --threads (no value): exit $rc, want 2"
    grep -q "^attn: error: $cmd: " "$W/err" || fail "$cmd --threads (no value): $(cat "$W/err")"
    "$ATTN" $cmd --help >"$W/out" 2>&1 || fail "$cmd --help exited non-zero"
    if [ "$cmd" != tokenize ]; then
        grep -q -- "--threads" "$W/out" || fail "$cmd --help does not describe --threads"
    fi
done
# bad input is 1, not 2, whatever the command
"$ATTN" sdpa "$W/absent.st" "$W/out.st" 2>/dev/null
[ $? = 1 ] || fail "sdpa on a missing file: want exit 1"
"$ATTN" mha "$W/absent.st" "$W/out.st" --heads 2 2>/dev/null
[ $? = 1 ] || fail "mha on a missing file: want exit 1"
"$ATTN" embed --model "$W/nomodel" x 2>/dev/null
[ $? = 1 ] || fail "embed with a missing model: want exit 1"

# ---- 3b. a thread count above the library's maximum is bad usage ----------
# (the maximum is 16x the cores, at most 4096: below 256 cores 4096 is above it)
if [ "$(($(nproc) * 16))" -lt 4096 ]; then
    "$ATTN" sdpa "$W/sdpa.st" "$W/t.st" --threads 4096 >"$W/out" 2>"$W/err"
    rc=$?
    [ "$rc" = 2 ] || fail "sdpa --threads 4096: want exit 2, got $rc"
    grep -q "at most" "$W/err" || fail "sdpa --threads 4096: message lacks the maximum: $(cat "$W/err")"
    [ ! -e "$W/t.st" ] || fail "sdpa --threads 4096 wrote an output"
fi

# ---- 3c. a weight of a non-float dtype: the message names the file once ----
"$ST" gen "$W/mha_i32.st" 2 x=F32:2,5,8 in_proj_weight=I32:24,8 out_proj.weight=F32:8,8 || exit 1
"$ATTN" mha "$W/mha_i32.st" "$W/t.st" --heads 2 >"$W/out" 2>"$W/err"
rc=$?
[ "$rc" = 1 ] || fail "mha with an I32 weight: want exit 1, got $rc"
grep -q "tensor 'in_proj_weight' has dtype I32" "$W/err" || fail "mha I32 weight: $(cat "$W/err")"
[ "$(grep -o "mha_i32.st" "$W/err" | wc -l)" = 1 ] ||
    fail "mha I32 weight: the path is not named exactly once: $(cat "$W/err")"

# ---- issue 10: values the probe found mis-parsed -------------------------------
# a value with a leading space or '+' is not a decimal integer; ' -1' must
# not wrap to 2^64 - 1
CMDS="sdpa mha"
same_error 2 "--seed must be an integer >= 0, got ' -1'" --seed " -1"
same_error 2 "--threads must be an integer in [0, 4096], got ' 2'" --threads " 2"
same_error 2 "--threads must be an integer in [0, 4096], got '+2'" --threads=+2
# a leading zero is decimal (never octal): --seed 010 is --seed 10
run seed_010 "$ATTN" sdpa "$W/sdpa.st" "$W/s010.st" --dropout 0.5 --seed 010
run seed_10 "$ATTN" sdpa "$W/sdpa.st" "$W/s10.st" --dropout 0.5 --seed 10
"$ST" equal "$W/s010.st" "$W/s10.st" >/dev/null 2>&1 || fail "--seed 010 is not --seed 10"
# numbers below the smallest float round toward 0 instead of "not finite"
run scale_tiny "$ATTN" sdpa "$W/sdpa.st" "$W/t.st" --scale 1e-40
run dropout_tiny "$ATTN" sdpa "$W/sdpa.st" "$W/t.st" --dropout 1e-50
CMDS="sdpa"
same_error 2 "--scale must be a finite number, got '1e40'" --scale 1e40
# --opt=value for mha's own options
run mha_heads_eq "$ATTN" mha "$W/mha.st" "$W/t.st" --heads=2
# an unknown option: "attn: error:" and exit 2 in every command
for c in tokenize embed similarity sdpa mha train bench; do
    "$ATTN" $c --bogus >"$W/out" 2>"$W/err"
    rc=$?
    [ "$rc" = 2 ] && grep -q "^attn: error: $c: unknown option '--bogus'" "$W/err" ||
        fail "$c --bogus: exit $rc, $(cat "$W/err")"
done
# '-' (stdin) among other texts is bad usage, not the text "-"
"$ATTN" tokenize --model "$tok" - hello >"$W/out" 2>"$W/err" </dev/null
rc=$?
[ "$rc" = 2 ] && grep -q "must be the only TEXT" "$W/err" || fail "tokenize - hello: exit $rc"
# train's limits are the options' declared ranges, said in --help
CMDS="train"
same_error 2 "--token-shift must be an integer in [0, 1], got '2'" --token-shift 2
same_error 2 "--layers must be an integer in [1, 8], got '9'" --layers 9
same_error 2 "--keys must be an integer in [1, 1024], got '2000'" --keys 2000
"$ATTN" train --help | grep -q -- "--layers L        blocks, 1..8" || fail "train --help: no layer limit"

# ---- 4. ATTN_ARCH: a family this build lacks is an error, never ignored ------
for c in "sdpa $W/sdpa.st $W/c.st" "mha $W/mha.st $W/c.st --heads 2" \
    "train --task recall --steps 1" "bench --T 8 --reps 1"; do
    # shellcheck disable=SC2086
    ATTN_ARCH=avx9000 "$ATTN" $c >"$W/out" 2>"$W/err"
    rc=$?
    [ "$rc" = 1 ] || fail "ATTN_ARCH=avx9000 attn $c: want exit 1, got $rc"
    grep -q "ATTN_ARCH=avx9000: unknown kernel family" "$W/err" ||
        fail "ATTN_ARCH=avx9000 attn $c: message lacks the reason: $(cat "$W/err")"
done
[ ! -e "$W/c.st" ] || fail "ATTN_ARCH=avx9000: an output file was written"
ATTN_ARCH=scalar run arch_scalar "$ATTN" sdpa "$W/sdpa.st" "$W/s.st"

echo "test_cli_args: $fails failure(s)"
[ "$fails" = 0 ]
