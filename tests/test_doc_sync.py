"""Document sync is exact: after any sequence of incremental edits, the server's copy is the client's text.

A reference model (a Python string, split into lines the way LSP does: ``\\n``,
``\\r\\n`` and ``\\r`` only) turns random edits into LSP ranges in the negotiated
position encoding; the real server receives them as ``didChange`` notifications
and is asked, through the debug request ``infill/cursorContext``, how it splits the
document at a random position: the prefix and suffix the suggestion pipeline uses.

One server per encoding runs many sequences (a fresh document each), so thousands
of sequences take seconds.  ``INFILL_SYNC_EXAMPLES`` sets the count per encoding.
"""

from __future__ import annotations

import itertools
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import server_command, server_env
from raw_lsp import RawLspProcess

EXAMPLES = int(os.environ.get("INFILL_SYNC_EXAMPLES", "700"))
ENCODINGS = ["utf-8", "utf-16", "utf-32"]

# Pieces text is made of: ASCII, tabs, every LSP line ending, 2- and 3-byte UTF-8,
# non-BMP characters (two UTF-16 units), a combining mark, and characters Python's
# str.splitlines() treats as line breaks but LSP does not (form feed, U+2028, U+0085).
PIECES = ["a", "b", "x = 1", " ", "\t", "\n", "\r\n", "\r", "é", "€", "中", "😀", "𝕏", "👍🏽", "e\u0301",
          "\x0c", "\u2028", "\x85", "\x0b"]
text_strategy = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lsp_lines(text: str) -> list[str]:
    """The document's lines as LSP counts them, without their line endings."""
    return LINE_BREAK.split(text)


def units(text: str, encoding: str) -> int:
    if encoding == "utf-32":
        return len(text)
    return len(text.encode("utf-16-le" if encoding == "utf-16" else "utf-8")) // (2 if encoding == "utf-16" else 1)


def position_at(text: str, offset: int, encoding: str) -> dict:
    before = text[:offset]
    line_starts = [m.end() for m in LINE_BREAK.finditer(before)]
    line_start = line_starts[-1] if line_starts else 0
    return {"line": len(line_starts), "character": units(text[line_start:offset], encoding)}


def boundaries(text: str) -> list[int]:
    """Offsets an editor can put a cursor at: not between the two halves of a CRLF."""
    return [i for i in range(len(text) + 1) if not (0 < i < len(text) and text[i - 1] == "\r" and text[i] == "\n")]


def pick(choices: list[int], fraction: float) -> int:
    return choices[min(int(fraction * len(choices)), len(choices) - 1)]


fraction = st.floats(min_value=0, max_value=1, allow_nan=False)
# One edit: where it starts, how far it reaches (0 = a pure insertion), what it inserts.
edit_strategy = st.tuples(fraction, st.one_of(st.just(0.0), fraction), text_strategy)
# A didChange carries one or several changes, applied in order.
change_strategy = st.lists(edit_strategy, min_size=1, max_size=3)


@pytest.fixture(scope="module", params=ENCODINGS)
def server(request, tiny_model):
    env = {**server_env(), "INFILL_LS_DEBUG": "1"}
    process = RawLspProcess(server_command("--model", str(tiny_model)), env)
    result = process.initialize(capabilities={"general": {"positionEncodings": [request.param]}})
    assert result["result"]["capabilities"]["positionEncoding"] == request.param
    process.encoding = request.param
    process.documents = itertools.count()
    yield process
    assert process.close() == 0
    assert process.stdout_garbage == []


def apply_edits(text: str, edits, encoding: str) -> tuple[str, list[dict]]:
    """Apply edits to the reference text; return it and the LSP content changes that say the same."""
    changes = []
    for start_fraction, reach, inserted in edits:
        cursor_offsets = boundaries(text)
        start = pick(cursor_offsets, start_fraction)
        end = pick([o for o in cursor_offsets if o >= start], reach)
        changes.append({"range": {"start": position_at(text, start, encoding), "end": position_at(text, end, encoding)},
                        "text": inserted})
        text = text[:start] + inserted + text[end:]
        # An insertion can put "\r" right before "\n": they become one line ending, as in an editor.
    return text, changes


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(initial=text_strategy, notifications=st.lists(change_strategy, max_size=8), query=fraction)
def test_server_copy_equals_client_text(server, initial, notifications, query):
    encoding = server.encoding
    uri = f"file:///sync/doc{next(server.documents)}.txt"
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": initial}})
    text = initial
    for version, edits in enumerate(notifications, start=2):
        text, changes = apply_edits(text, edits, encoding)
        server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": changes})
    offset = pick(boundaries(text), query)
    server.request(uri, "infill/cursorContext", {"textDocument": {"uri": uri}, "position": position_at(text, offset, encoding)})
    response = server.response(uri, timeout=30)
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert "error" not in response, response["error"]
    seen = response["result"]
    assert seen["prefix"] + seen["suffix"] == text
    assert seen["prefix"] == text[:offset]
    assert seen["version"] == len(notifications) + 1
