"""Typed-through cache: the rest of a shown suggestion while the user types it.

After a suggestion ``T`` was given at prefix ``P`` / suffix ``S``, a request at
prefix ``P + t`` where ``T`` starts with ``t`` is answered with ``T[len(t):]``,
no model call.  Typing over a closer the editor auto-inserted (the suggestion
replaced it, see ``Suggestion.replace_chars``) removes it from the suffix; that
still counts as typing through.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from .lru import LruDict
from .postprocess import CursorContext, Suggestion

# Settings that change what the model is asked or how its answer is shaped; the rest
# (timeouts, debounce, logging) do not make a cached suggestion wrong.
SHAPING_SETTINGS = ("model", "quantization", "device", "maxNewTokens", "contextTokens", "multiline", "template")


@dataclass(frozen=True)
class Entry:
    document: str
    settings_key: tuple
    prefix: str
    suffix: str
    suggestion: Suggestion


def settings_key(settings) -> tuple:
    return tuple(getattr(settings, name) for name in SHAPING_SETTINGS)


class SuggestionCache:
    """A small LRU of recent suggestions, keyed by document, position context and settings."""

    def __init__(self, size: int = 32):
        self._entries: LruDict = LruDict(size)  # (document, settings, prefix, suffix) -> Entry
        self._lock = threading.Lock()  # stored from the model worker, read on the event loop
        self.hits = 0

    def store(self, context: CursorContext, settings, suggestion: Suggestion) -> None:
        entry = Entry(context.document, settings_key(settings), context.prefix, context.suffix, suggestion)
        key = (entry.document, entry.settings_key, entry.prefix, entry.suffix)
        with self._lock:
            self._entries[key] = entry

    def lookup(self, context: CursorContext, settings) -> Suggestion | None:
        """The rest of a cached suggestion the user is typing through, or None."""
        wanted = settings_key(settings)
        with self._lock:
            for key in reversed(self._entries):
                entry = self._entries[key]
                if entry.document != context.document or entry.settings_key != wanted:
                    continue
                rest = remaining(entry, context)
                if rest is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return rest
        return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def remaining(entry: Entry, context: CursorContext) -> Suggestion | None:
    """What is left of ``entry``'s suggestion at ``context``, when the user typed part of it."""
    text = entry.suggestion.text
    typed_chars = len(context.prefix) - len(entry.prefix)
    overtyped = len(entry.suffix) - len(context.suffix)
    # Lengths and the few typed characters first: the full comparisons below read the
    # whole file, and a lookup tries up to 32 entries per keystroke (0.16 ms on 250 kB).
    if not (0 <= typed_chars < len(text) and 0 <= overtyped <= entry.suggestion.replace_chars):
        return None
    if not typed_chars and not overtyped:
        return None  # the same spot asked again: the model answers (its prompt cache makes that quick)
    typed = context.prefix[len(entry.prefix) :]
    # Closers right of the cursor that the suggestion replaces may have been typed over.
    if not text.startswith(typed) or not context.prefix.startswith(entry.prefix) or not entry.suffix.endswith(context.suffix):
        return None
    rest = text[typed_chars:]
    if not rest.strip():
        return None  # typed it all: time for a fresh suggestion
    return dataclasses.replace(entry.suggestion, text=rest, replace_chars=entry.suggestion.replace_chars - overtyped)
