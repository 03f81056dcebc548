"""Prompt-lookup speculative decoding, off and on, on a repetitive code prompt (CPU or GPU).

    python bench/lookup.py [--model DIR] [--new 64] [--runs 5]

The engine's real loop on the tiny test model (or DIR): the same greedy tokens either
way; reports generation time, ms/token and how many drafted tokens the model accepted.
"""

from __future__ import annotations

import argparse

from common import summary, write_result

REPETITIVE = "def fill(values, scale, offset):\n" + "".join(
    f"    values.append(item_{i} * scale + offset)\n" for i in range(40)
) + "    values.append("


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the tiny test model)")
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        from conftest import tiny_model_dir

        args.model = str(tiny_model_dir())
    from infill_ls.completion import build_prompt
    from infill_ls.engine.base import GenerationRequest
    from infill_ls.engine.local import LocalEngine
    from infill_ls.postprocess import CursorContext
    from infill_ls.settings import Settings

    engine = LocalEngine.load(Settings(model=args.model))
    ids = build_prompt(engine.tokenizer, engine.template, CursorContext(REPETITIVE, "\n"), Settings()).ids
    results, tokens = {}, {}
    for lookup in (False, True, False, True):  # interleaved, so load changes hit both alike
        name = "lookup_on" if lookup else "lookup_off"
        for _ in range(args.runs):
            engine.clear_prompt_cache()
            generation = engine.generate(GenerationRequest(prompt_ids=ids, max_new_tokens=args.new, prompt_lookup=lookup))
            entry = results.setdefault(name, {"decode_ms": [], "accepted": generation.accepted_draft_tokens,
                                              "drafted": generation.draft_tokens})
            entry["decode_ms"].append(generation.decode_ms)
            tokens[name] = generation.token_ids
    assert tokens["lookup_on"] == tokens["lookup_off"], "prompt lookup changed the greedy output"
    report = {}
    for name, entry in results.items():
        count = len(tokens[name])
        report[name] = {"decode_ms": summary(entry["decode_ms"]),
                        "ms_per_token_p50": round(summary(entry["decode_ms"])["p50"] / count, 3),
                        "generated_tokens": count, "drafted": entry["drafted"], "accepted": entry["accepted"]}
        print(name, report[name], flush=True)
    speedup = report["lookup_off"]["decode_ms"]["p50"] / report["lookup_on"]["decode_ms"]["p50"]
    print(f"speed-up {speedup:.2f}x;", write_result("lookup", {"model": args.model, "prompt_tokens": len(ids),
                                                               "results": report, "speedup_p50": round(speedup, 2)}))


if __name__ == "__main__":
    main()
