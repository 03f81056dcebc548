"""LSP wiring only: capabilities, handlers, progress, configuration, status.

Handlers read params, call plain functions (completion.suggest, Settings.merged,
LocalEngine.load) and convert results; model work runs on the scheduler's worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
import uuid
from typing import Any

from cattrs import ClassValidationError, transform_error
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcServerNotInitialized
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from . import __version__
from .cache import SuggestionCache
from .completion import SuggestionResult, build_prompt, cached_suggestion, suggest_retrying_smaller
from .context import ContextProvider, snapshot_documents, workspace_folders
from .debug import register_debug_features
from .documents import text_offset, use_lsp_line_endings
from .engine import load_engine
from .engine.base import EngineOutOfMemory, ModelLoadError
from .engine.local import LocalEngine
from .engine.remote import RemoteError
from .prompt import prompt_summary
from .postprocess import CursorContext
from .scheduler import Scheduler, Superseded
from .settings import Settings
from .templates import TemplateError

log = logging.getLogger("infill_ls")

# Settings whose change needs the model loaded again.
MODEL_SETTINGS = ("model", "quantization", "device", "template", "trustRemoteCode", "fastDecode",
                  "backend", "endpoint", "apiKeyEnv", "remoteModel", "requestTimeoutMs")
CONFIGURATION_TIMEOUT_S = 5
# Settings whose change rebuilds the repository context (a new workspace scan).
CONTEXT_SETTINGS = ("contextFiles", "maxContextFiles", "contextExclude")


class InfillProtocol(LanguageServerProtocol):
    """pygls' protocol, answering requests whose params do not match the LSP types.

    pygls drops such a request without a response (the client would wait forever);
    here it gets a JSON-RPC error naming the problem.
    """

    def structure_message(self, data: dict):
        if isinstance(data, dict) and "jsonrpc" in data and "method" in data:
            data.setdefault("params", None)  # JSON-RPC lets a request omit params
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "method" in data and "id" in data:
                cause = error.__cause__
                detail = "; ".join(transform_error(cause)) if isinstance(cause, ClassValidationError) else str(error)
                self._send_response(
                    data["id"],
                    error=types.ResponseError(code=error.code, message=f"invalid params for {data['method']}: {detail}"),
                )
            raise

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        # A notification's future (didChange, didOpen, ...): pygls stores it under a fresh
        # id and never removes it, ~2 KB per keystroke for the life of the server.  Done
        # ones are forgotten here, on the loop, not in their callback: shutdown iterates
        # the dict while cancelling, and a cancel runs the callback at once.
        finished = self.__dict__.setdefault("_finished_notifications", [])
        while finished:
            self._request_futures.pop(finished.pop(), None)
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        future = self._request_futures.get(msg_id)
        if future is not None and callback == self._check_handler_result:
            future.add_done_callback(lambda _done: finished.append(msg_id))


@dataclasses.dataclass
class Status:
    state: str = "loading"  # loading | ready | error | disabled | unloaded (idle; reloads on the next request)
    model: str = ""
    device: str = ""
    precision: str = ""
    lastLatencyMs: float | None = None
    message: str | None = None
    version: str = __version__
    # How generations ended, by stop reason (eos, rule, length, cancelled, timeout), and
    # how many requests were superseded before reaching the model.
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    lastGeneratedTokens: int | None = None


class InfillServer(LanguageServer):
    def __init__(self, settings: Settings):
        super().__init__("infill-ls", __version__, protocol_cls=InfillProtocol)
        self.initialized = False
        self.settings = settings
        self.scheduler = Scheduler()
        self.engine: LocalEngine | None = None
        self.cache = SuggestionCache()
        self.status = Status(model=settings.model)
        self._load_number = 0
        self._model_ready: asyncio.Event | None = None
        self._failure_shown: str | None = None  # the kind of generation failure last shown to the user
        self.context: ContextProvider | None = None
        self.last_request = time.monotonic()
        self._idle_watch: asyncio.Task | None = None
        self._engine_trouble: str | None = None  # what the remote engine last failed with

    # ----- status and messages -----

    def set_status(self, **changes: Any) -> None:
        self.status = dataclasses.replace(self.status, **changes)
        self.protocol.notify("infill/statusChanged", dataclasses.asdict(self.status))

    def report_server_error(self, error: Exception, source: Any) -> None:
        # Malformed input is logged (and answered, see InfillProtocol), not shown as a popup.
        log.warning("protocol error: %s: %s", type(error).__name__, error)
        if source is JsonRpcException and not isinstance(error, JsonRpcException):
            # pygls' reader could not make a JSON-RPC message of the frame and answers
            # nothing; JSON-RPC says to answer with id null.
            unreadable = isinstance(error, (ValueError, RecursionError))  # bad JSON or UTF-8, too deep
            code, what = (-32700, "parse error") if unreadable else (-32600, "invalid request")
            self.protocol._send_response(None, error=types.ResponseError(code=code, message=f"{what}: {error}"))

    def count(self, event: str) -> None:
        self.status.counters[event] = self.status.counters.get(event, 0) + 1

    def show_error(self, message: str) -> None:
        log.error("%s", message)
        self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"infill-ls: {message}"))

    def engine_trouble(self, message: str | None) -> None:
        """The remote engine's failure (in the status, shown once per distinct message) or its recovery."""
        if message is None:
            if self._engine_trouble is not None:
                self._engine_trouble = None
                log.info("the inference server answers again")
                self.set_status(state="ready" if self.settings.enable else "disabled", message=None)
            return
        if message != self._engine_trouble:
            self._engine_trouble = message
            self.set_status(state="error", message=message)
        self.report_generation_failure(f"remote: {message}", message)

    def report_generation_failure(self, kind: str, message: str, level=types.MessageType.Error) -> None:
        """Tell the user once per kind of failure, not on every keystroke while it lasts."""
        log.log(logging.ERROR if level == types.MessageType.Error else logging.WARNING, "%s", message)
        if self._failure_shown != kind:
            self._failure_shown = kind
            self.window_show_message(types.ShowMessageParams(type=level, message=f"infill-ls: {message}"))

    def model_ready(self) -> asyncio.Event:
        if self._model_ready is None:
            self._model_ready = asyncio.Event()
        return self._model_ready

    # ----- settings -----

    def apply_settings(self, updates: Any) -> set[str]:
        """Merge client settings; report rejected values; return the names that changed."""
        merged, errors = self.settings.merged(updates)
        for error in errors:
            self.show_error(error)
        changed = {f.name for f in dataclasses.fields(Settings) if getattr(merged, f.name) != getattr(self.settings, f.name)}
        self.settings = merged
        if "logLevel" in changed:
            logging.getLogger("infill_ls").setLevel(merged.logLevel.upper())
        return changed

    async def pull_configuration(self) -> Any:
        """The client's ``infill`` section, or None when it has no workspace/configuration."""
        workspace = self.client_capabilities.workspace
        if not (workspace and workspace.configuration):
            return None
        try:
            result = await asyncio.wait_for(
                self.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="infill")])
                ),
                CONFIGURATION_TIMEOUT_S,
            )
        except Exception as error:  # a client that fails or never answers must not stop the server
            log.warning("workspace/configuration failed: %s", error)
            return None
        return result[0] if result else None

    def reset_context(self) -> None:
        """(Re)start the repository context for the declared workspace folders (scans in the background)."""
        if self.context:
            self.context.close()
        self.context = ContextProvider.from_settings(workspace_folders(self.workspace), self.settings)

    # ----- model loading -----

    async def load_model(self) -> None:
        """Load (or reload) the model on the worker, with work-done progress."""
        self._load_number += 1
        number = self._load_number
        ready = self.model_ready()
        ready.clear()
        settings = self.settings
        self.set_status(state="loading", model=settings.model, device="", precision="", message=None)
        self._engine_trouble = None
        progress = await self._begin_progress(settings.model)
        loop = asyncio.get_running_loop()

        def report(message: str, percent: int) -> None:
            if progress:
                loop.call_soon_threadsafe(
                    self.work_done_progress.report,
                    progress,
                    types.WorkDoneProgressReport(message=message, percentage=percent),
                )

        def load() -> LocalEngine:
            self.engine = None  # free the old model before the new one takes memory
            gc.unfreeze()  # (its objects were frozen after its load)
            engine = load_engine(settings, report)
            # What is alive now (torch, transformers, the model: ~440k objects) leaves the
            # collector's sight: a full collection of it took ~200 ms, a pause that any
            # request allocating enough could hit.
            gc.collect()
            gc.freeze()
            return engine

        try:
            engine = await self.scheduler.run(load)
        except (ModelLoadError, TemplateError) as error:
            engine = None
            failure = str(error)
        except Exception as error:  # never let a load failure take the server down
            log.exception("model load failed")
            engine, failure = None, f"{type(error).__name__}: {error}"
        if progress:
            self.work_done_progress.end(progress, types.WorkDoneProgressEnd(message="done" if engine else "failed"))
        if number != self._load_number:
            return  # a newer load (settings changed meanwhile) owns the state
        self.engine = engine
        if engine is None:
            self.set_status(state="error", message=failure)
            self.show_error(failure)
        else:
            info = engine.info
            log.info("model ready: %s on %s as %s (%s)", info.name, info.device, info.precision, info.reason)
            self.set_status(
                state="ready" if self.settings.enable else "disabled",
                device=info.device,
                precision=info.precision,
                message=info.reason,
            )
            # Idle time counts from here: a load slower than idleUnloadMinutes must not be
            # undone before the request that asked for it is served.
            self.last_request = time.monotonic()
            self.watch_idle()
        ready.set()

    async def _begin_progress(self, model: str) -> str | None:
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"infill-load-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), CONFIGURATION_TIMEOUT_S)
        except Exception as error:
            log.warning("work done progress refused: %s", error)
            return None
        self.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="infill-ls: loading model", message=model, percentage=0)
        )
        return token

    # ----- unloading when idle -----

    def watch_idle(self) -> None:
        if self._idle_watch is None:
            self._idle_watch = asyncio.ensure_future(self._unload_when_idle())

    async def _unload_when_idle(self) -> None:
        """Free the model once ``idleUnloadMinutes`` pass without a suggestion request."""
        while True:
            minutes = self.settings.idleUnloadMinutes
            await asyncio.sleep(min(max(minutes * 60 / 10, 0.05), 5) if minutes > 0 else 5)
            idle = time.monotonic() - self.last_request
            if minutes > 0 and self.engine is not None and idle >= minutes * 60:
                # Engine and state change together, on the loop: a request from now on sees
                # "unloaded" and reloads (one in between got no engine and no reload).
                # Requests already queued keep their engine until they finish.
                self.engine = None
                self.set_status(state="unloaded", message=f"unloaded after {minutes:g} min without requests")
                await self.scheduler.run(self._free_unloaded_model)

    def _free_unloaded_model(self) -> None:
        """On the worker, after the jobs queued before the unload: give the memory back."""
        gc.unfreeze()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        log.info("model unloaded after %g idle minutes", self.settings.idleUnloadMinutes)

    async def wait_for_engine(self) -> LocalEngine | None:
        self.last_request = time.monotonic()
        if self.engine is None and self.status.state == "unloaded":
            self.model_ready().clear()
            asyncio.ensure_future(self.load_model())
        if self.engine is None:
            try:
                await asyncio.wait_for(self.model_ready().wait(), self.settings.loadWaitMs / 1000)
            except asyncio.TimeoutError:
                log.info("request answered empty: the model is still loading")
        return self.engine

    # ----- suggestions -----

    async def suggestion_at(self, method: str, uri: str, position: types.Position) -> SuggestionResult | None:
        """The suggestion for a cursor, or None (disabled, not loaded, superseded)."""
        received = time.monotonic()
        context = cursor_context(self, uri, position)
        cursor_ms = (time.monotonic() - received) * 1000
        if not self.settings.enable:
            return None
        cached = cached_suggestion(self.cache, context, self.settings)
        if cached is not None:  # the user is typing through the suggestion shown
            self.count("cacheHits")
            return cached
        provider, documents = self.context, snapshot_documents(self.workspace)  # as they are now, like the cursor
        prepare_ms = (time.monotonic() - received) * 1000
        engine = await self.wait_for_engine()
        if engine is None:
            return None
        settings = self.settings
        # The time box and lastLatencyMs start once the model is there (a request may wait for the load).
        ready_at = time.monotonic()
        deadline = ready_at + settings.timeoutMs / 1000

        def job(cancel):
            started = time.monotonic()
            repo = provider.gather(uri, context, documents) if provider else None
            gathered = time.monotonic()
            result = suggest_retrying_smaller(
                engine, context, settings, cancel=cancel, deadline=deadline, repo=repo, cache=self.cache
            )
            if log.isEnabledFor(logging.DEBUG):
                log_timings(position, result, cursor_ms, prepare_ms, gather_ms=(gathered - started) * 1000,
                            waited_ms=(started - received) * 1000, request_ms=(time.monotonic() - received) * 1000)
            # Counted here, on the worker, so generations whose request was cancelled count too.
            self.count(result.generation.stop_reason)
            self.status.lastGeneratedTokens = len(result.generation.token_ids)
            return result

        try:
            result = await self.scheduler.run_latest(f"{method} {uri}", settings.debounceMs, job)
        except Superseded:
            self.count("superseded")
            return None
        except RemoteError as error:  # the inference server failed: say what is wrong, stay up
            self.count("remoteError")
            self.engine_trouble(str(error))
            return None
        except EngineOutOfMemory as error:
            self.count("outOfMemory")
            self.report_generation_failure(
                "outOfMemory",
                f"out of device memory even with half the prompt; lower infill.contextTokens or use "
                f"quantization 8bit/4bit ({error})",
            )
            return None
        except Exception as error:  # a failing generation must not fail the request or stop the server
            log.exception("generation failed")
            self.count("error")
            self.report_generation_failure("error", f"suggestion failed: {type(error).__name__}: {error} (details in the log)")
            return None
        if result.retried_smaller:
            self.count("retriedSmaller")
            self.report_generation_failure(
                "retriedSmaller", "out of device memory: the suggestion was made with half the prompt", types.MessageType.Warning
            )
        else:
            self._failure_shown = None  # working again: a later failure deserves a new message
        self.engine_trouble(None)
        if result.generation.stop_reason == "timeout":
            log.info("suggestion cut at timeoutMs=%d", settings.timeoutMs)
        self.status.lastLatencyMs = round((time.monotonic() - ready_at) * 1000, 1)
        log.debug("suggestion %r in %s ms", result.text, self.status.lastLatencyMs)
        return result


