#!/usr/bin/env bash
# The examples work as documented: examples/*.c (built by CMake against the
# public API) run and pass their own checks; README's C program is
# examples/attention.c word for word and compiles as written against the
# headers and library; examples/search.sh embeds a file and searches it
# (with a tiny model, tests/fixtures/tiny_bert.py).
set -euo pipefail
: "${ATTN:?}" "${ATTN_SRC:?}" "${ATTN_BUILD:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for src in "$ATTN_SRC"/examples/*.c; do
    name=$(basename "$src" .c)
    "$ATTN_BUILD/examples/$name" > "$tmp/$name.out" || fail "examples/$name.c failed: $(cat "$tmp/$name.out")"
    echo "ok    examples/$name.c: $(tail -n 1 "$tmp/$name.out")"
done

# README's C block, extracted as a user would copy it
awk '/^```c$/ {on = 1; n++; next} /^```$/ {on = 0} on && n == 1' "$ATTN_SRC/README.md" > "$tmp/readme.c"
cmp -s "$tmp/readme.c" "$ATTN_SRC/examples/attention.c" ||
    fail "README's C program differs from examples/attention.c: $(diff "$tmp/readme.c" "$ATTN_SRC/examples/attention.c" | head)"
lib=$(dirname "$(find "$ATTN_BUILD" -maxdepth 1 -name 'libattn.so' -o -maxdepth 1 -name 'libattn.a' | head -n 1)")
flags=""
grep -q '^ATTN_SANITIZE:BOOL=ON' "$ATTN_BUILD/CMakeCache.txt" && flags="-fsanitize=address,undefined"
# shellcheck disable=SC2086
cc -std=c11 -Wall -Werror $flags -I"$ATTN_SRC/include" "$tmp/readme.c" -o "$tmp/readme" \
    -L"$lib" -lattn -lm -Wl,-rpath,"$lib" -fopenmp -ljansson -lutf8proc -ldnnl ||
    fail "README's C program does not compile as written"
"$tmp/readme" > /dev/null || fail "README's C program failed"
echo "ok    README's C program compiles as written and runs"

# embed a file and search it
python3 "$ATTN_SRC/tests/fixtures/tiny_bert.py" "$tmp/models"
printf 'hello world\nworlds\nhello\nhello worlds.\n' > "$tmp/corpus.txt"
ATTN_MODEL_DIR="$tmp/models/f32" OUT_DIR="$tmp" bash "$ATTN_SRC/examples/search.sh" \
    "$tmp/corpus.txt" "hello worlds" 2 > "$tmp/search.out" || fail "examples/search.sh failed"
grep -q '^   1 ' "$tmp/search.out" && [ -s "$tmp/embeddings.npy" ] && [ -s "$tmp/results.json" ] ||
    fail "examples/search.sh output: $(cat "$tmp/search.out")"
echo "ok    examples/search.sh"
