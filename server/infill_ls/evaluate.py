"""``infill-ls eval``: cut holes in real code, fill them, score the suggestions.

The code is not ours: Python files of the standard library (PSF licence) or of any
directories given with ``--source`` (use permissively licensed packages).  A hole
is the rest of one line (the cursor somewhere inside a statement), the whole body of a
block (the cursor at the body's indentation, under ``def …:``, ``for …:``, …), or an
expression inside a line with more code right of it (an argument, an operand: the
cursor at its start, editing inside a line).  Each hole is filled through
``completion.suggest`` — the path an editor's request takes — and, for comparison, with
the model's raw text (the same prompt; only the one-line cut where the cursor asks for
one line, no other rule).

Everything is deterministic given ``--seed`` and the same sources: the file list is
sorted, sampling uses its own ``random.Random``, decoding is greedy.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import SuggestionCache
from .completion import build_prompt, cached_suggestion, suggest
from .engine.base import GenerationRequest
from .postprocess import CursorContext, cursor_syntax, first_line_stop
from .settings import Settings
from .syntax import is_only_closers

HOLE_KINDS = ("line", "block", "inner")
DEFAULT_KINDS = ("line", "block")  # the figures of earlier runs; "inner" on request
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib", "lib2to3", "turtledemo"}
MIN_FILE_CHARS, MAX_FILE_CHARS = 1_000, 200_000
MAX_BLOCK_LINES = 12


@dataclass(frozen=True)
class Hole:
    file: str
    kind: str  # line | block
    line: int  # 1-based line of the cursor
    prefix: str
    suffix: str
    expected: str


def default_sources() -> list[Path]:
    return [Path(sysconfig.get_paths()["stdlib"])]


def python_files(roots: list[Path]) -> list[Path]:
    files = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if SKIPPED_DIRS & set(path.relative_to(root).parts[:-1]):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if MIN_FILE_CHARS <= size <= MAX_FILE_CHARS:
                files.append(path)
    return files


def line_hole(text: str, tree: ast.AST, rng: random.Random) -> tuple[int, int, int] | None:
    """(start, cursor, end) offsets: the rest of a one-line statement from a random column."""
    lines = text.split("\n")
    statements = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.stmt) and node.lineno == node.end_lineno
        and not isinstance(node, (ast.Pass, ast.Break, ast.Continue, ast.Import, ast.ImportFrom))
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # docstrings
        and len(lines[node.lineno - 1].strip()) >= 8
    ]
    if not statements:
        return None
    node = rng.choice(statements)
    line = lines[node.lineno - 1]
    start = sum(len(x) + 1 for x in lines[: node.lineno - 1])
    indent = len(line) - len(line.lstrip())
    column = rng.randrange(indent, len(line.rstrip()))
    return start, start + column, start + len(line)


def block_hole(text: str, tree: ast.AST, rng: random.Random) -> tuple[int, int, int] | None:
    """(start, cursor, end) offsets: a block's whole body, the cursor at its indentation."""
    lines = text.split("\n")
    blocks = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, ast.stmt) or not isinstance(body, list) or not body:
            continue
        first, last = body[0], body[-1]
        if first.lineno <= node.lineno or not 2 <= last.end_lineno - first.lineno + 1 <= MAX_BLOCK_LINES:
            continue  # a one-line ``if x: y`` or a body too long for a suggestion
        if not lines[first.lineno - 2].rstrip().endswith(":"):
            continue  # a comment or decorator line between the header and the body
        blocks.append((first.lineno, last.end_lineno))
    if not blocks:
        return None
    first_line, last_line = rng.choice(blocks)
    start = sum(len(x) + 1 for x in lines[: first_line - 1])
    body_line = lines[first_line - 1]
    cursor = start + len(body_line) - len(body_line.lstrip())
    end = sum(len(x) + 1 for x in lines[:last_line]) - 1
    return start, cursor, end


def inner_hole(text: str, tree: ast.AST, rng: random.Random) -> tuple[int, int, int] | None:
    """(start, cursor, end) offsets: an expression of 3-40 characters inside one line, with
    code right of it that is not only closing brackets (``total = |price * quantity| + tax``)."""
    lines = text.split("\n")
    spans = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr) or node.lineno != node.end_lineno:
            continue
        line = lines[node.lineno - 1]
        if not line.isascii():  # ast's columns count UTF-8 bytes
            continue
        rest = line[node.end_col_offset :].strip()
        if 3 <= node.end_col_offset - node.col_offset <= 40 and rest and not is_only_closers(rest):
            spans.append((node.lineno, node.col_offset, node.end_col_offset))
    if not spans:
        return None
    number, first, last = rng.choice(spans)
    start = sum(len(x) + 1 for x in lines[: number - 1])
    return start, start + first, start + last


