"""Tokens appended to a reused prompt: fast.StaticDecoder's uncompiled chunk prefill, timed.

In the GPU typing replay (bench/gpu.py, 2026-11-26, H200) a keystroke before the suffix
left ~700 of 1,620 prompt tokens to prefill again, and that took a median 115 ms against
139 ms for the whole prompt from an empty cache: the chunk ran SDPA with a boolean mask,
which the fused kernels do not take.  This times the chunk with that mask and with
lower-right causal attention (fast.StaticDecoder.lower_right_chunks), in one process on
the StarCoder2-15B shape with random weights, plus the prompt from an empty cache, and
lists the top kernels of each way from torch's profiler.  Then the typing replay's case:
chunks of a new length each time (720-739 tokens after 900-881), once each, where a kernel
that prepares itself per shape pays for it every time.

First run (H200, bench/results/gpu-prefill-20261126-220612.json, before the changing
lengths were added): at one repeated shape both ways took 43-44 ms for 700 tokens after
920 (the mask ran cuDNN's fused kernel, lower-right ran flash attention), 40-41 for 128 or
16 tokens (the uncompiled step's floor), 87 ms for 1,620 tokens from an empty cache.

    python bench/gpu_prefill.py            # one GPU (via bench/gpu-run.sh's environment)
    python bench/gpu_prefill.py --small    # the script's code on a CPU
"""

from __future__ import annotations

import argparse

from common import summary, write_result
from engines import SMALL, STARCODER2_15B, random_model, synchronize, synchronized_ms

# (cached tokens, new tokens): the typing replay's median case, a paste-sized and a
# draft-sized chunk.
CHUNKS = [(920, 700), (1400, 128), (1600, 16)]


def timed(call, runs: int) -> dict:
    for _ in range(2):
        call()
    return summary([synchronized_ms(call) for _ in range(runs)])


def top_kernels(call, device: str, count: int = 6) -> list[str]:
    try:
        return profiled(call, device, count)
    except Exception as error:  # a profiler that cannot start (no CUPTI) must not lose the timings
        return [f"profiler failed: {type(error).__name__}: {error}"]


def profiled(call, device: str, count: int) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.startswith("cuda") else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        call()
        synchronize()
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:count]
    return [f"{getattr(e, key) / 1000:.2f} ms  x{e.count}  {e.key[:90]}" for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shape on the CPU (checks the script)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    import torch

    from infill_ls.engine import fast

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    shape = SMALL if args.small else STARCODER2_15B
    model = random_model(shape, torch.bfloat16, device)
    decoder = fast.StaticDecoder(model, 2100)
    ids = torch.randint(1, shape["vocab_size"], (2100,)).tolist()
    results: dict = {}
    with torch.inference_mode():
        total = CHUNKS[0][0] + CHUNKS[0][1]
        results[f"empty cache, {total} tokens"] = timed(lambda: decoder.step(ids[:total], 0, keep=1), args.runs)
        for cached, new in CHUNKS:
            decoder.step(ids[:cached], 0, keep=1)  # the reused prompt in the cache
            rows = {}
            for lower_right in (False, True):
                decoder.lower_right_chunks = lower_right
                call = lambda: decoder.step(ids[cached:cached + new], cached, keep=1)  # noqa: E731
                way = "lower-right causal" if lower_right else "boolean mask"
                rows[way] = {**timed(call, args.runs), "logits": call().float()}
                if new == CHUNKS[0][1]:
                    rows[way]["top_kernels"] = top_kernels(call, device)
            a, b = (rows[w].pop("logits") for w in rows)
            results[f"{new} tokens after {cached}"] = {**rows, "max_logit_difference": round((a - b).abs().max().item(), 4)}
        cached, new = CHUNKS[0]
        changing = {}
        for lower_right in (False, True):
            decoder.lower_right_chunks = lower_right
            offsets = [10 * (2 + lower_right) + i for i in range(10)]  # lengths this process has not run yet
            samples = [synchronized_ms(lambda: decoder.step(ids[cached - offset:cached + new], cached - offset, keep=1))
                       for offset in offsets]
            changing["lower-right causal" if lower_right else "boolean mask"] = summary(samples)
        results[f"{new + 20}-{new + 39} tokens after {cached - 39}-{cached - 20}, a new length each"] = changing
    payload = {"model": {"random weights": shape}, "device": device,
               "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None, "results": results}
    print(write_result("gpu-prefill-small" if args.small else "gpu-prefill", payload))
    for name, row in results.items():
        print(name, {k: (v["p50"] if isinstance(v, dict) and "p50" in v else v) for k, v in row.items()} if "p50" not in row else row["p50"])


if __name__ == "__main__":
    main()
