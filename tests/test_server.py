"""End-to-end tests of the language server over stdio, on the tiny model."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from conftest import cancel_request, inline, send_inline, open_document, server_status as status, start_client, stop_client, wait_until_loaded
from reference import reference_suggestion

pytestmark = pytest.mark.asyncio(loop_scope="module")

# No debounce, and a time box the shared test machine never reaches.
FAST = {"debounceMs": 0, "timeoutMs": 600000, "loadWaitMs": 600000}
CODE = "import os\n\ndef total(values):\n    result = sum(values) # done\n    return result\n"


async def test_capabilities(client):
    capabilities = client.protocol.server_capabilities if hasattr(client.protocol, "server_capabilities") else None
    result = await client.protocol.send_request_async(types.INITIALIZE, types.InitializeParams(capabilities=types.ClientCapabilities())) if capabilities is None else None
    caps = capabilities or result.capabilities
    assert caps.inline_completion_provider
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == types.PositionEncodingKind.Utf16


async def test_single_line_suggestion_is_what_the_model_generates(client, tiny_model):
    uri = "file:///work/single.py"
    open_document(client, uri, CODE)
    # Cursor after "result = " on line 3, with "sum(values) # done" to its right: mid-line.
    line, character = 3, len("    result = ")
    result = await inline(client, uri, line, character)
    offset = CODE.index("sum(values)")
    expected = reference_suggestion(tiny_model, CODE[:offset], CODE[offset:])
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text == expected
    assert "\n" not in item.insert_text
    assert item.range == types.Range(start=types.Position(line=line, character=character), end=types.Position(line=line, character=character))


async def test_multi_line_suggestion_at_an_empty_line(client, tiny_model):
    uri = "file:///work/multi.py"
    text = "def f(x):\n    \n"
    open_document(client, uri, text)
    result = await inline(client, uri, 1, 4)
    expected = reference_suggestion(tiny_model, text[: len("def f(x):\n    ")], "\n")
    assert [i.insert_text for i in result.items] == ([expected] if expected else [])


async def test_completion_fallback_carries_a_text_edit(client):
    uri = "file:///work/fallback.py"
    text = "def area(r):\n    return 3.14 * ra + 1\n"
    open_document(client, uri, text)
    position = types.Position(line=1, character=len("    return 3.14 * ra"))
    inline_result = await inline(client, uri, 1, position.character)
    result = await client.text_document_completion_async(
        types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
    )
    assert result.is_incomplete
    assert len(result.items) == 1
    edit = result.items[0].text_edit
    # The edit replaces the word being typed ("ra") with that word plus the suggestion.
    assert edit.range.start == types.Position(line=1, character=position.character - 2)
    assert edit.range.end == position
    assert edit.new_text == "ra" + inline_result.items[0].insert_text
    assert result.items[0].filter_text == edit.new_text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
async def test_positions_in_each_encoding_with_non_ascii_text(tiny_model, encoding):
    text = 'name = "héllo 🐍 wörld" + greet(x)\n'
    cursor = text.index("greet")
    line_prefix = text[:cursor]
    units = {"utf-8": len(line_prefix.encode("utf-8")), "utf-16": len(line_prefix.encode("utf-16-le")) // 2, "utf-32": len(line_prefix)}
    lsp = await start_client("--model", str(tiny_model), "--quantization", "none", encodings=[encoding],
                             initialization_options=FAST)
    try:
        assert lsp.protocol.server_capabilities.position_encoding == encoding if hasattr(lsp.protocol, "server_capabilities") else True
        uri = "file:///work/unicode.py"
        open_document(lsp, uri, text)
        result = await inline(lsp, uri, 0, units[encoding])
        expected = reference_suggestion(tiny_model, text[:cursor], text[cursor:])
        assert [i.insert_text for i in result.items] == ([expected] if expected else [])
        assert result.items[0].range.start.character == units[encoding]
    finally:
        await stop_client(lsp)


async def test_requests_before_the_model_is_ready_wait_for_it(tiny_model):
    lsp = await start_client("--model", str(tiny_model))
    try:
        uri = "file:///work/early.py"
        open_document(lsp, uri, CODE)
        # Sent right after initialize, while the model is still loading in the background.
        result = await inline(lsp, uri, 3, len("    result = "))
        assert len(result.items) == 1
        tokens = list(lsp.progress_reports.values())
        assert tokens, "no $/progress for the model load"
        kinds = [type(v).__name__ for v in tokens[0]]
        assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
        assert "WorkDoneProgressReport" in kinds
    finally:
        await stop_client(lsp)


async def test_cancel_request_is_answered_with_request_cancelled(tiny_model):
    # A long debounce holds the request in the server, so the cancel always arrives before
    # any answer; that the generation loop itself stops is tested in test_engine.py.
    lsp = await start_client("--model", str(tiny_model), initialization_options={**FAST, "debounceMs": 2000})
    try:
        uri = "file:///work/cancel.py"
        open_document(lsp, uri, CODE)
        await wait_until_loaded(lsp)
        msg_id, request = send_inline(lsp, uri, 4, 0)
        await asyncio.sleep(0.2)
        cancel_request(lsp, msg_id)
        with pytest.raises(JsonRpcException) as error:
            await request
        assert error.value.code == -32800
        # The server goes on: the next request gets its suggestion.
        assert len((await inline(lsp, uri, 3, len("    result = "))).items) == 1
    finally:
        await stop_client(lsp)


async def test_newer_request_supersedes_older_one(tiny_model):
    # The debounce window holds the first request so the second always arrives while it
    # is pending; supersession of a running generation is tested in test_scheduler.py.
    lsp = await start_client("--model", str(tiny_model), initialization_options={**FAST, "debounceMs": 500})
    try:
        uri = "file:///work/supersede.py"
        open_document(lsp, uri, CODE)
        await wait_until_loaded(lsp)
        first = asyncio.ensure_future(inline(lsp, uri, 4, 0))
        await asyncio.sleep(0.1)
        second = await inline(lsp, uri, 3, len("    result = "))
        assert list((await first).items) == []
        assert len(second.items) == 1
        assert (await status(lsp))["counters"].get("superseded", 0) == 1
    finally:
        await stop_client(lsp)


async def test_debounce_drops_requests_superseded_within_the_window(tiny_model):
    lsp = await start_client("--model", str(tiny_model), initialization_options={**FAST, "debounceMs": 300})
    try:
        uri = "file:///work/debounce.py"
        open_document(lsp, uri, CODE)
        await inline(lsp, uri, 4, 0)
        before = (await status(lsp))["counters"]
        burst = [asyncio.ensure_future(inline(lsp, uri, 4, 0)) for _ in range(5)]
        results = await asyncio.gather(*burst)
        assert [len(r.items) for r in results[:-1]] == [0, 0, 0, 0]
        assert len(results[-1].items) == 1
        after = (await status(lsp))["counters"]
        generations = lambda c: sum(v for k, v in c.items() if k != "superseded")  # noqa: E731
        assert generations(after) - generations(before) == 1  # only the last one reached the model
    finally:
        await stop_client(lsp)


@pytest.mark.parametrize(
    "line, character, problem",
    [(4, 200, "past the end of line"), (40, 0, "outside the document"), (5, 1, "past the end of line")],
)
async def test_positions_out_of_range_get_an_error_and_the_server_keeps_going(client, line, character, problem):
    uri = "file:///work/range.py"
    open_document(client, uri, CODE)
    with pytest.raises(JsonRpcException) as error:
        await inline(client, uri, line, character)
    assert problem in str(error.value)
    assert len((await inline(client, uri, 3, len("    result = "))).items) == 1


async def test_unknown_document_gets_an_error(client):
    with pytest.raises(JsonRpcException, match="not open"):
        await inline(client, "file:///work/never-opened.py", 0, 0)


async def test_missing_model_reports_error_then_recovers_on_config_change(tmp_path, tiny_model):
    missing = tmp_path / "no-such-model"
    lsp = await start_client("--model", str(missing), initialization_options=FAST)
    try:
        uri = "file:///work/recover.py"
        open_document(lsp, uri, CODE)
        result = await inline(lsp, uri, 3, len("    result = "))
        assert list(result.items) == []
        assert any("does not exist" in m.message for m in lsp.messages if m.type == types.MessageType.Error)
        assert (await status(lsp))["state"] == "error"
        lsp.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"infill": {"model": str(tiny_model)}})
        )
        result = await inline(lsp, uri, 3, len("    result = "))
        assert len(result.items) == 1
        assert (await status(lsp))["state"] == "ready"
    finally:
        await stop_client(lsp)


async def test_corrupt_model_directory_reports_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{ not json")
    lsp = await start_client("--model", str(corrupt))
    try:
        uri = "file:///work/corrupt.py"
        open_document(lsp, uri, CODE)
        assert list((await inline(lsp, uri, 0, 0)).items) == []
        errors = [m.message for m in lsp.messages if m.type == types.MessageType.Error]
        assert errors and "cannot load" in errors[0]
    finally:
        await stop_client(lsp)


async def test_invalid_setting_is_rejected_and_previous_value_kept(tiny_model):
    lsp = await start_client("--model", str(tiny_model), configuration={**FAST, "maxNewTokens": 4})
    try:
        lsp.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"infill": {"multiline": "sometimes", "maxNewTokens": 8}})
        )
        uri = "file:///work/settings.py"
        open_document(lsp, uri, CODE)
        await inline(lsp, uri, 4, 0)
        messages = [m.message for m in lsp.messages if m.type == types.MessageType.Error]
        assert any("infill.multiline" in m and "sometimes" in m for m in messages)
        # maxNewTokens 8 was valid and applied; the multi-line suggestion used at most 8 tokens.
        assert (await status(lsp))["lastGeneratedTokens"] <= 8
    finally:
        await stop_client(lsp)


async def test_disabled_server_returns_nothing(tiny_model):
    lsp = await start_client("--model", str(tiny_model), initialization_options={**FAST, "enable": False})
    try:
        uri = "file:///work/disabled.py"
        open_document(lsp, uri, CODE)
        assert list((await inline(lsp, uri, 3, len("    result = "))).items) == []
        lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"infill": {"enable": True}}))
        assert len((await inline(lsp, uri, 3, len("    result = "))).items) == 1
    finally:
        await stop_client(lsp)


async def test_edits_are_applied_before_the_next_suggestion(client, tiny_model):
    uri = "file:///work/edit.py"
    open_document(client, uri, "x = 1\n")
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(line=0, character=5), end=types.Position(line=0, character=5)),
                    text="\ny = compute(x) + 2",
                )
            ],
        )
    )
    text = "x = 1\ny = compute(x) + 2\n"
    cursor = text.index("compute")
    result = await inline(client, uri, 1, len("y = "))
    expected = reference_suggestion(tiny_model, text[:cursor], text[cursor:])
    assert [i.insert_text for i in result.items] == [expected]


async def test_shutdown_and_exit_end_the_process_with_code_zero(tiny_model):
    lsp = await start_client("--model", str(tiny_model))
    await lsp.shutdown_session()
    assert lsp._server.returncode == 0
    await lsp.stop()
