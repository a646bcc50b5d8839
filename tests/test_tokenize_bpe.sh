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

# every fixture text without NUL, CR or LF bytes (they cannot be lines of
# stdin): HF's ids with special tokens (column 4 of cases.txt), one process
# per tokenizer reading the texts from stdin
n=0
for name in gpt2 gpt2_prefix llama3 qwen2 gpt2_added; do
    : > "$tmp/texts" && : > "$tmp/want"
    while IFS=$'\t' read -r tk hex plain special dec; do
        [ "$tk" = "$name" ] || continue
        [ "$hex" = - ] && hex=""
        if printf '%s' "$hex" | grep -qE '^(..)*(00|0a|0d)'; then continue; fi
        printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')\n" >> "$tmp/texts"
        echo "[$( [ "$special" = - ] || printf '%s' "$special" | tr ' ' ',')]" >> "$tmp/want"
        n=$((n + 1))
    done < "$D/cases.txt"
    "$ATTN" tokenize --model "$D/$name" - < "$tmp/texts" > "$tmp/got" 2> "$tmp/err" ||
        { echo "FAIL $name: status $?"; cat "$tmp/err"; fails=$((fails + 1)); }
    if ! cmp -s "$tmp/got" "$tmp/want"; then
        echo "FAIL $name: ids differ from HF's (got, want):"
        diff "$tmp/got" "$tmp/want" | head -20
        fails=$((fails + 1))
    fi
done
[ "$n" -ge 250 ] || { echo "FAIL: only $n fixture texts checked"; fails=$((fails + 1)); }
# some as arguments too
check args-accents '[1310,703,1457,1350,889,1373,1453,1335,904,1455,1378]' 0 -- \
    "$ATTN" tokenize --model "$D/gpt2" "Café naïve über façade jalapeño"

check gpt2-two $'[40,69,353,79,12,279,263,594,1]\n[40,69,353,79,0,87,263,594]' 0 -- \
    "$ATTN" tokenize --model "$D/gpt2" "Hello, world!" "Hello<|endoftext|>world"
# vocab.json + merges.txt alone give the same ids
mkdir "$tmp/files" && cp "$D/gpt2/vocab.json" "$D/gpt2/merges.txt" "$tmp/files/"
check files '[40,69,353,79,12,279,263,594,1]' 0 -- "$ATTN" tokenize --model "$tmp/files" "Hello, world!"
check env '[2000,39,68,352,78,11,278,1930,0]' 0 -- env ATTN_MODEL_DIR="$D/llama3" \
    "$ATTN" tokenize "Hello, world!"
check tokens '["<|begin_of_text|>","H","e","ll","o",","," w","orld","!"]' 0 -- \
    "$ATTN" tokenize --model "$D/llama3" --tokens "Hello, world!"
check max-len '[2000,39,68]' 0 -- "$ATTN" tokenize --model "$D/llama3" --max-len 3 "Hello, world!"
printf 'Hello, world!\n\nHello<|endoftext|>world\n' > "$tmp/in.txt"
check stdin $'[40,69,353,79,12,279,263,594,1]\n[]\n[40,69,353,79,0,87,263,594]' 0 -- \
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
