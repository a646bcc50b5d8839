#!/usr/bin/env bash
# attn sdpa with global tokens (Longformer): from --global-tokens LIST and
# from a 'global_tokens' tensor in the input file, with a window, causal and
# kv_len, forward and backward, against the float64 reference (--ref) with
# the project tolerance (st_tool check); the option equals the same tokens
# given as a tensor, bitwise; global tokens change the result; every bad
# list or tensor gets its exit status and message and writes nothing.
# Needs ATTN, ATTN_BUILD (tests/tools/st_tool).
set -u
ST="$ATTN_BUILD/tests/tools/st_tool"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_global.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

T=151
QKV="q=F32:2,4,$T,16 k=F32:2,2,$T,16 v=F32:2,2,$T,8"
# shellcheck disable=SC2086
"$ST" gen "$W/in.st" 3 $QKV dout=F32:2,4,$T,8 global_tokens=U8:2,$T:p=0.05 kv_len=I32:2:vals=$T,120 ||
    exit 1
# shellcheck disable=SC2086
"$ST" gen "$W/in_f.st" 3 $QKV global_tokens=U8:2,$T:p=0.05 || exit 1
for opts in "--window 6,6" "--window 6,6 --causal" "--window 3,20 --align bottom-right" ""; do
    for bw in "" "--backward"; do
        f="$W/in_f.st"
        [ -n "$bw" ] && f="$W/in.st"
        # shellcheck disable=SC2086
        "$ATTN" sdpa "$f" "$W/f.st" $opts $bw 2>"$W/err" || { fail "$opts $bw: $(cat "$W/err")"; continue; }
        # shellcheck disable=SC2086
        "$ATTN" sdpa "$f" "$W/r.st" $opts $bw --ref 2>"$W/err" ||
            { fail "--ref $opts $bw: $(cat "$W/err")"; continue; }
        # shellcheck disable=SC2086
        "$ST" check "$f" "$W/r.st" "$W/f.st" $opts >"$W/chk" 2>&1 ||
            fail "global_tokens tensor $opts $bw: $(cat "$W/chk")"
    done
done

# --global-tokens LIST is the same as the tensor of those positions, bitwise
# shellcheck disable=SC2086
"$ST" gen "$W/base.st" 3 $QKV || exit 1
vals=$(python3 -c "
g = {0, 1, 2, 75, $T - 1}
print(','.join('1' if j in g else '0' for j in range($T)))")
# shellcheck disable=SC2086
"$ST" gen "$W/tens.st" 3 $QKV "global_tokens=U8:$T:vals=$vals" || exit 1
"$ATTN" sdpa "$W/base.st" "$W/a.st" --window 5,5 --global-tokens 0-2,75,$((T - 1)) 2>"$W/err" ||
    fail "--global-tokens: $(cat "$W/err")"
"$ATTN" sdpa "$W/tens.st" "$W/b.st" --window 5,5 2>"$W/err" || fail "tensor: $(cat "$W/err")"
"$ST" equal "$W/a.st" "$W/b.st" >/dev/null || fail "--global-tokens differs from the same tensor"
"$ATTN" sdpa "$W/tens.st" "$W/r.st" --window 5,5 --ref 2>/dev/null
"$ST" check "$W/tens.st" "$W/r.st" "$W/b.st" --window 5,5 >"$W/chk" 2>&1 ||
    fail "--global-tokens vs --ref: $(cat "$W/chk")"
# and they matter: the window alone gives another answer
"$ATTN" sdpa "$W/base.st" "$W/c.st" --window 5,5 2>/dev/null
"$ST" equal "$W/a.st" "$W/c.st" >/dev/null 2>&1 && fail "--global-tokens changed nothing"
# every token global = no window at all (dense), up to rounding
"$ATTN" sdpa "$W/base.st" "$W/a.st" --window 5,5 --global-tokens 0-$((T - 1)) 2>/dev/null
"$ATTN" sdpa "$W/base.st" "$W/r.st" --ref 2>/dev/null
"$ST" check "$W/base.st" "$W/r.st" "$W/a.st" >"$W/chk" 2>&1 ||
    fail "all global vs dense --ref: $(cat "$W/chk")"

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
bad 2 "empty list" "$W/base.st" "$W/o.st" --global-tokens ""
bad 2 "empty item" "$W/base.st" "$W/o.st" --global-tokens ","
bad 2 "empty item" "$W/base.st" "$W/o.st" --global-tokens 1,,2
bad 2 "empty item" "$W/base.st" "$W/o.st" --global-tokens 1,
bad 2 "empty item" "$W/base.st" "$W/o.st" --global-tokens ,1
# hostile: a 100000-digit number, a 20000-item list past S
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens "$(printf '9%.0s' $(seq 100000))"
bad 2 "is outside [0, S=$T)" "$W/base.st" "$W/o.st" --global-tokens "$(seq -s, 0 19999)"
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens 0-2-3
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens " 1"
# every index listed one by one is accepted (a long list is fine)
"$ATTN" sdpa "$W/base.st" "$W/a.st" --window 5,5 --global-tokens "$(seq -s, 0 $((T - 1)))" 2>"$W/err" ||
    fail "a list of every index: $(cat "$W/err")"
"$ATTN" sdpa "$W/base.st" "$W/b.st" --window 5,5 --global-tokens 0-$((T - 1)) 2>/dev/null
"$ST" equal "$W/a.st" "$W/b.st" >/dev/null || fail "0,1,...,S-1 differs from 0-(S-1)"
bad 2 "strictly increasing" "$W/base.st" "$W/o.st" --global-tokens 5,3
bad 2 "strictly increasing" "$W/base.st" "$W/o.st" --global-tokens 3,3
bad 2 "strictly increasing" "$W/base.st" "$W/o.st" --global-tokens 0-10,10
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens 4-2
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens -1
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens 1,x
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens 1-
bad 2 "is not an index or a range" "$W/base.st" "$W/o.st" --global-tokens 99999999999
bad 2 "index $T is outside [0, S=$T)" "$W/base.st" "$W/o.st" --global-tokens 0,$T
bad 2 "both --global-tokens and a 'global_tokens' tensor" "$W/tens.st" "$W/o.st" --global-tokens 0
# shellcheck disable=SC2086
"$ST" gen "$W/badt.st" 3 $QKV global_tokens=F32:$T || exit 1
bad 1 "global_tokens: dtype must be BOOL or U8" "$W/badt.st" "$W/o.st"
# shellcheck disable=SC2086
"$ST" gen "$W/bads.st" 3 $QKV global_tokens=U8:2,$((T + 1)) || exit 1
bad 1 "global_tokens: expected [B|1,S]" "$W/bads.st" "$W/o.st"
# shellcheck disable=SC2086
"$ST" gen "$W/bads3.st" 3 $QKV global_tokens=U8:2,1,$T || exit 1
bad 1 "global_tokens: expected [B|1,S]" "$W/bads3.st" "$W/o.st"
echo "test_cli_global: $fails failure(s)"
[ "$fails" = 0 ]
