"""The server's copy of open documents, split into lines the way LSP does.

pygls splits documents with ``str.splitlines``, which also breaks lines at form
feeds, vertical tabs, U+0085, U+2028, U+2029 and U+001C..U+001E.  LSP counts only
``\\n``, ``\\r\\n`` and ``\\r``, so a file with a form feed (common in Python and
Lisp sources) or a U+2028 in a string got every later edit applied at the wrong
place.  These subclasses keep pygls' code and change only the line split.
"""

from __future__ import annotations

import re

from pygls.workspace import TextDocument, Workspace

# A line with its ending, or the last line without one.
LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str) -> tuple[str, ...]:
    """``text.splitlines(keepends=True)`` with LSP's line endings only."""
    return tuple(LSP_LINE.findall(text))


class LspTextDocument(TextDocument):
    @property
    def lines(self) -> tuple[str, ...]:
        return split_lines(self.source)


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
