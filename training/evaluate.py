"""Exact match and edit similarity on held-out packages, with and without repository context.

    python -m training.evaluate --model server/infill_ls/models/infill-small --holes 60
    python -m training.evaluate --compare BEFORE.json AFTER.json   # two --json runs, same seed

Holes are cut from the held-out files (never trained on): "single-line" = the rest of a
line from a cursor inside it; "multi-line" = 2-5 whole lines from the start of a line's
code; "cross-file name" = the rest of a line from a use of a name that another file of the
package defines and this one does not (often imported or used earlier in the file, so the
file itself may hold it); "unseen cross-file name" = the same where the rest of the file
never mentions the name (only the repository context can supply it).
"with context" puts snippets of other files of the same package before the file
(the server's own prompt builder and snippet choice); "without" is a plain FIM prompt.
``context_gain`` in the report: per kind, with minus without on the same holes, with a
95% paired-bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from infill_ls.evaluate import edit_similarity  # the project's harness scores the same way
from infill_ls.engine.local import cache_keyword  # transformers 5.17 and 5.2x name it differently

from .data import SourceFile, load_split
from infill_ls.prompt import ContextFile, Prompt, PromptTokenizer, RepoContext, build_fim_prompt
from infill_ls.templates import TEMPLATES

from .samples import NAME, context_snippets, cross_file_hole, mentions, repo_display_name
from .tokenizer import EOS, SPECIAL_TOKENS

REPO_ROOT = Path(__file__).resolve().parent.parent


def cut_hole(rng: random.Random, text: str, kind: str) -> tuple[int, int] | None:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    candidates = [i for i, line in enumerate(lines) if len(line.strip()) >= 8 and not line.strip().startswith("#")]
    if not candidates:
        return None
    i = rng.choice(candidates)
    line = lines[i].rstrip("\n")
    indent = len(line) - len(line.lstrip())
    if kind == "single-line":
        # Cursor somewhere in the first two thirds of the code on the line.
        cursor = offsets[i] + rng.randint(indent, indent + (len(line) - indent) * 2 // 3)
        return cursor, offsets[i] + len(line)
    last = min(len(lines) - 1, i + rng.randint(1, 4))
    return offsets[i] + indent, offsets[last] + len(lines[last].rstrip("\n"))


def first_name(text: str) -> str | None:
    match = NAME.search(text)
    return match.group() if match else None


@torch.inference_mode()
def complete(model, prompt: list[int], max_new_tokens: int, stop_newlines: int) -> list[int]:
    """Greedy decoding that never emits FIM/repo tokens; stops at EOS or after `stop_newlines` newlines."""
    ids = torch.tensor([prompt])
    banned = list(range(1, len(SPECIAL_TOKENS)))
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, generated, newline_count = returned_cache(out), [], 0
    logits = out.logits[0, -1]
    for _ in range(max_new_tokens):
        logits[banned] = float("-inf")
        token = int(logits.argmax())
        if token == EOS:
            break
        generated.append(token)
        newline_count += model.newline_counts[token]
        if newline_count >= stop_newlines:
            break
        out = model(input_ids=torch.tensor([[token]]), use_cache=True, **{cache_keyword(model): cache})
        cache, logits = returned_cache(out), out.logits[0, -1]
    return generated


def returned_cache(out):
    """The KV cache a forward pass returns: ``cache`` from transformers 5.2x (which warns
    on ``past_key_values``), ``past_key_values`` before."""
    return out["cache"] if "cache" in out else out.past_key_values


def truncate_lines(text: str, n: int) -> str:
    return "\n".join(text.split("\n")[:n])


def summarize(scores: list[tuple[bool, float, bool, bool, bool]]) -> dict:
    """Percentages over holes of (exact match, edit similarity, first name right, name in a
    snippet, name elsewhere in the file)."""
    share = lambda values: round(100 * sum(values) / max(len(values), 1), 1)  # noqa: E731
    exact, similarity, name_right, in_context, in_file = zip(*scores) if scores else ([],) * 5
    with_name = [right for right, there in zip(name_right, in_context) if there]
    # Holes whose first identifier only a snippet holds (the rest of the file never
    # mentions it): whether the model copies from other files, not from the file itself.
    only_there = [right for right, there, here in zip(name_right, in_context, in_file) if there and not here]
    return {
        "holes": len(scores),
        "exact_match": share(exact),
        "edit_similarity": share(similarity),
        # The first identifier of the hole written right (for cross-file holes: the name
        # that another file defines).
        "first_name_match": share(name_right),
        # Holes whose first identifier is in a snippet of the prompt, and of those, how
        # many the model wrote: retrieval and copying, measured apart.
        "name_in_context": share(in_context),
        "first_name_match_when_in_context": share(with_name) if with_name else None,
        "name_only_in_context": share([there and not here for there, here in zip(in_context, in_file)]),
        "first_name_match_when_only_in_context": share(only_there) if only_there else None,
    }


# Hole kinds and the most tokens a completion of each may take.  New kinds go last: the
# holes of the earlier ones stay those of older runs (one rng draws them all in order).
KINDS = {"single-line": 32, "multi-line": 128, "cross-file name": 32, "unseen cross-file name": 32}


def draw_holes(repos: dict[str, list[SourceFile]], holes_per_kind: int, seed: int):
    """(kind, file, start, end) of the evaluation's holes, kind by kind; the same seed and
    count give the same holes (a draw that finds no hole in its file is skipped)."""
    rng = random.Random(seed)
    files = [f for name in sorted(repos) for f in repos[name] if len(f.text) > 500]
    for kind in KINDS:
        for _ in range(holes_per_kind):
            f = rng.choice(files)
            if kind.endswith("cross-file name"):
                hole = cross_file_hole(rng, f, repos[f.repo], unseen_in_file=kind.startswith("unseen"))
            else:
                hole = cut_hole(rng, f.text, kind)
            if hole is not None:
                yield kind, f, *hole


def context_prompt(prompt_tokenizer: PromptTokenizer, f: SourceFile, siblings: list[SourceFile], prefix: str,
                   suffix: str, room: int) -> tuple[list[ContextFile], Prompt]:
    """A hole's "with context" prompt: the server's ranked snippets of the package's other
    files (returned too, best first) in its repository layout, within ``room`` tokens."""
    snippets = context_snippets(f, siblings, prefix, suffix)
    repo = RepoContext(repo_display_name(f.repo), f.path, snippets)
    return snippets, build_fim_prompt(prompt_tokenizer, TEMPLATES["starcoder2"], prefix, suffix, room, repo)


def evaluate(model, tokenizer, repos: dict[str, list[SourceFile]], holes_per_kind: int, seed: int, budget: int = 1024) -> dict:
    prompt_tokenizer = PromptTokenizer(tokenizer)
    # Newlines per token, for the stop rule.
    model.newline_counts = [tokenizer.decode([i]).count("\n") for i in range(len(tokenizer))]
    # summarize's five scores of every hole, per kind and condition
    per_hole = {kind: {"without context": [], "with context": []} for kind in KINDS}
    examples = []
    for kind, f, start, end in draw_holes(repos, holes_per_kind, seed):
        max_new, scores = KINDS[kind], per_hole[kind]
        prefix, middle, suffix = f.text[:start], f.text[start:end], f.text[end:]
        n_lines = middle.count("\n") + 1
        expected_name = first_name(middle)
        name_in_file = expected_name is not None and mentions(prefix + "\n" + suffix, expected_name)
        room = budget - max_new
        prompts = {
            "without context": build_fim_prompt(prompt_tokenizer, TEMPLATES["starcoder2"], prefix, suffix, room),
            "with context": context_prompt(prompt_tokenizer, f, repos[f.repo], prefix, suffix, room)[1],
        }
        for condition, prompt in prompts.items():
            text = tokenizer.decode(complete(model, prompt.ids, max_new, n_lines))
            text = truncate_lines(text, n_lines)
            # Whether a snippet in the prompt holds the hole's first identifier: for
            # cross-file holes, whether the context gave the model the name to copy.
            in_context = expected_name is not None and any(mentions(snippet.text, expected_name)
                                                           for snippet in prompt.snippets)
            scores[condition].append((text.rstrip() == middle.rstrip(), edit_similarity(text.rstrip(), middle.rstrip()),
                                      expected_name is not None and first_name(text) == expected_name, in_context,
                                      name_in_file))
            if len(examples) < 12:
                examples.append({"kind": kind, "condition": condition, "file": f.path, "expected": middle, "got": text})
    results = {kind: {condition: summarize(s) for condition, s in scores.items()} for kind, scores in per_hole.items()}
    return {"results": results, "examples": examples, "seed": seed, "scores": per_hole}


METRICS = ("exact_match", "edit_similarity", "first_name_match")  # a hole's scores, in this order


def paired_difference(new: list, old: list, rng: random.Random, resamples: int = 2000) -> dict:
    """``new`` minus ``old``, scores of the same holes in the same order, per metric in points,
    with a 95% interval from a paired bootstrap over the holes: a difference whose interval
    excludes 0 is more than the luck of the draw."""
    row = {"holes": len(new)}
    for i, metric in enumerate(METRICS if new else ()):  # a kind may have no holes in a small corpus
        diffs = [100 * (float(a[i]) - float(b[i])) for a, b in zip(new, old)]
        means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
        row[metric] = {"diff": round(sum(diffs) / len(diffs), 1),
                       "ci95": [round(means[int(0.025 * resamples)], 1), round(means[int(0.975 * resamples)], 1)]}
    return row


def compare(before: dict, after: dict) -> dict:
    """Per kind and condition, ``after`` minus ``before`` on the same holes (the same seed)."""
    if before.get("seed") != after.get("seed"):
        raise SystemExit(f"compare: different holes (seeds {before.get('seed')} and {after.get('seed')})")
    rng = random.Random(0)
    table: dict[str, dict] = {}
    for kind, conditions in after["scores"].items():
        if kind not in before["scores"]:  # a kind added since the older run
            continue
        for condition, scores in conditions.items():
            old = before["scores"][kind][condition]
            if len(old) != len(scores):  # the same seed with another --holes draws other holes
                raise SystemExit(f"compare: different holes ({kind}, {condition}: {len(old)} and {len(scores)})")
            table.setdefault(kind, {})[condition] = paired_difference(scores, old, rng)
            # The same holes give both models the same prompts, so the same flags; runs made
            # before the fifth score (name elsewhere in the file) have no such subset.
            only = [i for i, hole in enumerate(scores) if len(hole) > 4 and hole[3] and not hole[4]]
            if only:
                table[kind][condition + ", name only in context"] = paired_difference(
                    [scores[i] for i in only], [old[i] for i in only], rng)
    return table


def context_gain(report: dict) -> dict:
    """Per kind, one model's scores with repository context minus without, on the same holes:
    whether the snippets help it (the issue's "measurably")."""
    rng = random.Random(0)
    return {kind: paired_difference(conditions["with context"], conditions["without context"], rng)
            for kind, conditions in report["scores"].items()}


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoTokenizer, Starcoder2ForCausalLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO_ROOT / "server" / "infill_ls" / "models" / "infill-small")
    ap.add_argument("--heldout", type=Path, default=REPO_ROOT / "training" / "work" / "data" / "heldout.jsonl")
    ap.add_argument("--holes", type=int, default=100, help="holes per kind (each scored with and without context)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                    help="two --json files of the same seed: differences with 95%% intervals, no evaluation")
    args = ap.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        print(json.dumps(compare(before, after), indent=1))
        return

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = Starcoder2ForCausalLM.from_pretrained(args.model).eval()
    started = time.time()
    report = evaluate(model, tokenizer, load_split(args.heldout), args.holes, args.seed)
    report["model"] = str(args.model)
    report["seconds"] = round(time.time() - started)
    report["context_gain"] = context_gain(report)
    print(json.dumps({"results": report["results"], "context_gain": report["context_gain"]}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
