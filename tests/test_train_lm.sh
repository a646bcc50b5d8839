#!/usr/bin/env bash
# `attn train --task lm` (short runs; the default 10-minute run is measured
# by hand, docs/PERFORMANCE.md): the loss falls, bits per character of the
# model and of xz -9e are printed, the same seed gives the same run, the saved
# directory loads in `attn generate`, bad usage exits 2 and a bad corpus 1
# with no output directory left; with transformers installed, the saved
# directory gives transformers the same held-out bits per character and the
# same greedy continuation.
set -euo pipefail
: "${ATTN:?path of the attn binary}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# the corpus: 40 kB of Debian's fortunes when installed (scripts/setup.sh),
# else generated sentences
src=/usr/share/games/fortunes/computers
if [ -r "$src" ]; then
    head -c 40000 "$src" > "$tmp/corpus.txt"
    echo "corpus: the first 40000 bytes of $src"
else
    awk 'BEGIN { srand(7); split("the cat,a dog,my friend,the old man,our teacher", s, ",");
                 split("sees,likes,finds,calls,follows", v, ",");
                 for (i = 0; i < 1600; i++) printf "%s %s %s.\n", s[int(rand()*5)+1], v[int(rand()*5)+1], s[int(rand()*5)+1] }' > "$tmp/corpus.txt"
    echo "corpus: generated sentences (fortunes not installed)"
fi
args=(--task lm --corpus "$tmp/corpus.txt" --layers 2 --dim 32 --heads 2 --ctx 32 --batch 8
      --steps 400 --log-every 80 --threads 1)
"$ATTN" train "${args[@]}" --seed 3 --out "$tmp/m" > "$tmp/log"
cat "$tmp/log"
[ "$(grep -c '^step ' "$tmp/log")" = 5 ] && ok "progress lines" || bad "progress lines"
grep '^step ' "$tmp/log" | grep -q 'tokens/s.*ETA' && ok "progress shows tokens/s and ETA" || bad "tokens/s, ETA"
awk '/^step/ { l[++n] = $4 } END { exit !(n == 5 && l[5] < l[1] - 0.5) }' "$tmp/log" &&
    ok "the loss falls" || bad "the loss does not fall"
bpc=$(sed -n 's/^model: \([0-9.]*\) bits per character$/\1/p' "$tmp/log")
awk -v b="$bpc" 'BEGIN { exit !(b > 0.5 && b < 6) }' && ok "held-out bits per character: $bpc" ||
    bad "bits per character '$bpc'"
if command -v xz > /dev/null; then
    grep -q '^xz -9e: [0-9.]* bits per character' "$tmp/log" && ok "xz -9e figure printed" || bad "xz figure"
else
    grep -q '^xz -9e: not available' "$tmp/log" && ok "xz missing: said so" || bad "xz line"
fi
for f in config.json model.safetensors tokenizer.json; do
    [ -s "$tmp/m/$f" ] || bad "missing $f"
done
# the same seed gives the same run (timings aside); another seed another run
strip() { sed -e 's/  lr.*$//' -e '/^trained/d' -e '/^timing/d' -e '/^saved/d' "$1"; }
"$ATTN" train "${args[@]}" --seed 3 > "$tmp/log2"
[ "$(strip "$tmp/log")" = "$(strip "$tmp/log2")" ] && ok "reproducible" || bad "two runs with seed 3 differ"
"$ATTN" train "${args[@]}" --seed 4 > "$tmp/log3"
[ "$(strip "$tmp/log")" != "$(strip "$tmp/log3")" ] && ok "another seed, another run" || bad "seed ignored"
# the saved directory generates
rc=0; "$ATTN" generate --model "$tmp/m" --prompt "The " --max-new-tokens 24 --temperature 0 \
    > "$tmp/gen" 2> "$tmp/gen.err" || rc=$?
[ "$rc" = 0 ] && [ -s "$tmp/gen" ] && ok "attn generate loads it: '$(head -c 24 "$tmp/gen" | tr '\n' ' ')'" ||
    bad "attn generate: rc $rc $(cat "$tmp/gen.err")"

# bad usage: exit 2, nothing written
expect() { # want-rc pattern args...
    local want=$1 pat=$2; shift 2
    rm -rf "$tmp/o"
    local rc=0; "$ATTN" train "$@" --out "$tmp/o" > "$tmp/out" 2> "$tmp/err" || rc=$?
    if [ "$rc" = "$want" ] && grep -q "$pat" "$tmp/err" && [ ! -e "$tmp/o" ] && [ ! -s "$tmp/out" ]; then
        ok "exit $want: $(head -1 "$tmp/err")"
    else
        bad "want exit $want /$pat/ for $*: rc $rc, $(cat "$tmp/err")"
    fi
}
expect 2 "needs --corpus" --task lm
expect 2 "not supported" --task lm --corpus "$tmp/corpus.txt" --tokenizer bpe
expect 2 "not divisible" --task lm --corpus "$tmp/corpus.txt" --dim 30 --heads 4
expect 2 "ctx" --task lm --corpus "$tmp/corpus.txt" --ctx 0
rc=0; "$ATTN" train --task nope > "$tmp/out" 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && grep -q "known: recall, digits, caption, lm" "$tmp/err" && ok "unknown task lists every task" || bad "unknown task: $rc"
expect 1 "cannot read" --task lm --corpus "$tmp/missing.txt"
printf 'too short for a window\n' > "$tmp/small.txt"
expect 1 "less than one context window" --task lm --corpus "$tmp/small.txt" --ctx 32
: > "$tmp/empty.txt"
expect 1 "less than one context window" --task lm --corpus "$tmp/empty.txt"

if ! python3 -c "import transformers, torch" 2> /dev/null; then
    echo "transformers or torch missing: the parity with transformers is not checked"
    [ "$fails" = 0 ] || exit 1
    exit 77
fi
if python3 "$ATTN_SRC/tests/lm_hf_check.py" "$tmp/m" "$tmp/corpus.txt" 32 "$bpc" "The " 24 "$tmp/gen"; then
    ok "transformers loads the saved directory: same bits per character and greedy text"
else
    bad "parity with transformers"
fi
[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
