"""What the code around the cursor looks like: one line or a block, and where the block ends.

tree-sitter (``tree-sitter-language-pack``) answers the two questions a plain scan
gets wrong: is the cursor inside a string or comment, and which brackets enclose
it (and are they closed later in the document).  Languages without a grammar, or
without the package installed, fall back to a small lexical scanner that knows
each language's quotes and comments.  The same scanner reads the model's own
output while it is generated (see postprocess.py), where a parser would be overkill.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Iterator

from .prompt import common_prefix_length

log = logging.getLogger(__name__)

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
BRACKETS = "()[]{}"

# Editor language ids (LSP languageId) and file extensions -> tree-sitter grammar names.
LANGUAGE_IDS = {
    "python": "python", "javascript": "javascript", "javascriptreact": "javascript",
    "typescript": "typescript", "typescriptreact": "tsx", "go": "go", "rust": "rust",
    "c": "c", "cpp": "cpp", "java": "java", "csharp": "csharp", "kotlin": "kotlin",
    "scala": "scala", "swift": "swift", "php": "php", "ruby": "ruby", "lua": "lua",
    "shellscript": "bash", "sh": "bash", "bash": "bash",
}
EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp",
    ".hpp": "cpp", ".java": "java", ".cs": "csharp", ".kt": "kotlin", ".scala": "scala", ".swift": "swift",
    ".php": "php", ".rb": "ruby", ".lua": "lua", ".sh": "bash", ".bash": "bash",
}
# Languages whose blocks are made by indentation rather than braces.
INDENT_LANGUAGES = {"python"}


@dataclass(frozen=True)
class Lexicon:
    """Just enough of a language's lexical rules to find brackets outside strings and comments."""

    quotes: str = "\"'"
    line_comment: tuple[str, ...] = ()
    block_comment: tuple[str, str] | None = None
    triple_quotes: bool = False  # Python's '''…''' and \"\"\"…\"\"\"
    char_literals_only: bool = False  # Rust: ' starts a char literal only as 'x' / '\n' (else a lifetime)
    block_opener: str = "{"  # what ends a line that opens a block


C_LIKE = Lexicon(quotes="\"'", line_comment=("//",), block_comment=("/*", "*/"))
LEXICONS = {
    "python": Lexicon(quotes="\"'", line_comment=("#",), triple_quotes=True, block_opener=":"),
    "javascript": Lexicon(quotes="\"'`", line_comment=("//",), block_comment=("/*", "*/")),
    "typescript": Lexicon(quotes="\"'`", line_comment=("//",), block_comment=("/*", "*/")),
    "tsx": Lexicon(quotes="\"'`", line_comment=("//",), block_comment=("/*", "*/")),
    "go": Lexicon(quotes="\"'`", line_comment=("//",), block_comment=("/*", "*/")),
    "rust": Lexicon(quotes="\"'", line_comment=("//",), block_comment=("/*", "*/"), char_literals_only=True),
    "ruby": Lexicon(quotes="\"'", line_comment=("#",)),
    "bash": Lexicon(quotes="\"'", line_comment=("#",)),
    "lua": Lexicon(quotes="\"'", line_comment=("--",)),
    "php": Lexicon(quotes="\"'", line_comment=("//", "#"), block_comment=("/*", "*/")),
}
GENERIC = Lexicon(quotes="\"'")

RUST_CHAR = re.compile(r"'(\\.[^']*|[^\\'])'")


def language_of(language_id: str, document: str = "") -> str | None:
    """The grammar name for an editor language id, or from the document's file extension."""
    if language_id:
        name = LANGUAGE_IDS.get(language_id.lower())
        if name:
            return name
    suffix = PurePosixPath(document).suffix.lower()
    return EXTENSIONS.get(suffix)


def lexicon_of(language: str | None) -> Lexicon:
    if language is None:
        return GENERIC
    return LEXICONS.get(language, C_LIKE)


# ----- the plain scanner -----


@lru_cache(maxsize=64)
def _next_interesting(lexicon: Lexicon, only: str) -> re.Pattern:
    """The characters ``code_characters`` must stop at: ``only`` and whatever may start a string or comment."""
    starts = set(only) | set(lexicon.quotes) | {marker[0] for marker in lexicon.line_comment}
    if lexicon.block_comment:
        starts.add(lexicon.block_comment[0][0])
    return re.compile("[" + "".join(re.escape(ch) for ch in sorted(starts)) + "]")


