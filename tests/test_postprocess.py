"""Golden tests of post-processing: (document with a cursor, raw model output) -> suggestion.

``█`` marks the cursor.  Each row names the rule it exercises; the same table runs
through the stop rule the generation loop uses, token by token, to check that the
loop stops where the final shaping would cut.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infill_ls.postprocess import (
    CursorContext,
    Suggestion,
    apply_stop_rule,
    cursor_syntax,
    finish_suggestion,
    indent_style,
    repetition_stop,
    stop_rule_for,
)

CURSOR = "█"

# (rule, language, document with cursor, raw model output, expected text or None, replace_chars, multiline)
GOLDEN = [
    # --- Python ---
    ("single line: cut at the first line break", "python",
     "def f(x):\n    return █\n", "x + 1\n    print(x)\n", "x + 1", 0, "auto"),
    ("closers right of the cursor: dropped when the text ends with them", "python",
     "print(len(█))\n", "items))\n", "items", 0, "auto"),
    ("closers right of the cursor: only some of them written", "python",
     "foo(a, bar(b, █))\n", "c)", "c", 0, "auto"),
    ("closers written through: the range replaces them", "python",
     "x = max(█)\n", "a, b) + 1\n", "a, b) + 1", 1, "auto"),
    ("code right of the cursor repeated by the model", "python",
     "result = █(a, b)\n", "max(a, b)\n", "max", 0, "auto"),
    ("inside a line: the model runs on into the code right of the cursor", "python",
     "width = obj█.indent + level\n", "obj.indent * 2\n", "obj", 0, "auto"),
    ("inside a line: an assignment written again", "python",
     "    █ = codec\n", "codec = codec.encode\n", "codec", 0, "auto"),
    ("inside a line: a dot and a different name are not the code on the right", "python",
     "stream = █.buffer\n", "sys.stdin\n", "sys.stdin", 0, "auto"),
    ("inside a line: the right side's word inside a longer word is not a repeat", "python",
     "x = █count + 1\n", "total_count\n", "total_count", 0, "auto"),
    ("block end: a line indented less than the body", "python",
     "def f(x):\n    █\n\ndef g():\n    pass\n", "y = x * 2\n    return y\n\ndef h():\n    pass\n",
     "y = x * 2\n    return y", 0, "auto"),
    ("block end: body after the line that opens it", "python",
     "def f(x):█\n", "\n    return x\nprint(f(1))\n", "\n    return x", 0, "auto"),
    ("next line of the document repeated", "python",
     "def f(x):\n    █\n    return total\n", "total = sum(x)\n    return total\n", "total = sum(x)", 0, "auto"),
    ("next line's text deeper in the suggestion is not a repeat", "python",
     "def f(x):\n    █\n    return\n", "if x:\n        return\n    x.close()\n    return\n", "if x:\n        return\n    x.close()", 0, "auto"),
    ("repetitive loop: the same line again and again", "python",
     "items = []\n█\n", "items.append(1)\nitems.append(1)\nitems.append(1)\nitems.append(1)\n", "items.append(1)", 0, "auto"),
    ("repetitive loop: a two-line block twice", "python",
     "config = {\n    █\n}\n", "'a': 1,\n    'b': 2,\n    'a': 1,\n    'b': 2,\n", "'a': 1,\n    'b': 2,", 0, "auto"),
    ("loop within a line: cut after its first copy", "python",
     "def f(a):\n    █\n", "b = a * 2\n    x = a.copy().copy().copy().copy()\n", "b = a * 2\n    x = a.copy()", 0, "auto"),
    ("loop within a one-line suggestion", "python",
     "total = █\n", "count(items) count(items) count(items) count(items)", "count(items)", 0, "auto"),
    ("repeated numbers are data, not a loop", "python",
     "zeros = █\n", "[0, 0, 0, 0, 0, 0, 0, 0]\n", "[0, 0, 0, 0, 0, 0, 0, 0]", 0, "auto"),
    ("repetitive loop: quote-only lines count too", "python",
     "def f():\n    █\n", 'x = 1\n    """\n    """\n    """\n    """\n', 'x = 1\n    """', 0, "auto"),
    ("closing lines in a row are not a loop", "javascript",
     "function f() {\n  █\n}\n", "if (a) {\n    if (b) {\n      if (c) {\n        g();\n      }\n    }\n  }\n}\n",
     "if (a) {\n    if (b) {\n      if (c) {\n        g();\n      }\n    }\n  }", 0, "auto"),
    ("whitespace only: no item", "python",
     "def f():\n    █\n", "   \n  \n", None, 0, "auto"),
    ("empty output: no item", "python",
     "def f():\n    █\n", "", None, 0, "auto"),
    ("trailing whitespace trimmed on every line", "python",
     "def f():\n    █\n", "x = 1   \n    y = 2  \n", "x = 1\n    y = 2", 0, "auto"),
    ("indentation: spaces from the model become the document's tabs", "python",
     "def f(x):\n\tif x:\n\t\treturn 1\n\t█\n", "for i in range(x):\n        print(i)\n", "for i in range(x):\n\t\tprint(i)", 0, "auto"),
    ("inside a string: one line, closing quote not doubled", "python",
     'msg = "hello █"\n', 'world"\nprint(msg)\n', "world", 0, "auto"),
    ("inside a docstring: one line", "python",
     'def f():\n    """Sum.\n\n    █\n    """\n', "Args:\n        x: the values\n", "Args:", 0, "auto"),
    ("multiline never: one line even at an empty line", "python",
     "def f():\n    █\n", "a = 1\n    b = 2\n", "a = 1", 0, "never"),
    ("multiline always: several lines even mid-line", "python",
     "x = █\n", "[\n    1,\n]\n", "[\n    1,\n]", 0, "always"),
    ("inside brackets the document closes: stop before the closer", "python",
     "values = [\n    █\n]\n", "1,\n    2,\n]\nprint(values)\n", "1,\n    2,", 0, "auto"),
    ("unclosed bracket at the end of the file: the closer is kept", "python",
     "print(█", "x)\nprint(y)\n", "x)", 0, "auto"),
    ("half a UTF-8 character at the end", "python",
     "name = █\n", "'caf\ufffd", "'caf", 0, "auto"),
    ("closers plus colon right of the cursor", "python",
     "def f(█):\n", "x, y):\n    return x + y\n", "x, y", 0, "auto"),
    # --- JavaScript / TypeScript ---
    ("brace block closed by the document: stop at its closer", "javascript",
     "function f(a) {\n  █\n}\n", "return a * 2;\n}\n\nfunction g() {}\n", "return a * 2;", 0, "auto"),
    ("auto-closed braces written through: replaced by the range", "javascript",
     "if (ok) {█}\n", "\n  run();\n}\nmore();\n", "\n  run();\n}", 1, "auto"),
    ("auto-closed braces and semicolon written through", "typescript",
     "const config = {█};\n", "\n  port: 8080,\n  host: 'localhost',\n};\nstart(config);\n",
     "\n  port: 8080,\n  host: 'localhost',\n};", 2, "auto"),
    ("single line: semicolon right of the cursor not doubled", "typescript",
     "const name = user.█;\n", "firstName;\nconsole.log(name);\n", "firstName", 0, "auto"),
    ("template string: one line", "javascript",
     "const s = `Hello ${name}, █`;\n", "welcome back`;\nconsole.log(s);\n", "welcome back", 0, "auto"),
    ("repetitive loop in a class body", "typescript",
     "class Stack {\n  █\n}\n", "push(x) {}\n  push(x) {}\n  push(x) {}\n  push(x) {}\n", "push(x) {}", 0, "auto"),
    ("block end followed by else: cut at the closer", "javascript",
     "if (a) {\n  █\n}\n", "b();\n} else {\n  c();\n}\n", "b();", 0, "auto"),
    ("unclosed block at the end of the file: the closer is kept", "javascript",
     "function f() {\n  █", "return 1;\n}\n\nf();\n", "return 1;\n}", 0, "auto"),
    ("brace inside a string does not end the block", "typescript",
     "function f(): string {\n  █\n}\n", 'const s = "}";\n  return s;\n}\n', 'const s = "}";\n  return s;', 0, "auto"),
    ("brace inside a comment does not end the block", "javascript",
     "function f() {\n  █\n}\n", "// close } later\n  return 1;\n}\n", "// close } later\n  return 1;", 0, "auto"),
    # --- Go ---
    ("Go: function body ends at the document's closer", "go",
     "func add(a, b int) int {\n\t█\n}\n", "return a + b\n}\n\nfunc sub() {}\n", "return a + b", 0, "auto"),
    ("Go: spaces from the model become tabs; nested block kept", "go",
     "func f(n int) {\n\tfor i := 0; i < n; i++ {\n\t\t█\n\t}\n}\n",
     "if i > 2 {\n            break\n        }\n\t}\n}\n", "if i > 2 {\n\t\t\tbreak\n\t\t}", 0, "auto"),
    ("Go: brace in a rune literal", "go",
     "func f() rune {\n\t█\n}\n", "c := '}'\n\treturn c\n}\n", "c := '}'\n\treturn c", 0, "auto"),
    ("Go: brace in a raw string", "go",
     "func f() string {\n\t█\n}\n", "s := `}`\n\treturn s\n}\n", "s := `}`\n\treturn s", 0, "auto"),
    ("Go: single line after a selector", "go",
     "func f(s string) string {\n\tx := strings.█\n\treturn x\n}\n", "ToUpper(s)\n\treturn x\n", "ToUpper(s)", 0, "auto"),
    ("Go: next line of the document repeated", "go",
     "func f() int {\n\tx := 1\n\t█\n\treturn x\n}\n", "x++\n\treturn x\n}\n", "x++", 0, "auto"),
    # --- Rust ---
    ("Rust: braces in a format string do not end the block", "rust",
     "fn main() {\n    █\n}\n", 'let x = 5;\n    println!("{}", x);\n}\n\nfn other() {}\n', 'let x = 5;\n    println!("{}", x);', 0, "auto"),
    ("Rust: lifetimes are not char literals", "rust",
     "fn first<'a>(s: &'a str) -> &'a str {\n    █\n}\n", "let r: &'a str = s;\n    r\n}\n", "let r: &'a str = s;\n    r", 0, "auto"),
    ("Rust: brace in a char literal", "rust",
     "fn f() -> char {\n    █\n}\n", "let c = '}';\n    c\n}\n", "let c = '}';\n    c", 0, "auto"),
    ("Rust: repeated match arm", "rust",
     "fn f(x: u8) -> u8 {\n    match x {\n        █\n    }\n}\n", "1 => 1,\n        1 => 1,\n        1 => 1,\n        _ => 0,\n", "1 => 1,", 0, "auto"),
    ("JavaScript: loop within a line", "javascript",
     "function f() {\n  █\n}\n", "return 1;\n  a.then(b).then(b).then(b).then(b);\n}\n", "return 1;\n  a.then(b)", 0, "auto"),
    ("Rust: closers right of the cursor not doubled", "rust",
     "fn f() {\n    let v = vec![1, 2, █];\n}\n", "3];\n", "3", 0, "auto"),
    ("Rust: call written through with `?`: range covers the closer and the semicolon", "rust",
     "fn f() -> Result<u8, E> {\n    let n = compute(█);\n}\n", "a, b)?;\n    let m = 2;\n", "a, b)?;", 2, "auto"),
]


