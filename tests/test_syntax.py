"""The single- or multi-line decision and the facts about the cursor, per language."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from infill_ls.syntax import analyze, code_characters, language_of, lexicon_of, open_brackets, plain_enclosing_brackets

CURSOR = "█"

# (language, document with cursor, single line?)
DECISIONS = [
    ("python", "def f(x):\n    █\n", False),  # empty line in a block
    ("python", "def f(x):█\n", False),  # end of a line that opens a block
    ("python", "x = compute(█)\n", False),  # open bracket, only its closer to the right
    ("python", "x = compute(a, █)\n", True),  # inside a line of code
    ("python", "x = █ + 1\n", True),  # code to the right
    ("python", "total = █\n", True),  # finishing a statement
    ("python", 'x = "a █ b"\n', True),  # in a string
    ("python", 'def f():\n    """Doc.\n\n    █\n    """\n', True),  # blank line, but inside a docstring
    ("python", "# a comment █\n", True),
    ("javascript", "function f() {\n  █\n}\n", False),
    ("javascript", "if (ok) {█}\n", False),
    ("javascript", "const s = `x ${█}`;\n", True),  # inside a template string
    ("javascript", "// note {\n█\n", False),  # a brace in a comment opens nothing, the line is empty
    ("typescript", "const n: number = █;\n", True),
    ("typescript", "class A {\n  █\n}\n", False),
    ("tsx", "const el = <div>{█}</div>;\n", True),  # markup right of the cursor
    ("go", "func f() {\n\t█\n}\n", False),
    ("go", "func f() {\n\tx := strings.█\n}\n", True),
    ("go", 'func f() {\n\ts := "a█"\n}\n', True),
    ("rust", "fn main() {\n    █\n}\n", False),
    ("rust", "fn main() {\n    let x = █;\n}\n", True),
    ("rust", "fn f<'a>(s: &'a str) {\n    █\n}\n", False),
    (None, "some text █ more\n", True),  # no grammar: plain rules
    (None, "\n█\n", False),
]


def split(document: str) -> tuple[str, str]:
    prefix, suffix = document.split(CURSOR)
    return prefix, suffix


@pytest.mark.parametrize("language, document, single", DECISIONS, ids=[f"{row[0]}:{row[1]!r}" for row in DECISIONS])
def test_single_or_multi_line(language, document, single):
    prefix, suffix = split(document)
    facts = analyze(prefix, suffix, language, "auto")
    assert facts.single_line is single
    assert facts.parsed is (language is not None)  # tree-sitter answers for every grammar here


@pytest.mark.parametrize("multiline, single", [("always", False), ("never", True)])
def test_setting_overrides_the_syntax(multiline, single):
    for language, document, _ in DECISIONS:
        prefix, suffix = split(document)
        assert analyze(prefix, suffix, language, multiline).single_line is single


@pytest.mark.parametrize(
    "language, document, enclosing",
    [
        ("python", "values = [\n    █\n]\n", (("[", True),)),
        ("python", "print(█", (("(", False),)),
        ("javascript", "function f() {\n  if (a) {\n    █\n  }\n}\n", (("{", True), ("{", True))),
        ("javascript", "function f() {\n  █", (("{", False),)),  # unfinished file: the plain scan decides
        ("go", 'func f() {\n\ts := "{"\n\t█\n}\n', (("{", True),)),  # the brace in the string is not one
        ("rust", "fn f() {\n    let c = '{';\n    █\n}\n", (("{", True),)),
        ("python", "foo()█\n", ()),
    ],
)
def test_enclosing_brackets(language, document, enclosing):
    prefix, suffix = split(document)
    assert analyze(prefix, suffix, language, "auto").enclosing == enclosing


def test_block_indent_in_python():
    prefix, suffix = split("class A:\n    def f(self):\n        █\n")
    assert analyze(prefix, suffix, "python", "auto").min_indent == 8
    prefix, suffix = split("def f():\n█\n")  # editor did not indent: the body is still deeper
    assert analyze(prefix, suffix, "python", "auto").min_indent == 1


def test_closers_and_next_line():
    prefix, suffix = split("foo(bar(█));\nnext_call()\n")
    facts = analyze(prefix, suffix, "python", "auto")
    assert facts.line_closers == ((0, ")"), (1, ")"))
    assert facts.next_line == "next_call()"


def test_language_from_id_or_extension():
    assert language_of("typescriptreact") == "tsx"
    assert language_of("", "file:///src/main.rs") == "rust"
    assert language_of("plaintext", "notes.txt") is None


def test_plain_scanner_skips_strings_and_comments():
    code = 'a("(") # )\nb = """ ( """; c[1]'
    assert "".join(ch for _, ch in code_characters(code, lexicon_of("python")) if ch in "()[]") == "()[]"
    assert plain_enclosing_brackets("f(x, '(' ", ")\n", lexicon_of("python")) == [("(", True)]


@hsettings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(list("ab ()[]{}\"'`#/*-\\\n\tx") + ["'''", '"""', "/*", "*/", "//", "--", "'a"]),
                  max_size=120).map("".join),
    language=st.sampled_from(["python", "javascript", "rust", "lua", "php", "c", None]),
)
def test_the_bracket_only_scan_finds_what_the_full_scan_finds(text, language):
    lexicon = lexicon_of(language)
    full = [(i, ch) for i, ch in code_characters(text, lexicon) if ch in "()[]{}"]
    assert list(code_characters(text, lexicon, "()[]{}")) == full


