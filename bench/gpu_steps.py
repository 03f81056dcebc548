"""Where a prompt-lookup step goes on the eager path: one-token and draft-sized forwards apart.

    python bench/gpu_steps.py            # one GPU, StarCoder2-15B shape, bf16, ~1 minute
    python bench/gpu_steps.py --small    # the same code on the CPU with a small shape

Why: bench/gpu.py measured prompt lookup on the eager (dynamic-cache) path at 67-83
ms/token against 19-22 without it (bf16, H100 and H200, 2026-11-25/26), although a
9-token forward reads the same weights as a 1-token one and should cost about the same.
This times, after a 2,048-token prefill through the engine's DynamicSession, a 1-token
step, a 9-token step (a draft check), the roll-back of a rejected draft (cache crop), the
step after it, and the draft lookup itself; then profiles one draft check and one
1-token step (top operators by device time) so the cause shows in one run.
"""

from __future__ import annotations

import argparse

from common import summary, write_result
from engines import SMALL, STARCODER2_15B, random_model, synchronize, synchronized_ms

DRAFT = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shape on the CPU")
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from infill_ls.engine.local import DynamicSession, lookup_draft

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = random_model(SMALL if device == "cpu" else STARCODER2_15B, dtype, device)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, vocab, (args.prompt,), generator=generator).tolist()
    session = DynamicSession(model, device)

    times: dict[str, list[float]] = {name: [] for name in ("step_1", "step_9", "crop_8", "step_1_after_crop", "lookup")}
    with torch.inference_mode():
        session.forward(prompt, keep=1)
        tokens = list(prompt)
        for _ in range(args.runs):
            times["step_1"].append(synchronized_ms(lambda: session.forward([tokens[-1]], keep=1)))
            tokens.append(tokens[-1])
            draft = tokens[-DRAFT - 1:]
            times["step_9"].append(synchronized_ms(lambda: session.forward(draft, keep=len(draft))))
            times["crop_8"].append(synchronized_ms(lambda: session.truncate(session.length - DRAFT)))
            times["step_1_after_crop"].append(synchronized_ms(lambda: session.forward([tokens[-1]], keep=1)))
            tokens.append(tokens[-1])
            times["lookup"].append(synchronized_ms(lambda: lookup_draft(tokens, DRAFT)))
            session.truncate(len(tokens))  # forget the draft's one surviving token
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
        tables = {}
        for name, ids in (("step_9", tokens[-DRAFT - 1:]), ("step_1", tokens[-1:])):
            with profile(activities=activities) as trace:
                session.forward(ids, keep=len(ids))
                synchronize()
            session.truncate(session.length - len(ids))
            tables[name] = trace.key_averages().table(sort_by=sort, row_limit=15)
            print(f"--- {name}\n{tables[name]}", flush=True)
    result = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
              "prompt_tokens": args.prompt, "draft_tokens": DRAFT,
              "ms": {name: summary(values) for name, values in times.items()}, "profiles": tables}
    print({name: value["p50"] for name, value in result["ms"].items()})
    print(write_result("gpu-steps-small" if args.small else "gpu-steps", result))


if __name__ == "__main__":
    main()
