"""Rules that shape raw model text into a suggestion.

Each rule is a small function of plain strings so it can be tested alone.  The
stop rules (one line, end of block, repeated lines, a loop within a line, the
document's next line again) run twice: inside the generation loop, every token,
so decoding stops as soon as one triggers; and once more on the final text, for
engines that cannot run them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

from .engine.base import StopRule
from .prompt import common_prefix_length
from .syntax import CLOSERS, OPENERS, CursorSyntax, analyze, code_characters, indent_width, is_only_closers, language_of


@dataclass(frozen=True)
class CursorContext:
    prefix: str  # all text before the cursor
    suffix: str  # all text after the cursor
    language: str = ""  # the editor's language id (LSP languageId), "" when unknown
    document: str = ""  # URI or path of the document (its extension names the language; keys the cache)

    @property
    def line_prefix(self) -> str:
        return self.prefix[self.prefix.rfind("\n") + 1 :]

    @property
    def line_suffix(self) -> str:
        end = self.suffix.find("\n")
        return self.suffix if end < 0 else self.suffix[:end]


@dataclass(frozen=True)
class Suggestion:
    text: str  # what to insert at the cursor
    # How many characters right of the cursor, on its line, the text replaces: closers the
    # editor inserted (``foo(|)``) that the suggestion writes itself (``x) + 1``).
    replace_chars: int = 0


def cursor_syntax(context: CursorContext, multiline: str) -> CursorSyntax:
    return analyze(context.prefix, context.suffix, language_of(context.language, context.document), multiline)


def wants_single_line(context: CursorContext, multiline: str) -> bool:
    """One line when the cursor is inside a line of code, several at an empty spot."""
    return cursor_syntax(context, multiline).single_line


# ----- stop rules: text generated so far -> where to cut it, or None to go on -----


def first_line_stop(text: str) -> int | None:
    """Single-line suggestions end at the first line break."""
    newline = text.find("\n")
    return None if newline < 0 else newline


def walk_generated(text: str, syntax: CursorSyntax) -> Iterator[tuple[int, str, int, int, str | None]]:
    """(index, char, depth, written, event) for each code character of generated text.

    ``depth`` counts the brackets the text opened itself and has not closed; a closer
    it did not open either writes through the next closer right of the cursor
    (event ``through``; ``written`` counts them) or leaves the block (``escape``).
    """
    depth = written = 0
    for index, ch in code_characters(text, syntax.lexicon):
        event = None
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth:
                depth -= 1
            elif written < len(syntax.line_closers) and syntax.line_closers[written][1] == ch:
                written += 1
                event = "through"
            else:
                event = "escape"
        yield index, ch, depth, written, event


def block_end_stop(text: str, syntax: CursorSyntax) -> int | None:
    """Cut where the generated code leaves the block the cursor is in.

    A closing bracket the text did not open first writes through the closers right of
    the cursor (``foo(|)``), else it closes the enclosing block: it is kept only when the
    document does not close that block itself.  In an indentation language a line
    indented less than the block ends it.
    """
    at_line_start = False
    for index, ch, depth, written, event in walk_generated(text, syntax):
        if event == "escape":
            outer = syntax.enclosing[written] if written < len(syntax.enclosing) else None
            if outer is None or outer[1]:
                return line_cut(text, index)  # the document closes it already (or nothing to close)
            return index + 1  # close the unclosed block, then stop
        if ch == "\n":
            if not depth and syntax.line_closers and written == len(syntax.line_closers):
                return index  # wrote through ``{|}``'s closer: the block is done
            at_line_start = not depth
            continue
        first_on_line, at_line_start = at_line_start and not ch.isspace(), at_line_start and ch.isspace()
        if first_on_line and ch not in CLOSERS and syntax.min_indent is not None:
            line_start = text.rfind("\n", 0, index) + 1
            if indent_width(text[line_start:index]) < syntax.min_indent:
                return line_start - 1
    return None


def line_cut(text: str, index: int) -> int:
    """Cut before ``index``, and before its line's indentation when only that precedes it."""
    line_start = text.rfind("\n", 0, index) + 1
    if line_start > 0 and not text[line_start:index].strip():
        return line_start - 1
    return index


def has_code(line: str) -> bool:
    return any(ch.isalnum() for ch in line)