def log_timings(
    position: types.Position, result: SuggestionResult, cursor_ms: float, prepare_ms: float, gather_ms: float,
    waited_ms: float, request_ms: float,
) -> None:
    """One JSON line per generation (bench/typing.py reads them): where the time went."""
    import json

    generation = result.generation
    record = {
        "line": position.line,
        "character": position.character,
        **{f"{name}_ms": round(value, 3) for name, value in result.timings_ms.items()},
        "cursor_ms": round(cursor_ms, 3),  # prefix and suffix around the cursor (on receipt)
        "prepare_ms": round(prepare_ms, 3),  # on receipt: the cursor context, the cache lookup, the open documents
        "gather_ms": round(gather_ms, 3),  # snippets of other files (on the worker)
        "waited_ms": round(waited_ms, 3),  # from receipt to the worker: preparing, debounce, queue
        "request_ms": round(request_ms, 3),  # from receiving the request to the end of this job
        "stop": generation.stop_reason,
        "path": generation.path,
        "prompt_tokens": generation.prompt_tokens,
        "snippet_tokens": result.prompt.context_tokens if result.prompt else 0,  # other files' snippets
        "reused_tokens": generation.reused_tokens,
        "generated_tokens": len(generation.token_ids),
        "draft_tokens": generation.draft_tokens,
        "accepted_draft_tokens": generation.accepted_draft_tokens,
    }
    log.debug("timings %s", json.dumps(record))


