#!/usr/bin/env bash
# attn train --task recall must clearly learn in a short run: held-out accuracy
# far above chance. Default task: 8 key/value pairs, 16 values, so chance is
# 1/16 = 0.0625; we require >= 0.90 after 300 steps (a full default run reaches
# 1.0). Under ATTN_TEST_QUICK (sanitizer build, ~10x slower) a smaller task:
# 4 pairs, 8 values, chance 0.125, required >= 0.80 after 150 steps.
# Also: bad usage exits 2 with a message.
set -u
: "${ATTN:?path of the attn binary}"
fail() { echo "FAIL: $*" >&2; exit 1; }

if [ -n "${ATTN_TEST_QUICK:-}" ] && [ "${ATTN_TEST_QUICK}" != 0 ]; then
    args=(--steps 150 --pairs 4 --keys 8 --values 8 --eval 500); need=0.80; chance=0.125
else
    args=(--steps 300 --eval 1000); need=0.90; chance=0.0625
fi
out=$("$ATTN" train --task recall --seed 3 "${args[@]}" --log-every 50) || fail "attn train exited $?"
echo "$out"
acc=$(printf '%s\n' "$out" | sed -n 's/^accuracy: //p')
[ -n "$acc" ] || fail "no 'accuracy:' line"
awk -v a="$acc" -v n="$need" 'BEGIN { exit !(a >= n) }' ||
    fail "accuracy $acc < $need (chance $chance)"
# the loss is printed as training goes
[ "$(printf '%s\n' "$out" | grep -c '^step .* loss ')" -ge 3 ] || fail "loss not printed"

# bad usage: exit 2, message on stderr
for bad in "" "--task nope" "--task recall --steps -1" "--task recall --dim 30 --heads 4" \
           "--task recall --pairs 20 --keys 8" "--task recall --lr 0" "--task recall --bogus 1"; do
    # shellcheck disable=SC2086
    msg=$("$ATTN" train $bad 2>&1 >/dev/null); rc=$?
    [ "$rc" = 2 ] || fail "'attn train $bad' exited $rc, want 2"
    printf '%s\n' "$msg" | grep -q '^attn: error: ' || fail "'attn train $bad': no error message"
done
echo "ok: accuracy $acc >= $need (chance $chance)"
