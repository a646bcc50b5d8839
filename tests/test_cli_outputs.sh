#!/usr/bin/env bash
# Where outputs go (issue 10): the output-file rule of io.h
# (attn_outfile_open) for every writer, a lost output reported as a failure,
# an output that is the input refused. Each check names the defect it
# guards against. Needs ATTN, ATTN_BUILD (tests/tools/st_tool), ATTN_SRC.
set -u
: "${ATTN:?path of the attn binary}"
ST="$ATTN_BUILD/tests/tools/st_tool"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_cli_outputs.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
pass() { echo "ok    $*"; }

# status CMD...: run, stderr in $W/err, print the exit status
status() {
    "$@" 2>"$W/err" >"$W/stdout"
    echo $?
}

"$ST" gen "$W/ok.st" 1 q=F32:1,2,5,4 k=F32:1,2,5,4 v=F32:1,2,5,4 || { echo "st_tool gen failed" >&2; exit 1; }
"$ATTN" sdpa "$W/ok.st" "$W/ref.st" || { echo "attn sdpa failed" >&2; exit 1; }
size=$(stat -c %s "$W/ref.st")

# a FIFO output is written through (a reader gets the file), never replaced
mkfifo "$W/fifo"
timeout 20 cat "$W/fifo" >"$W/from_fifo" &
reader=$!
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/fifo")
wait "$reader"
if [ "$rc" = 0 ] && [ -p "$W/fifo" ] && cmp -s "$W/from_fifo" "$W/ref.st"; then
    pass "FIFO written through and still a FIFO"
else
    fail "FIFO output: exit $rc, $(stat -c %F "$W/fifo"), $(cat "$W/err")"
fi

# a character device is written through: /dev/null stays /dev/null. A
# device node of our own where we may create one (root), else /dev/null
# itself, which only root could have replaced.
dev=/dev/null
if mknod "$W/null" c 1 3 2>/dev/null; then dev="$W/null"; fi
rc=$(status "$ATTN" sdpa "$W/ok.st" "$dev")
if [ "$rc" = 0 ] && [ -c "$dev" ] && [ "$(stat -c %s "$dev")" = 0 ]; then
    pass "character device $dev written through and still a device"
else
    fail "device output $dev: exit $rc, $(stat -c %F "$dev"), $(cat "$W/err")"
fi

# a full device: the write fails, so the command fails (exit 1, a message).
# Our own node where we can make one: a broken build run as root must not
# replace the system's /dev/full (it did, before the fix).
full=/dev/full
if mknod "$W/full" c 1 7 2>/dev/null; then full="$W/full"; fi
for args in "sdpa $W/ok.st $full"; do
    # shellcheck disable=SC2086
    rc=$(status "$ATTN" $args)
    if [ "$rc" = 1 ] && grep -q "^attn: error: .*$full" "$W/err"; then
        pass "attn $args: exit 1"
    else
        fail "attn $args: exit $rc, want 1 ($(cat "$W/err"))"
    fi
done

# a symbolic link is followed: the target gets the file, the link stays
echo old >"$W/target.st"
ln -s target.st "$W/link.st"
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/link.st")
if [ "$rc" = 0 ] && [ -L "$W/link.st" ] && cmp -s "$W/target.st" "$W/ref.st"; then
    pass "symlink followed, link kept"
else
    fail "symlink output: exit $rc, $(cat "$W/err")"
fi
# ... and a link to nothing is refused, nothing created
ln -s nowhere.st "$W/dangling.st"
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/dangling.st")
if [ "$rc" = 1 ] && [ ! -e "$W/nowhere.st" ] && grep -q "symbolic link" "$W/err"; then
    pass "dangling symlink refused"
else
    fail "dangling symlink: exit $rc, $(cat "$W/err")"
fi

# a read-only file is respected (root included: no write bit)
echo keep >"$W/ro.st"
chmod 444 "$W/ro.st"
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/ro.st")
if [ "$rc" = 1 ] && [ "$(cat "$W/ro.st")" = keep ] && grep -q "read-only" "$W/err"; then
    pass "read-only file refused and kept"
else
    fail "read-only output: exit $rc, content '$(head -c 20 "$W/ro.st")', $(cat "$W/err")"
fi
# a replaced file keeps its permission bits
echo old >"$W/perm.st"
chmod 640 "$W/perm.st"
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/perm.st")
if [ "$rc" = 0 ] && [ "$(stat -c %a "$W/perm.st")" = 640 ] && cmp -s "$W/perm.st" "$W/ref.st"; then
    pass "replaced file keeps mode 640"
else
    fail "mode after replace: exit $rc, $(stat -c %a "$W/perm.st")"
fi