def code_characters(text: str, lexicon: Lexicon, only: str | None = None) -> Iterator[tuple[int, str]]:
    """(index, character) for each character of ``text`` that is code: not in a string or comment.

    Assumes ``text`` starts in code.  An unterminated one-line string ends at the line end,
    as most languages' error recovery does.  With ``only``, just those characters are
    yielded, and the runs between them are skipped at regex speed (a bracket scan of a
    few thousand characters would otherwise cost milliseconds per keystroke).
    """
    interesting = _next_interesting(lexicon, only) if only else None
    i, n = 0, len(text)
    while i < n:
        if interesting is not None:
            found = interesting.search(text, i)
            if found is None:
                return
            i = found.start()
        ch = text[i]
        if lexicon.block_comment and text.startswith(lexicon.block_comment[0], i):
            end = text.find(lexicon.block_comment[1], i + 2)
            i = n if end < 0 else end + len(lexicon.block_comment[1])
            continue
        if any(text.startswith(marker, i) for marker in lexicon.line_comment):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch in lexicon.quotes:
            if lexicon.char_literals_only and ch == "'":
                match = RUST_CHAR.match(text, i)
                if not match and len(text) - i <= 3:
                    return  # ``'}`` at the end of generated text: a char literal or a lifetime, not known yet
                if not match:  # a lifetime such as 'a
                    if only is None or ch in only:
                        yield i, ch
                    i += 1
                    continue
                i = match.end()
                continue
            i = skip_string(text, i, lexicon)
            continue
        if only is None or ch in only:
            yield i, ch
        i += 1


def skip_string(text: str, start: int, lexicon: Lexicon) -> int:
    """Index just past the string literal starting at ``start``."""
    quote = text[start]
    if lexicon.triple_quotes and text.startswith(quote * 3, start):
        end = text.find(quote * 3, start + 3)
        return len(text) if end < 0 else end + 3
    i = start + 1
    multiline = quote == "`"
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i + 1
        if ch == "\n" and not multiline:
            return i
        i += 1
    return len(text)


# The plain scan reads this much on each side of the cursor, not the whole file: it runs
# whenever tree-sitter's tree has errors, which half-typed code nearly always has, and a
# character-by-character scan of a 5,000-line file took ~80 ms per keystroke.  Brackets
# opened further back than this are not seen (the scan starts at a line beginning).
PLAIN_SCAN_CHARS = 6000
# Windows of the document (this scan's, tree-sitter's) start at a line beginning after a
# point on this grid, so that consecutive keystrokes see windows that differ only where
# the user typed and the work done for the last one can be reused.
SYNTAX_GRID_CHARS = 2048
# The prefix scan resumes from the last one's bracket stack at a bracket at least this
# far before the cursor (edits happen at the cursor).
RESUME_MARGIN_CHARS = 256
# (scanned text, lexicon, bracket stack at its end): the last scan's resume point.
_last_scan: tuple[str, "Lexicon", tuple[str, ...]] | None = None


def window_start(prefix: str, chars: int) -> int:
    """Where a window reaching at least ``chars`` back from the end of ``prefix`` starts."""
    grid = max(len(prefix) - chars, 0) // SYNTAX_GRID_CHARS * SYNTAX_GRID_CHARS
    return prefix.rfind("\n", 0, grid) + 1


def open_brackets(text: str, lexicon: Lexicon) -> list[str]:
    """The brackets still open at the end of ``text`` (which starts in code), outermost first.

    Resumes from the last call's stack when ``text`` starts with the text it had scanned
    up to its resume point: the scanner's state right after a bracket depends only on the
    text before it."""
    global _last_scan
    start, stack = 0, []
    last = _last_scan
    if last is not None and last[1] is lexicon and text.startswith(last[0]):
        start, stack = len(last[0]), list(last[2])
    resume_limit, resume_point = len(text) - RESUME_MARGIN_CHARS, None
    for i, ch in code_characters(text[start:], lexicon, BRACKETS):
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS and stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
        if start + i < resume_limit:
            resume_point = (start + i + 1, tuple(stack))
    if resume_point is not None:
        _last_scan = (text[: resume_point[0]], lexicon, resume_point[1])
    return stack


def plain_enclosing_brackets(prefix: str, suffix: str, lexicon: Lexicon) -> list[tuple[str, bool]]:
    """Open brackets at the cursor, innermost first, each with whether the suffix closes it."""
    innermost_first = open_brackets(prefix[window_start(prefix, PLAIN_SCAN_CHARS):], lexicon)[::-1]
    closed = 0
    depth = 0
    for _, ch in code_characters(suffix[:PLAIN_SCAN_CHARS], lexicon, BRACKETS):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth:
                depth -= 1
            elif closed < len(innermost_first):
                closed += 1
                if closed == len(innermost_first):
                    break  # every open bracket is accounted for
    return [(bracket, index < closed) for index, bracket in enumerate(innermost_first)]


