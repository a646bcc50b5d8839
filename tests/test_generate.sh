#!/usr/bin/env bash
# attn generate on the GPT-2 fixture (scripts/make_gpt_fixtures.py): greedy
# tokens and text identical to transformers' generate(), sampling repeatable
# by seed on any thread count, stops, and the errors of bad input.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?tests/data}"
D="$ATTN_TEST_DATA/gpt2-tiny"
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

# greedy: the ids of transformers' generate (generate.tsv: text, prompt ids,
# greedy ids), for the GPT-2 and the Llama fixture
for dir in "$D" "$ATTN_TEST_DATA/llama-tiny"; do
i=0
while IFS=$'\t' read -r text pids gen; do
    run "greedy-ids $dir $i" 0 -- "$ATTN" generate --model "$dir" --prompt-ids "${pids// /,}" \
        --temperature 0 --max-new-tokens 64 --ignore-eos --ids --threads 1
    [ "$(tr '\n' ' ' <"$tmp/out")" = "$gen " ] || fail "greedy-ids $dir $i: $(tr '\n' ' ' <"$tmp/out")"
    grep -qE '^prompt: [0-9]+ tokens in .* tokens/s\); generated: 64 tokens in .* tokens/s\)$' "$tmp/err" ||
        fail "greedy-ids $i: no speed line: $(cat "$tmp/err")"
    i=$((i + 1))
done <"$dir/generate.tsv"
[ "$i" -ge 4 ] || fail "generate.tsv has $i prompts"
done
L="$ATTN_TEST_DATA/llama-tiny"
run llama-text 0 -- "$ATTN" generate --model "$L" --prompt "The quick brown fox" --temperature 0 \
    --max-new-tokens 64 --ignore-eos
{ cat "$L/gen_1.txt"; echo; } | cmp -s - "$tmp/out" || fail "llama-text: $(cat "$tmp/out")"

# greedy text: the prompt's text through the tokenizer, the new tokens
# decoded as transformers' tokenizer decodes them (gen_<i>.txt; the tiny
# model makes invalid UTF-8, printed as U+FFFD), then a newline
i=0
while IFS=$'\t' read -r text pids gen; do
    run "greedy-text $i" 0 -- "$ATTN" generate --model "$D" --prompt "$text" \
        --temperature 0 --max-new-tokens 64 --ignore-eos --threads 2
    { cat "$D/gen_$i.txt"; echo; } | cmp -s - "$tmp/out" || fail "greedy-text $i: $(cat "$tmp/out")"
    printf '%s' "$text" >"$tmp/prompt.txt"
    run "input-file $i" 0 -- "$ATTN" generate --model "$D" --input "$tmp/prompt.txt" \
        --temperature 0 --max-new-tokens 64 --ignore-eos
    { cat "$D/gen_$i.txt"; echo; } | cmp -s - "$tmp/out" || fail "input-file $i"
    i=$((i + 1))
done <"$D/generate.tsv"
printf '%s' "The quick brown fox" | "$ATTN" generate --model "$D" --input - --temperature 0 \
    --max-new-tokens 64 --ignore-eos >"$tmp/out" 2>"$tmp/err" || fail "stdin: $(cat "$tmp/err")"
{ cat "$D/gen_1.txt"; echo; } | cmp -s - "$tmp/out" || fail "stdin text"

# --stop: the text up to the end of the first occurrence, then nothing
stop=$(head -c 40 "$D/gen_1.txt" | tail -c 12)
run stop 0 -- "$ATTN" generate --model "$D" --prompt "The quick brown fox" --temperature 0 \
    --max-new-tokens 64 --ignore-eos --stop "$stop"
full=$(cat "$D/gen_1.txt")
want="${full%%"$stop"*}$stop"
[ "$(cat "$tmp/out")" = "$want" ] || fail "stop: got '$(cat "$tmp/out")' want '$want'"

# --batch: every line of --input a prompt, generated together; each line of
# output the continuation of one prompt (ids, or a JSON string of the text)
for dir in "$D" "$ATTN_TEST_DATA/llama-tiny"; do
    cut -f1 "$dir/generate.tsv" >"$tmp/prompts.txt"
    run "batch-ids $dir" 0 -- "$ATTN" generate --model "$dir" --batch --input "$tmp/prompts.txt" \
        --temperature 0 --ignore-eos --ids
    cut -f3 "$dir/generate.tsv" | cmp -s - "$tmp/out" || fail "batch-ids $dir: $(cat "$tmp/out")"
    grep -q "^batch: 4 prompts, .* 256 new tokens" "$tmp/err" || fail "batch speed line: $(cat "$tmp/err")"
    run "batch-text $dir" 0 -- "$ATTN" generate --model "$dir" --batch --input "$tmp/prompts.txt" \
        --temperature 0 --ignore-eos
    python3 - "$dir" "$tmp/out" <<'PY' || fail "batch-text $dir"
import json, sys
d, out = sys.argv[1], sys.argv[2]
lines = open(out, encoding="utf-8").read().splitlines()
assert len(lines) == 4, lines
for i, line in enumerate(lines):
    want = open(f"{d}/gen_{i}.txt", "rb").read().decode("utf-8")
    assert json.loads(line) == want, (i, line, want)
