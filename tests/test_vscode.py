"""The VS Code extension (clients/vscode): its unit tests, and an end-to-end run in a real
VS Code (code-server) in Debian's Chromium against the real server and the tiny test model.

scripts/test-deps.d/30-vscode.sh installs what these tests need.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTENSION = REPO / "clients" / "vscode"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Where 30-vscode.sh installs Node 24 and code-server; keep in sync with it.
CACHE = Path(os.environ.get("INFILL_TEST_CACHE", Path.home() / ".cache" / "infill-ls-tests"))
NODE24 = CACHE / "node24" / "bin"
CODE_SERVER = CACHE / "code-server" / "node_modules" / ".bin" / "code-server"
CHROMIUM = Path("/usr/bin/chromium")


def run(cmd: list[str], cwd: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command, failing the test with its own output when it fails."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def require(path: Path) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/test-deps.d/30-vscode.sh")


def test_settings_schema_matches_the_server():
    """Every server setting has an `infill.*` setting with the same default, and no more."""
    from infill_ls.settings import Settings

    manifest = json.loads((EXTENSION / "package.json").read_text())
    properties = manifest["contributes"]["configuration"]["properties"]
    server_defaults = {field.name: getattr(Settings(), field.name) for field in dataclasses.fields(Settings)}
    extension_settings = {
        key.removeprefix("infill."): schema for key, schema in properties.items()
        if not key.startswith(("infill.server.", "infill.trace."))
    }
    assert sorted(extension_settings) == sorted(server_defaults)
    for name, schema in extension_settings.items():
        if name == "model":
            assert schema["default"] == "", "empty: the server chooses its default model"
        else:
            default = server_defaults[name]
            assert schema["default"] == (list(default) if isinstance(default, tuple) else default), name


def test_extension_unit_tests():
    require(EXTENSION / "node_modules")
    result = run(["npm", "test"], cwd=EXTENSION, timeout=300)
    assert " passing" in result.stdout and " failing" not in result.stdout, result.stdout


# --- end to end ----------------------------------------------------------------------

ORIGINAL_SOURCE = 'import os\n\n\ndef greet(name):\n    return "Hello, " + name\n\n\n'
# One line, so that VS Code's auto-indentation does not change what was typed.
TYPED = "print(greet("


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"code-server exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"code-server did not answer at {url} within {timeout} s")


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(none)"


def extension_logs(user_data: Path) -> str:
    """The extension's output channel ("infill") and the extension host log, as VS Code wrote them."""
    logs = sorted(user_data.glob("logs/**/*infill*.log")) + sorted(user_data.glob("logs/**/exthost.log"))
    return "\n".join(f"--- {log.relative_to(user_data)}\n{tail(log)}" for log in logs) or "(no extension logs)"


@pytest.fixture(scope="module")
def vsix() -> Path:
    require(EXTENSION / "node_modules")
    run(["npm", "run", "package"], cwd=EXTENSION, timeout=300)
    return EXTENSION / "infill.vsix"


