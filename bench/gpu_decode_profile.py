"""Where a decode step's GPU time goes, per variant: the linears' kernels against the rest.

    bash bench/gpu-run.sh --script bench/gpu_decode_profile.py    # one GPU, StarCoder2-15B shape, ~2 minutes
    bash bench/gpu-run.sh --script bench/gpu_decode_profile.py --compiled --variants int8wo,int4wo   # + ~2-3 min each
    cd bench && python gpu_decode_profile.py --small [--compiled]  # the same code on the CPU with a small shape

Why (issue 11): compiled, int4wo decoded at 8.6 ms/token and int8wo at 9.1 on an H200,
where reading their weights (8.8 / 16 GB) takes 1.8 / 3.3 ms at the HBM's ~4.8 TB/s;
bf16 at 9.7-10.0 where 31.3 GB take 6.5.  Whether the linears' kernels or everything
around them (attention, norms, rotary, residuals, the output projection) eat the
difference decides what to work on.  This runs the static-cache step that fast.py
compiles, one token after a 2,048-token prompt, and sums the device time of its kernels
by kind: uncompiled (the linears run the same kernels compiled; the rest is what inductor
fuses, so its share is an upper bound of the compiled step's), and with ``--compiled`` the
compiled step itself, its kernels launched one by one under the profiler, beside the
replay of its CUDA graph.  Attention differs between the two: uncompiled, a token at the
end of the cache attends without a mask; compiled, over every slot with one.  A variant
with an ``-apart`` suffix keeps the attention's three projections apart, as fast.py ran
them before it joined them.
"""

from __future__ import annotations

import argparse
import time

from common import summary, write_result
from engines import SMALL, STARCODER2_15B, synchronize, synchronized_ms
from gpu import build, bytes_read_per_token

# Kernel names by kind, a heuristic on device-side names (Triton kernels keep their Python
# function's name, cuBLAS/cuDNN/flash kernels carry their library's): check the printed top
# kernels that no linear landed in "other".
KINDS = (
    ("linear: project kernels (gemv.py)", ("int4", "int8", "gemv_kernel", "matvec", "sum_of_splits", "dequant")),
    ("linear: cuBLAS", ("gemv", "gemm", "nvjet", "xmma", "cutlass", "splitk")),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
)


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, marks in KINDS if any(mark in name for mark in marks)), "other")


def device_time_by_kind(trace, steps: int) -> tuple[dict, list, float]:
    """Device milliseconds per step by kind, the 12 costliest kernels, and kernels per step."""
    from torch.autograd import DeviceType

    per_kernel: dict[str, float] = {}
    launches = 0
    for event in trace.events():
        if event.device_type == DeviceType.CUDA:
            per_kernel[event.name] = per_kernel.get(event.name, 0.0) + event.device_time_total / 1000 / steps
            launches += 1
    by_kind: dict[str, float] = {}
    for name, ms in per_kernel.items():
        kind = kind_of(name)
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    top = sorted(per_kernel.items(), key=lambda item: -item[1])[:12]
    return ({kind: round(ms, 3) for kind, ms in sorted(by_kind.items())},
            [[name[:90], round(ms, 3)] for name, ms in top], launches / steps)


def profile_steps(call, steps: int, bytes_per_token: int) -> dict:
    """``call`` (one decode step) timed ``steps`` times, then profiled as many: its kernels'
    device time by kind, how many kernels a step launches, the linears' achieved GB/s."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    for _ in range(2):  # kernels picked, caches warm
        call()
    step_ms = [synchronized_ms(call) for _ in range(steps)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as trace:
        for _ in range(steps):
            call()
        synchronize()
    by_kind, top, kernels = device_time_by_kind(trace, steps) if cuda else ({}, [], 0.0)
    linears = sum(ms for kind, ms in by_kind.items() if kind.startswith("linear"))
    return {
        "step_ms": summary(step_ms),
        "device_ms_per_step": by_kind,
        "device_ms_total": round(sum(by_kind.values()), 3),
        "kernels_per_step": round(kernels, 1),
        "linears_GB_s": round(bytes_per_token / (linears / 1000) / 1e9, 1) if linears else None,
        "top_kernels_ms": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shape on the CPU (checks the script)")
    parser.add_argument("--variants", default="bf16,int8wo,int4wo",
                        help="an -apart suffix keeps the attention's projections apart (fast.py joins them)")
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=8, help="one-token steps profiled (and timed)")
    parser.add_argument("--compiled", action="store_true",
                        help="also the compiled step (minutes per variant on a GPU): its kernels run one by one "
                             "under the profiler, and its CUDA graph's replay timed")
    args = parser.parse_args()
    import gc

    import torch

    from infill_ls.engine import fast

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    shape = SMALL if device == "cpu" else STARCODER2_15B
    if device == "cpu":
        args.prompt = min(args.prompt, 256)
    results = {}
    for variant in args.variants.split(","):
        started = time.perf_counter()
        model = build(variant.removesuffix("-apart"), shape, None, device)
        decoder = fast.StaticDecoder(model, args.prompt + args.steps + 1, join_qkv=not variant.endswith("-apart"))
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(1, model.config.vocab_size, (args.prompt,), generator=generator).tolist()
        bytes_per_token = bytes_read_per_token(model)
        result = results[variant] = {"weight_bytes_read_per_token": bytes_per_token}
        with torch.inference_mode():
            decoder.step(prompt, 0, keep=1)
            # The step the server runs uncompiled (a CPU; a GPU until the compile is done).
            result["uncompiled"] = profile_steps(lambda: decoder.step([7], args.prompt), args.steps, bytes_per_token)
            if args.compiled:
                # The CPU check only traces it (inductor would need a C++ compiler and minutes).
                decoder.compile(backend="inductor" if device.startswith("cuda") else "eager")
                decoder.step(prompt, 0, keep=1)  # the compile's warm-up wrote into the cache
                tokens = torch.tensor([[7]], device=device)
                positions = torch.tensor([args.prompt], device=device)
                result["compiled"] = profile_steps(lambda: decoder.compiled(tokens, positions), args.steps,
                                                   bytes_per_token)
                # What the server runs: the same kernels replayed as one CUDA graph, no launch gaps.
                result["compiled"]["graph_step_ms"] = summary(
                    [synchronized_ms(lambda: decoder.step([7], args.prompt)) for _ in range(args.steps)])
                result["compiled"]["compile_s"] = round(decoder.compile_seconds, 1)
                result["compiled"]["attention_timed"] = {str(size): timed for size, timed in
                                                         decoder.step_attention.items()}
        result["seconds"] = round(time.perf_counter() - started, 1)
        for path in ("uncompiled", "compiled"):
            if path in result:
                shown = {key: value for key, value in result[path].items() if key != "top_kernels_ms"}
                print(variant, path, shown, flush=True)
                for name, ms in result[path]["top_kernels_ms"]:
                    print(f"    {ms:8.3f} ms  {name}", flush=True)
        del model, decoder
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    payload = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
               "prompt_tokens": args.prompt, "steps": args.steps, "results": results}
    print(write_result("gpu-decode-profile-small" if args.small else "gpu-decode-profile", payload))


if __name__ == "__main__":
    main()
