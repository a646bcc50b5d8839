#!/usr/bin/env bash
# attn sdpa end to end: every option against the float64 reference (--ref)
# with the project tolerance, 3-D and converted inputs, determinism across
# thread counts, and every usage and input error (exit status, message, and
# no output file left behind).
# Needs ATTN (the CLI), ATTN_BUILD (for tests/tools/st_tool), ATTN_TEST_DATA.
set -u
ST="$ATTN_BUILD/tests/tools/st_tool"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_sdpa.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
ncheck=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

gen() { "$ST" gen "$@" || { echo "st_tool gen failed: $*" >&2; exit 1; }; }

# ok NAME IN [OPTIONS...]: fast and --ref both succeed with the same options,
# and the fast out/lse (and gradients, if any) pass the tolerance check.
ok() {
    local name=$1 in=$2
    shift 2
    ncheck=$((ncheck + 1))
    local fast="$W/$name.fast.st" ref="$W/$name.ref.st" rc
    # (inside `if ! cmd` $? is the negation's 0, so keep the status first)
    "$ATTN" sdpa "$in" "$fast" "$@" 2>"$W/err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "$name: attn sdpa $* exited $rc: $(cat "$W/err")"
        return
    fi
    "$ATTN" sdpa "$in" "$ref" --ref "$@" 2>"$W/err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "$name: attn sdpa --ref $* exited $rc: $(cat "$W/err")"
        return
    fi
    if ! "$ST" check "$in" "$ref" "$fast" "$@" >"$W/check" 2>&1; then
        fail "$name: fast vs --ref ($*):"
        cat "$W/check" >&2
    fi
}

# bad CODE NAME SUBSTRING -- ARGS...: attn sdpa exits CODE, prints
# "attn: error: ...SUBSTRING...", and leaves no $W/out.st behind.
bad() {
    local code=$1 name=$2 want=$3
    shift 4
    ncheck=$((ncheck + 1))
    rm -f "$W/out.st"
    "$ATTN" sdpa "$@" 2>"$W/err" >/dev/null
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "$name: exit $rc, want $code ($(cat "$W/err"))"
    grep -q "^attn: error: " "$W/err" || fail "$name: no 'attn: error:' line: $(cat "$W/err")"
    grep -qF -- "$want" "$W/err" || fail "$name: message lacks '$want': $(cat "$W/err")"
    [ ! -e "$W/out.st" ] || fail "$name: left an output file behind"
    ls "$W" | grep -q '\.tmp-' && fail "$name: left a temporary file behind"
}

# ---- inputs ------------------------------------------------------------------
# GQA (H=4, Hkv=2), T != S both ways, D != Dv, odd sizes.
gen "$W/base.st" 11 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5
gen "$W/tall.st" 12 q=F32:1,3,13,6 k=F32:1,1,5,6 v=F32:1,1,5,7
gen "$W/fmask.st" 13 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 mask=F32:7,9:ninf=0.2
gen "$W/fmask4.st" 14 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 mask=F32:2,1,7,9:ninf=0.1
gen "$W/bmask.st" 15 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 mask=BOOL:1,4,7,9:p=0.6
gen "$W/umask.st" 16 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 mask=U8:7,9:p=0.5
gen "$W/nomask.st" 17 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 mask=BOOL:3,5:p=0
gen "$W/kvlen.st" 18 q=F32:3,2,7,8 k=F32:3,2,9,8 v=F32:3,2,9,5 kv_len=I32:3:vals=9,0,4
gen "$W/kvlen64.st" 19 q=F32:2,2,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 kv_len=I64:2:vals=3,9
gen "$W/alibi.st" 20 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 \
    alibi_slopes=F32:4:vals=0.5,0.25,0.125,0.0625
gen "$W/big.st" 21 q=F32:1,2,70,16 k=F32:1,2,65,16 v=F32:1,2,65,16:normal=3 \
    mask=F32:1,2,70,65:ninf=0.05 kv_len=I32:1:vals=60 alibi_slopes=F32:2:vals=0.3,0.01
