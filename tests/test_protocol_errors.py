"""Requests no well-behaved client sends, written as raw JSON-RPC frames."""

from __future__ import annotations

import os

import pytest

from conftest import server_command, server_env
from raw_lsp import RawLspProcess

OPTIONS = {"debounceMs": 0, "timeoutMs": 600000}
DOC = "file:///work/a.py"


def inline_params(line, character, uri=DOC):
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, "context": {"triggerKind": 2}}


def start(tiny_model) -> RawLspProcess:
    return RawLspProcess(server_command("--model", str(tiny_model)), server_env())


def stop(process: RawLspProcess) -> None:
    assert process.close() == 0
    assert process.stdout_garbage == [], "the server wrote something that is not LSP to stdout"


@pytest.fixture(scope="module")
def raw(tiny_model):
    process = start(tiny_model)
    process.initialize(options=OPTIONS)
    process.notify("textDocument/didOpen", {"textDocument": {"uri": DOC, "languageId": "python", "version": 1, "text": "x = 1\n"}})
    yield process
    stop(process)


def test_request_before_initialize_is_refused(tiny_model):
    process = start(tiny_model)
    try:
        process.request("early", "textDocument/inlineCompletion", inline_params(0, 0))
        assert process.response("early")["error"]["code"] == -32002
    finally:
        stop(process)


@pytest.mark.parametrize(
    "params, words",
    [
        ({"textDocument": {"uri": 5}}, "position"),
        (inline_params(-1, 0), "line"),
        ({**inline_params(0, 0), "position": {"line": "zero", "character": 0}}, "line"),
        (None, "invalid params"),
    ],
)
def test_malformed_params_get_an_invalid_params_error(raw, params, words):
    raw.request("bad", "textDocument/inlineCompletion", params)
    error = raw.response("bad")["error"]
    assert error["code"] == -32602
    assert words in error["message"]
    # ... and the next valid request is answered with a suggestion.
    raw.request("good", "textDocument/inlineCompletion", inline_params(0, 4))
    assert len(raw.response("good")["result"]["items"]) == 1


def test_unknown_method_and_broken_json(raw):
    raw.request("what", "nonsense/method", {})
    assert raw.response("what")["error"]["code"] == -32601
    raw.send(b"{not json")
    raw.send({"jsonrpc": "2.0", "id": "after", "method": "infill/status"})  # params omitted, as JSON-RPC allows
    assert raw.response("after")["result"]["version"]


def test_a_pygls_without_run_async_still_serves_through_its_own_reader(tiny_model, tmp_path):
    """framing.serve_stdio copies pygls 2.1's start_io around a faster reader; a pygls that
    moved run_async must fall back to start_io, not fail to start.  A sitecustomize removes
    the function from pygls.io_ at interpreter start, after pygls.server has bound its own."""
    (tmp_path / "sitecustomize.py").write_text("import pygls.server\nimport pygls.io_\n\ndel pygls.io_.run_async\n")
    env = server_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    process = RawLspProcess(server_command("--model", str(tiny_model)), env)
    assert "capabilities" in process.initialize(options=OPTIONS)["result"]
    process.notify("textDocument/didOpen", {"textDocument": {"uri": DOC, "languageId": "python", "version": 1, "text": "def f(x):\n    return \n"}})
    process.request(1, "textDocument/inlineCompletion", inline_params(1, 11))
    assert "result" in process.response(1)
    stop(process)
    assert b"reading stdin with its own reader" in b"".join(process.stderr)
