#!/usr/bin/env bash
# Install the build into a temporary prefix, then build and run the consumer
# program in tests/consumer/ against it twice: through CMake's
# find_package(attn) and through pkg-config. Needs ATTN_BUILD and ATTN_SRC
# (set by ctest).
set -euo pipefail
: "${ATTN_BUILD:?set ATTN_BUILD to the build directory}"
: "${ATTN_SRC:?set ATTN_SRC to the source directory}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

fail() { echo "test_install: $*" >&2; exit 1; }

cmake --install "$ATTN_BUILD" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
[ -f "$prefix/include/attn/attn.h" ] || fail "attn/attn.h not installed"

# A sanitized build installs a sanitized library: the consumer must link the
# same runtime.
flags=""
if grep -q '^ATTN_SANITIZE:BOOL=ON' "$ATTN_BUILD/CMakeCache.txt" 2>/dev/null; then
    flags="-fsanitize=address,undefined"
fi

# 1. CMake: find_package(attn) with CMAKE_PREFIX_PATH
cmake -S "$ATTN_SRC/tests/consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$flags" \
      -DCMAKE_EXE_LINKER_FLAGS="$flags" >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; fail "configuring the consumer with find_package(attn) failed"; }
cmake --build "$tmp/cmake-build" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; fail "building the consumer with CMake failed"; }
"$tmp/cmake-build/consumer" || fail "the CMake-built consumer gave a wrong result"

# 2. pkg-config: PKG_CONFIG_PATH=<prefix>/<libdir>/pkgconfig
pc=$(find "$prefix" -name attn.pc | head -n 1)
[ -n "$pc" ] || fail "attn.pc not installed"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir attn)
static=""
[ -e "$libdir/libattn.so" ] || static="--static" # a static libattn needs Libs.private
cflags=$(pkg-config --cflags attn) || fail "pkg-config --cflags attn failed"
# shellcheck disable=SC2086
libs=$(pkg-config $static --libs attn) || fail "pkg-config --libs attn failed"
case "$libdir" in
    "$prefix"/*) ;;
    *) fail "attn.pc points at $libdir, not into the install prefix $prefix" ;;
esac
# shellcheck disable=SC2086
cc -std=c11 $flags $cflags "$ATTN_SRC/tests/consumer/main.c" -o "$tmp/consumer-pc" $libs -lm \
   -Wl,-rpath,"$libdir" || fail "building the consumer with pkg-config flags failed"
"$tmp/consumer-pc" || fail "the pkg-config-built consumer gave a wrong result"

# 3. the shared library exports the public API only: every defined dynamic
# symbol is attn_<lowercase>... (attn__name is internal, anything else leaked)
if [ -z "$static" ]; then
    so=$(readlink -f "$libdir/libattn.so")
    syms=$(nm -D --defined-only "$so" | awk '{print $NF}') || fail "nm -D $so failed"
    [ -n "$syms" ] || fail "$so exports nothing"
    printf '%s\n' "$syms" | grep -q '^attn_sdpa_forward$' || fail "$so does not export attn_sdpa_forward"
    leaked=$(printf '%s\n' "$syms" | grep -v '^attn_[a-z]' || true)
    [ -z "$leaked" ] || fail "$so exports symbols outside the public API: $(echo $leaked)"
    echo "test_install: $(printf '%s\n' "$syms" | wc -l) exported symbols, all attn_[a-z]*"
fi
# 4. the installed attn runs from its prefix: no LD_LIBRARY_PATH, no
# ldconfig (RUNPATH $ORIGIN/../lib), and it computes
bin="$prefix/bin/attn"
[ -x "$bin" ] || fail "bin/attn not installed"
if [ -z "$static" ]; then
    # (outputs captured first: grep -q closing the pipe early would fail it under pipefail)
    dyn=$(readelf -d "$bin")
    grep -q 'R.*PATH.*\$ORIGIN/\.\./' <<<"$dyn" ||
        fail "bin/attn has no \$ORIGIN-relative RUNPATH: $(grep PATH <<<"$dyn")"
    deps=$(env -u LD_LIBRARY_PATH ldd "$bin")
    grep -qF "=> $prefix/" <<<"$(grep libattn <<<"$deps")" ||
        fail "bin/attn does not resolve libattn.so inside the prefix: $(grep attn <<<"$deps")"
fi
env -u LD_LIBRARY_PATH "$bin" --help >/dev/null || fail "the installed attn --help failed"
"$ATTN_BUILD/tests/tools/st_tool" gen "$tmp/in.st" 1 q=F32:1,2,5,8 k=F32:1,2,7,8 v=F32:1,2,7,8 ||
    fail "st_tool gen failed"
env -u LD_LIBRARY_PATH "$bin" sdpa "$tmp/in.st" "$tmp/out.st" --causal ||
    fail "the installed attn sdpa failed"
[ -s "$tmp/out.st" ] || fail "the installed attn sdpa wrote nothing"

# 5. the static library is installed too, and a program links it alone
if [ -z "$static" ]; then
    [ -f "$libdir/libattn.a" ] || fail "libattn.a not installed in $libdir"
    # shellcheck disable=SC2086
    cc -std=c11 $flags $cflags "$ATTN_SRC/tests/consumer/main.c" -o "$tmp/consumer-static" \
        "$libdir/libattn.a" $(pkg-config --static --libs-only-l attn | sed 's/-lattn//') -lm \
        -fopenmp || fail "linking the consumer against libattn.a failed"
    deps=$(ldd "$tmp/consumer-static")
    grep -q libattn <<<"$deps" && fail "the static consumer still needs libattn.so"
    "$tmp/consumer-static" || fail "the statically linked consumer gave a wrong result"
fi
echo "test_install: ok (find_package, pkg-config, static, the installed attn)"
