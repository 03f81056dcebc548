"""The evaluation harness: holes cut deterministically from real code, scores, the command."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import server_env
from infill_ls.evaluate import cut_holes, default_sources, edit_similarity, python_files, summarize
from infill_ls.syntax import is_only_closers

STDLIB_FILES = python_files(default_sources())


def test_holes_are_deterministic_given_a_seed():
    first = cut_holes(STDLIB_FILES, 12, seed=7)
    assert first == cut_holes(STDLIB_FILES, 12, seed=7)
    assert first != cut_holes(STDLIB_FILES, 12, seed=8)
    assert {hole.kind for hole in first} == {"line", "block"}


def test_a_hole_is_the_text_between_prefix_and_suffix():
    for hole in cut_holes(STDLIB_FILES, 12, seed=3) + cut_holes(STDLIB_FILES, 8, seed=3, kinds=("inner",)):
        with open(hole.file, encoding="utf-8") as source:
            original = source.read()
        assert original.startswith(hole.prefix) and original.endswith(hole.suffix)
        removed = original[len(hole.prefix) : len(original) - len(hole.suffix)]
        assert removed.rstrip() == hole.expected and hole.expected.strip()
        if hole.kind == "line":
            assert "\n" not in hole.expected and hole.suffix.startswith("\n")
        elif hole.kind == "inner":  # an expression with code right of it, not only closers
            right = hole.suffix.split("\n")[0].strip()
            assert "\n" not in hole.expected and 3 <= len(hole.expected) <= 40
            assert right and not is_only_closers(right), (hole.expected, right)
        else:  # a whole block body, the cursor at its indentation
            assert "\n" in hole.expected and hole.prefix.endswith((" ", "\t"))
            assert hole.prefix.rstrip(" \t").endswith("\n")


def test_scores():
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "abcd") == 0.0
    assert edit_similarity("abcd", "abed") == 0.75
    rows = [
        {"exact": True, "similarity": 1.0, "empty": False, "latencyMs": 10.0, "generatedTokens": 4},
        {"exact": False, "similarity": 0.0, "empty": True, "latencyMs": 30.0, "generatedTokens": 0},
    ]
    summary = summarize(rows)
    assert (summary["exactMatch"], summary["editSimilarity"], summary["emptyShare"]) == (0.5, 0.5, 0.5)
    assert (summary["latencyMsP50"], summary["latencyMsP95"]) == (10.0, 30.0)


def test_eval_command_writes_a_report(tiny_model, tmp_path):
    report_path = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "infill_ls", "eval", "--model", str(tiny_model), "--limit", "2", "--seed", "1",
         "--max-new-tokens", "8", "--output", str(report_path), "--samples", "--typing", "2"],
        env=server_env(), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(report_path.read_text())
    assert set(report["arms"]) == {"postprocess=on,repoContext=off", "postprocess=off,repoContext=off"}
    for arm in report["arms"].values():
        assert arm["all"]["holes"] == 2
        assert 0 <= arm["all"]["editSimilarity"] <= 1
    assert len(report["samples"]) == 4
    assert all(sample["generatedTokens"] <= 8 for sample in report["samples"])
    typing = report["typing"]
    holes = [sample for sample in report["samples"] if sample["arm"].startswith("postprocess=on")]
    # A request at the hole, then one after each keystroke (2, or fewer on a shorter first line).
    assert typing["requests"] == sum(min(2, len(hole["expected"].split("\n")[0])) + 1 for hole in holes)
    assert 0 <= typing["cacheHits"] <= typing["requests"]
