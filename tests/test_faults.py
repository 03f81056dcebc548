"""Faults: a broken model, running out of device memory, a generation raising.

Each must give the user one clear ``window/showMessage`` (not one per keystroke),
keep the server answering (empty results meanwhile), and recover once the cause is
gone.  Out-of-memory and worker errors are injected with the server's
fault-injection hook ``INFILL_LS_INJECT_FAULT`` (there is no GPU here to exhaust).
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from lsprotocol import types

from conftest import inline, open_document, server_status, start_client, stop_client, wait_until_loaded

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"debounceMs": 0, "timeoutMs": 600000}
CODE = "import os\n\ndef total(values):\n    result = sum(values) # done\n    return result\n"
URI = "file:///work/faults.py"
CURSOR = (3, len("    result = "))


def messages(client, kind: types.MessageType) -> list[str]:
    return [m.message for m in client.messages if m.type == kind]


def broken_copy(tiny_model, tmp_path, breakage: str):
    """A copy of the tiny model broken in one way; returns its directory."""
    if breakage == "missing":
        return tmp_path / "does-not-exist"
    model = tmp_path / breakage
    shutil.copytree(tiny_model, model)
    if breakage == "corrupt-config":
        (model / "config.json").write_text("{ not json")
    elif breakage == "truncated-weights":  # config and tokenizer load, the weights fail half-way
        weights = model / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
    elif breakage == "no-tokenizer":
        for name in os.listdir(model):
            if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                os.remove(model / name)
    return model


BREAKAGES = [
    ("corrupt-config", "cannot load"),
    ("truncated-weights", "cannot load"),
    ("no-tokenizer", "tokenizer"),
]


async def test_broken_models_give_one_message_each_keep_serving_and_recover(tiny_model, tmp_path):
    # One server walks through every breakage (a server start costs seconds on a busy machine).
    lsp = await start_client("--model", str(broken_copy(tiny_model, tmp_path, "missing")), initialization_options=FAST)
    try:
        open_document(lsp, URI, CODE)
        await assert_broken(lsp, "does not exist", errors_before=0)
        for breakage, words in BREAKAGES:
            await configure_model(lsp, tiny_model)
            assert len((await inline(lsp, URI, *CURSOR)).items) == 1
            assert (await server_status(lsp))["state"] == "ready"
            errors_before = len(messages(lsp, types.MessageType.Error))
            status = await configure_model(lsp, broken_copy(tiny_model, tmp_path, breakage))
            await assert_broken(lsp, words, errors_before, status)
        await configure_model(lsp, tiny_model)
        assert len((await inline(lsp, URI, *CURSOR)).items) == 1
        # Every load's progress bar was closed, the failed ones too.
        assert all(isinstance(reports[-1], types.WorkDoneProgressEnd) for reports in lsp.progress_reports.values())
    finally:
        await stop_client(lsp)


async def configure_model(lsp, model) -> dict:
    """Switch to ``model`` and wait for its load to end; returns the status then."""
    lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"infill": {"model": str(model)}}))
    while True:  # the reload starts on the server's loop, maybe after the next request is answered
        status = await server_status(lsp)
        if status["model"] == str(model) and status["state"] != "loading":
            return status
        await asyncio.sleep(0.05)


async def assert_broken(lsp, words: str, errors_before: int, status: dict | None = None) -> None:
    status = status or await wait_until_loaded(lsp)
    assert status["state"] == "error" and words in status["message"], status
    for _ in range(3):  # the server keeps answering, with nothing to suggest
        assert list((await inline(lsp, URI, *CURSOR)).items) == []
    errors = messages(lsp, types.MessageType.Error)[errors_before:]
    assert len(errors) == 1 and words in errors[0], errors


async def start_with_fault(tiny_model, fault: str, **settings):
    """A ready server on the tiny model whose next model forwards fail as ``fault`` says."""
    os.environ["INFILL_LS_INJECT_FAULT"] = fault
    try:
        lsp = await start_client("--model", str(tiny_model), initialization_options={**FAST, **settings})
    finally:
        del os.environ["INFILL_LS_INJECT_FAULT"]
    open_document(lsp, URI, CODE)
    assert (await wait_until_loaded(lsp))["state"] == "ready"
    return lsp


async def test_out_of_memory_gives_one_message_retries_smaller_and_recovers(tiny_model):
    # 5 faults: requests 1 and 2 fail twice each (full prompt, then half), request 3 fails
    # once and its retry with half the prompt succeeds, request 4 runs normally.
    lsp = await start_with_fault(tiny_model, "oom:5")
    try:
        for _ in range(2):
            assert list((await inline(lsp, URI, *CURSOR)).items) == []
        errors = messages(lsp, types.MessageType.Error)
        assert len(errors) == 1 and "out of device memory" in errors[0], errors
        retried = await inline(lsp, URI, *CURSOR)
        warnings = messages(lsp, types.MessageType.Warning)
        assert len(warnings) == 1 and "half the prompt" in warnings[0], warnings
        # The document fits in half the prompt budget too, so the retry gives the usual suggestion.
        normal = await inline(lsp, URI, *CURSOR)
        assert len(normal.items) == 1
        assert [i.insert_text for i in retried.items] == [normal.items[0].insert_text]
        status = await server_status(lsp)
        assert status["state"] == "ready"
        assert status["counters"]["outOfMemory"] == 2 and status["counters"]["retriedSmaller"] == 1
        assert len(messages(lsp, types.MessageType.Error)) == 1
    finally:
        await stop_client(lsp)


async def test_worker_errors_give_one_message_then_recover(tiny_model):
    # Errors other than out-of-memory are not retried: 2 faults fail two requests.
    lsp = await start_with_fault(tiny_model, "error:2")
    try:
        for _ in range(2):
            assert list((await inline(lsp, URI, *CURSOR)).items) == []
        errors = messages(lsp, types.MessageType.Error)
        assert len(errors) == 1 and "RuntimeError" in errors[0], errors
        assert len((await inline(lsp, URI, *CURSOR)).items) == 1
        status = await server_status(lsp)
        assert status["state"] == "ready" and status["counters"]["error"] == 2
    finally:
        await stop_client(lsp)
