"""Repository context: which snippets reach the prompt, the budget, and what is never read.

Real files on disk, the tiny model's real tokenizer, the same entry points the
server and ``infill-ls prompt`` use.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from context_fixture import HELPERS, MAIN_PREFIX, MAIN_SUFFIX, REPORTS, make_workspace
from infill_ls.context import IMPORTS, ContextProvider, OpenDocument, PathRules, Workspace, imported_paths, lines_containing
from infill_ls.postprocess import CursorContext
from infill_ls.prompt import NEIGHBOURHOOD_TOKENS, ContextFile, PromptTokenizer, RepoContext, build_fim_prompt
from infill_ls.templates import STARCODER2

CURSOR = CursorContext(MAIN_PREFIX, MAIN_SUFFIX)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return PromptTokenizer(AutoTokenizer.from_pretrained(tiny_model))


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path)


def gather(ws: Path, documents: list[OpenDocument] | None = None, **options) -> RepoContext:
    provider = ContextProvider([ws], **options)
    try:
        main = ws / "app" / "main.py"
        if documents is None:
            return provider.gather_now(main, CURSOR)
        provider.workspace.wait()
        provider.workspace.load_now(provider.workspace.neighbours(*provider.workspace.locate(main), MAIN_PREFIX))
        return provider.gather(main.as_uri(), CURSOR, documents)
    finally:
        provider.close()


def render(tokenizer, repo: RepoContext, budget: int = 1984):
    prompt = build_fim_prompt(tokenizer, STARCODER2, CURSOR.prefix, CURSOR.suffix, budget, repo)
    return prompt, tokenizer.decode(prompt.ids)


def test_typing_a_helpers_name_brings_its_definition_under_its_path(workspace, tokenizer):
    repo = gather(workspace)
    assert (repo.repo_name, repo.path) == ("ws", "app/main.py")
    assert repo.snippets[0].path == "app/billing/helpers.py"
    prompt, text = render(tokenizer, repo)
    assert text.startswith("<repo_name>ws<file_sep>")
    assert "<file_sep>app/billing/helpers.py\n" + HELPERS in text
    assert text.endswith("<file_sep><fim_prefix>app/main.py\n" + MAIN_PREFIX + "<fim_suffix>" + MAIN_SUFFIX + "<fim_middle>")


def test_an_unrelated_file_stays_out_when_the_budget_is_tight(workspace, tokenizer):
    repo = gather(workspace)
    paths = [s.path for s in repo.snippets]
    assert paths.index("app/billing/helpers.py") < paths.index("app/reports.py")
    # With room for everything both files are in the prompt…
    _, roomy = render(tokenizer, repo, 1984)
    assert HELPERS in roomy and REPORTS in roomy
    # …with the smallest budget that holds the helper, the lower-ranked file is not.
    for budget in range(NEIGHBOURHOOD_TOKENS, 1984, 8):
        prompt, text = render(tokenizer, repo, budget)
        if HELPERS in text:
            break
    assert len(prompt) <= budget
    assert "app/reports.py" not in text and "monthly_report" not in text
    assert MAIN_PREFIX in text  # the cursor's own file is whole, not cut for snippets


def test_secrets_ignored_binary_outside_and_huge_files_never_reach_the_prompt(workspace, tokenizer):
    # Every trap is also open in the editor: being open must not let it in either.
    traps = [".env", "app/.env.production", "config/credentials.json", "config/server.pem", "id_rsa",
             "generated/invoice_cache.py", "app/debug.log", "app/linked.py", "app/blob.py", "app/huge.py",
             "app/linked_dir/secret.py", "app/../../outside/secret.py"]
    documents = [OpenDocument((workspace / "app/main.py").as_uri(), workspace / "app/main.py",
                              MAIN_PREFIX + MAIN_SUFFIX, 1, "python")]
    for rel in traps:
        path = workspace / rel
        text = path.read_bytes().decode("utf-8", "replace")
        documents.append(OpenDocument(path.as_uri(), path, text, 1, "python"))
    repo = gather(workspace, documents)
    _, text = render(tokenizer, repo, 100_000)
    assert "LEAKED" not in text
    assert HELPERS in text  # the check above is not vacuous: context does get in
    assert all("LEAKED" not in s.text for s in repo.snippets)


def test_the_scan_lists_only_readable_files_and_counts_what_it_skipped(workspace):
    scan = Workspace([workspace], 100, PathRules())
    scan.scan()
    listed = set(scan.files[workspace.resolve()])
    assert listed == {"app/main.py", "app/billing/__init__.py", "app/billing/helpers.py", "app/reports.py",
                      "app/blob.py", ".gitignore"}  # blob.py is refused when read: it is binary
    assert scan.read(workspace.resolve(), "app/blob.py") is None
    skipped = scan.summary()["skipped"]
    assert skipped["secret"] == 5 and skipped["gitignored"] == 2 and skipped["outside"] == 1
    assert skipped["large"] == 1 and skipped["symlink"] == 1 and skipped["binary"] == 1


def test_a_scan_stops_at_its_file_bound(workspace):
    scan = Workspace([workspace], 2, PathRules())
    scan.scan()
    summary = scan.summary()
    assert summary["files"] == 2 and summary["truncated"] is True


def test_configured_exclude_patterns_keep_files_out(workspace):
    provider = ContextProvider([workspace], exclude=("app/billing/",))
    try:
        repo = provider.gather_now(workspace / "app" / "main.py", CURSOR)
    finally:
        provider.close()
    assert "app/billing/helpers.py" not in [s.path for s in repo.snippets]
    assert "app/reports.py" in [s.path for s in repo.snippets]


def test_context_files_off_keeps_only_the_current_file(workspace, tokenizer):
    repo = gather(workspace, enabled=False)
    assert repo.snippets == []
    _, text = render(tokenizer, repo)
    assert text == "<repo_name>ws<file_sep><fim_prefix>app/main.py\n" + MAIN_PREFIX + "<fim_suffix>" + MAIN_SUFFIX + "<fim_middle>"


def test_open_documents_and_recent_edits_are_sources(workspace):
    notes = workspace / "app" / "notes.py"  # open in the editor, never saved
    lines = [f"filler_{i} = {i}\n" for i in range(200)]
    lines[150] = "def checkout_with_discount(cart, customer, items):\n"
    documents = [
        OpenDocument((workspace / "app/main.py").as_uri(), workspace / "app/main.py", MAIN_PREFIX + MAIN_SUFFIX, 3, "python"),
        OpenDocument(notes.as_uri(), notes, "".join(lines), 7, "python"),
    ]
    provider = ContextProvider([workspace])
    try:
        provider.workspace.wait()
        provider.recent.record(notes.as_uri(), 150)
        repo = provider.gather(documents[0].uri, CURSOR, documents)
    finally:
        provider.close()
    recent = [s for s in repo.snippets if s.path == "app/notes.py"]
    assert recent and recent[0].source == "recent"
    assert "def checkout_with_discount" in recent[0].text


def test_a_file_outside_the_workspace_gets_the_single_file_prompt(workspace, tmp_path, tokenizer):
    elsewhere = tmp_path / "outside" / "loose.py"
    elsewhere.write_text(MAIN_PREFIX)
    provider = ContextProvider([workspace])
    try:
        assert provider.gather_now(elsewhere, CURSOR) is None
    finally:
        provider.close()


def test_consecutive_keystrokes_keep_the_context_part_of_the_prompt(workspace, tokenizer):
    provider = ContextProvider([workspace])
    try:
        first = provider.gather_now(workspace / "app/main.py", CURSOR)
        typed = CursorContext(MAIN_PREFIX + "cart.it", MAIN_SUFFIX)
        second = provider.gather_now(workspace / "app/main.py", typed)
    finally:
        provider.close()
    a = build_fim_prompt(tokenizer, STARCODER2, CURSOR.prefix, CURSOR.suffix, 1984, first)
    b = build_fim_prompt(tokenizer, STARCODER2, typed.prefix, typed.suffix, 1984, second)
    shared = next(i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y)
    # Everything up to the text typed is the same tokens (the engine reuses its KV cache).
    assert shared >= len(a.ids) - a.suffix_tokens - 3


def test_imports_point_at_local_modules():
    assert "app/billing/helpers.py" in imported_paths("app/main.py", "from app.billing.helpers import x\n")
    assert "app/util.py" in imported_paths("app/main.py", "from .util import y\n")
    assert "src/lib/api.ts" in imported_paths("src/app.ts", "import { get } from './lib/api'\n")
    assert "src/defs.h" in imported_paths("src/main.c", '#include "defs.h"\n')


# Whole lines of real-looking code, imports among them: each import pattern must find in
# the lines that mention its words what it finds in the whole text.
IMPORT_LINES = {
    "python": ["import os", "import a, b.c", "    import pkg.mod as m", "from .util import y", "from .. import up",
               "from a.b import (c,", "    d)", "x = 1  # import nothing", "def f(): import json",
               "'''from here import there'''", "value = imported", "", "   ", "from_ = 3", "\timport tabbed"],
    "js": ["import { get } from './lib/api'", "const x = require('./x')", "export * from '../up'",
           "import('./lazy')", "// from './not'", "let from = 1", "import React from 'react'", ""],
    "c": ['#include "defs.h"', '#  include "sub/x.h"', "#include <stdio.h>", "int include = 0;", "/* include */", ""],
}


@hsettings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(IMPORT_LINES)).flatmap(
    lambda language: st.tuples(st.just(language), st.lists(st.sampled_from(IMPORT_LINES[language]), max_size=30))))
def test_import_patterns_find_in_keyword_lines_what_they_find_in_the_whole_text(case):
    language, lines = case
    text = "\n".join(lines)
    pattern, words = IMPORTS[language]
    assert pattern.findall(lines_containing(text, words)) == pattern.findall(text)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(IMPORT_LINES["python"]), max_size=12), st.integers(0, 400)),
                min_size=1, max_size=6))
def test_keyword_lines_around_the_cursor_equal_a_whole_scan(edits):
    """The request path rescans only the cursor's line when the text around it is unchanged;
    for any sequence of texts and cursors it must give the whole text's keyword lines."""
    from infill_ls.context import KeywordLinesAround

    scan, words = KeywordLinesAround(), IMPORTS["python"][1]
    base = "\n".join(IMPORT_LINES["python"][:6])
    for lines, cursor in edits:
        # Mostly the same text around a typed line (the reuse), sometimes all different.
        text = base + "\n" + "\n".join(lines) if cursor % 3 else "\n".join(lines)
        assert scan(text, min(cursor, len(text)), words) == lines_containing(text, words)