def is_closing_line(line: str) -> bool:
    """``}``, ``});``, ``)``: lines that legitimately come several times in a row."""
    return all(ch in ")]}>;, \t" for ch in line)


def repetition_stop(text: str) -> int | None:
    """Cut a loop: the same line three times in a row, or the same 2-4 line block twice.

    Only complete lines count; the first occurrence is kept.
    """
    complete = text.split("\n")[:-1]
    for period in (1, 2, 3, 4):
        copies = 3 if period == 1 else 2
        span = period * copies
        if len(complete) < span:
            continue
        tail = [line.strip() for line in complete[-span:]]
        block = tail[:period]
        if any(not is_closing_line(line) for line in block) and all(tail[i] == block[i % period] for i in range(span)):
            keep = len(complete) - span + period
            return sum(len(line) + 1 for line in complete[:keep]) - 1
    return None


# Some text (with a word in it) three times in a row within one line: a decoding loop.
LOOP_IN_LINE = re.compile(r"([^\n]{4,80}?)\1\1")


def loop_in_line_stop(text: str) -> int | None:
    """Cut a loop within a line (``x.then(b).then(b).then(b)…``) after its first copy."""
    for match in LOOP_IN_LINE.finditer(text):
        if re.search(r"[A-Za-z_]{2}", match.group(1)):
            return match.start() + len(match.group(1))
    return None


def next_line_stop(text: str, context: CursorContext, syntax: CursorSyntax) -> int | None:
    """Cut where the model writes the line that already follows the cursor's line."""
    if not has_code(syntax.next_line):
        return None  # ``}`` or ``)`` lines are the block rule's business
    lines = text.split("\n")
    start = 0
    for number, line in enumerate(lines[:-1]):  # complete lines only
        whole = context.line_prefix + line if number == 0 else line
        # Same text at the same depth: a nested ``return`` is not the ``return`` that follows.
        if whole.strip() == syntax.next_line.strip() and indent_width(whole) == indent_width(syntax.next_line):
            return max(start - 1, 0)
        start += len(line) + 1
    return None


def stop_rule_for(context: CursorContext, syntax: CursorSyntax) -> StopRule:
    """The rule the generation loop checks after every token."""
    if syntax.single_line:
        rules = [first_line_stop, loop_in_line_stop]
    else:
        rules = [
            lambda text: block_end_stop(text, syntax),
            repetition_stop,
            loop_in_line_stop,
            lambda text: next_line_stop(text, context, syntax),
        ]

    def earliest_cut(text: str) -> int | None:
        cuts = [cut for cut in (rule(text) for rule in rules) if cut is not None]
        return min(cuts) if cuts else None

    return earliest_cut


def apply_stop_rule(text: str, rule: StopRule) -> str:
    """Cut ``text`` where the rule would have stopped the loop (it may not have run there).

    The rule sees the text as the loop did, growing line by line; the end of the text
    counts as the end of its last line.
    """
    ends = [i + 1 for i, ch in enumerate(text) if ch == "\n"] + [len(text), len(text) + 1]
    completed = text + "\n"
    for end in ends:
        cut = rule(completed[:end])
        if cut is not None:
            return text[: min(cut, len(text))]
    return text


# ----- shaping the final text -----


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
    return cut_where_the_line_goes_on(text, right)


# How many characters of the code right of the cursor a suggestion must write again (or
# all of it, if shorter) before it is cut there.  `infill-ls eval --kinds inner` (holes
# inside a line, bundled model, 150 holes, seed 11): exact 1.3 -> 5.3 %, edit similarity
# 16.0 -> 21.2 % (22 holes better, 1 worse); 2 characters: 6.7 / 22.3 % but 4 worse.
RUN_ON_CHARS = 3
WORD_CHARS = re.compile(r"\w")


def cut_where_the_line_goes_on(text: str, right: str) -> str:
    """Cut a one-line suggestion inside a line where it starts writing the code already
    right of the cursor: ``obj|.indent + 1`` with ``obj.indent`` -> ``obj``, ``|= codec``
    with ``codec = codec.encode`` -> ``codec``.  Small models often ignore the suffix and
    write a whole line; that line inserted in the middle of another one is never wanted."""
    right = right.lstrip()
    if not right or is_only_closers(right):
        return text
    need = min(RUN_ON_CHARS, len(right))
    word_start = WORD_CHARS.match(right[0]) is not None
    for i in range(1, len(text)):
        if text[i].isspace() or (word_start and WORD_CHARS.match(text[i - 1])):
            continue  # the right side starts a token; so must the repeat
        if common_prefix_length(text[i:], right) >= need:
            return text[:i].rstrip()
    return text


