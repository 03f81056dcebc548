"""Shared test fixtures: the tiny model, and real infill-ls servers over stdio."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp.client import LanguageClient, make_test_lsp_client

REPO = Path(__file__).resolve().parent.parent
# This checkout's package and test helpers come first, also when another checkout
# (a git worktree) is the one installed in editable mode.
sys.path[:0] = [str(REPO / "server"), str(REPO / "tests")]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from tiny_model import build_tiny_model  # noqa: E402


def tiny_model_dir() -> Path:
    """The tiny model, built once per version of its recipe and reused across runs."""
    recipe = (REPO / "tests" / "tiny_model.py").read_bytes() + (REPO / "training" / "tokenizer.py").read_bytes()
    path = REPO / ".cache" / f"tiny-model-{hashlib.sha256(recipe).hexdigest()[:12]}"
    if not (path / "model.safetensors").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        build_tiny_model(tmp)
        try:
            tmp.rename(path)
        except OSError:  # another test run built it meanwhile
            if not (path / "model.safetensors").exists():
                raise
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_dir()


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "infill_ls", "serve", *args]


def server_env() -> dict[str, str]:
    """The environment servers run in: this checkout's package first, nothing online."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "server"), env.get("PYTHONPATH", "")])
    return env


def client_capabilities(encodings: list[str] | None = None) -> types.ClientCapabilities:
    """What an editor with inline completion support announces (pytest-lsp's profiles lack it)."""
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind(e) for e in (encodings or ["utf-16"])]
        ),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(),
            completion=types.CompletionClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities(),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True, show_message=None),
        workspace=types.WorkspaceClientCapabilities(configuration=True, did_change_configuration=None),
    )


async def start_client(
    *args: str,
    initialization_options: dict | None = None,
    configuration: dict | None = None,
    encodings: list[str] | None = None,
    root: Path | None = None,
) -> LanguageClient:
    """Start ``infill-ls serve ARGS`` and complete the initialize handshake."""
    client = make_test_lsp_client()
    if configuration is not None:
        client.set_configuration(configuration, section="infill")
    await client.start_io(*server_command(*args), env=server_env())
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(encodings),
            initialization_options=initialization_options,
            root_uri=root.as_uri() if root else None,
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)] if root else None,
        )
    )
    return client


async def stop_client(client: LanguageClient) -> None:
    try:
        await client.shutdown_session()
    finally:
        await client.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tiny_model):
    """A server on the tiny model, shared by the tests of a module.  float32, because tests
    compare its suggestions with float32 ``model.generate`` (auto picks bf16 or int8 on a CPU)."""
    lsp = await start_client("--model", str(tiny_model), "--quantization", "none", initialization_options={"debounceMs": 0, "timeoutMs": 600000, "loadWaitMs": 600000})
    yield lsp
    await stop_client(lsp)


def open_document(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
        )
    )


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(inline_params(uri, line, character))


def send_inline(client: LanguageClient, uri: str, line: int, character: int) -> tuple[str, asyncio.Future]:
    """Send an inline completion request without waiting; returns its id (for $/cancelRequest) and future."""
    msg_id = str(uuid.uuid4())
    future = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, character), msg_id=msg_id
    )
    return msg_id, asyncio.wrap_future(future)


def cancel_request(client: LanguageClient, msg_id: str) -> None:
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))


def as_dict(value):
    """pygls hands results of custom requests over as named tuples; tests want dicts."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    return value


async def server_status(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("infill/status", None))


async def wait_until_loaded(client: LanguageClient, timeout: float = 120) -> dict:
    """Poll ``infill/status`` until the model load has finished (ready or error)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        status = await server_status(client)
        if status["state"] != "loading" or loop.time() > end:
            return status
        await asyncio.sleep(0.05)