def split(document: str, language: str) -> CursorContext:
    prefix, suffix = document.split(CURSOR)
    return CursorContext(prefix=prefix, suffix=suffix, language=language)


@pytest.mark.parametrize("rule, language, document, raw, expected, replace, multiline", GOLDEN, ids=[row[0] for row in GOLDEN])
def test_golden(rule, language, document, raw, expected, replace, multiline):
    context = split(document, language)
    suggestion = finish_suggestion(raw, context, cursor_syntax(context, multiline))
    assert suggestion == (None if expected is None else Suggestion(expected, replace))


@pytest.mark.parametrize("rule, language, document, raw, expected, replace, multiline", GOLDEN, ids=[row[0] for row in GOLDEN])
def test_loop_stops_where_the_text_is_cut(rule, language, document, raw, expected, replace, multiline):
    """Fed one character at a time (as tokens arrive), the stop rule fires no later than
    the end of what the suggestion keeps, and what it keeps shapes to the same suggestion."""
    context = split(document, language)
    syntax = cursor_syntax(context, multiline)
    rule_fn = stop_rule_for(context, syntax)
    generated = raw
    for end in range(1, len(raw) + 1):
        cut = rule_fn(raw[:end])
        if cut is not None:
            generated = raw[:end][:cut]
            break
    assert finish_suggestion(generated, context, syntax) == finish_suggestion(raw, context, syntax)