def cursor_context(server: InfillServer, uri: str, position: types.Position) -> CursorContext:
    """Prefix and suffix around ``position`` of an open document; InvalidParams when out of range."""
    from urllib.parse import unquote

    if not server.initialized:
        raise JsonRpcServerNotInitialized("the server has not been initialized")
    document = server.workspace.text_documents.get(unquote(uri))
    if document is None:
        raise JsonRpcInvalidParams(f"document {uri} is not open (send textDocument/didOpen first)")
    lines = document.lines
    source = document.source
    line_count = len(lines) + (1 if not lines or source.endswith(("\n", "\r")) else 0)
    if position.line < 0 or position.line >= line_count:
        raise JsonRpcInvalidParams(f"line {position.line} is outside the document ({line_count} lines)")
    line_text = lines[position.line] if position.line < len(lines) else ""
    line_text = line_text.rstrip("\r\n")
    codec = document.position_codec
    if position.character < 0 or position.character > codec.client_num_units(line_text):
        raise JsonRpcInvalidParams(
            f"character {position.character} is past the end of line {position.line} "
            f"({codec.client_num_units(line_text)} {codec.encoding} units)"
        )
    server_position = codec.position_from_client_units(lines, position)
    offset = text_offset(lines, server_position)
    return CursorContext(prefix=source[:offset], suffix=source[offset:], language=document.language_id or "", document=uri)