# ----- tree-sitter -----


@lru_cache(maxsize=None)
def tree_sitter_parser(language: str):
    """A parser for ``language``, or None when the grammar (or the package) is missing."""
    try:
        from tree_sitter_language_pack import get_parser

        return get_parser(language)
    except Exception as error:  # ImportError, LookupError, or a pack that wants to download
        log.debug("no tree-sitter grammar for %s: %s", language, error)
        return None


STRING_OR_COMMENT = re.compile(r"string|comment|char_literal|rune_literal|regex|heredoc|template")
# A window around the cursor is parsed, not the whole file: enough to see the
# enclosing blocks of ordinary code (~300 lines each side) while keeping a keystroke's
# parse cheap (30,000 characters each side took 10-15 ms on the 2-core dev machine).
PARSE_WINDOW_CHARS = 12000


@dataclass(frozen=True)
class TreeFacts:
    in_string_or_comment: bool
    # Open brackets around the cursor, innermost first, each closed later or not; None
    # when the tree has errors.
    enclosing: list[tuple[str, bool]] | None


def _point(source: bytes, offset: int) -> tuple[int, int]:
    """tree-sitter's (row, byte column) of a byte offset."""
    row = source.count(b"\n", 0, offset)
    return row, offset - (source.rfind(b"\n", 0, offset) + 1)


class IncrementalParser:
    """One language's parser and its last tree: a new source that differs from the last
    one in a single stretch (a keystroke, a paste) is parsed incrementally."""

    def __init__(self, parser):
        self.parser = parser
        self.lock = threading.Lock()
        self.source: bytes | None = None
        self.tree = None

    def parse(self, source: bytes):
        with self.lock:
            old, tree = self.source, self.tree
            if old is None or tree is None:
                tree = self.parser.parse(source)
            elif old != source:
                start = common_prefix_length(old, source)
                tail = common_prefix_length(old[start:][::-1], source[start:][::-1])
                old_end, new_end = len(old) - tail, len(source) - tail
                tree.edit(
                    start_byte=start, old_end_byte=old_end, new_end_byte=new_end,
                    start_point=_point(old, start), old_end_point=_point(old, old_end),
                    new_end_point=_point(source, new_end),
                )
                tree = self.parser.parse(source, tree)
            self.source, self.tree = source, tree
            return tree


@lru_cache(maxsize=None)
def incremental_parser(language: str) -> IncrementalParser | None:
    parser = tree_sitter_parser(language)
    return IncrementalParser(parser) if parser is not None else None


def tree_facts(language: str, prefix: str, suffix: str) -> TreeFacts | None:
    parser = incremental_parser(language)
    if parser is None:
        return None
    start = window_start(prefix, PARSE_WINDOW_CHARS)
    before = prefix[start:].encode("utf-8")
    source = before + suffix[:PARSE_WINDOW_CHARS].encode("utf-8")
    tree = parser.parse(source)
    offset = len(before)
    node = tree.root_node.descendant_for_byte_range(offset, offset)
    inside = False
    enclosing: list[tuple[str, bool]] = []
    while node is not None:
        if STRING_OR_COMMENT.search(node.type) and node.start_byte < offset:
            # A comment runs to the end of its line; a string ends at its closing quote.
            if offset < node.end_byte or ("comment" in node.type and offset == node.end_byte):
                inside = True
        if node.child_count >= 1:
            first, last = node.children[0], node.children[-1]
            if first.type in OPENERS and first.end_byte <= offset:
                has_closer = node.child_count > 1 and last.type == OPENERS[first.type] and not last.is_missing
                if not has_closer:
                    enclosing.append((first.type, False))
                elif last.start_byte >= offset:  # else the cursor is after the closer: outside
                    enclosing.append((first.type, True))
        node = node.parent
    # Error recovery in half-written code (an unclosed block at the end of the file)
    # can drop an enclosing bracket: then the plain scan of brackets is the better guess.
    return TreeFacts(in_string_or_comment=inside, enclosing=None if tree.root_node.has_error else enclosing)


# ----- the decision -----


