#!/usr/bin/env bash
# attn generate --weights f32|bf16: bf16 weights generate (one prompt, a
# batch, text and ids, GPT-2 and Llama fixtures), f32 is the default, and
# bad values are usage errors (status 2) naming the option, with no output.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?tests/data}"
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# run NAME WANT-STATUS -- COMMAND...: stdout to $tmp/out, stderr to $tmp/err
run() {
    local name=$1 want=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ "$rc" != "$want" ]; then
        fail "$name: status $rc (want $want)"
        sed 's/^/  stderr: /' "$tmp/err"
    fi
}
err_has() {
    grep -qF -- "$2" "$tmp/err" || { fail "$1: stderr lacks '$2':"; sed 's/^/  /' "$tmp/err"; }
}

for dir in "$ATTN_TEST_DATA/gpt2-tiny" "$ATTN_TEST_DATA/llama-tiny"; do
    pids=$(head -n 1 "$dir/generate.tsv" | cut -f 2)
    pids=${pids// /,}
    common=(generate --model "$dir" --prompt-ids "$pids" --temperature 0 --max-new-tokens 64
        --ignore-eos --ids)
    run "default $dir" 0 -- "$ATTN" "${common[@]}"
    cp "$tmp/out" "$tmp/default"
    run "f32 $dir" 0 -- "$ATTN" "${common[@]}" --weights f32
    cmp -s "$tmp/out" "$tmp/default" || fail "--weights f32 differs from the default ($dir)"
    for t in 1 2; do
        run "bf16 $dir threads $t" 0 -- "$ATTN" "${common[@]}" --weights=bf16 --threads "$t"
        [ "$(wc -l <"$tmp/out")" = 64 ] || fail "bf16 $dir: $(wc -l <"$tmp/out") ids, want 64"
        grep -qvE '^[0-9]+$' "$tmp/out" && fail "bf16 $dir: a line that is not an id"
        grep -qE 'generated: 64 tokens in .* tokens/s\)$' "$tmp/err" || fail "bf16 $dir: no speed line"
        cp "$tmp/out" "$tmp/bf16_$t"
    done
    cmp -s "$tmp/bf16_1" "$tmp/bf16_2" || fail "bf16 $dir: 1 and 2 threads differ"
done

# text output and a batch with bf16 weights
D="$ATTN_TEST_DATA/gpt2-tiny"
run "bf16 text" 0 -- "$ATTN" generate --model "$D" --prompt "Hello there" --max-new-tokens 8 \
    --seed 3 --weights bf16
[ -s "$tmp/out" ] || fail "bf16 text: no output"
printf 'first prompt\nsecond, longer prompt here\n' >"$tmp/prompts"
run "bf16 batch" 0 -- "$ATTN" generate --model "$D" --batch --input "$tmp/prompts" \
    --temperature 0 --max-new-tokens 6 --ignore-eos --weights bf16
[ "$(wc -l <"$tmp/out")" = 2 ] || fail "bf16 batch: $(wc -l <"$tmp/out") lines, want 2"

# bad values: usage errors naming the option, nothing on stdout
for v in fp16 BF16 "" f32x bf; do
    run "bad --weights '$v'" 2 -- "$ATTN" generate --model "$D" --prompt-ids 1,2 --weights "$v"
    err_has "bad --weights '$v'" "--weights must be f32 or bf16, got '$v'"
    [ -s "$tmp/out" ] && fail "bad --weights '$v': wrote to stdout"
done
run "--weights without value" 2 -- "$ATTN" generate --model "$D" --prompt-ids 1,2 --weights
err_has "--weights without value" "--weights"
# the option belongs to generate: a model that is not a decoder is bad input
run "bf16 on a ViT" 1 -- "$ATTN" generate --model "$ATTN_TEST_DATA/vit-tiny" --prompt-ids 1 \
    --weights bf16
err_has "bf16 on a ViT" "bf16 weights are an option of gpt2 and llama decoders"

[ "$fails" = 0 ] && echo "test_generate_bf16: all passed"
exit $((fails > 0))