def replaced_end(document, position: types.Position, result: SuggestionResult) -> types.Position:
    """Where an item's range ends: the cursor, or past the closers right of it that the suggestion writes itself."""
    units = document.position_codec.client_num_units(result.context.line_suffix[: result.replace_chars])
    return types.Position(line=position.line, character=position.character + units)


def prompt_request(params: Any) -> tuple[str, types.Position]:
    """``{textDocument: {uri}, position: {line, character}}`` of a custom request (dict or pygls object)."""
    def field(value: Any, name: str) -> Any:
        return value.get(name) if isinstance(value, dict) else getattr(value, name, None)

    document, position = field(params, "textDocument"), field(params, "position")
    uri = field(document, "uri")
    line, character = field(position, "line"), field(position, "character")
    if not isinstance(uri, str) or not isinstance(line, int) or not isinstance(character, int):
        raise JsonRpcInvalidParams("infill/prompt expects {textDocument: {uri}, position: {line, character}}")
    return uri, types.Position(line=line, character=character)


def word_before(line_prefix: str) -> str:
    """The identifier characters right before the cursor (what a completion menu filters on)."""
    start = len(line_prefix)
    while start > 0 and (line_prefix[start - 1].isalnum() or line_prefix[start - 1] == "_"):
        start -= 1
    return line_prefix[start:]


