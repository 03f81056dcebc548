"""One-row (decode-sized) linears of StarCoder2-15B: which weight-only implementation is fastest.

    python bench/gpu_linear.py            # one GPU, ~2 minutes
    python bench/gpu_linear.py --small    # the same code on the CPU with small shapes, uncompiled

Decoding a token multiplies one row of activations by every weight matrix, so its time
is the time to read the weights.  bench/gpu.py measures whole decode steps; this
measures each implementation of quantize.py's linears alone, on the 15B model's shapes,
to say which one a precision should use: the plain modules compiled by inductor (with
and without gpt-fast's coordinate-descent tuning of the generated kernels), gemv.py's
Triton kernels, or tinygemm for int4, eager and compiled; and fp8 (float8 weights and
activations on ``torch._scaled_mm``), eager, compiled, and its matmul alone.  (PyTorch's
int8 matrix-vector kernel, measured here on 2026-11-26 at 150 ms per token, 20x slower
than bf16, is no longer offered.)  Each is
checked against the bf16 linear's output.  The estimate per token adds 40 layers of
each shape and the output projection (bf16; int8 beside int4wo, as quantize.HEAD_KINDS
makes it), with the attention's projections apart and
joined (as fast.py runs them); attention and the rest are not counted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

from common import summary, write_result

LAYERS = 40
# (in, out, linears per layer) of StarCoder2-15B; the output projection (6144 x 49152) is
# timed apart (bf16, and int8 as int4wo makes it).
# The largest first: a run cut short still has the shapes that hold most of the weights.
SHAPES = {"c_fc": (6144, 24576, 1), "c_proj": (24576, 6144, 1), "qkv_proj (joined)": (6144, 7168, 1),
          "q_proj+o_proj": (6144, 6144, 2), "k_proj+v_proj": (6144, 512, 2)}
SMALL_SHAPES = {"q_proj+o_proj": (256, 256, 2), "c_fc": (256, 1024, 1), "qkv_proj (joined)": (256, 384, 1),
                "k_proj+v_proj": (256, 64, 2)}
# fast.py's decoder runs the query, key and value projections as one linear: per layer it
# replaces these (the key and value projections, and the query's half of "q_proj+o_proj").
JOINED, REPLACED = "qkv_proj (joined)", {"q_proj+o_proj": 1, "k_proj+v_proj": 2}
LM_HEAD = (6144, 49152)


def timer(fn, device: str) -> list[float]:
    """Milliseconds per call.  On a GPU in a CUDA graph after an L2 flush, as a decode step
    runs and as quantize.tune_launch times launches (quantize.graph_ms): launched one by one
    from Python, a Triton kernel with its input conversion and sum of splits (3-4 launches)
    can take longer to launch than to run, so do_bench alone (used until 2026-11-27) timed
    the launches as much as the kernels.  Where a call cannot be captured, do_bench.  Else a loop."""
    if device.startswith("cuda"):
        import torch
        from triton.testing import do_bench

        from infill_ls.engine.quantize import graph_ms

        try:
            return [graph_ms(fn, torch.device(device))]
        except Exception as error:  # noqa: BLE001 - e.g. an op that cannot be captured
            print(f"not in a CUDA graph ({type(error).__name__}: {str(error)[:120]}): timed launched one by one",
                  flush=True)
            torch.cuda.synchronize()
        return [do_bench(fn, warmup=25, rep=100, return_mode="median")]
    fn()
    times = []
    for _ in range(20):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


class Fp8MatmulAlone:
    """quantize.Fp8Linear's ``_scaled_mm`` without the per-token quantization of its input
    (done once per input beforehand) or the bias: the least the fp8 approach can cost.
    ``tensorwise``: scales of 1 in the call and both applied after it, which takes another
    cuBLASLt kernel than the scales per row and column; ``pad_rows``: the rows padded with
    zeros to this many first (vLLM pads to 17).  quantize.tune_fp8 picks among these per
    shape at load; this says how far apart they are."""

    def __init__(self, module, tensorwise: bool = False, pad_rows: int = 0):
        import torch

        self.module, self.pad_rows, self.inputs = module, pad_rows, {}
        self.unit_scale = torch.ones((), device=module.weight.device) if tensorwise else None

    def __call__(self, x):
        from infill_ls.engine.quantize import fp8_rows, zero_padded

        if x.data_ptr() not in self.inputs:
            self.inputs[x.data_ptr()] = fp8_rows(zero_padded(x.float(), self.pad_rows))
        rows, scales = self.inputs[x.data_ptr()]
        return self.module.matmul(rows, scales, x.dtype, self.unit_scale)[:x.shape[0]]


def implementations(linear, compile_too: bool):
    """(name, module, inductor settings or None for eager) for each implementation of ``linear``."""
    from infill_ls.engine import gemv
    from infill_ls.engine.quantize import FP8_PADDED_ROWS, Fp8Linear, Int4WeightOnlyLinear, Int8WeightOnlyLinear

    yield "bf16", linear, None
    fp8 = Fp8Linear(linear)
    yield "fp8", fp8, None
    yield "fp8-matmul-alone", Fp8MatmulAlone(fp8), None
    yield "fp8-matmul-alone-tensorwise", Fp8MatmulAlone(fp8, tensorwise=True), None
    yield "fp8-matmul-alone-padded", Fp8MatmulAlone(fp8, pad_rows=FP8_PADDED_ROWS), None
    if compile_too:
        yield "fp8-compiled", fp8, {}
    for kind, make in (("int8wo", Int8WeightOnlyLinear), ("int4wo", Int4WeightOnlyLinear)):
        plain = make(linear)
        for kernel_kind in ("triton", "tinygemm") if kind == "int4wo" else ("triton",):
            kernel = copy.deepcopy(plain)
            try:
                kernel.switch_to_kernel(kernel_kind)
            except NotImplementedError:
                continue
            yield f"{kind}-{kernel_kind}", kernel, None
            if kernel_kind == "triton":  # tune_launch candidates: the row on the tensor-core kernel ...
                on_tensor_cores = copy.deepcopy(kernel)
                plan = gemv.launch(kernel.out_features, kernel.in_features, kernel.plan.block_k,
                                   linear.weight.device, gemv.ROWS_BLOCK_N)
                on_tensor_cores.plan = dataclasses.replace(plan, one_row_on_tensor_cores=True)
                yield f"{kind}-{kernel_kind}-tensor-cores", on_tensor_cores, None
                folded = copy.deepcopy(kernel)  # ... and the dequantization folded out
                folded.plan = dataclasses.replace(kernel.plan, fold=True)
                yield f"{kind}-{kernel_kind}-folded", folded, None
                on_integers = copy.deepcopy(kernel)  # ... and the row on int8 inputs
                on_integers.plan = dataclasses.replace(kernel.plan, int8_inputs=True)
                yield f"{kind}-{kernel_kind}-int8-inputs", on_integers, None
            if compile_too:
                yield f"{kind}-{kernel_kind}-compiled", kernel, {}
        if compile_too:
            yield f"{kind}-plain-compiled", plain, {}
            yield f"{kind}-plain-compiled-cdt", plain, {"coordinate_descent_tuning": True}
        else:
            yield f"{kind}-plain", plain, None


def measure(name: str, module, inductor: dict | None, x, reference, device: str) -> dict:
    import torch

    if inductor is not None:
        torch._dynamo.reset()  # a fresh compile per case: the modules share one forward
        compiled = torch.compile(module, fullgraph=True, dynamic=False)
        started = time.perf_counter()
        with torch._inductor.config.patch(**inductor), torch.inference_mode():
            out = compiled(x)
        compile_s = time.perf_counter() - started
        fn = lambda: compiled(x)  # noqa: E731
    else:
        with torch.inference_mode():
            out = module(x)
        compile_s = 0.0
        fn = lambda: module(x)  # noqa: E731
    error = ((out.float() - reference).abs().max() / reference.abs().max()).item()
    with torch.inference_mode():
        ms = timer(fn, device)
    return {"ms": summary(ms)["p50"], "relative_error": round(error, 4), "compile_s": round(compile_s, 1)}


def output_projection_ms(head, device: str, generator) -> dict[str, float]:
    """One row through the output projection ``head``: in bf16, and in int8 on gemv.py's
    one-row kernel (int4wo's, quantize.HEAD_KINDS), the faster of its float and int8 inputs
    as tune_launch would keep it (the default launch otherwise)."""
    import torch

    from infill_ls.engine.quantize import Int8WeightOnlyLinear

    x = torch.randn(1, head.in_features, device=device, dtype=torch.bfloat16, generator=generator)
    int8 = Int8WeightOnlyLinear(head)
    int8.switch_to_kernel("triton")
    launches = [int8.plan, dataclasses.replace(int8.plan, int8_inputs=True)]
    with torch.inference_mode():
        times = {"bf16": timer(lambda: head(x), device)[0]}
        int8_times = []
        for launch in launches:
            int8.plan = launch
            int8_times.append(timer(lambda: int8(x), device)[0])
    return times | {"int8wo": min(int8_times)}


def sweep(linear, x, device: str) -> dict:
    """gemv.py's launch choices on this shape (rows per program, inputs per step, split of
    the input dimension; then, for the three best, warps per program, the deferred sum,
    the prefetch of the next step's weights and the dequantization folded out):
    the five fastest of each kernel, in ms per call."""
    import torch

    from infill_ls.engine import gemv
    from infill_ls.engine.quantize import Int4WeightOnlyLinear, Int8WeightOnlyLinear

    n, k = linear.out_features, linear.in_features
    modules = {"int8wo": Int8WeightOnlyLinear(linear), "int4wo": Int4WeightOnlyLinear(linear)}
    found: dict[str, list] = {"int8wo": [], "int4wo": []}

    with torch.inference_mode():
        plain = {kind: module(x).float() for kind, module in modules.items()}  # before any plan is set

    def time_launch(kind: str, **choice) -> None:
        modules[kind].plan = gemv.launch(n, k, device=x.device, **choice)
        try:
            with torch.inference_mode():
                # Against the plain module: a launch that computes something else must not win.
                error = ((modules[kind](x).float() - plain[kind]).abs().max() / plain[kind].abs().max()).item()
                ms = timer(lambda: modules[kind](x), device)[0]
        except Exception as failure:  # e.g. Triton out of shared memory for a large block
            error, ms = float("inf"), float("inf")
            print(kind, choice, f"{type(failure).__name__}: {str(failure)[:200]}", flush=True)
        found[kind].append({**choice, "ms": round(ms, 4), "error_vs_plain": round(error, 5)})

    for kind, module in modules.items():
        group = getattr(module, "group_size", 0)
        for block_n in (16, 32, 64):
            for block_k in (256, 512, 1024) if kind == "int8wo" else (group, 2 * group, 4 * group):
                auto = gemv.launch(n, k, block_k, x.device, block_n).split_k
                for split_k in sorted({max(1, auto // 2), auto, 2 * auto}):
                    time_launch(kind, block_k=block_k, block_n=block_n, split_k=split_k)
        for best in sorted((row for row in found[kind] if row["error_vs_plain"] < 0.02), key=lambda row: row["ms"])[:3]:
            layout = {key: best[key] for key in ("block_k", "block_n", "split_k")}
            for num_warps in (2, 8):
                time_launch(kind, **layout, num_warps=num_warps)
            time_launch(kind, **layout, defer_sum=True)
            time_launch(kind, **layout, prefetch=True)
            for defer_sum in (False, True):
                time_launch(kind, **layout, defer_sum=defer_sum, fold=True)
    right = {kind: [row for row in rows if row["error_vs_plain"] < 0.02] for kind, rows in found.items()}
    return {kind: sorted(rows, key=lambda row: row["ms"])[:5] for kind, rows in right.items()} | {
        "wrong": [{"kind": kind, **row} for kind, rows in found.items() for row in rows if row not in right[kind]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shapes on the CPU, uncompiled (checks the script)")
    parser.add_argument("--budget-s", type=float, default=150, help="skip shapes not started within this time")
    parser.add_argument("--sweep", action="store_true", help="also try gemv.py's launch choices on each shape")
    args = parser.parse_args()
    import torch
    from torch import nn

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    shapes = SMALL_SHAPES if args.small else SHAPES
    generator = torch.Generator(device).manual_seed(0)
    began = time.perf_counter()
    results: dict = {}
    payload = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "shapes": results}

    def random_linear(features_in: int, features_out: int, bias: bool = True):
        linear = nn.Linear(features_in, features_out, bias=bias, device=device, dtype=torch.bfloat16)
        with torch.no_grad():
            linear.weight.normal_(0, 0.02, generator=generator)
            if bias:
                linear.bias.normal_(0, 0.02, generator=generator)
        return linear

    for shape, (features_in, features_out, count) in shapes.items():
        if time.perf_counter() - began > args.budget_s:
            results[shape] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        linear = random_linear(features_in, features_out)
        x = torch.randn(1, features_in, device=device, dtype=torch.bfloat16, generator=generator)
        # A draft check's rows (the engine's DRAFT_TOKENS + 1), for the eager implementations.
        x_draft = torch.randn(9, features_in, device=device, dtype=torch.bfloat16, generator=generator)
        with torch.inference_mode():
            reference, reference_draft = linear(x).float(), linear(x_draft).float()
        row = results[shape] = {"in": features_in, "out": features_out, "per_layer": count}
        for name, module, inductor in implementations(linear, compile_too=device.startswith("cuda")):
            cases = [(name, x, reference)] + ([(f"{name}-9rows", x_draft, reference_draft)] if inductor is None else [])
            for case, inputs, expected in cases:
                try:
                    row[case] = measure(case, module, inductor, inputs, expected, device)
                except Exception as error:  # one missing kernel must not lose the rest
                    row[case] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                print(shape, case, row[case], flush=True)
        if args.sweep and device.startswith("cuda"):  # Triton compiles each choice: GPU runs only
            row["triton_sweep"] = sweep(linear, x, device)
            print(shape, "sweep", row["triton_sweep"], flush=True)
        del linear
        write_result("gpu-linear-small" if args.small else "gpu-linear", payload)
    if not args.small:
        payload["lm_head_ms"] = output_projection_ms(random_linear(*LM_HEAD, bias=False), device, generator)
    # Per token: every layer's linears in one implementation, plus the output projection in
    # the kind the server gives it beside that implementation's (quantize.HEAD_KINDS).
    names = {name for row in results.values() for name in row if isinstance(row.get(name), dict) and "ms" in row[name]}
    per_shape = {name: {shape: row[name]["ms"] for shape, row in results.items() if "ms" in row.get(name, {})}
                 for name in names}
    if args.sweep and all("triton_sweep" in row for row in results.values()):
        for kind in ("int8wo", "int4wo"):
            per_shape[f"{kind}-triton-best-launch"] = {shape: row["triton_sweep"][kind][0]["ms"]
                                                       for shape, row in results.items()}
    from infill_ls.engine.quantize import HEAD_KINDS

    heads = payload.get("lm_head_ms", {})
    apart, joined = {}, {}
    for name, ms in sorted(per_shape.items()):
        if len(ms) < len(results):
            continue  # a shape failed or was skipped
        head_ms = heads.get(HEAD_KINDS.get(name.partition("-")[0], "bf16"), 0.0)
        layer = sum(ms[shape] * results[shape]["per_layer"] for shape in ms if shape != JOINED)
        apart[name] = round(layer * LAYERS + head_ms, 2)
        if JOINED in ms:
            layer += ms[JOINED] - sum(ms[shape] * count for shape, count in REPLACED.items())
            joined[name] = round(layer * LAYERS + head_ms, 2)
    payload["linears_ms_per_token"], payload["linears_ms_per_token_qkv_joined"] = apart, joined
    payload["elapsed_s"] = round(time.perf_counter() - began, 1)
    path = write_result("gpu-linear-small" if args.small else "gpu-linear", payload)
    print("apart:", apart)
    print("qkv joined:", joined)
    print(path)


if __name__ == "__main__":
    main()
