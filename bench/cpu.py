"""Which precision decodes fastest on this CPU: float32, bf16, dynamic int8, weight-only int8/int4.

    python bench/cpu.py [--model DIR | --shape 3b-4-layers] [--prompt 1024] [--new 32] [--threads N]
                        [--precisions P ...]

Runs the engine's real greedy loop on the bundled model's shape with random weights (or
4 layers of StarCoder2-3B's shape, or a real checkpoint with --model), each precision on
transformers' dynamic cache and on the static cache the server uses on a CPU ("-static"),
all by turns, and writes bench/results/cpu-*.json; the choice in server/infill_ls/hardware.py
(cpu_precision) comes from these figures.
"""

from __future__ import annotations

import argparse

from common import summary, write_result
from engines import BUNDLED, STARCODER2_3B_4_LAYERS, engine_for, pytorch_dynamic_int8, random_model, time_engine
from infill_ls.engine import fast
from infill_ls.engine.local import DRAFT_TOKENS, FAST_STEP_SIZES, static_cache_tokens
from infill_ls.settings import Settings

# int8wo/int4wo are the plain modules, as the server runs them on a CPU; "int4wo-kernels":
# on tinygemm (what the server uses on a GPU), for comparison; "int8dyn-ao": the server's
# int8dyn until 2026-11-27 (engines.pytorch_dynamic_int8), the baseline of its replacement.
PRECISIONS = ("float32", "bf16", "int8dyn", "int8dyn-ao", "int8wo", "int4wo", "int4wo-kernels")
SHAPES = {"bundled": BUNDLED, "3b-4-layers": STARCODER2_3B_4_LAYERS}


def build(precision: str, model_dir: str | None, shape: dict):
    import torch
    from transformers import AutoModelForCausalLM

    from infill_ls.engine.quantize import quantize_weights, use_kernels

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if model_dir:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    else:
        model = random_model(shape, dtype, "cpu")
    kind = precision.removesuffix("-kernels")
    if kind == "int8dyn-ao":
        pytorch_dynamic_int8(model)
    elif kind not in ("float32", "bf16"):
        quantize_weights(model, kind)
        if precision.endswith("-kernels"):
            use_kernels(model, dtype)
    return engine_for(model, model_dir or "random weights", kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model directory (default: the bundled model's shape, random weights)")
    parser.add_argument("--shape", choices=SHAPES, default="bundled", help="random weights of this shape")
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens")
    parser.add_argument("--new", type=int, default=32, help="generated tokens")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    parser.add_argument("--threads", type=int, help="torch threads (default: what the engine picks for this size)")
    parser.add_argument("--static-variants", nargs="*", choices=("apart", "sdpa"), default=(),
                        help="also the static cache with the attention's projections apart (\"-static-apart\"), "
                             "as before fast.py joined them, or its one-token steps on SDPA (\"-static-sdpa\"), "
                             "as before grouped_attention")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    # Each precision on transformers' dynamic cache and on the static cache uncompiled
    # ("-static"), sized as the server sizes it on a CPU (fastDecode, contextTokens); the
    # static engine shares the dynamic one's weights.  All of them run by turns, so a drift
    # of the machine's speed hits each alike: one after the other, the same float32 engine
    # took 7.3 and 10.1 ms/token an hour apart, and the static cache once looked 8 % slower.
    engines = {}
    for precision in args.precisions:
        dynamic = build(precision, args.model, SHAPES[args.shape])
        static = engine_for(dynamic.model, dynamic.info.name, dynamic.info.precision)
        slots = max(static_cache_tokens(static.model, Settings()), args.prompt + args.new + DRAFT_TOKENS + 1)
        static.start_fast_decoding(slots, compile=False)
        engines[precision], engines[f"{precision}-static"] = dynamic, static
        for variant in args.static_variants:
            other = engine_for(dynamic.model, dynamic.info.name, dynamic.info.precision)
            other.fast = fast.StaticDecoder(other.model, slots, step_sizes=FAST_STEP_SIZES, join_qkv=variant != "apart")
            other.fast.grouped_matmul &= variant != "sdpa"
            other.fast.ready.set()
            engines[f"{precision}-static-{variant}"] = other
    timings: dict[str, list[dict]] = {name: [] for name in engines}
    names = list(engines)
    for turn in range(args.runs + 1):  # turn 0 warms each engine up, untimed
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            timing = time_engine(engines[name], args.prompt, args.new, runs=1, warmup=False)
            if turn:
                timings[name].append(timing)
    results = {}
    for name, runs in timings.items():
        results[name] = {
            "prefill_ms": summary([t["prefill_ms"]["p50"] for t in runs]),
            "decode_ms_per_token": summary([t["decode_ms_per_token"]["p50"] for t in runs]),
            "path": runs[-1]["path"],
        }
        print(name, results[name]["prefill_ms"]["p50"], "ms prefill,",
              results[name]["decode_ms_per_token"]["p50"], "ms/token", flush=True)
    fastest = min(results, key=lambda p: results[p]["decode_ms_per_token"]["p50"])
    path = write_result("cpu", {
        "model": args.model or {"random weights": SHAPES[args.shape], "shape": args.shape},
        "prompt_tokens": args.prompt, "new_tokens": args.new, "torch_threads": torch.get_num_threads(),
        "results": results, "fastest_decode": fastest,
    })
    print("fastest decode:", fastest, "->", path)


if __name__ == "__main__":
    main()