# a directory is refused
mkdir "$W/dir.st"
rc=$(status "$ATTN" sdpa "$W/ok.st" "$W/dir.st")
[ "$rc" = 1 ] && grep -q "directory" "$W/err" && pass "directory refused" ||
    fail "directory output: exit $rc, $(cat "$W/err")"

# the output is the input (by name, through a link, through a hard link):
# bad usage, the input untouched
cp "$W/ok.st" "$W/in.st"
ln -s in.st "$W/in_link.st"
ln "$W/in.st" "$W/in_hard.st"
for out in "$W/in.st" "$W/in_link.st" "$W/in_hard.st"; do
    rc=$(status "$ATTN" sdpa "$W/in.st" "$out")
    if [ "$rc" = 2 ] && cmp -s "$W/in.st" "$W/ok.st" && grep -q "is the input" "$W/err"; then
        pass "sdpa output == input ($(basename "$out")) refused"
    else
        fail "sdpa output == input ($out): exit $rc, $(cat "$W/err")"
    fi
done

# '-' as a safetensors output: bad usage, no file named '-'
A=$(readlink -f "$ATTN"); (cd "$W" && "$A" sdpa ok.st - 2>err >/dev/null)
rc=$?
if [ "$rc" = 2 ] && [ ! -e "$W/-" ]; then pass "sdpa OUT '-' refused"; else fail "sdpa OUT '-': exit $rc"; fi

# no temporary file left anywhere
if ls -a "$W" | grep -q '\.tmp-'; then fail "a temporary file was left behind: $(ls -a "$W")"; fi

# the same rule through the library for every writer: embed and its exports
python3 "${ATTN_SRC:?}/tests/fixtures/tiny_bert.py" "$W/m" >/dev/null
M="$W/m/f32"
for args in "embed --model $M hello" "similarity --model $M hello world" \
    "embed --model $M --format npy --output $full hello" \
    "embed --model $M --format safetensors --output $full hello" \
    "embed --model $M --show-attention --format json --output $full hello" \
    "tokenize --model $M hello"; do
    # shellcheck disable=SC2086
    "$ATTN" $args >"$full" 2>"$W/err"
    rc=$?
    if [ "$rc" = 1 ] && grep -q "^attn: error: " "$W/err"; then
        pass "attn $args > $full: exit 1"
    else
        fail "attn $args > $full: exit $rc, want 1 ($(cat "$W/err"))"
    fi
done
printf 'a\nb\n' >"$W/texts.txt"
rc=$(status "$ATTN" embed --model "$M" --input "$W/texts.txt" --output "$W/texts.txt")
if [ "$rc" = 2 ] && [ "$(cat "$W/texts.txt")" = "$(printf 'a\nb')" ]; then
    pass "embed --output == --input refused"
else
    fail "embed --output == --input: exit $rc, $(cat "$W/err")"
fi
mkfifo "$W/efifo"
timeout 20 cat "$W/efifo" >"$W/from_efifo" &
reader=$!
rc=$(status "$ATTN" embed --model "$M" --format npy --output "$W/efifo" hello)
wait "$reader"
if [ "$rc" = 0 ] && [ -p "$W/efifo" ] && head -c 6 "$W/from_efifo" | grep -q NUMPY; then
    pass "embed --output FIFO written through"
else
    fail "embed --output FIFO: exit $rc, $(cat "$W/err")"
fi

# embed streams jsonl: rows of the first 1024 lines come out while the input
# is still open (before, everything was read first: 3M lines held 3.5 GB)
mkfifo "$W/feed"
(
    for i in $(seq 1 1100); do echo "hello $i"; done
    exec sleep 30 # keep the input open
) >"$W/feed" &
feeder=$!
timeout 60 "$ATTN" embed --model "$M" --threads 1 --id line --input "$W/feed" >"$W/stream.out" &
embedder=$!
rows=0
for _ in $(seq 1 200); do
    rows=$(wc -l <"$W/stream.out")
    [ "$rows" -ge 900 ] && break
    sleep 0.1
done
kill "$feeder" 2>/dev/null
wait "$embedder"
rc=$?
if [ "$rows" -ge 900 ] && [ "$rc" = 0 ] && [ "$(wc -l <"$W/stream.out")" = 1100 ] &&
    [ "$(tail -n 1 "$W/stream.out" | cut -c1-12)" = '{"id": 1100,' ]; then
    pass "embed streams: $rows rows out while the input was open, 1100 in all"
else
    fail "embed streaming: $rows rows before the input ended, exit $rc, $(wc -l <"$W/stream.out") rows"
fi

[ "$fails" = 0 ] || { echo "$fails failure(s)" >&2; exit 1; }
echo "all output checks passed"
