#!/usr/bin/env bash
# `attn train --task lm` (short runs; the default 10-minute run is measured
# by hand, docs/PERFORMANCE.md), with byte tokens and with --tokenizer bpe:
# the loss falls, bits per character of the model and of xz -9e are printed,
# the same seed gives the same run, the saved directory loads in `attn
# generate`, --dropout P (in config.json, reproducible, off in evaluation),
# bad usage (bad --vocab and --dropout values among it) exits 2 and a bad corpus
# (too small, or not UTF-8 for bpe) 1 with no output directory left; with
# transformers installed, the saved directories give transformers the same
# held-out bits per character and the same greedy continuation, and the BPE
# files give Hugging Face's tokenizers attn's ids (tests/bpe_hf_check.py).
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

# --dropout: in the saved config, reproducible, another run than without it,
# and off when evaluating (the held-out figure is of the model as it is)
dargs=(--task lm --corpus "$tmp/corpus.txt" --layers 1 --dim 16 --heads 2 --ctx 16 --batch 4
       --steps 30 --log-every 10 --threads 1 --seed 5)
"$ATTN" train "${dargs[@]}" --dropout 0.2 --out "$tmp/d" > "$tmp/dlog" || bad "train --dropout"
"$ATTN" train "${dargs[@]}" --dropout 0.2 > "$tmp/dlog2" || bad "train --dropout (again)"
"$ATTN" train "${dargs[@]}" > "$tmp/dlog0" || bad "train without --dropout"
grep -q "dropout 0.2" "$tmp/dlog" && ok "dropout in the header" || bad "no dropout in the header"
[ "$(strip "$tmp/dlog")" = "$(strip "$tmp/dlog2")" ] && ok "dropout run reproducible" ||
    bad "two dropout runs differ"
[ "$(strip "$tmp/dlog")" != "$(strip "$tmp/dlog0")" ] && ok "dropout changes the run" ||
    bad "--dropout ignored"
