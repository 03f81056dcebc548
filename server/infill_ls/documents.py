"""The server's copy of open documents, split into lines the way LSP does.

pygls splits documents with ``str.splitlines``, which also breaks lines at form
feeds, vertical tabs, U+0085, U+2028, U+2029 and U+001C..U+001E.  LSP counts only
``\\n``, ``\\r\\n`` and ``\\r``, so a file with a form feed (common in Python and
Lisp sources) or a U+2028 in a string got every later edit applied at the wrong
place.  These subclasses keep pygls' code and change the line split, and apply an
edit by slicing: pygls rebuilds the whole text line by line in Python (0.5 ms per
keystroke on a 5,000-line file) and the next request would split it again.
"""

from __future__ import annotations

import re

from pygls.workspace import TextDocument, Workspace

# A line with its ending, or the last line without one.
LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
# What str.splitlines breaks at besides \n, \r\n and \r.
OTHER_BREAK_CHARS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def split_lines(text: str) -> tuple[str, ...]:
    """``text.splitlines(keepends=True)`` with LSP's line endings only."""
    # ``in`` per character is a C-speed scan, several times faster than the regex over a big file.
    if not any(ch in text for ch in OTHER_BREAK_CHARS):
        return tuple(text.splitlines(True))  # the same split, 2-3x faster
    return tuple(LSP_LINE.findall(text))


def text_offset(lines: tuple[str, ...], position, known: tuple[int, int] = (0, 0)) -> int:
    """Offset in the text of a server position (line, character in code points); past the
    end of a line (or of the text) counts as its end, as pygls' own edit does.  ``known``:
    (a line at or before the position's, its offset), to count from there."""
    line, offset = known if known[0] <= position.line else (0, 0)
    if position.line >= len(lines):
        return offset + len("".join(lines[line:]))
    # join: C speed (pygls sums the line lengths in Python)
    return offset + len("".join(lines[line : position.line])) + min(position.character, len(lines[position.line]))


class LspTextDocument(TextDocument):
    _lines_of: str | None = None
    _lines: tuple[str, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        # pygls asks for the lines several times per change; split a big file once.
        source = self.source
        if source is not self._lines_of:
            self._lines, self._lines_of = split_lines(source), source
        return self._lines

    def _apply_incremental_change(self, change) -> None:
        lines, source, text = self.lines, self.source, change.text
        if not lines:
            self._source = source + text
            return
        edit = self._position_codec.range_from_client_units(lines, change.range)
        # Re-split the edited lines and one unchanged line on each side: a line break
        # depends only on the two characters at it ("\r" + "\n"), and the characters
        # at the region's edges are unchanged, so everything outside splits as before.
        first = max(min(edit.start.line, len(lines)) - 1, 0)
        last = min(max(edit.end.line, edit.start.line) + 1, len(lines) - 1)
        region_start = len("".join(lines[:first]))  # the one join of the text before the edit
        start = text_offset(lines, edit.start, (first, region_start))
        end = max(start, text_offset(lines, edit.end, (first, region_start)))
        new_source = source[:start] + text + source[end:]
        region_end = region_start + len("".join(lines[first:last + 1])) + len(text) - (end - start)
        self._source = new_source
        self._lines = lines[:first] + split_lines(new_source[region_start:region_end]) + lines[last + 1:]
        self._lines_of = new_source


class LspWorkspace(Workspace):
    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> TextDocument:
        return LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self._position_codec,
        )


def use_lsp_line_endings(workspace: Workspace) -> None:
    """Make ``workspace`` (created by pygls during initialize) split new documents LSP's way."""
    workspace.__class__ = LspWorkspace