SERVER_SOURCES = sorted((Path(__file__).resolve().parent.parent / "server" / "infill_ls").glob("*.py"))


@hsettings(max_examples=60, deadline=None)
@given(file_index=st.integers(0, len(SERVER_SOURCES) - 1), lines=st.integers(0, 130))
def test_a_windows_names_are_those_of_its_text(file_index, lines):
    """cut_windows finds each half-window's names once and unions two halves per window;
    that must equal reading the window's whole text (files cut to 0-130 lines cover fewer
    lines than a window, exact multiples of a half, and a tail window)."""
    from infill_ls.context import WINDOW_LINES, cut_windows, identifiers

    text = "".join(SERVER_SOURCES[file_index].read_text().splitlines(keepends=True)[:lines])
    windows = cut_windows(text)
    assert all(window.tokens == identifiers(window.text) for window in windows)
    assert all(window.text.count("\n") <= WINDOW_LINES for window in windows)


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.tuples(st.integers(0, len(SERVER_SOURCES) - 1), st.sampled_from(["open", "workspace", "recent"]),
                             st.sampled_from([1.0, 0.5]), st.integers(1, 60)), min_size=1, max_size=6),
    query_file=st.integers(0, len(SERVER_SOURCES) - 1),
    query_line=st.integers(0, 400),
)
def test_window_scores_are_the_jaccard_similarity_of_identifiers(picks, query_file, query_line):
    """Scores through the cached inverted indexes equal the definition, window by window."""
    from infill_ls.context import MIN_SCORE, RECENT_EDIT_BONUS, Candidate, cut_windows, identifiers, score_windows

    candidates = []
    for file_index, source, weight, count in picks:  # short lists are scored directly, long ones indexed
        windows = cut_windows(SERVER_SOURCES[file_index].read_text())[:count]
        candidates.append(Candidate(SERVER_SOURCES[file_index].name, source, windows, weight))
    lines = SERVER_SOURCES[query_file].read_text().splitlines()
    query = identifiers("\n".join(lines[query_line:query_line + 30]))
    expected = []
    for c in candidates:
        for window in c.windows:
            union = len(query | window.tokens)
            score = len(query & window.tokens) / union * c.weight if union else 0.0
            score += RECENT_EDIT_BONUS if c.source == "recent" else 0.0
            if query & window.tokens and score >= MIN_SCORE:
                expected.append((score, c.path, window.start, c.source, window))
    assert score_windows(candidates, query) == expected
    assert score_windows(candidates, query) == expected  # again: long lists now through their indexes
    assert score_windows(candidates, query, indexed=False) == expected  # as training scores them