def test_table_covers_every_language_and_enough_cases():
    languages = {row[1] for row in GOLDEN}
    assert {"python", "javascript", "typescript", "go", "rust"} <= languages
    assert len(GOLDEN) >= 30


def test_repetition_needs_complete_lines():
    assert repetition_stop("a = 1\na = 1\na = 1") is None  # the third line may still grow
    assert repetition_stop("a = 1\na = 1\na = 1\n") == len("a = 1")


def test_apply_stop_rule_treats_the_end_as_a_line_end():
    context = split("def f(x):\n    █\n    return total\n", "python")
    rule = stop_rule_for(context, cursor_syntax(context, "auto"))
    assert apply_stop_rule("total = 0\n    return total", rule) == "total = 0"


def indent_style_by_lines(source: str):
    """indent_style's definition, line by line (the regex version must agree)."""
    tabs = spaces = 0
    widths = []
    for line in source.split("\n"):
        if line.startswith("\t"):
            tabs += 1
        elif line.startswith(" ") and line.strip():
            spaces += 1
            widths.append(len(line) - len(line.lstrip(" ")))
    if tabs == spaces == 0:
        return None
    if tabs > spaces:
        return "tab", 1
    return "space", math.gcd(*widths) if math.gcd(*widths) in (2, 3, 4, 8) else 4


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([" ", "  ", "    ", "\t", "x", "if a:", "\n", "\r\n", "\r", "\x0c", "\u2028", "\xa0", "é"]),
                max_size=40).map("".join))