@pytest.mark.slow
def test_ghost_text_in_code_server(tmp_path, tiny_model, vsix):
    for path in (NODE24 / "node", CODE_SERVER, CHROMIUM):
        require(path)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "vscode-ghost-text.png"
    failure_screenshot = ARTIFACTS / "vscode-failure.png"
    for old in (screenshot, failure_screenshot):
        old.unlink(missing_ok=True)

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    source = workspace / "main.py"
    source.write_text(ORIGINAL_SOURCE)
    user_data, extensions = tmp_path / "user-data", tmp_path / "extensions"
    (user_data / "User").mkdir(parents=True)
    (user_data / "User" / "settings.json").write_text(json.dumps({
        # The real server from this checkout, on the tiny model.
        "infill.server.path": sys.executable,
        "infill.server.args": ["-m", "infill_ls", "serve"],
        "infill.model": str(tiny_model),
        "infill.device": "cpu",
        "infill.quantization": "none",  # float32 on the CPU, whatever its instructions (status bar below)
        "infill.logLevel": "debug",
        "infill.trace.server": "messages",
        # A fresh profile opens the Chat panel, which takes the keyboard.
        "chat.disableAIFeatures": True,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "security.workspace.trust.enabled": False,
        "extensions.autoCheckUpdates": False,
        "telemetry.telemetryLevel": "off",
        # No suggest widget: Tab must accept the ghost text, nothing else.
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "editor.autoClosingBrackets": "never",
        "files.autoSave": "off",
    }))
    port = free_port()
    config = tmp_path / "code-server.yaml"
    config.write_text(f"bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n")
    env = {
        **os.environ,
        "PATH": f"{NODE24}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "server"), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    common = ["--config", str(config), "--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    run([str(CODE_SERVER), *common, "--install-extension", str(vsix)], cwd=tmp_path, timeout=120, env=env)

    server_log = tmp_path / "code-server.log"
    with server_log.open("w") as log_file:
        code_server = subprocess.Popen(
            [str(CODE_SERVER), *common, "--disable-telemetry", "--disable-update-check",
             "--disable-workspace-trust", str(workspace)],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", code_server, timeout=60)
        driver = subprocess.run(
            ["node", str(EXTENSION / "test" / "e2e" / "ghostText.mjs"), json.dumps({
                "url": f"http://127.0.0.1:{port}/?folder={workspace}",
                "file": source.name,
                "type": TYPED,
                "model": tiny_model.name,
                "missingServer": str(tmp_path / "no-such-dir" / "infill-ls"),
                "chromium": str(CHROMIUM),
                "screenshot": str(screenshot),
                "failureScreenshot": str(failure_screenshot),
                "timeoutMs": int(os.environ.get("INFILL_E2E_TIMEOUT_MS", 120_000)),
            })],
            cwd=EXTENSION, capture_output=True, text=True, timeout=400,
        )
        if driver.returncode != 0:
            pytest.fail(
                f"the browser test failed (screenshot: {failure_screenshot})\n{driver.stdout}\n{driver.stderr}\n"
                f"--- code-server\n{tail(server_log)}\n{extension_logs(user_data)}"
            )
        print(driver.stderr)
        shown = json.loads(driver.stdout.strip().splitlines()[-1])
        print(f"ghost text screenshot: {screenshot}")
        print(f"status bar when ready: {shown['readyStatus']}; ghost text: {shown['ghostText']!r}")

        # The status bar followed the server: $/progress while loading, then model, precision, device.
        assert any(text.startswith("infill: loading") for text in shown["statusTexts"]), shown["statusTexts"]
        assert shown["readyStatus"] == f"infill: {tiny_model.name} · float32 · cpu", shown

        saved = wait_for_file_change(source, ORIGINAL_SOURCE, timeout=10)
        typed_part = ORIGINAL_SOURCE + TYPED
        assert saved.startswith(typed_part), saved
        accepted = saved[len(typed_part):]
        # The ghost text is what Tab inserted (VS Code shows it line by line).
        first_line = shown["ghostText"].splitlines()[0] if shown["ghostText"].strip() else ""
        assert first_line.strip(), f"no ghost text was shown: {shown!r}"
        assert accepted.startswith(first_line), f"accepted {accepted!r}, ghost text {shown['ghostText']!r}"
        assert screenshot.stat().st_size > 0

        # "infill: Disable Suggestions" went through the settings to the server and back.
        assert shown["disabledStatus"].endswith("infill: off"), shown

        # A live change of infill.server.path restarts the server; a missing one gets a message
        # that says how to install it.
        assert str(tmp_path / "no-such-dir" / "infill-ls") in shown["notFoundMessage"]
        assert "pip install infill-ls" in shown["notFoundMessage"]
    finally:
        os.killpg(code_server.pid, signal.SIGTERM)
        try:
            code_server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(code_server.pid, signal.SIGKILL)
            code_server.wait()


def wait_for_file_change(path: Path, original: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if text != original:
            return text
        time.sleep(0.2)
    return path.read_text()
