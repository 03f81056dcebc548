"""Latency of the bundled model on CPU: a 16-token suggestion after a 1,024-token prompt.

    python -m training.bench --model server/infill_ls/models/infill-small --threads 2

Uses plain `generate` (greedy, exactly 16 new tokens) on a prompt cut from a held-out
file; reports the median and best of --runs runs, and the prefill time alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from infill_ls.prompt import PromptTokenizer

from .data import load_split
from .samples import fim_prompt

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoTokenizer, Starcoder2ForCausalLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO_ROOT / "server" / "infill_ls" / "models" / "infill-small")
    ap.add_argument("--heldout", type=Path, default=REPO_ROOT / "training" / "work" / "data" / "heldout.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "int8dyn"], default="float32",
                    help="what the server runs with quantization auto: bfloat16 on a CPU with bf16 "
                         "matrix instructions, int8dyn (dynamic int8 linears) elsewhere")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = Starcoder2ForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype, torch.float32)).eval()
    if args.dtype == "int8dyn":
        from infill_ls.engine.quantize import quantize_weights

        model = quantize_weights(model, "int8dyn")
    source = max((f for fs in load_split(args.heldout).values() for f in fs), key=lambda f: len(f.text)).text
    cut = len(source) // 2
    # The server's builder cuts the prefix on a character grid (for KV reuse), so it may
    # land a few tokens short of its budget: grow the budget until the prompt is exact.
    budget, prompt, prompt_tokenizer = args.prompt_tokens, [], PromptTokenizer(tokenizer)
    for _ in range(8):
        prompt = fim_prompt(prompt_tokenizer, source[:cut], source[cut:], budget)
        if len(prompt) >= args.prompt_tokens:
            break
        budget += args.prompt_tokens - len(prompt)
    prompt = prompt[len(prompt) - args.prompt_tokens:] if len(prompt) > args.prompt_tokens else prompt
    assert len(prompt) == args.prompt_tokens, len(prompt)
    ids = torch.tensor([prompt])

    def generate() -> None:
        model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    with torch.inference_mode():
        for _ in range(3):
            generate()
        totals, prefills = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            generate()
            totals.append(time.perf_counter() - t)
            t = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            prefills.append(time.perf_counter() - t)
    ms = lambda xs: f"median {statistics.median(xs) * 1000:.0f} ms, best {min(xs) * 1000:.0f} ms"
    print(f"{args.new_tokens} tokens after a {args.prompt_tokens}-token prompt, {args.threads} threads, {args.dtype}: {ms(totals)}")
    print(f"prefill alone: {ms(prefills)}")


if __name__ == "__main__":
    main()