HOLE_CUTTERS = {"line": line_hole, "block": block_hole, "inner": inner_hole}


def cut_holes(files: list[Path], limit: int, seed: int, kinds: tuple[str, ...] = DEFAULT_KINDS) -> list[Hole]:
    rng = random.Random(seed)
    holes: list[Hole] = []
    attempts = 0
    while len(holes) < limit and attempts < limit * 20 and files:
        attempts += 1
        path = rng.choice(files)
        kind = kinds[len(holes) % len(kinds)]
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        cut = HOLE_CUTTERS[kind](text, tree, rng)
        if cut is None:
            continue
        start, cursor, end = cut
        expected = text[cursor:end].rstrip()
        if not expected.strip():
            continue
        line = text.count("\n", 0, cursor) + 1
        holes.append(Hole(str(path), kind, line, text[:cursor], text[end:], expected))
    return holes


# ----- scores -----


def edit_distance(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(suggestion: str, expected: str) -> float:
    longest = max(len(suggestion), len(expected))
    return 1.0 if longest == 0 else 1 - edit_distance(suggestion, expected) / longest


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def summarize(rows: list[dict]) -> dict:
    if not rows:
        return {"holes": 0}
    latencies = [row["latencyMs"] for row in rows]
    return {
        "holes": len(rows),
        "exactMatch": round(sum(row["exact"] for row in rows) / len(rows), 4),
        "editSimilarity": round(statistics.fmean(row["similarity"] for row in rows), 4),
        "emptyShare": round(sum(row["empty"] for row in rows) / len(rows), 4),
        "latencyMsP50": round(percentile(latencies, 0.5), 1),
        "latencyMsP95": round(percentile(latencies, 0.95), 1),
        "generatedTokensMean": round(statistics.fmean(row["generatedTokens"] for row in rows), 1),
    }


def score(hole: Hole, suggestion: str | None, latency_ms: float, generated_tokens: int) -> dict:
    text = (suggestion or "").rstrip()
    return {
        "exact": text == hole.expected,
        "similarity": edit_similarity(text, hole.expected),
        "empty": not text.strip(),
        "latencyMs": latency_ms,
        "generatedTokens": generated_tokens,
    }


# ----- filling -----


def fill_processed(engine, context: CursorContext, settings: Settings, repo) -> tuple[str | None, float, int]:
    """The suggestion an editor would get: ``completion.suggest``, every rule on."""
    extra = {"repo": repo} if repo is not None else {}
    result = suggest(engine, context, settings, **extra)
    return result.text, result.timings_ms["total"], len(result.generation.token_ids)


def fill_raw(engine, context: CursorContext, settings: Settings, repo) -> tuple[str | None, float, int]:
    """The model's own text for the same prompt: only the one-line cut, no other rule."""
    started = time.perf_counter()
    single_line = cursor_syntax(context, settings.multiline).single_line
    extra = {"repo": repo} if repo is not None else {}
    prompt = build_prompt(engine.tokenizer, engine.template, context, settings, **extra)
    generation = engine.generate(
        GenerationRequest(prompt_ids=prompt.ids, max_new_tokens=settings.maxNewTokens,
                          stop_rule=first_line_stop if single_line else None)
    )
    text = generation.text.rstrip("\ufffd")
    cut = first_line_stop(text) if single_line else None
    text = text if cut is None else text[:cut]
    return text, (time.perf_counter() - started) * 1000, len(generation.token_ids)


def repository_context(enabled: bool):
    """A function (hole, context) -> repository context for the prompt, or None when off.

    Uses the context module (issue 3) when this build has it: the holed file's own
    directory is the workspace, with the file itself left out (it holds the answer).
    """
    if not enabled:
        return lambda hole, context: None
    try:
        from .context import ContextProvider  # type: ignore[attr-defined]
    except ImportError:
        sys.exit("infill-ls eval: --repo-context needs the repository context module (infill_ls.context), not in this build")

    def gather(hole: Hole, context: CursorContext):
        path = Path(hole.file)
        provider = ContextProvider([path.parent], exclude=(path.name,))
        try:
            return provider.gather_now(path, context)
        finally:
            provider.close()

    return gather


def run_eval(engine, settings: Settings, holes: list[Hole], arms: list[tuple[bool, bool]], progress=None) -> dict:
    """Fill every hole once per arm (post-processing on/off, repository context on/off)."""
    results: dict[str, dict] = {}
    samples = []
    for postprocess, with_repo in arms:
        name = f"postprocess={'on' if postprocess else 'off'},repoContext={'on' if with_repo else 'off'}"
        gather = repository_context(with_repo)
        fill = fill_processed if postprocess else fill_raw
        rows = []
        for number, hole in enumerate(holes):
            context = CursorContext(prefix=hole.prefix, suffix=hole.suffix, language="python", document=hole.file)
            engine.clear_prompt_cache()  # every hole pays its full prefill, as a cold request does
            text, latency, tokens = fill(engine, context, settings, gather(hole, context))
            row = {**score(hole, text, latency, tokens), "kind": hole.kind}
            rows.append(row)
            samples.append({"arm": name, "file": hole.file, "line": hole.line, "kind": hole.kind,
                            "expected": hole.expected, "suggestion": text, **row})
            if progress:
                progress(f"{name} {number + 1}/{len(holes)}")
        results[name] = {
            "all": summarize(rows),
            **{kind: summarize([r for r in rows if r["kind"] == kind]) for kind in HOLE_KINDS},
        }
    return {"arms": results, "samples": samples}


def typing_run(engine, settings: Settings, holes: list[Hole], keystrokes: int) -> dict:
    """Type the first characters of each hole one at a time, asking after every keystroke
    as an editor does; count the requests the typed-through cache answered."""
    cache = SuggestionCache()
    requests = hits = 0
    for hole in holes:
        typed_text = hole.expected.split("\n")[0][:keystrokes]
        for typed in range(len(typed_text) + 1):
            context = CursorContext(prefix=hole.prefix + typed_text[:typed], suffix=hole.suffix, language="python", document=hole.file)
            requests += 1
            if cached_suggestion(cache, context, settings) is not None:
                hits += 1
            else:
                suggest(engine, context, settings, cache=cache)
    return {"requests": requests, "cacheHits": hits, "hitRate": round(hits / requests, 4) if requests else None,
            "keystrokesPerHole": keystrokes}


def main(args, settings: Settings) -> None:
    from .engine.base import ModelLoadError
    from .engine.local import LocalEngine
    from .templates import TemplateError

    sources = [Path(s) for s in args.source] if args.source else default_sources()
    files = python_files(sources)
    kinds = tuple(args.kinds.split(","))
    if unknown := sorted(set(kinds) - set(HOLE_KINDS)):
        sys.exit(f"infill-ls eval: unknown hole kind {', '.join(unknown)} (kinds: {', '.join(HOLE_KINDS)})")
    holes = cut_holes(files, args.limit, args.seed, kinds)
    if not holes:
        sys.exit(f"infill-ls eval: no holes could be cut from {len(files)} files under {', '.join(map(str, sources))}")
    try:
        engine = LocalEngine.load(settings)
    except (ModelLoadError, TemplateError) as error:
        sys.exit(f"infill-ls: {error}")
    both = {"on": [True], "off": [False], "both": [True, False]}
    arms = [(post, repo) for repo in both[args.repo_context] for post in both[args.postprocess]]
    started = time.perf_counter()
    report = run_eval(engine, settings, holes, arms, lambda line: print(line, file=sys.stderr) if args.verbose else None)
    info = engine.info
    report = {
        "model": info.name, "device": info.device, "precision": info.precision,
        "settings": {k: getattr(settings, k) for k in ("maxNewTokens", "contextTokens", "multiline")},
        "seed": args.seed, "limit": args.limit, "kinds": args.kinds,
        "sources": [str(s) for s in sources], "files": len(files), "holes": len(holes),
        "python": sys.version.split()[0], "seconds": round(time.perf_counter() - started, 1),
        "armsMeaning": {
            "postprocess=on": "completion.suggest, the editor's path: stop rules in the loop and every post-processing rule",
            "postprocess=off": "the same prompt and single/multi-line decision; the model's text cut at the first line "
                               "break where one line is wanted, nothing else",
        },
        **report,
    }
    if args.typing:
        report["typing"] = typing_run(engine, settings, holes, args.typing)
    if not args.samples:
        report.pop("samples")
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text if not args.output else json.dumps({k: report[k] for k in ("arms", "typing") if k in report}, indent=2))


def add_arguments(parser) -> None:
    parser.add_argument("--limit", type=int, default=100, help="how many holes (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", action="append", help="directory of Python files to cut holes in (default: the standard library); repeatable")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="hole kinds, comma-separated: line, block, inner")
    parser.add_argument("--postprocess", choices=("on", "off", "both"), default="both")
    parser.add_argument("--repo-context", choices=("on", "off", "both"), default="off", dest="repo_context",
                        help="repository context in the prompt (needs the context module)")
    parser.add_argument("--output", help="write the JSON report here (stdout gets the summary)")
    parser.add_argument("--samples", action="store_true", help="include every hole and suggestion in the report")
    parser.add_argument("--typing", type=int, default=0, metavar="N",
                        help="also type the first N characters of each hole, one request per keystroke, and report the cache hit rate")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