gen "$W/rank3.st" 22 q=F32:4,7,8 k=F32:2,9,8 v=F32:2,9,5
gen "$W/rank3m.st" 25 q=F32:4,7,8 k=F32:2,9,8 v=F32:2,9,5 mask=F32:4,7,9:ninf=0.1
gen "$W/rank3b.st" 26 q=F32:4,7,8 k=F32:2,9,8 v=F32:2,9,5 mask=BOOL:1,7,9
gen "$W/bf16.st" 23 q=BF16:2,4,7,8 k=F64:2,2,9,8 v=F16:2,2,9,5 mask=BF16:7,9
gen "$W/bwd.st" 24 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 dout=F32:2,4,7,5 mask=F32:7,9
# PyTorch's name and broadcast forms: attn_mask [B,1,1,S] (padding), [S], [H,1,S]
gen "$W/am_pad.st" 50 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 attn_mask=F32:2,1,1,9:ninf=0.2
gen "$W/am_s.st" 51 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 attn_mask=BOOL:9:p=0.6
gen "$W/am_h1s.st" 52 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 attn_mask=F32:4,1,9
gen "$W/am_bh1s.st" 53 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 mask=U8:2,4,1,9:p=0.5
# key_padding_mask [B,S], true = padding: batch 0 left-padded (kv_len cannot),
# batch 1 right-padded
gen "$W/kpm.st" 54 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 \
    key_padding_mask=BOOL:2,9:vals=1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,1,1,1
gen "$W/kpm_all.st" 55 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 key_padding_mask=BOOL:9:vals=1
gen "$W/bwd_am.st" 56 q=F32:2,4,7,8 k=F32:2,2,9,8 v=F32:2,2,9,5 dout=F32:2,4,7,5 \
    attn_mask=F32:2,1,1,9 key_padding_mask=BOOL:2,9:vals=1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1
gen "$W/bwd_t1.st" 57 q=F32:1,2,70,8 k=F32:1,2,65,8 v=F32:1,2,65,5 dout=F32:1,2,70,5 \
    attn_mask=F32:2,1,65

# ---- every option against the reference --------------------------------------
ok plain "$W/base.st"
ok tall "$W/tall.st"
ok causal_tl "$W/base.st" --causal
ok causal_br "$W/base.st" --causal --align bottom-right
ok causal_tall_tl "$W/tall.st" --causal --align top-left
ok causal_tall_br "$W/tall.st" --causal --align bottom-right
ok window "$W/base.st" --window 2,1
ok window_left "$W/base.st" --window=-1,0
ok window_right "$W/tall.st" --window 3,-1 --align bottom-right
ok window_causal "$W/base.st" --window 1,1 --causal --align bottom-right
ok float_mask "$W/fmask.st"
ok float_mask_4d "$W/fmask4.st" --causal
ok bool_mask "$W/bmask.st"
ok u8_mask "$W/umask.st" --window 3,3
ok all_masked "$W/nomask.st"
ok kv_len "$W/kvlen.st" --causal --align bottom-right
ok kv_len_i64 "$W/kvlen64.st"
ok alibi "$W/alibi.st" --causal
ok softcap "$W/base.st" --softcap 2.5 --scale 0.9
ok dropout "$W/base.st" --dropout 0.3 --seed 7
ok everything "$W/big.st" --causal --align bottom-right --window 20,5 --softcap 5 --threads 2
ok rank3 "$W/rank3.st" --causal
ok rank3_mask "$W/rank3m.st" --window 2,2
ok rank3_bool_mask "$W/rank3b.st" --causal --align bottom-right
ok converted "$W/bf16.st" --window 4,0
ok attn_mask_padding "$W/am_pad.st" --causal
ok attn_mask_1d "$W/am_s.st"
ok attn_mask_h1s "$W/am_h1s.st" --window 3,1
ok mask_bh1s "$W/am_bh1s.st" --causal --align bottom-right
ok key_padding_mask "$W/kpm.st" --causal --align bottom-right
ok key_padding_mask_all "$W/kpm_all.st"

# a query with no visible key: out 0, lse -inf (checked against --ref above;
# here the file itself must say so)
"$ATTN" sdpa "$W/nomask.st" "$W/nm.st" && "$ST" info "$W/nm.st" >"$W/info" &&
    grep -q '^lse F32 \[1,2,3\]$' "$W/info" || fail "all_masked: lse shape"
"$ST" info "$W/rank3.fast.st" >"$W/info"
grep -q '^out F32 \[4,7,5\]$' "$W/info" && grep -q '^lse F32 \[4,7\]$' "$W/info" ||
    fail "rank3: outputs should be 3-D: $(cat "$W/info")"

# outputs are F32 whatever the inputs' dtype, and --help says so
"$ST" info "$W/converted.fast.st" | grep -q '^out F32 ' || fail "converted: out is not F32"
"$ATTN" sdpa --help | grep -q "F16 in gives F32 out" || fail "sdpa --help: no output dtype"
"$ATTN" mha --help | grep -q "F16 in gives F32 out" || fail "mha --help: no output dtype"
"$ATTN" embed --help | grep -q "F16 weights give F32 embeddings" || fail "embed --help: no dtype"