def closers_written_through(text: str, syntax: CursorSyntax) -> tuple[int, int]:
    """How many of the closers right of the cursor the text writes itself (unopened closers,
    in order), and the index in ``text`` of the last one (-1 when none)."""
    count, last = 0, -1
    for index, _, _, written, event in walk_generated(text, syntax):
        if event == "escape":
            break
        if event == "through":
            count, last = written, index
    return count, last


def settle_closers(text: str, context: CursorContext, syntax: CursorSyntax) -> Suggestion:
    """Avoid doubling what is right of the cursor: drop it from a one-line text that ends with
    it, else replace it (the item's range) when the text writes through its closers."""
    if "\n" not in text.rstrip():
        stripped = strip_suffix_overlap(text, context.line_suffix)
        if stripped != text:
            return Suggestion(stripped)
    count, last = closers_written_through(text, syntax)
    if count == 0:
        return Suggestion(text)
    line_suffix = context.line_suffix.rstrip()
    covered = syntax.line_closers[count - 1][0] + 1
    # ``{|};`` written as ``…};``: the ``;`` after the closer is the text's too.
    line_end = text.find("\n", last)
    rest_of_line = text[last + 1 : None if line_end < 0 else line_end].rstrip()
    if line_suffix[covered:] and rest_of_line.endswith(line_suffix[covered:]):
        covered = len(line_suffix)
    return Suggestion(text, replace_chars=covered)


# The file's indentation is read from this many characters on each side of the cursor
# (a few hundred lines), not the whole file: it runs on every suggestion.
INDENT_SAMPLE_CHARS = 8000
# Leading spaces of a line with code after them (the text is searched with a "\n" in front).
SPACE_INDENT = re.compile(r"\n( +)[^\n]*?\S")


def indent_style(source: str) -> tuple[str, int] | None:
    """("tab", 1) or ("space", step) for the document's indentation; None when it has none."""
    # C-speed searches, not a loop over lines.  (A "^" pattern in MULTILINE mode is
    # slower than the loop; searching for "\n" is not.)
    lines = "\n" + source
    tabs = lines.count("\n\t")
    widths = [len(spaces) for spaces in SPACE_INDENT.findall(lines)]
    if not tabs and not widths:
        return None
    if tabs > len(widths):
        return "tab", 1
    step = math.gcd(*widths)
    return "space", step if step in (2, 3, 4, 8) else 4


def match_indentation(text: str, context: CursorContext) -> str:
    """Re-indent generated lines with the document's tabs or spaces."""
    lines = text.split("\n")
    first = 0 if context.line_prefix == "" else 1  # the first line continues the cursor's line
    if not any(line[:1] in (" ", "\t") for line in lines[first:]):
        return text  # nothing indented (most single-line suggestions): skip reading the document
    style = indent_style(context.prefix[-INDENT_SAMPLE_CHARS:] + context.suffix[:INDENT_SAMPLE_CHARS])
    if style is None:
        return text
    kind, step = style
    for number in range(first, len(lines)):
        line = lines[number]
        body = line.lstrip(" \t")
        leading = line[: len(line) - len(body)]
        if kind == "tab" and " " in leading:
            columns = len(leading.replace("\t", "    "))
            leading = "\t" * (columns // 4) + " " * (columns % 4)
        elif kind == "space" and "\t" in leading:
            leading = leading.replace("\t", " " * step)
        lines[number] = leading + body
    return "\n".join(lines)


def trim_trailing_whitespace(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n") if "\n" in text else text.rstrip()


def finish_suggestion(raw: str, context: CursorContext, syntax: CursorSyntax) -> Suggestion | None:
    """The suggestion to show for the model's text, or None when nothing useful is left."""
    text = raw.rstrip("\ufffd")  # a token cut in the middle of a UTF-8 character
    text = apply_stop_rule(text, stop_rule_for(context, syntax))
    text = match_indentation(text, context)
    suggestion = settle_closers(text, context, syntax)
    text = trim_trailing_whitespace(suggestion.text)
    if not text.strip():
        return None
    return Suggestion(text, suggestion.replace_chars)
