#!/usr/bin/env bash
# Install what attn needs to build and test, on Debian. Idempotent and
# non-interactive: packages already present are not fetched again.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libjansson-dev libutf8proc-dev
      libopenblas-openmp-dev libcmocka-dev python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: system packages present"