# the forward is bitwise independent of the thread count
"$ATTN" sdpa "$W/big.st" "$W/t1.st" --causal --threads 1 &&
    "$ATTN" sdpa "$W/big.st" "$W/t2.st" --causal --threads 2 &&
    "$ST" equal "$W/t1.st" "$W/t2.st" || fail "threads: 1 and 2 threads differ"

# ---- backward: dq, dk, dv (and dmask for a float mask) against --ref -----------
gen "$W/bwd3.st" 27 q=F32:4,7,8 k=F32:2,9,8 v=F32:2,9,5 dout=F32:4,7,5 mask=F32:4,7,9:ninf=0.1
gen "$W/bwdb.st" 28 q=F32:3,2,7,8 k=F32:3,1,9,8 v=F32:3,1,9,5 dout=F32:3,2,7,5 \
    mask=BOOL:3,1,7,9 kv_len=I64:3:vals=9,0,5 alibi_slopes=F32:2:vals=0.25,0.5
ok backward "$W/bwd.st" --backward
ok backward_causal "$W/bwd.st" --backward --causal --align bottom-right --softcap 3
ok backward_window "$W/bwd.st" --backward --window 2,0 --scale 0.7
ok backward_dropout "$W/bwd.st" --backward --dropout 0.25 --seed 99
ok backward_rank3 "$W/bwd3.st" --backward --causal
ok backward_boolmask "$W/bwdb.st" --backward --causal --align bottom-right
ok backward_attn_mask_kpm "$W/bwd_am.st" --backward --causal
ok backward_mask_t1 "$W/bwd_t1.st" --backward --threads 2
# dmask has the mask's own (broadcast) shape
"$ST" info "$W/backward_attn_mask_kpm.fast.st" | grep -q '^dmask F32 \[2,1,1,9\]$' ||
    fail "dmask of attn_mask [2,1,1,9]: $("$ST" info "$W/backward_attn_mask_kpm.fast.st")"
# a fully padded batch: out 0, lse -inf
"$ST" info "$W/key_padding_mask_all.fast.st" | grep -q '^lse F32 \[2,4,7\]$' ||
    fail "key_padding_mask_all: lse shape"
"$ST" info "$W/backward.fast.st" >"$W/info"
for t in "out F32 [2,4,7,5]" "lse F32 [2,4,7]" "dq F32 [2,4,7,8]" "dk F32 [2,2,9,8]" \
         "dv F32 [2,2,9,5]" "dmask F32 [7,9]"; do
    grep -qxF "$t" "$W/info" || fail "backward: OUT lacks '$t': $(cat "$W/info")"
done
"$ST" info "$W/backward_rank3.fast.st" >"$W/info"
for t in "dq F32 [4,7,8]" "dk F32 [2,9,8]" "dv F32 [2,9,5]" "dmask F32 [4,7,9]"; do
    grep -qxF "$t" "$W/info" || fail "backward_rank3: OUT lacks '$t': $(cat "$W/info")"
done
"$ST" info "$W/backward_boolmask.fast.st" | grep -q '^dmask ' &&
    fail "backward_boolmask: a boolean mask has no gradient, but OUT has dmask"

# ---- usage errors: exit 2 ------------------------------------------------------
B="$W/base.st"
O="$W/out.st"
bad 2 no_args "expected IN.safetensors OUT.safetensors" --
bad 2 one_arg "expected IN.safetensors OUT.safetensors" -- "$B"
bad 2 extra_arg "unexpected argument" -- "$B" "$O" extra
bad 2 unknown_opt "unknown option '--causl'" -- "$B" "$O" --causl
bad 2 flag_value "takes no value" -- "$B" "$O" --causal=1
bad 2 missing_value "--scale needs a value" -- "$B" "$O" --scale
bad 2 bad_scale "--scale must be a finite number, got 'abc'" -- "$B" "$O" --scale abc
bad 2 nan_scale "--scale must be a finite number" -- "$B" "$O" --scale nan
bad 2 bad_softcap "--softcap must be a number >= 0" -- "$B" "$O" --softcap -1
bad 2 bad_window "--window takes L,R" -- "$B" "$O" --window 3
bad 2 bad_window_num "--window takes two integers" -- "$B" "$O" --window 3,x
bad 2 window_below "--window -2,0: each side must be >= 0, or -1" -- "$B" "$O" --window -2,0
bad 2 window_below_r "each side must be >= 0, or -1" -- "$B" "$O" --window=0,-5
bad 2 bad_align "--align must be top-left or bottom-right, got 'middle'" -- "$B" "$O" --align middle
bad 2 bad_threads "--threads must be an integer" -- "$B" "$O" --threads -1
bad 2 bad_dropout "--dropout must be a number in [0, 1)" -- "$B" "$O" --dropout 1
bad 2 bad_seed "--seed must be an integer >= 0" -- "$B" "$O" --seed -3
"$ATTN" sdpa --help >"$W/help" || fail "--help exited non-zero"
for o in --causal --align --window --scale --softcap --threads --ref --backward --dropout --seed \
         mask kv_len alibi_slopes dout dmask; do
    grep -q -- "$o" "$W/help" || fail "--help does not describe $o"
