"""Where a decode step's GPU time goes, per variant: the linears' kernels against the rest.

    bash bench/gpu-run.sh --script bench/gpu_decode_profile.py    # one GPU, StarCoder2-15B shape, ~2 minutes
    cd bench && python gpu_decode_profile.py --small              # the same code on the CPU with a small shape

Why (issue 11): compiled, int4wo decoded at 8.6 ms/token and int8wo at 9.1 on an H200,
where reading their weights (8.8 / 16 GB) takes 1.8 / 3.3 ms at the HBM's ~4.8 TB/s;
bf16 at 9.7-10.0 where 31.3 GB take 6.5.  Whether the linears' kernels or everything
around them (attention, norms, rotary, residuals, the output projection) eat the
difference decides what to work on.  This runs the static-cache step that fast.py
compiles, uncompiled, one token after a 2,048-token prompt, and sums the device time of
its kernels by kind.  The linears run the same kernels compiled; the rest is what
inductor fuses, so its share here is an upper bound of the compiled step's.
"""

from __future__ import annotations

import argparse
import time

from common import summary, write_result
from engines import SMALL, STARCODER2_15B, synchronize, synchronized_ms
from gpu import build

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


def device_time_by_kind(trace, steps: int) -> tuple[dict, list]:
    """Device milliseconds per step by kind, and the 12 costliest kernels."""
    from torch.autograd import DeviceType

    per_kernel: dict[str, float] = {}
    for event in trace.events():
        if event.device_type == DeviceType.CUDA:
            per_kernel[event.name] = per_kernel.get(event.name, 0.0) + event.device_time_total / 1000 / steps
    by_kind: dict[str, float] = {}
    for name, ms in per_kernel.items():
        kind = kind_of(name)
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    top = sorted(per_kernel.items(), key=lambda item: -item[1])[:12]
    return {kind: round(ms, 3) for kind, ms in sorted(by_kind.items())}, [[name[:90], round(ms, 3)] for name, ms in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shape on the CPU (checks the script)")
    parser.add_argument("--variants", default="bf16,int8wo,int4wo")
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=8, help="one-token steps profiled (and timed)")
    args = parser.parse_args()
    import gc

    import torch
    from torch.profiler import ProfilerActivity, profile

    from infill_ls.engine import fast
    from infill_ls.engine.quantize import weight_bytes

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    shape = SMALL if device == "cpu" else STARCODER2_15B
    if device == "cpu":
        args.prompt = min(args.prompt, 256)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    results = {}
    for variant in args.variants.split(","):
        started = time.perf_counter()
        model = build(variant, shape, None, device)
        vocab = model.config.vocab_size
        decoder = fast.StaticDecoder(model, args.prompt + args.steps + 1)
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(1, vocab, (args.prompt,), generator=generator).tolist()
        with torch.inference_mode():
            decoder.step(prompt, 0, keep=1)
            for _ in range(2):  # kernels picked, caches warm
                decoder.step([7], args.prompt)
            step_ms = [synchronized_ms(lambda: decoder.step([7], args.prompt)) for _ in range(args.steps)]
            with profile(activities=activities) as trace:
                for _ in range(args.steps):
                    decoder.step([7], args.prompt)
                synchronize()
        by_kind, top = device_time_by_kind(trace, args.steps) if device.startswith("cuda") else ({}, [])
        linears = sum(ms for kind, ms in by_kind.items() if kind.startswith("linear"))
        bytes_per_token = weight_bytes(model)
        results[variant] = {
            "uncompiled_step_ms": summary(step_ms),
            "device_ms_per_step": by_kind,
            "device_ms_total": round(sum(by_kind.values()), 3),
            "weight_bytes": bytes_per_token,
            "linears_GB_s": round(bytes_per_token / (linears / 1000) / 1e9, 1) if linears else None,
            "top_kernels_ms": top,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(variant, {key: value for key, value in results[variant].items() if key != "top_kernels_ms"}, flush=True)
        for name, ms in top:
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
