#!/usr/bin/env bash
# attn tokenize on byte-level BPE model directories (tests/data/bpe, made by
# scripts/make_bpe_fixtures.py): the ids Hugging Face gives (with special
# tokens) for every fixture text that can be an argument, --tokens,
# --max-len, stdin, and the errors.
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?tests/data}"
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
D="$ATTN_TEST_DATA/bpe"
unset ATTN_MODEL_DIR

check() {  # check NAME EXPECTED-STDOUT EXPECTED-STATUS -- COMMAND...
    local name=$1 want=$2 want_rc=$3
    shift 4
    local got rc
    got=$("$@" 2>"$tmp/err")
    rc=$?
    if [ "$got" != "$want" ] || [ "$rc" != "$want_rc" ]; then
        echo "FAIL $name: status $rc (want $want_rc)"
        echo "  got:  $got"
        echo "  want: $want"
        sed 's/^/  stderr: /' "$tmp/err"
        fails=$((fails + 1))
    fi
}
err_has() {  # err_has NAME TEXT: the last command's stderr mentions TEXT
    if ! grep -qF -- "$2" "$tmp/err"; then
        echo "FAIL $1: stderr lacks '$2':"
        sed 's/^/  /' "$tmp/err"
        fails=$((fails + 1))
    fi
}

# every fixture text without NUL, CR or LF bytes (they cannot be arguments or
# survive $(...)): HF's ids with special tokens (column 4 of cases.txt)
n=0
while IFS=$'\t' read -r name hex plain special dec; do
    case "$name" in gpt2|gpt2_prefix|llama3|qwen2) ;; *) continue ;; esac
    [ "$hex" = - ] && hex=""
    if printf '%s' "$hex" | grep -qE '^(..)*(00|0a|0d)'; then continue; fi
    text=$(printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')")
    want="[$( [ "$special" = - ] || printf '%s' "$special" | tr ' ' ',')]"
    check "$name:$hex" "$want" 0 -- "$ATTN" tokenize --model "$D/$name" -- "$text"
    n=$((n + 1))
done < "$D/cases.txt"
[ "$n" -ge 150 ] || { echo "FAIL: only $n fixture texts checked"; fails=$((fails + 1)); }

check gpt2-two $'[40,305,318,12,287,274,76,68,1]\n[40,305,318,0,87,274,76,68]' 0 -- \
    "$ATTN" tokenize --model "$D/gpt2" "Hello, world!" "Hello<|endoftext|>world"
# vocab.json + merges.txt alone give the same ids
mkdir "$tmp/files" && cp "$D/gpt2/vocab.json" "$D/gpt2/merges.txt" "$tmp/files/"
check files '[40,305,318,12,287,274,76,68,1]' 0 -- "$ATTN" tokenize --model "$tmp/files" "Hello, world!"
check env '[2000,39,302,315,11,285,272,1835,0]' 0 -- env ATTN_MODEL_DIR="$D/llama3" \
    "$ATTN" tokenize "Hello, world!"
check tokens '["<|begin_of_text|>","H","el","lo",","," w","or","ld","!"]' 0 -- \
    "$ATTN" tokenize --model "$D/llama3" --tokens "Hello, world!"
check max-len '[2000,39,302]' 0 -- "$ATTN" tokenize --model "$D/llama3" --max-len 3 "Hello, world!"
printf 'Hello, world!\n\nHello<|endoftext|>world\n' > "$tmp/in.txt"
check stdin $'[40,305,318,12,287,274,76,68,1]\n[]\n[40,305,318,0,87,274,76,68]' 0 -- \
    sh -c "\"$ATTN\" tokenize --model \"$D/gpt2\" - < \"$tmp/in.txt\""

# errors: nothing on stdout, a message naming the problem
check bad-utf8 '' 1 -- "$ATTN" tokenize --model "$D/gpt2" "fine" "$(printf 'ab\377')"
err_has bad-utf8 "byte offset 2"
err_has bad-utf8 "text 2"
mkdir "$tmp/bad"
sed 's/p{N}{1,3}/p{N}{1,4}/' "$D/llama3/tokenizer.json" > "$tmp/bad/tokenizer.json"
check bad-regex '' 1 -- "$ATTN" tokenize --model "$tmp/bad" x
err_has bad-regex "unsupported Split regex"
echo '{"model": {"type": "WordPiece", "vocab": {}}}' > "$tmp/bad/tokenizer.json"
check wordpiece-json '' 1 -- "$ATTN" tokenize --model "$tmp/bad" x
err_has wordpiece-json 'model type "WordPiece" is not BPE'
echo '{"a": 0}' > "$tmp/files/vocab.json" && rm "$tmp/files/merges.txt"
check no-merges '' 1 -- "$ATTN" tokenize --model "$tmp/files" x
err_has no-merges "merges.txt"
# a BERT directory (vocab.txt) still gets WordPiece
check bert '[101,7592,1010,2088,999,102]' 0 -- "$ATTN" tokenize --model "$ATTN_TEST_DATA/tokenizer" "Hello, world!"

[ "$fails" = 0 ] && echo "all attn tokenize (BPE) checks passed ($n fixture texts)"
exit $((fails > 0))