BRACKET_PIECES = list("ab ()[]{}\"'`#/*-\\\n\tx") + ["'''", '"""', "/*", "*/", "//", "--", "'a"]


@hsettings(max_examples=300, deadline=None)
@given(
    base=st.lists(st.sampled_from(BRACKET_PIECES + ["xxxxxxxxxxxxxxxx"]), min_size=50, max_size=400).map("".join),
    # Typing and deleting, mostly near the end (where the cursor is), sometimes anywhere.
    edits=st.lists(st.tuples(st.one_of(st.floats(0.9, 1), st.floats(0, 1)), st.sampled_from(BRACKET_PIECES + [""]),
                             st.integers(0, 3)), max_size=20),
    language=st.sampled_from(["python", "javascript", "rust", "lua", "php", "c", None]),
)
def test_a_resumed_bracket_scan_finds_the_stack_of_a_scan_from_the_start(base, edits, language):
    lexicon = lexicon_of(language)
    text = base
    for where, typed, deleted in [(1.0, "", 0), *edits]:
        at = int(where * len(text))
        text = text[:at] + typed + text[at + deleted:]
        expected: list[str] = []
        for _, ch in code_characters(text, lexicon):
            if ch in "([{":
                expected.append(ch)
            elif ch in ")]}" and expected and expected[-1] == {")": "(", "]": "[", "}": "{"}[ch]:
                expected.pop()
        assert open_brackets(text, lexicon) == expected


SOURCE = (Path(__file__).resolve().parent.parent / "server" / "infill_ls" / "context.py").read_text()


@hsettings(max_examples=40, deadline=None)
@given(
    cursor=st.integers(min_value=0, max_value=len(SOURCE)),
    edits=st.lists(st.one_of(st.sampled_from(list("abc_(). :\n'\"é🐍#") + ["    ", "def f(", '"""']),
                             st.integers(min_value=1, max_value=3)), max_size=25),
)
def test_incremental_parsing_gives_the_tree_of_a_fresh_parse(cursor, edits):
    """Typing (text) and backspacing (counts) at a cursor: each reused tree equals a fresh parse."""
    from infill_ls.syntax import IncrementalParser, tree_sitter_parser

    parser = tree_sitter_parser("python")
    incremental = IncrementalParser(parser)
    prefix, suffix = SOURCE[:cursor], SOURCE[cursor:]
    for edit in [""] + edits:
        prefix = prefix + edit if isinstance(edit, str) else prefix[:-edit]
        source = (prefix + suffix).encode("utf-8")
        assert str(incremental.parse(source).root_node) == str(parser.parse(source).root_node)


@hsettings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="a :\n\t\r\x0c\u2028", max_size=60), data=st.data())
def test_line_walkers_agree_with_splitting_the_whole_text(text, data):
    from infill_ls.syntax import first_nonblank_line, last_nonblank_line

    assert first_nonblank_line(text) == next((line.rstrip() for line in text.split("\n") if line.strip()), "")
    end = data.draw(st.integers(min_value=0, max_value=len(text)))
    expected = next((line for line in reversed(text[:end].rstrip("\n").split("\n")) if line.strip()), None)
    assert last_nonblank_line(text, end) == expected
