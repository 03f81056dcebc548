"""Where the name a hole needs is lost: retrieval recall of the repository context.

    python bench/retrieval.py [--holes 500] [--seed 2026] [--budget 1024]

For the evaluation's holes (training/evaluate.py: the same kinds, seed and count give the
same holes, from the held-out packages of training/work/data), the share of holes whose
first identifier is, for each stage of the server's context:

* ``in_candidates``: in some file the server would consider (training.samples.neighbour_files:
  the package's files, those of the current folder first, at most NEIGHBOUR_FILES);
* ``in_ranked``: in the windows ContextProvider.rank picks (best first, at most 12);
* ``in_prompt``: in the snippets build_fim_prompt keeps within the budget (what the model
  sees: training.evaluate.context_prompt, its ``name_in_context`` for "with context").

No model runs: this measures retrieval alone, in ~40 s on 2 cores.  A lower stage that
loses most holes is where ranking or budget work would pay.
Writes bench/results/retrieval-*.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, write_result

sys.path[:0] = [str(REPO), str(REPO / "server")]

from infill_ls.prompt import PromptTokenizer  # noqa: E402
from training.data import load_split  # noqa: E402
from training.evaluate import KINDS, context_prompt, draw_holes, first_name  # noqa: E402
from training.samples import mentions, neighbour_files  # noqa: E402

BUNDLED = REPO / "server" / "infill_ls" / "models" / "infill-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holes", type=int, default=500, help="holes per kind")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--budget", type=int, default=1024, help="prompt tokens, as training.evaluate")
    parser.add_argument("--heldout", type=Path, default=REPO / "training" / "work" / "data" / "heldout.jsonl")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    if not args.heldout.exists():
        raise SystemExit(f"no {args.heldout}: build the corpus first (training/README.md)")
    repos = load_split(args.heldout)
    tokenizer = PromptTokenizer(AutoTokenizer.from_pretrained(BUNDLED))
    counts = {kind: {"holes": 0, "in_candidates": 0, "in_ranked": 0, "in_prompt": 0} for kind in KINDS}
    for kind, f, start, end in draw_holes(repos, args.holes, args.seed):
        name = first_name(f.text[start:end])
        if name is None:
            continue
        prefix, suffix = f.text[:start], f.text[end:]
        others = neighbour_files(f, repos[f.repo])
        ranked, prompt = context_prompt(tokenizer, f, repos[f.repo], prefix, suffix, args.budget - KINDS[kind])
        row = counts[kind]
        row["holes"] += 1
        row["in_candidates"] += any(mentions(g.text, name) for g in others)
        row["in_ranked"] += any(mentions(s.text, name) for s in ranked)
        row["in_prompt"] += any(mentions(s.text, name) for s in prompt.snippets)
    shares = {kind: {**row, **{f"{stage}_pct": round(100 * row[stage] / max(row["holes"], 1), 1)
                               for stage in ("in_candidates", "in_ranked", "in_prompt")}}
              for kind, row in counts.items()}
    path = write_result("retrieval", {"holes_per_kind": args.holes, "seed": args.seed, "budget": args.budget,
                                      "kinds": shares})
    for kind, row in shares.items():
        print(f"{kind:24s} {row['holes']:4d} holes: candidates {row['in_candidates_pct']:5.1f} %  "
              f"ranked {row['in_ranked_pct']:5.1f} %  prompt {row['in_prompt_pct']:5.1f} %")
    print(path)


if __name__ == "__main__":
    main()