def test_indent_style_matches_the_line_by_line_definition(source):
    assert indent_style(source) == indent_style_by_lines(source)


CODE_PIECES = ["x", "obj", ".", "(", ")", "[", "]", "{", "}", ",", ":", " ", "  ", " = ", "==", "'", '"', "#",
               "\n", "\n    ", "\t", "return ", "if ", "é", "\u2028", "\x0c"]


@settings(max_examples=300, deadline=None)
@given(before=st.lists(st.sampled_from(CODE_PIECES), max_size=25).map("".join),
       after=st.lists(st.sampled_from(CODE_PIECES), max_size=25).map("".join),
       raw=st.lists(st.sampled_from(CODE_PIECES), max_size=25).map("".join),
       language=st.sampled_from(["python", "javascript", "go", ""]))
def test_post_processing_only_cuts_a_one_line_suggestion_inside_a_line(before, after, raw, language):
    """Whatever the document and the model's text: no exception; the result is None or
    non-blank without trailing whitespace, replaces no more than the rest of the line, and,
    for one line after text on the cursor's line, is the start of the model's first line
    (the rules cut; they never add)."""
    context = CursorContext(prefix="def f():\n    " + before, suffix=after, language=language, document="file:///f")
    syntax = cursor_syntax(context, "auto")
    suggestion = finish_suggestion(raw, context, syntax)
    if suggestion is None:
        return
    assert suggestion.text.strip() and suggestion.text == suggestion.text.rstrip()
    assert 0 <= suggestion.replace_chars <= len(context.line_suffix)
    if syntax.single_line and context.line_prefix:
        assert "\n" not in suggestion.text
        assert raw.split("\n")[0].startswith(suggestion.text), (raw, suggestion.text)