done

# ---- input errors: exit 1 -------------------------------------------------------
# Checks of shapes, masks and values are the library's (attn_sdpa_forward /
# attn_sdpa_backward): these messages are its own. The CLI checks only what a
# file adds: tensor names, dtype conversion, the 3-D convention and the
# length of arrays the API takes as pointers (kv_len, alibi_slopes).
gen "$W/noq.st" 30 k=F32:1,1,3,4 v=F32:1,1,3,4
gen "$W/qint.st" 31 q=I32:1,1,3,4 k=F32:1,1,3,4 v=F32:1,1,3,4
gen "$W/kshape.st" 32 q=F32:1,2,3,4 k=F32:1,2,3,5 v=F32:1,2,3,4
gen "$W/hkv.st" 33 q=F32:1,3,3,4 k=F32:1,2,3,4 v=F32:1,2,3,4
gen "$W/vshape.st" 34 q=F32:1,2,3,4 k=F32:1,2,3,4 v=F32:1,2,6,4
gen "$W/q2d.st" 35 q=F32:3,4 k=F32:3,4 v=F32:3,4
gen "$W/mshape.st" 37 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 mask=F32:3,4
gen "$W/m3d.st" 45 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 mask=F32:2,3,4
gen "$W/both.st" 58 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 mask=F32:3,5 attn_mask=F32:3,5
gen "$W/typo.st" 59 q=F32:2,2,3,4 k=F32:2,2,5,4 v=F32:2,2,5,4 kv_lens=I32:2:vals=5,4
gen "$W/kpmf.st" 60 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 key_padding_mask=F32:1,5
gen "$W/kpms.st" 61 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 key_padding_mask=BOOL:1,4
gen "$W/mdtype.st" 38 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 mask=I32:3,5
gen "$W/klshape.st" 39 q=F32:2,2,3,4 k=F32:2,2,5,4 v=F32:2,2,5,4 kv_len=I32:3
gen "$W/klrange.st" 40 q=F32:2,2,3,4 k=F32:2,2,5,4 v=F32:2,2,5,4 kv_len=I32:2:vals=5,6
gen "$W/kldtype.st" 41 q=F32:2,2,3,4 k=F32:2,2,5,4 v=F32:2,2,5,4 kv_len=F32:2
gen "$W/alshape.st" 42 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 alibi_slopes=F32:3
gen "$W/mixed.st" 43 q=F32:2,3,4 k=F32:1,2,3,4 v=F32:1,2,3,4
gen "$W/extra.st" 46 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 bias=F32:3,5
gen "$W/kl64big.st" 47 q=F32:2,2,3,4 k=F32:2,2,5,4 v=F32:2,2,5,4 kv_len=I64:2:vals=5,4294967301
gen "$W/doutshape.st" 44 q=F32:1,2,3,4 k=F32:1,2,5,4 v=F32:1,2,5,4 dout=F32:1,2,3,5
bad 1 no_input "cannot open" -- "$W/absent.st" "$O"
# other formats say what they look like (a torch.save .pt is a zip archive)
printf 'PK\003\004\024\000\000\000\010\000archive/data.pkl' >"$W/model.pt"
printf '\223NUMPY\001\000v\000{"descr": "<f4"}' >"$W/q.npy"
printf 'q = [1, 2, 3]\n' >"$W/q.txt"
bad 1 torch_zip "not a safetensors file (looks like a PyTorch zip checkpoint" -- "$W/model.pt" "$O"
bad 1 torch_zip_hint "save with safetensors.torch.save_file" -- "$W/model.pt" "$O"
bad 1 npy "not a safetensors file (looks like a NumPy .npy file" -- "$W/q.npy" "$O"
bad 1 text "not a safetensors file (looks like text)" -- "$W/q.txt" "$O"
bad 1 corrupt "overlaps tensor 'a'" -- "$ATTN_TEST_DATA/safetensors_bad/overlap.safetensors" "$O"
bad 1 truncated "beyond the data section" -- "$ATTN_TEST_DATA/safetensors_bad/truncated_data.safetensors" "$O"
bad 1 missing_q "missing tensor 'q'" -- "$W/noq.st" "$O"
bad 1 q_dtype "tensor 'q' has dtype I32, expected F32" -- "$W/qint.st" "$O"
bad 1 k_shape "q has D=4 but k has D=5" -- "$W/kshape.st" "$O"
bad 1 heads "query heads H=3 are not a multiple of key/value heads Hkv=2" -- "$W/hkv.st" "$O"
bad 1 v_shape "k has S=3 keys but v has 6" -- "$W/vshape.st" "$O"
bad 1 q_rank "tensor 'q' has shape [3, 4], expected 4 dims" -- "$W/q2d.st" "$O"
bad 1 mixed_rank "tensor 'k' has shape [1, 2, 3, 4], expected 3 dims" -- "$W/mixed.st" "$O"
bad 1 mask_shape "mask: shape [1,1,3,4] does not broadcast to [1,2,3,5]" -- "$W/mshape.st" "$O"
bad 1 mask_3d "mask: shape [1,2,3,4] does not broadcast to [1,2,3,5]" -- "$W/m3d.st" "$O"
bad 1 mask_twice "both 'mask' and 'attn_mask' given" -- "$W/both.st" "$O"
bad 1 typo_name "unexpected tensor 'kv_lens' (accepted: q, k, v; optional attn_mask" -- \
    "$W/typo.st" "$O"