def test_the_word_being_typed_is_not_in_the_query():
    from infill_ls.context import query_tokens

    before = "import billing\n\ndef total(invoice):\n    amount = billing.net(invoice)\n    return compute_"
    queries = [query_tokens(CursorContext(before + typed, "\nprint(done)\n")) for typed in ("", "t", "ta", "tax")]
    assert all(query == queries[0] for query in queries)  # the same query while the word grows
    assert {"billing", "invoice", "amount", "print", "done"} <= queries[0]
    assert not any(token.startswith("compute_") for token in queries[0])
    # Once the word is finished (a character that ends it), it counts.
    assert "compute_tax" in query_tokens(CursorContext(before + "tax(", "\n"))


def test_a_reused_ranking_never_outlives_its_windows():
    """Ranking the same query over the same window lists again reuses the last ranking; a
    file whose windows changed (a new list) is ranked anew."""
    from infill_ls.context import Candidate, cut_windows, identifiers

    query = identifiers("def net_amount(invoice): return invoice.total - invoice.discount")
    old = cut_windows("def unrelated(x):\n    return x * 2\n")
    new = cut_windows("def net_amount(invoice):\n    return invoice.total - invoice.discount\n")
    first = ContextProvider.rank([Candidate("a.py", "open", old, 1.0)], query, CURSOR)
    again = ContextProvider.rank([Candidate("a.py", "open", old, 1.0)], query, CURSOR)
    changed = ContextProvider.rank([Candidate("a.py", "open", new, 1.0)], query, CURSOR)
    assert first == again == []
    assert [c.text for c in changed] == [new[0].text]


