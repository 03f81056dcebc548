"""Repository context through the real server: workspace folders, open documents, edits.

The client declares the fixture workspace as its folder; the prompt the server
builds is read back with the ``infill/prompt`` request (what an editor can show
as "why this suggestion"), and the suggestion itself is compared with the tiny
model's greedy output for exactly that prompt.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from lsprotocol import types

from reference import shaped
from conftest import as_dict, inline, open_document, start_client, stop_client, wait_until_loaded
from context_fixture import HELPERS, MAIN_PREFIX, MAIN_SUFFIX, make_workspace

OPTIONS = {"debounceMs": 0, "timeoutMs": 600000, "loadWaitMs": 600000}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("context"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tiny_model, workspace):
    lsp = await start_client("--model", str(tiny_model), initialization_options=OPTIONS, root=workspace)
    await wait_until_loaded(lsp, timeout=600)
    yield lsp
    await stop_client(lsp)


async def prompt_at(client, uri: str, line: int, character: int) -> dict:
    params = {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
    return as_dict(await client.protocol.send_request_async("infill/prompt", params))


async def prompt_once(client, uri, line, character, condition, timeout=60.0) -> dict:
    """The prompt, asked again until ``condition`` holds (files load in the background)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = await prompt_at(client, uri, line, character)
        if condition(result) or loop.time() > end:
            return result
        await asyncio.sleep(0.1)


def in_prompt(result: dict) -> list[str]:
    return [s["path"] for s in result["snippets"] if s["inPrompt"]]


async def test_typing_a_helpers_name_puts_its_definition_in_the_prompt(client, workspace):
    main = workspace / "app" / "main.py"
    open_document(client, main.as_uri(), main.read_text())
    line = MAIN_PREFIX.count("\n")
    character = len(MAIN_PREFIX.rsplit("\n", 1)[1])
    result = await prompt_once(client, main.as_uri(), line, character,
                               lambda r: "app/billing/helpers.py" in in_prompt(r))
    assert in_prompt(result)[0] == "app/billing/helpers.py", result["snippets"]
    assert result["path"] == "app/main.py" and result["repoName"] == "ws"
    text = result["prompt"]
    assert text.startswith("<repo_name>ws<file_sep>")
    assert "<file_sep>app/billing/helpers.py\n" + HELPERS in text
    assert text.endswith("<file_sep><fim_prefix>app/main.py\n" + MAIN_PREFIX + "<fim_suffix>" + MAIN_SUFFIX + "<fim_middle>")
    assert "LEAKED" not in text
    assert result["tokens"] <= result["budget"] == 2048 - 64
    scan = result["workspace"]
    assert scan["state"] == "ready" and scan["skipped"]["secret"] == 5 and scan["skipped"]["gitignored"] == 2


async def test_secret_and_ignored_files_open_in_the_editor_stay_out(client, workspace):
    for rel in (".env", "config/credentials.json", "generated/invoice_cache.py", "app/blob.py"):
        path = workspace / rel
        open_document(client, path.as_uri(), path.read_bytes().decode("utf-8", "replace"))
    main = workspace / "app" / "main.py"
    result = await prompt_at(client, main.as_uri(), MAIN_PREFIX.count("\n"), len(MAIN_PREFIX.rsplit("\n", 1)[1]))
    assert "LEAKED" not in result["prompt"]
    assert "app/billing/helpers.py" in in_prompt(result)


async def test_an_unsaved_tab_and_its_recent_edit_become_context(client, workspace):
    draft = workspace / "app" / "draft.py"  # open in the editor, never saved
    filler = "".join(f"setting_{i} = {i}\n" for i in range(120))
    open_document(client, draft.as_uri(), filler)
    edit = "def checkout_gift_card(cart, customer, items):\n    return cart\n"
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=draft.as_uri(), version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=100, character=0), end=types.Position(line=100, character=0)),
            text=edit)],
    ))
    main = workspace / "app" / "main.py"
    result = await prompt_once(client, main.as_uri(), MAIN_PREFIX.count("\n"), len(MAIN_PREFIX.rsplit("\n", 1)[1]),
                               lambda r: "app/draft.py" in in_prompt(r))
    draft_snippets = [s for s in result["snippets"] if s["path"] == "app/draft.py"]
    assert draft_snippets and draft_snippets[0]["source"] == "recent", result["snippets"]
    assert "<file_sep>app/draft.py\n" in result["prompt"] and edit in result["prompt"]


async def test_the_suggestion_is_the_models_answer_to_the_repository_prompt(client, workspace, tiny_model):
    # A cursor inside a line of code: a single-line suggestion, as in test_server.
    utils = workspace / "app" / "pricing.py"
    prefix = "from app.billing.helpers import compute_invoice_total\n\nvalue = compute_invoice_total("
    suffix = "cart.items, 0.2) + shipping(cart)\n"
    open_document(client, utils.as_uri(), prefix + suffix)
    line, character = prefix.count("\n"), len(prefix.rsplit("\n", 1)[1])
    result = await prompt_once(client, utils.as_uri(), line, character,
                               lambda r: "app/billing/helpers.py" in in_prompt(r))
    assert "app/billing/helpers.py" in in_prompt(result)
    answer = await inline(client, utils.as_uri(), line, character)
    expected = shaped(greedy_generation(tiny_model, result["ids"], 64), prefix, suffix)
    assert expected  # the comparison below is about text, not two empty answers
    assert [i.insert_text for i in answer.items] == [expected]


def greedy_generation(model_dir, ids: list[int], max_new_tokens: int) -> str:
    """What ``model.generate`` produces for these exact prompt ids."""
    import torch

    from reference import _load

    tokenizer, model = _load(str(model_dir))
    stop = tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>"])
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop, pad_token_id=0)
    new = [t for t in out[0, len(ids):].tolist() if t not in stop]
    return tokenizer.decode(new)