python3 - "$tmp/d/config.json" <<'PY' && ok "config.json: attn/resid/embd_pdrop 0.2" || bad "pdrop in config.json"
import json, sys
c = json.load(open(sys.argv[1]))
assert all(abs(c[k] - 0.2) < 1e-6 for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop")), c
PY
rc=0; "$ATTN" generate --model "$tmp/d" --prompt "The " --max-new-tokens 8 --temperature 0 \
    > "$tmp/dgen" 2> "$tmp/dgen.err" || rc=$?
rc2=0; "$ATTN" generate --model "$tmp/d" --prompt "The " --max-new-tokens 8 --temperature 0 \
    > "$tmp/dgen2" 2>/dev/null || rc2=$?
[ "$rc$rc2" = 00 ] && cmp -s "$tmp/dgen" "$tmp/dgen2" && ok "the dropout model generates (greedy repeats)" ||
    bad "generate after --dropout: rc $rc $(cat "$tmp/dgen.err")"

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
expect 2 "not supported (char or bpe)" --task lm --corpus "$tmp/corpus.txt" --tokenizer word
expect 2 "vocab" --task lm --corpus "$tmp/corpus.txt" --tokenizer bpe --vocab 255
expect 2 "vocab" --task lm --corpus "$tmp/corpus.txt" --tokenizer bpe --vocab 65537
expect 2 "vocab" --task lm --corpus "$tmp/corpus.txt" --tokenizer bpe --vocab -3
expect 2 "vocab" --task lm --corpus "$tmp/corpus.txt" --tokenizer bpe --vocab 5x
expect 2 "applies to --tokenizer bpe only" --task lm --corpus "$tmp/corpus.txt" --vocab 300
expect 2 "not divisible" --task lm --corpus "$tmp/corpus.txt" --dim 30 --heads 4
expect 2 "ctx" --task lm --corpus "$tmp/corpus.txt" --ctx 0
rc=0; "$ATTN" train --task nope > "$tmp/out" 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && grep -q "known: recall, digits, caption, lm" "$tmp/err" && ok "unknown task lists every task" || bad "unknown task: $rc"
for d in 1 1.5 -0.1 x "" nan 0.5x; do
    expect 2 "dropout" --task lm --corpus "$tmp/corpus.txt" --dropout "$d"
done
expect 1 "cannot read" --task lm --corpus "$tmp/missing.txt"
printf 'too short for a window\n' > "$tmp/small.txt"
expect 1 "less than one context window" --task lm --corpus "$tmp/small.txt" --ctx 32
: > "$tmp/empty.txt"
expect 1 "less than one context window" --task lm --corpus "$tmp/empty.txt"

# --tokenizer bpe: a BPE of 320 ids trained on the training part first
bargs=(--task lm --corpus "$tmp/corpus.txt" --tokenizer bpe --vocab 320 --layers 2 --dim 32
       --heads 2 --ctx 32 --batch 8 --steps 240 --log-every 60 --threads 1)
"$ATTN" train "${bargs[@]}" --seed 3 --out "$tmp/b" > "$tmp/blog"
cat "$tmp/blog"
grep -q '^tokenizer: byte-level BPE of 320 ids trained on the training part' "$tmp/blog" &&
    ok "a BPE of 320 ids" || bad "BPE tokenizer line"
awk '/^tokenizer:/ { for (i = 1; i <= NF; i++) if ($i == "training" && $(i+1) == "tokens") t = $(i-1) }
     END { exit !(t > 0) }' "$tmp/blog" || bad "training token count"
awk '/^step/ { l[++n] = $4 } END { exit !(n == 4 && l[4] < l[1] - 0.5) }' "$tmp/blog" &&
    ok "the BPE model's loss falls" || bad "the BPE model's loss does not fall"
grep -q 'bits/token' "$tmp/blog" && ok "loss in bits per token" || bad "bits/token label"
bbpc=$(sed -n 's/^model: \([0-9.]*\) bits per character$/\1/p' "$tmp/blog")
awk -v b="$bbpc" 'BEGIN { exit !(b > 0.5 && b < 7) }' && ok "BPE held-out bits per character: $bbpc" ||
    bad "BPE bits per character '$bbpc'"
for f in config.json model.safetensors tokenizer.json vocab.json merges.txt; do
    [ -s "$tmp/b/$f" ] || bad "BPE: missing $f"
done
grep -q '"vocab_size": 320' "$tmp/b/config.json" && ok "config vocab_size 320" || bad "config vocab_size"
[ "$(head -1 "$tmp/b/merges.txt")" = "#version: 0.2" ] && [ "$(wc -l < "$tmp/b/merges.txt")" -ge 65 ] &&
    ok "merges.txt: $(($(wc -l < "$tmp/b/merges.txt") - 1)) merges" || bad "merges.txt"
bstrip() { strip "$1" | sed -e 's/, [0-9.]* s with encoding//'; }
"$ATTN" train "${bargs[@]}" --seed 3 > "$tmp/blog2"
[ "$(bstrip "$tmp/blog")" = "$(bstrip "$tmp/blog2")" ] && ok "BPE run reproducible" || bad "two BPE runs differ"
rc=0; "$ATTN" generate --model "$tmp/b" --prompt "The " --max-new-tokens 12 --temperature 0 \
    > "$tmp/bgen" 2> "$tmp/bgen.err" || rc=$?
[ "$rc" = 0 ] && [ -s "$tmp/bgen" ] && ok "attn generate loads the BPE model: '$(head -c 40 "$tmp/bgen" | tr '\n' ' ')'" ||
    bad "attn generate (BPE): rc $rc $(cat "$tmp/bgen.err")"
# BPE needs UTF-8, and enough tokens for one window
{ head -c 2000 "$tmp/corpus.txt"; printf 'bad \377 byte\n'; head -c 2000 "$tmp/corpus.txt"; } > "$tmp/latin1.txt"
expect 1 "not valid UTF-8: bad byte 0xff" --task lm --corpus "$tmp/latin1.txt" --tokenizer bpe --ctx 32
head -c 120 /dev/zero | tr '\0' a > "$tmp/aaa.txt"
expect 1 "BPE tokens, less than one context window" --task lm --corpus "$tmp/aaa.txt" --tokenizer bpe --ctx 32
"$ATTN" train --task lm --corpus "$tmp/latin1.txt" --ctx 32 --steps 2 --log-every 1 --layers 1 --dim 8 --heads 1 > /dev/null &&
    ok "char takes bytes that are not UTF-8" || bad "char on non-UTF-8 bytes"

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
if python3 "$ATTN_SRC/tests/lm_hf_check.py" "$tmp/b" "$tmp/corpus.txt" 32 "$bbpc" "The " 12 "$tmp/bgen"; then
    ok "transformers loads the BPE directory: same bits per character and greedy text"
else
    bad "parity with transformers (BPE)"
fi
if python3 "$ATTN_SRC/tests/bpe_hf_check.py" "$tmp/b" "$tmp/corpus.txt" "$ATTN" "$tmp/blog"; then
    ok "Hugging Face reads the trained BPE with the same ids"
else
    bad "BPE ids differ from Hugging Face's"
fi
[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