def test_a_sticky_ranking_survives_a_finished_word_but_not_a_move():
    """The server's rankings (sticky) are kept while the query stays close to the one they
    were made for, so the snippets, and with them the prompt's start, stay put; a query
    far from it (the cursor moved elsewhere) ranks anew, and without ``sticky`` (the
    evaluation and training code) any other query does."""
    from infill_ls.context import STICKY_QUERY_SIMILARITY, Candidate, cut_windows, identifiers, similarity

    invoices = cut_windows("def net_amount(invoice):\n    return invoice.total - invoice.discount\n")
    mailers = cut_windows("def send_mail(server, message):\n    server.deliver(message)\n")
    candidates = [Candidate("billing.py", "open", invoices, 1.0), Candidate("mail.py", "open", mailers, 1.0)]
    names = [f"local_{i}" for i in range(20)]
    query = identifiers(" ".join(names + ["invoice", "total", "discount"]))
    one_more_word = query | {"server"}  # a finished word that mail.py's window shares
    assert similarity(query, one_more_word) >= STICKY_QUERY_SIMILARITY
    elsewhere = identifiers("server message deliver send_mail")

    first = ContextProvider.rank(candidates, query, CURSOR, sticky=True)
    assert [c.path for c in first] == ["billing.py"]
    assert ContextProvider.rank(candidates, one_more_word, CURSOR, sticky=True) == first
    moved = ContextProvider.rank(candidates, elsewhere, CURSOR, sticky=True)
    assert moved[0].path == "mail.py"
    # Not sticky: every query is ranked for itself.
    ContextProvider.rank(candidates, query, CURSOR)
    assert [c.path for c in ContextProvider.rank(candidates, one_more_word, CURSOR)] == ["billing.py", "mail.py"]


words = st.from_regex(r"[a-z_]{1,8}( |\n|\(|\)|=|: ){1,2}", fullmatch=True)
code = st.lists(words, max_size=400).map("".join)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=code, suffix=code, snippets=st.lists(code, max_size=5),
       budget=st.integers(min_value=3, max_value=1500), path=st.sampled_from([None, "pkg/mod.py"]))
def test_prompt_never_exceeds_the_budget_and_keeps_the_cursor_neighbourhood(tokenizer, prefix, suffix, snippets, budget, path):
    files = [ContextFile(f"lib/f{i}.py", text, 1.0 - i / 10) for i, text in enumerate(snippets)]
    repo = RepoContext("proj", path, files)
    prompt = build_fim_prompt(tokenizer, STARCODER2, prefix, suffix, budget, repo)
    assert len(prompt) <= budget
    alone = build_fim_prompt(tokenizer, STARCODER2, prefix, suffix, budget, RepoContext("proj", path, []))
    kept, alone_kept = prompt.prefix_tokens + prompt.suffix_tokens, alone.prefix_tokens + alone.suffix_tokens
    # The cursor's neighbourhood is not given up for snippets (less at most the
    # 1/8 slack of a stable prefix cut, see PromptTokenizer.stable_tail).
    assert kept >= min(alone_kept, NEIGHBOURHOOD_TOKENS) * 7 // 8


def test_a_long_files_prefix_keeps_its_start_while_typing(tokenizer):
    # Stable cut: consecutive keystrokes share every prompt token before the typed text.
    body = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 400))
    repo = RepoContext("proj", "pkg/long.py", [ContextFile("pkg/other.py", "def compute(a, b):\n    return a + b\n")])
    previous = None
    for typed in ("res", "resu", "resul", "result", "result ", "result =", "result = c"):
        prompt = build_fim_prompt(tokenizer, STARCODER2, body + typed, "\n", 600, repo)
        assert prompt.prefix_cut and len(prompt) <= 600
        if previous is not None:
            shared = next((i for i, (x, y) in enumerate(zip(previous.ids, prompt.ids)) if x != y), len(previous.ids))
            assert shared >= len(previous.ids) - 5 - previous.suffix_tokens
        previous = prompt