@dataclass(frozen=True)
class CursorSyntax:
    """What the post-processing rules need to know about the cursor's surroundings."""

    language: str | None
    lexicon: Lexicon
    single_line: bool
    # Multi-line in an indentation language: a generated line indented less than this
    # (in columns) has left the block.
    min_indent: int | None
    # Open brackets around the cursor, innermost first, and whether the document closes
    # each after the cursor (so a closer the model writes would be a duplicate).
    enclosing: tuple[tuple[str, bool], ...]
    # The bracket closers right of the cursor on its line, as (index in the line suffix, char),
    # when the rest of the line is only closers (typically auto-inserted by the editor).
    line_closers: tuple[tuple[int, str], ...]
    # The next non-blank line after the cursor's line (a model that writes it again is repeating).
    next_line: str
    parsed: bool  # whether tree-sitter answered (False: the plain scanner did)


TRAILING_CLOSERS = set(")]}>\"'`;,: \t")


def is_only_closers(text: str) -> bool:
    return all(ch in TRAILING_CLOSERS for ch in text)


def indent_width(line: str) -> int:
    """Columns of leading whitespace, tabs to the next multiple of 8 (Python's rule)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width = (width // 8 + 1) * 8
        else:
            break
    return width


def analyze(prefix: str, suffix: str, language: str | None, multiline: str) -> CursorSyntax:
    """Single- or multi-line at this cursor, and the facts the block-end rules use.

    ``multiline``: ``always`` / ``never`` force the choice; ``auto`` gives one line
    inside a line of code, in a string or a comment, and several at a blank line or
    after a line that opens a block (``def f():``, ``{``, ``(``).
    """
    lexicon = lexicon_of(language)
    line_prefix = prefix[prefix.rfind("\n") + 1 :]
    newline = suffix.find("\n")
    line_suffix = suffix if newline < 0 else suffix[:newline]
    facts = tree_facts(language, prefix, suffix) if language else None
    enclosing = facts.enclosing if facts and facts.enclosing is not None else plain_enclosing_brackets(prefix, suffix, lexicon)

    if multiline == "never":
        single = True
    elif multiline == "always":
        single = False
    elif line_suffix.strip() and not is_only_closers(line_suffix):
        single = True  # code right of the cursor: finish this line only
    elif facts is not None and facts.in_string_or_comment:
        single = True
    else:
        single = bool(line_prefix.strip()) and not opens_block(line_prefix, lexicon)

    min_indent = None
    if not single and language in INDENT_LANGUAGES:
        min_indent = block_indent(prefix, line_prefix, lexicon)
    line_closers: tuple[tuple[int, str], ...] = ()
    if is_only_closers(line_suffix):
        line_closers = tuple((i, ch) for i, ch in enumerate(line_suffix) if ch in CLOSERS)
    rest = suffix[newline + 1 :] if newline >= 0 else ""
    next_line = first_nonblank_line(rest)
    return CursorSyntax(
        language=language,
        lexicon=lexicon,
        single_line=single,
        min_indent=min_indent,
        enclosing=tuple(enclosing),
        line_closers=line_closers,
        next_line=next_line,
        parsed=facts is not None,
    )


def opens_block(line_prefix: str, lexicon: Lexicon) -> bool:
    """The text before the cursor ends with something that opens a block or a bracket."""
    stripped = line_prefix.rstrip()
    return stripped.endswith((lexicon.block_opener, "(", "[", "{"))


def block_indent(prefix: str, line_prefix: str, lexicon: Lexicon) -> int:
    """Columns a generated line needs to stay inside the block at the cursor."""
    if line_prefix.strip():
        # Cursor after ``def f():`` (or an open bracket): the body is deeper than this line.
        return indent_width(line_prefix) + 1
    indent = indent_width(line_prefix)
    line = last_nonblank_line(prefix, len(prefix) - len(line_prefix))
    if line is not None and opens_block(line, lexicon):
        return max(indent, indent_width(line) + 1)
    return indent


# Both walk only the lines they need: splitting a whole file per keystroke costs ~1 ms.
NONBLANK_LINE = re.compile(r"^[^\S\n]*\S.*", re.M)


def first_nonblank_line(text: str) -> str:
    """The first line of ``text`` with something other than whitespace, right-stripped ("" if none)."""
    match = NONBLANK_LINE.search(text)
    return match.group().rstrip() if match else ""


def last_nonblank_line(text: str, end: int) -> str | None:
    """The last line of ``text[:end]`` with something other than whitespace, or None."""
    while end > 0:
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end]
        if line.strip():
            return line
        end = start - 1
    return None