bad 1 kpm_dtype "key_padding_mask: dtype must be BOOL or U8 (true = padding)" -- "$W/kpmf.st" "$O"
bad 1 kpm_shape "key_padding_mask: expected [B|1,S] = [1,5]" -- "$W/kpms.st" "$O"
bad 1 mask_dtype "mask: dtype must be F32, BOOL or U8" -- "$W/mdtype.st" "$O"
bad 1 kv_len_shape "tensor 'kv_len' has shape [3], expected [B=2]" -- "$W/klshape.st" "$O"
bad 1 kv_len_range "kv_len[1] = 6 is outside [0, S=5]" -- "$W/klrange.st" "$O"
bad 1 kv_len_dtype "tensor 'kv_len' has dtype F32, expected I32 or I64" -- "$W/kldtype.st" "$O"
bad 1 alibi_shape "tensor 'alibi_slopes' has shape [3], expected [H=2]" -- "$W/alshape.st" "$O"
bad 1 unknown_name "unexpected tensor 'bias'" -- "$W/extra.st" "$O"
bad 1 kv_len_i64 "kv_len[1] = 4294967301 does not fit in 32 bits" -- "$W/kl64big.st" "$O"
bad 1 no_dout "missing tensor 'dout'" -- "$B" "$O" --backward
bad 1 dout_shape "dout: must be [1,2,3,4], got [1,2,3,5]" -- \
    "$W/doutshape.st" "$O" --backward
bad 1 unwritable "cannot create" -- "$B" "$W/no/such/dir/out.st"
[ ! -e "$W/no" ] || fail "unwritable: created a directory"
# a 5-D q: header written by hand (8-byte little-endian length, JSON, data)
hdr='{"q":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}}'
printf "\\x$(printf %02x ${#hdr})\\x00\\x00\\x00\\x00\\x00\\x00\\x00%s\\x00\\x00\\x00\\x00" "$hdr" \
    >"$W/q5d.st"
bad 1 q_5d "tensor 'q' has 5 dims (at most 4)" -- "$W/q5d.st" "$O"
# an existing OUT survives a failed run untouched
echo keep >"$O"
"$ATTN" sdpa "$W/noq.st" "$O" 2>/dev/null
[ "$(cat "$O")" = keep ] || fail "failed run changed an existing OUT"

# issue 10: a dout without --backward would be silently unused
gen "$W/withdout.st" 31 q=F32:1,2,5,4 k=F32:1,2,5,4 v=F32:1,2,5,4 dout=F32:1,2,5,4
bad 1 dout_unused "tensor 'dout' is only used with --backward" -- "$W/withdout.st" "$O"
# --scale 0 is the default 1/sqrt(D), not PyTorch's uniform attention: --help says so
"$ATTN" sdpa --help | grep -q "0 or absent means the default 1/sqrt(D)" ||
    fail "sdpa --help does not say what --scale 0 means"

echo "$ncheck checks, $fails failures"
[ "$fails" -eq 0 ]
