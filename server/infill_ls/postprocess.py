"""Rules that shape raw model text into a suggestion.

Each rule is a small function of plain strings so it can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CursorContext:
    prefix: str  # all text before the cursor
    suffix: str  # all text after the cursor

    @property
    def line_prefix(self) -> str:
        return self.prefix[self.prefix.rfind("\n") + 1 :]

    @property
    def line_suffix(self) -> str:
        end = self.suffix.find("\n")
        return self.suffix if end < 0 else self.suffix[:end]


def wants_single_line(context: CursorContext, multiline: str) -> bool:
    """One line when the cursor is inside a line of code, several at an empty spot."""
    if multiline == "always":
        return False
    if multiline == "never":
        return True
    return context.line_suffix.strip() != "" and not is_only_closers(context.line_suffix)


CLOSERS = set(")]}>\"'`;,: \t")


def is_only_closers(text: str) -> bool:
    return all(ch in CLOSERS for ch in text)


def first_line_stop(text: str) -> int | None:
    """Stop rule for single-line suggestions: cut at the first line break after some content."""
    newline = text.find("\n")
    if newline < 0:
        return None
    return newline


def strip_suffix_overlap(text: str, line_suffix: str) -> str:
    """Drop the end of a one-line suggestion that repeats what is already right of the cursor.

    ``foo(|)`` with the model writing ``x)`` must insert ``x``, not ``x))``.
    """
    right = line_suffix.rstrip()
    if not right:
        return text
    stripped = text.rstrip()
    if stripped.endswith(right):
        return stripped[: len(stripped) - len(right)]
    # The model closed only some of the closers on the right: ``(|)]`` -> ``x)``.
    for size in range(len(right), 0, -1):
        piece = right[:size]
        if is_only_closers(piece) and stripped.endswith(piece):
            return stripped[: len(stripped) - size]
    return text


def trim_trailing_whitespace(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n") if "\n" in text else text.rstrip()


def clean_suggestion(raw: str, context: CursorContext, single_line: bool) -> str | None:
    """The text to insert at the cursor, or None when nothing useful is left."""
    text = raw.rstrip("\ufffd")  # a token cut in the middle of a UTF-8 character
    if single_line:
        cut = first_line_stop(text)
        if cut is not None:
            text = text[:cut]
        text = strip_suffix_overlap(text, context.line_suffix)
    text = trim_trailing_whitespace(text)
    if not text.strip():
        return None
    return text
