"""Hooks for tests and bug reports, off unless asked for by an environment variable.

``INFILL_LS_DEBUG=1`` adds the request ``infill/cursorContext`` (params: an LSP
``TextDocumentPositionParams``; result ``{"prefix", "suffix", "version"}``): the text
before and after a position exactly as the suggestion pipeline splits it.  It shows
what the server's copy of a document is, e.g. to check an editor's incremental sync.

``INFILL_LS_INJECT_FAULT=KIND:N`` is a FAULT-INJECTION HOOK: the next N model
forwards raise ``oom`` (``torch.cuda.OutOfMemoryError``) or ``error`` (RuntimeError).
It lets tests exercise GPU out-of-memory handling on a machine without a GPU.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lsprotocol import types


def debug_requests_enabled() -> bool:
    return os.environ.get("INFILL_LS_DEBUG") == "1"


def register_debug_features(server) -> None:
    if not debug_requests_enabled():
        return
    from .server import cursor_context

    @server.feature("infill/cursorContext")
    def on_cursor_context(ls, params: Any) -> dict:
        uri, line, character = params.textDocument.uri, params.position.line, params.position.character
        context = cursor_context(ls, uri, types.Position(line=line, character=character))
        document = ls.workspace.get_text_document(uri)
        return {"prefix": context.prefix, "suffix": context.suffix, "version": document.version}


class FaultInjector:
    """Raises the configured fault on the next N calls of ``maybe_raise`` (thread-safe)."""

    def __init__(self, spec: str | None):
        self.kind, self.remaining = None, 0
        if spec:
            kind, _, count = spec.partition(":")
            if kind not in ("oom", "error"):
                raise ValueError(f"INFILL_LS_INJECT_FAULT: unknown fault {kind!r} (expected oom or error)")
            self.kind, self.remaining = kind, int(count or 1)
        self._lock = threading.Lock()

    def maybe_raise(self) -> None:
        if not self.remaining:
            return
        with self._lock:
            if self.remaining <= 0:
                return
            self.remaining -= 1
        if self.kind == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by INFILL_LS_INJECT_FAULT)")
        raise RuntimeError("model forward failed (injected by INFILL_LS_INJECT_FAULT)")


injected_faults = FaultInjector(os.environ.get("INFILL_LS_INJECT_FAULT"))
