#!/usr/bin/env bash
# attn mha on the PyTorch fixtures (tests/data/mha, see
# tests/fixtures/make_mha_fixtures.py): every output of the command line is
# compared with PyTorch's float64 results by test_mha_torch (ATTN_MHA_CLI_OUT
# mode, same tolerance). Then bad input: exit 1, a message, no output file;
# bad usage: exit 2.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?}" "${ATTN_BUILD:?}"
fail() { echo "FAIL: $*" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
data="$ATTN_TEST_DATA/mha"

# case heads extra-options (as recorded in each fixture's metadata)
while read -r name heads opts; do
    # shellcheck disable=SC2086
    "$ATTN" mha "$data/$name.in.safetensors" "$dir/$name.heads.safetensors" --heads "$heads" \
        --need-weights $opts || fail "attn mha $name exited $?"
    # shellcheck disable=SC2086
    "$ATTN" mha "$data/$name.in.safetensors" "$dir/$name.avg.safetensors" --heads "$heads" \
        --average-weights $opts || fail "attn mha $name --average-weights exited $?"
done <<'CASES'
self 4
self_nobias 3
causal 2 --causal
float_mask 2
bool_mask 4
cross_kv 4
cross_kdim 3
cross_kdim_pad 2
torch_kpm 2
torch_bool 4
CASES
ATTN_MHA_CLI_OUT="$dir" "$ATTN_BUILD/tests/test_mha_torch" || fail "CLI outputs differ from PyTorch"

# ---- tiny hand-made safetensors files (zero data) for the error paths -------
# mkst FILE name:DTYPE:d0,d1,... ...
mkst() {
    local file=$1 hdr="{" off=0 first=1 spec name dt shape n size
    shift
    for spec in "$@"; do
        IFS=: read -r name dt shape <<<"$spec"
        n=1
        for d in ${shape//,/ }; do n=$((n * d)); done
        case $dt in F32|I32) size=$((n * 4));; BOOL) size=$n;; esac
        [ $first = 1 ] || hdr+=","
        first=0
        hdr+="\"$name\":{\"dtype\":\"$dt\",\"shape\":[$shape],\"data_offsets\":[$off,$((off + size))]}"
        off=$((off + size))
    done
    hdr+="}"
    while [ $(( ${#hdr} % 8 )) != 0 ]; do hdr+=" "; done
    local len=${#hdr} le="" i
    for i in 0 1 2 3 4 5 6 7; do le+=$(printf '\\x%02x' $(( (len >> (8 * i)) & 255 ))); done
    { printf "$le"; printf '%s' "$hdr"; head -c "$off" /dev/zero; } >"$file"
}
W="in_proj_weight:F32:12,4 in_proj_bias:F32:12 out_proj.weight:F32:4,4 out_proj.bias:F32:4"
# shellcheck disable=SC2086
mkst "$dir/ok.st" x:F32:2,3,4 $W dy:F32:2,3,4
"$ATTN" mha "$dir/ok.st" "$dir/ok.out" --heads 2 || fail "a valid zero file failed"
[ -s "$dir/ok.out" ] || fail "no output for a valid file"

# 2-D inputs (B = 1), grouped heads, F16 input, dropout: shapes and determinism
st="$ATTN_BUILD/tests/tools/st_tool"
"$st" gen "$dir/gqa.st" 1 x=F16:5,8 q_proj_weight=F32:8,8 k_proj_weight=F32:4,8 \
    v_proj_weight=F32:4,8 q_proj_bias=F32:8 k_proj_bias=F32:4 v_proj_bias=F32:4 \
    out_proj.weight=F32:8,8 out_proj.bias=F32:8 dy=F32:5,8 mask=BOOL:5,5:p=0.8 || fail "st_tool gen"
"$ATTN" mha "$dir/gqa.st" "$dir/gqa.out" --heads 4 --kv-heads 2 --need-weights --dropout 0.2 \
    --seed 7 || fail "grouped heads, 2-D input"
info=$("$st" info "$dir/gqa.out")
for want in "y F32 \[5,8\]" "attn_weights F32 \[4,5,5\]" "dx F32 \[5,8\]" \
            "grad.k_proj_weight F32 \[4,8\]" "grad.v_proj_bias F32 \[4\]"; do
    printf '%s\n' "$info" | grep -q "^$want" || fail "gqa output lacks $want: $info"
done
"$ATTN" mha "$dir/gqa.st" "$dir/gqa2.out" --heads 4 --kv-heads 2 --need-weights --dropout 0.2 \
    --seed 7 || fail "second run"
"$st" equal "$dir/gqa.out" "$dir/gqa2.out" >/dev/null || fail "same seed, different results"
"$ATTN" mha "$dir/gqa.st" "$dir/gqa3.out" --heads 4 --kv-heads 2 --need-weights --dropout 0.2 \
    --seed 8 || fail "third run"
! "$st" equal "$dir/gqa.out" "$dir/gqa3.out" >/dev/null 2>&1 || fail "dropout ignores the seed"

expect() { # expect CODE PATTERN FILE ARGS...: exit CODE, stderr matches, no output
    local code=$1 pat=$2 file=$3 msg rc
    shift 3
    rm -f "$dir/out.st"
    msg=$("$ATTN" mha "$file" "$dir/out.st" "$@" 2>&1 >/dev/null); rc=$?
    [ "$rc" = "$code" ] || fail "attn mha $* on $(basename "$file"): exit $rc, want $code ($msg)"
    printf '%s\n' "$msg" | grep -q -- "$pat" || fail "message '$msg' lacks '$pat'"
    [ ! -e "$dir/out.st" ] || fail "an output file was left behind ($msg)"
}
mkst "$dir/missing.st" x:F32:2,3,4 out_proj.weight:F32:4,4
expect 1 "missing weight 'in_proj_weight' \[12, 4\]" "$dir/missing.st" --heads 2
# shellcheck disable=SC2086
mkst "$dir/extra.st" x:F32:2,3,4 $W foo:F32:1
expect 1 "unexpected tensor 'foo'" "$dir/extra.st" --heads 2
mkst "$dir/shape.st" x:F32:2,3,4 in_proj_weight:F32:12,5 out_proj.weight:F32:4,4
expect 1 "'in_proj_weight' has shape \[12, 5\], expected \[12, 4\]" "$dir/shape.st" --heads 2
# shellcheck disable=SC2086
mkst "$dir/dy.st" x:F32:2,3,4 $W dy:F32:2,2,4
expect 1 "dy" "$dir/dy.st" --heads 2
expect 2 "--dropout must be a number in \[0, 1)" "$dir/ok.st" --heads 2 --dropout 1.5
expect 1 "not divisible" "$dir/ok.st" --heads 3
expect 2 "--heads 4 is not a multiple of --kv-heads 3" "$dir/ok.st" --heads 4 --kv-heads 3
# grouped heads want q/k/v_proj_* names
expect 1 "missing weight 'q_proj_weight'" "$dir/ok.st" --heads 2 --kv-heads 1
mkst "$dir/inputs.st" x:F32:2,3,4 x_q:F32:2,3,4 out_proj.weight:F32:4,4
expect 1 "inputs must be" "$dir/inputs.st" --heads 2
mkst "$dir/mask.st" x:F32:2,3,4 out_proj.weight:F32:4,4 in_proj_weight:F32:12,4 mask:F32:3,2
expect 1 "mask" "$dir/mask.st" --heads 2
mkst "$dir/kvlen.st" x:F32:2,3,4 out_proj.weight:F32:4,4 in_proj_weight:F32:12,4 kv_len:I32:3
expect 1 "kv_len" "$dir/kvlen.st" --heads 2
expect 1 "" "$dir/nonexistent.st" --heads 2
mkst "$dir/typo.st" x:F32:2,3,4 out_proj.weight:F32:4,4 in_proj_weight:F32:12,4 kv_lens:I32:2
expect 1 "unexpected tensor 'kv_lens'.*attn_mask (or mask), key_padding_mask" "$dir/typo.st" \
    --heads 2

# nn.MultiheadAttention's names carry its meanings: a boolean attn_mask and
# key_padding_mask are true = NOT allowed, the opposite of attn's own `mask`.
# Each pair below must give bitwise the same outputs (the mask tensor last,
# so every other tensor gets the same random values).
MW="in_proj_weight=F32:12,4 in_proj_bias=F32:12 out_proj.weight=F32:4,4 out_proj.bias=F32:4"
pair() { # NAME MASKSPEC_A MASKSPEC_B [options]
    local name=$1 ma=$2 mb=$3
    shift 3
    # shellcheck disable=SC2086
    "$st" gen "$dir/$name.a.st" 5 x=F32:2,3,4 $MW dy=F32:2,3,4 $ma || fail "gen $name"
    # shellcheck disable=SC2086
    "$st" gen "$dir/$name.b.st" 5 x=F32:2,3,4 $MW dy=F32:2,3,4 $mb || fail "gen $name"
    "$ATTN" mha "$dir/$name.a.st" "$dir/$name.a.out" --heads 2 --need-weights "$@" ||
        fail "$name: attn mha (a) exited $?"
    "$ATTN" mha "$dir/$name.b.st" "$dir/$name.b.out" --heads 2 --need-weights "$@" ||
        fail "$name: attn mha (b) exited $?"
    "$st" equal "$dir/$name.a.out" "$dir/$name.b.out" || fail "$name: outputs differ"
}
pair attn_mask_bool "attn_mask=BOOL:3,3:vals=0,1,1,0,0,1,0,0,0" "mask=BOOL:3,3:vals=1,0,0,1,1,0,1,1,1"
pair attn_mask_bh "attn_mask=BOOL:4,3,3:vals=0,1,1,0,0,1,0,0,0,1,0,0" \
    "mask=BOOL:2,2,3,3:vals=1,0,0,1,1,0,1,1,1,0,1,1"
pair attn_mask_float "attn_mask=F32:3,3:vals=0,-1,2,0.5,0,-3,1,1,0" \
    "mask=F32:3,3:vals=0,-1,2,0.5,0,-3,1,1,0"
# key_padding_mask with left padding in batch 0 (kv_len cannot say it)
pair key_padding_mask "key_padding_mask=BOOL:2,3:vals=1,0,0,0,0,1" \
    "mask=BOOL:2,1,1,3:vals=0,1,1,1,1,0"
pair key_padding_mask_causal "key_padding_mask=U8:2,3:vals=1,0,0,0,0,1" \
    "mask=U8:2,1,1,3:vals=0,1,1,1,1,0" --causal
pair key_padding_mask_float "key_padding_mask=F32:2,3:vals=-1,0,2,0,0,-5" \
    "mask=F32:2,1,1,3:vals=-1,0,2,0,0,-5"
"$st" gen "$dir/both.st" 5 x=F32:2,3,4 $MW mask=F32:3,3 attn_mask=F32:3,3 || fail "gen both"
expect 1 "both 'mask' (true = attend) and 'attn_mask'" "$dir/both.st" --heads 2
"$st" gen "$dir/kpmf.st" 5 x=F32:2,3,4 $MW attn_mask=F32:3,3 key_padding_mask=F32:2,3 ||
    fail "gen kpmf"
expect 1 "float key_padding_mask with another mask" "$dir/kpmf.st" --heads 2
expect 2 "heads" "$dir/ok.st"
expect 2 "unknown option" "$dir/ok.st" --heads 2 --bogus
expect 2 "dropout" "$dir/ok.st" --heads 2 --dropout abc
echo ok
