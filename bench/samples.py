"""How fast training samples are made: the bundled model's GPU legs were bound by it.

    python bench/samples.py [--workers 2] [--seconds 40] [--work training/work] [--preset gpu-small]

Loads the corpus and tokenizer as ``training.train`` does (build them first:
training/README.md), cuts the context windows once as train.py does before its
DataLoader workers fork, then draws the preset's packed batches through a DataLoader with
``--workers`` processes for ``--seconds`` and reports tokens per second in all and per
worker (p50 over 5-second windows).  A GPU leg makes its samples with 14 workers: multiply
the per-worker figure to see whether the GPU or the samples bound a leg.
Writes bench/results/samples-*.json.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from common import REPO, summary, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--work", type=Path, default=REPO / "training" / "work")
    parser.add_argument("--preset", default="gpu-small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import sys

    import torch

    sys.path.insert(0, str(REPO))
    from training.data import load_split
    from training.samples import CROSS_FILE_SHARE, all_windows
    from training.tokenizer import load_tokenizer
    from training.train import PRESETS, Batches

    preset = PRESETS[args.preset]
    tokenizer_dir = args.work / f"tokenizer-{preset.vocab_size}-seed{args.seed}"
    if not (args.work / "data" / "train.jsonl").exists() or not tokenizer_dir.exists():
        raise SystemExit(f"no corpus or tokenizer under {args.work}: build them first (training/README.md)")
    repos = load_split(args.work / "data" / "train.jsonl")
    tokenizer = load_tokenizer(tokenizer_dir)
    started = time.perf_counter()
    windows = all_windows(repos)
    windows_s = time.perf_counter() - started
    gc.freeze()
    loader = torch.utils.data.DataLoader(Batches(repos, tokenizer, args.seed, preset, windows, CROSS_FILE_SHARE), batch_size=None,
                                         num_workers=args.workers, prefetch_factor=2)
    batches = iter(loader)
    next(batches)  # the workers' start
    began = window_start = time.perf_counter()
    tokens = window_tokens = 0
    rates = []
    while time.perf_counter() - began < args.seconds:
        inputs = next(batches)[0]
        tokens += inputs.numel()
        window_tokens += inputs.numel()
        if time.perf_counter() - window_start >= 5:
            rates.append(window_tokens / (time.perf_counter() - window_start))
            window_start, window_tokens = time.perf_counter(), 0
    elapsed = time.perf_counter() - began
    del batches, loader
    result = {
        "preset": args.preset, "workers": args.workers, "seconds": round(elapsed, 1),
        "files": sum(len(files) for files in repos.values()), "windows_cut_s": round(windows_s, 1),
        "tokens": tokens, "tokens_per_s": round(tokens / elapsed),
        "tokens_per_s_per_worker": round(tokens / elapsed / args.workers),
        "tokens_per_s_5s_windows": summary(rates),
    }
    print(result)
    print(write_result("samples", result))


if __name__ == "__main__":
    main()