PY
done
run batch-no-input 2 -- "$ATTN" generate --model "$D" --batch --prompt hi
err_has batch-no-input "--batch"
printf '\n\n' >"$tmp/empty.txt"
run batch-empty 1 -- "$ATTN" generate --model "$D" --batch --input "$tmp/empty.txt"
err_has batch-empty "no prompt"

# sampling: same seed same tokens on 1 and 2 threads; another seed differs
args=(generate --model "$D" --prompt-ids 268,453,485,309 --max-new-tokens 40 --ignore-eos --ids
      --temperature 0.9 --top-k 40 --top-p 0.95)
run seed1 0 -- "$ATTN" "${args[@]}" --seed 5 --threads 1; cp "$tmp/out" "$tmp/s1"
run seed2 0 -- "$ATTN" "${args[@]}" --seed 5 --threads 2; cp "$tmp/out" "$tmp/s2"
run seed3 0 -- "$ATTN" "${args[@]}" --seed 6 --threads 2; cp "$tmp/out" "$tmp/s3"
cmp -s "$tmp/s1" "$tmp/s2" || fail "seed 5: 1 and 2 threads differ"
cmp -s "$tmp/s1" "$tmp/s3" && fail "seeds 5 and 6 gave the same 40 tokens"
[ "$(wc -l <"$tmp/s1")" = 40 ] || fail "seed1: $(wc -l <"$tmp/s1") tokens, want 40"

# stops: max-new-tokens, EOS (the fixture's eos is id 511: a prompt ending in
# it still generates; max-new-tokens 0 prints nothing)
run max3 0 -- "$ATTN" generate --model "$D" --prompt-ids 268 --temperature 0 --max-new-tokens 3 --ids
[ "$(wc -l <"$tmp/out")" = 3 ] || fail "max3: $(wc -l <"$tmp/out") tokens"
run max0 0 -- "$ATTN" generate --model "$D" --prompt-ids 268 --max-new-tokens 0 --ids
[ -s "$tmp/out" ] && fail "max0 printed: $(cat "$tmp/out")"

# bad usage (2) and bad input (1), with messages naming the problem
run no-model 2 -- "$ATTN" generate --prompt-ids 1
err_has no-model "--model"
run two-prompts 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --prompt hi
err_has two-prompts "exactly one"
run top-p0 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --top-p 0
err_has top-p0 "--top-p"
run top-p-big 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --top-p 1.5
err_has top-p-big "--top-p"
run temp-neg 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --temperature -1
err_has temp-neg "--temperature"
run topk-neg 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --top-k -3
run bad-ids 2 -- "$ATTN" generate --model "$D" --prompt-ids 1,,2
err_has bad-ids "--prompt-ids"
run id-range 1 -- "$ATTN" generate --model "$D" --prompt-ids 1,512 --ids
err_has id-range "vocab_size"
run too-many-new 1 -- "$ATTN" generate --model "$D" --prompt-ids 1,2 --max-new-tokens 128 --ids
err_has too-many-new "n_positions = 128"
long=$(seq -s, 1 129)
run long-prompt 1 -- "$ATTN" generate --model "$D" --prompt-ids "$long" --ids
err_has long-prompt "n_positions"
[ -s "$tmp/out" ] && fail "long-prompt printed output"
run no-dir 1 -- "$ATTN" generate --model "$tmp/nothing" --prompt-ids 1
err_has no-dir "config.json"
mkdir "$tmp/other"
sed 's/"gpt2"/"mamba"/' "$D/config.json" >"$tmp/other/config.json"
run other-type 1 -- "$ATTN" generate --model "$tmp/other" --prompt-ids 1
err_has other-type 'model_type "mamba"' 
run no-input 1 -- "$ATTN" generate --model "$D" --input "$tmp/none.txt"
err_has no-input "none.txt"

# a tokenizer with more ids than the model (1500 > vocab_size 512)
mkdir "$tmp/mismatch"
cp "$D/config.json" "$D/model.safetensors" "$tmp/mismatch/"
cp "$ATTN_TEST_DATA/bpe/gpt2/tokenizer.json" "$tmp/mismatch/"
run tok-mismatch 1 -- "$ATTN" generate --model "$tmp/mismatch" --prompt hi
err_has tok-mismatch "vocab_size 512"
# no tokenizer: --prompt-ids and --ids work, text does not
mkdir "$tmp/notok"
cp "$D/config.json" "$D/model.safetensors" "$tmp/notok/"
run notok-ids 0 -- "$ATTN" generate --model "$tmp/notok" --prompt-ids 1,2 --ids --max-new-tokens 2
run notok-text 1 -- "$ATTN" generate --model "$tmp/notok" --prompt hi
err_has notok-text "no tokenizer"
run empty-prompt 1 -- "$ATTN" generate --model "$D" --prompt ""
err_has empty-prompt "empty"
run stop-ids 2 -- "$ATTN" generate --model "$D" --prompt-ids 1 --ids --stop x

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all generate checks passed"