def build_server(settings: Settings) -> InfillServer:
    server = InfillServer(settings)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: InfillServer, params: types.InitializeParams) -> None:
        ls.initialized = True
        use_lsp_line_endings(ls.workspace)
        changed = ls.apply_settings(params.initialization_options)
        log.info("initialize from %s; settings changed by initializationOptions: %s",
                 params.client_info.name if params.client_info else "unknown client", sorted(changed))

    @server.feature(types.INITIALIZED)
    async def on_initialized(ls: InfillServer, params: types.InitializedParams) -> None:
        ls.apply_settings(await ls.pull_configuration())
        ls.reset_context()
        await ls.load_model()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_configuration(ls: InfillServer, params: types.DidChangeConfigurationParams) -> None:
        pushed = params.settings.get("infill") if isinstance(params.settings, dict) else None
        changed = ls.apply_settings(pushed if pushed is not None else await ls.pull_configuration())
        if changed & set(CONTEXT_SETTINGS):
            ls.reset_context()
        if changed & set(MODEL_SETTINGS):
            await ls.load_model()
        elif "enable" in changed and ls.status.state in ("ready", "disabled"):
            ls.set_status(state="ready" if ls.settings.enable else "disabled")

    @server.feature(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions()
    )
    async def on_inline_completion(ls: InfillServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        result = await ls.suggestion_at("inline", params.text_document.uri, params.position)
        if result is None or result.text is None:
            return types.InlineCompletionList(items=[])
        document = ls.workspace.get_text_document(params.text_document.uri)
        here = types.Range(start=params.position, end=replaced_end(document, params.position, result))
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=result.text, range=here)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def on_completion(ls: InfillServer, params: types.CompletionParams) -> types.CompletionList:
        result = await ls.suggestion_at("completion", params.text_document.uri, params.position)
        if result is None or result.text is None:
            return types.CompletionList(is_incomplete=True, items=[])
        document = ls.workspace.get_text_document(params.text_document.uri)
        word = word_before(result.context.line_prefix)
        start = types.Position(
            line=params.position.line,
            character=params.position.character - document.position_codec.client_num_units(word),
        )
        new_text = word + result.text
        first_line = new_text.split("\n", 1)[0]
        item = types.CompletionItem(
            label=first_line if len(first_line) <= 60 else first_line[:57] + "...",
            kind=types.CompletionItemKind.Snippet,
            detail="infill-ls",
            documentation=new_text,
            filter_text=new_text,
            sort_text="0",
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=types.Range(start=start, end=replaced_end(document, params.position, result)), new_text=new_text),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_did_open(ls: InfillServer, params: types.DidOpenTextDocumentParams) -> None:
        if ls.context:
            ls.context.note_open(params.text_document.uri, snapshot_documents(ls.workspace))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_did_change(ls: InfillServer, params: types.DidChangeTextDocumentParams) -> None:
        if ls.context:
            ls.context.note_change(params.text_document.uri, params.content_changes)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def on_workspace_folders(ls: InfillServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        ls.reset_context()  # pygls has updated its folders; scan the new set

    @server.feature("infill/prompt")
    async def on_prompt(ls: InfillServer, params: Any) -> dict:
        """The prompt the model would get at a position, with its snippets ("why this suggestion")."""
        uri, position = prompt_request(params)
        context = cursor_context(ls, uri, position)
        engine = await ls.wait_for_engine()
        if engine is None:
            return {"prompt": None, "message": ls.status.message or "the model is not loaded"}
        provider, documents, settings = ls.context, snapshot_documents(ls.workspace), ls.settings

        def job():
            repo = provider.gather(uri, context, documents) if provider else None
            return build_prompt(engine.tokenizer, engine.template, context, settings, repo), repo

        prompt, repo = await ls.scheduler.run(job)
        return {
            "prompt": engine.tokenizer.decode(prompt.ids),
            "ids": prompt.ids,
            **prompt_summary(prompt, repo, settings.contextTokens - settings.maxNewTokens, engine.template.name),
            "workspace": provider.describe() if provider else None,
        }

    @server.feature("infill/status")
    def on_status(ls: InfillServer, params: Any) -> dict:
        return dataclasses.asdict(ls.status)

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: InfillServer, params: Any) -> None:
        ls.scheduler.cancel_all()
        if ls.context:
            ls.context.close()

    register_debug_features(server)
    return server
