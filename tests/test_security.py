"""Security: what the server reads, runs, listens on and logs.

- Nothing outside the workspace folders is read: the server runs under a Python
  audit hook (``sys.addaudithook`` via ``sitecustomize``) that records every file
  it opens and every directory it lists; a workspace full of escapes (symlinks to
  an outside folder, ``..`` in URIs, requests for unopened outside files) must
  leave no trace of the outside folder, nor of the secret files inside.
- ``trust_remote_code`` stays off unless set: a model directory whose config names
  its own Python code gets it run only after ``trustRemoteCode`` is switched on.
- ``--tcp`` listens on 127.0.0.1 only and says so.
- The log (stderr and ``--log-file``) never holds document text at the default level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from conftest import REPO, inline, open_document, server_command, server_env, server_status, start_client, stop_client, wait_until_loaded


FAST = {"debounceMs": 0, "timeoutMs": 600000}
MARKER = "LEAKED_MARKER_7f3a"  # in every file that must never be read

AUDIT_HOOK = '''
import os, sys
_log = os.environ.get("INFILL_TEST_AUDIT_LOG")
if _log:
    _out = open(_log, "a", buffering=1)
    def _record(event, args):
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            _out.write(os.fsdecode(args[0]) + "\\n")
    sys.addaudithook(_record)
'''


@contextlib.contextmanager
def environment(**variables: str):
    """Environment variables for the servers started inside the block (they inherit os.environ)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def make_escape_workspace(root: Path) -> tuple[Path, Path]:
    """A workspace whose links and names lead to an outside folder; returns (workspace, outside)."""
    ws, outside = root / "ws", root / "outside"
    (ws / "pkg").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret_helpers.py").write_text(f"def compute_total(items):  # {MARKER}\n    return 0\n")
    (ws / "pkg" / "main.py").write_text("from secret_helpers import compute_total\n\ntotal = compute_total(\n")
    (ws / "pkg" / "util.py").write_text("def helper(x):\n    return x * 2\n")
    os.symlink(outside, ws / "linked_dir")  # a folder link leading out
    os.symlink(outside / "secret_helpers.py", ws / "pkg" / "secret_helpers.py")  # a file link leading out
    os.symlink("../../outside/secret_helpers.py", ws / "pkg" / "relative_link.py")
    (ws / ".env").write_text(f"API_KEY={MARKER}\n")
    (ws / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY----- {MARKER}\n")
    (ws / ".gitignore").write_text("ignored/\n")
    (ws / "ignored").mkdir()
    (ws / "ignored" / "compute_total.py").write_text(f"def compute_total(items):  # {MARKER}\n")
    return ws, outside


@pytest.mark.asyncio(loop_scope="module")
async def test_nothing_outside_the_workspace_nor_secret_is_read(tiny_model, tmp_path):
    ws, outside = make_escape_workspace(tmp_path)
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    audit_log = tmp_path / "audit.log"
    hooked_path = os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")])
    with environment(INFILL_TEST_AUDIT_LOG=str(audit_log), PYTHONPATH=hooked_path):
        lsp = await start_client("--model", str(tiny_model), initialization_options=FAST, root=ws)
    try:
        main = ws / "pkg" / "main.py"
        open_document(lsp, main.as_uri(), main.read_text())
        assert (await wait_until_loaded(lsp))["state"] == "ready"
        items = (await inline(lsp, main.as_uri(), 2, len("total = compute_total("))).items
        # Documents the editor never opened, named through the workspace: links and "..".
        for uri in [
            (ws / "linked_dir" / "secret_helpers.py").as_uri(),
            (ws / "pkg" / "secret_helpers.py").as_uri(),
            ws.as_uri() + "/../outside/secret_helpers.py",
            ws.as_uri() + "/pkg/%2E%2E/%2E%2E/outside/secret_helpers.py",
        ]:
            with pytest.raises(Exception, match="not open"):
                await inline(lsp, uri, 0, 0)
        # An editor may open a file through a link: its text is what the editor sent, not a disk read.
        linked = ws / "pkg" / "relative_link.py"
        open_document(lsp, linked.as_uri(), "def compute_total(items):\n    ")
        await inline(lsp, linked.as_uri(), 1, 4)
        assert (await server_status(lsp))["state"] == "ready"
    finally:
        await stop_client(lsp)
    assert audit_log.exists(), "the audit hook did not run in the server"
    touched = {Path(p) for p in audit_log.read_text().splitlines()}
    assert any(str(p).startswith(str(tiny_model)) for p in touched), "the audit log missed the model files"
    refused = [outside, ws / ".env", ws / "id_rsa", ws / "ignored"]
    leaks = sorted(str(p) for p in touched if any(p == r or r in p.parents for r in refused)
                   or any(p.resolve() == r or r in p.resolve().parents for r in refused))
    assert leaks == [], f"read outside the workspace or secret: {leaks}"
    assert all(MARKER not in (item.insert_text or "") for item in items)


def custom_code_model(tiny_model: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny model whose config names its own Python code; the code writes a marker file."""
    model = tmp_path / "custom-code-model"
    shutil.copytree(tiny_model, model)
    ran = tmp_path / "remote-code-ran"
    (model / "configuration_custom.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(ran)!r}).write_text('ran')\n"
        "from transformers import Starcoder2Config\n\n\n"
        "class CustomConfig(Starcoder2Config):\n"
        "    pass\n"
    )
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (model / "config.json").write_text(json.dumps(config))
    return model, ran


@pytest.mark.asyncio(loop_scope="module")
async def test_model_code_runs_only_after_trust_remote_code_is_set(tiny_model, tmp_path):
    model, ran = custom_code_model(tiny_model, tmp_path)
    with environment(HF_MODULES_CACHE=str(tmp_path / "modules")):
        lsp = await start_client("--model", str(model), initialization_options=FAST)
    try:
        await wait_until_loaded(lsp)
        assert not ran.exists(), "the model's own code ran with trustRemoteCode off"
        lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"infill": {"trustRemoteCode": True}}))
        deadline = time.monotonic() + 120
        while not ran.exists() and time.monotonic() < deadline:
            await server_status(lsp)
            await asyncio.sleep(0.1)
        assert ran.exists(), "trustRemoteCode on did not run the model's code (so the test above proves nothing)"
    finally:
        await stop_client(lsp)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """Local addresses of TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def test_tcp_mode_listens_on_loopback_only_and_says_so(tiny_model, tmp_path):
    port = free_port()
    log_file = tmp_path / "tcp.log"
    server = subprocess.Popen(server_command("--model", str(tiny_model), "--tcp", "--port", str(port), "--log-file", str(log_file)),
                              env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not listening_addresses(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert listening_addresses(port) == ["0100007F"], listening_addresses(port)  # 127.0.0.1, nothing else
        assert "127.0.0.1" in log_file.read_text() and "loopback only" in log_file.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}).encode()
            connection.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert b'"capabilities"' in connection.recv(65536)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.stdout.read() == b""


@pytest.mark.asyncio(loop_scope="module")
async def test_the_log_holds_no_document_text_at_the_default_level(tiny_model, tmp_path):
    log_file = tmp_path / "server.log"
    lsp = await start_client("--model", str(tiny_model), "--log-file", str(log_file), initialization_options=FAST)
    try:
        uri = "file:///work/private.py"
        open_document(lsp, uri, f"password = '{MARKER}'\ndef login(user):\n    \n")
        lsp.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=2, character=4), end=types.Position(line=2, character=4)),
                text=f"token = '{MARKER}2'")]))
        await inline(lsp, uri, 2, 4)
        await inline(lsp, uri, 1, 0)
    finally:
        await stop_client(lsp)
    text = log_file.read_text()
    assert "model ready" in text  # the file is the log, at info level
    assert MARKER not in text
