"""GPU benchmark on the StarCoder2-15B architecture: every precision and decode path, one table.

    python bench/gpu.py                      # one H100, random weights, ~8 minutes
    python bench/gpu.py --small              # the same code on the CPU with a tiny shape
    python bench/gpu.py --model DIR          # real weights (shape read from DIR)
    bash bench/gpu-run.sh                    # what a device-tool session runs (installs carried wheels)

For each variant (bf16, int8wo, int4wo = our weight-only linears; fp8 = float8 weights
and activations on torch._scaled_mm; 8bit, 4bit = bitsandbytes): footprint beside the
model card's, prefill of 2,048 tokens, decode ms/token and achieved bandwidth (weight
bytes read per token / time, and % of the H100's 3.35 TB/s) for plain eager
``model.generate``, the engine's eager loop and the engine's compiled static-cache path
(fast.py); ratios are to bf16 eager ``generate`` in the same run. Then a typing replay
through the engine (new code typed into a real file at 30 ms/char, a single-line
suggestion requested whenever the engine is free) with and without prompt-cache reuse,
in the server's prompt order (PSM) and in suffix-first order (SPM). Results are written
after every variant, so a run cut short still leaves its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import time
import traceback

from common import REPO, RUN_STAMP, result_path, summary, write_result
from engines import SMALL, STARCODER2_15B, engine_for, random_model, synchronize, time_engine, time_generate

H100_BYTES_PER_S = 3.35e12
MODEL_CARD_MB = {"bf16": 32251, "8bit": 16900, "4bit": 9225, "int8wo": 16900, "int4wo": 9225, "fp8": 16900}
# int8wo/int4wo: on gemv.py's Triton kernels, as the server runs them on a GPU; not run by
# default: "int4wo-tinygemm", and "-plain" for the dequantize-then-matmul modules.  A
# "+tune" suffix compiles that variant with coordinate-descent tuning (as --tune does for all),
# "+whole" compiles its step as one graph instead of one layer serving all
# (fast.StaticDecoder.compile's whole_model), e.g. "bf16,bf16+whole"; "+sdpa" and "+kernel"
# make its compiled steps attend on SDPA or on attention.py's kernel instead of the faster
# of the two as timed at load; "+unfolded" offers tune_launch no folded launch, "+float-inputs"
# no launch on int8 inputs (launches_without); "+bf16-head" keeps int4wo's output projection
# in bf16 (the server makes it int8: quantize.HEAD_KINDS).
VARIANTS = ("bf16", "int8wo", "int4wo", "fp8", "4bit", "8bit")
EXTRA_VARIANTS = ("int4wo-tinygemm", "int8wo-plain", "int4wo-plain")
# The ways a variant decodes: transformers' generate, the engine eager, its compiled static path.
PATHS = ("generate_eager", "engine_eager", "engine_fast")


def swap_in_bitsandbytes(model, kind: str, device: str):
    """Replace the linears (not lm_head) by bitsandbytes' 8-bit or nf4 layers, one at a time."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear) or name == "lm_head":
                continue
            # bitsandbytes quantizes on the move to the GPU: 8-bit only from the CPU, 4-bit from
            # anywhere.  The layers are built on the meta device: their own random weights,
            # replaced at once, took ~1-2 s of CPU per c_fc (bitsandbytes 0.50, 2 cores).
            if kind == "8bit":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=6.0, device="meta")
                new.weight = bnb.nn.Int8Params(child.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
                new.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data.cpu(), requires_grad=False)
            setattr(module, name, new.to(device))
            del child
    return model


def base_variant(variant: str) -> str:
    """The variant without its "+" options: "int8wo-plain+tune" -> "int8wo-plain"."""
    return variant.partition("+")[0]


def build(variant: str, shape: dict | None, model_dir: str | None, device: str):
    import torch

    from infill_ls.engine.quantize import quantize_weights, tune_fp8, use_kernels

    if model_dir:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map=device).eval()
    else:
        model = random_model(shape, torch.bfloat16, device)
    kind, _, kernel = base_variant(variant).partition("-")
    if kind in ("int8wo", "int4wo", "fp8"):
        quantize_weights(model, kind, skip=("lm_head",) if "+bf16-head" in variant else None)
        started = time.perf_counter()
        if kind == "fp8" and device.startswith("cuda"):  # as the server loads it: each shape's fastest call
            print(f"{variant}: {tune_fp8(model, torch.bfloat16)} in {time.perf_counter() - started:.0f} s", flush=True)
        elif kind != "fp8" and kernel != "plain":  # the server's kernels (Triton), or tinygemm
            left_out = {flag for flag, option in (("fold", "+unfolded"), ("int8_inputs", "+float-inputs"))
                        if option in variant}
            with launches_without(left_out):
                counts = use_kernels(model, torch.bfloat16, kernel or 'triton')
            print(f"{variant}: {counts} in {time.perf_counter() - started:.0f} s; launches {launches(model)}", flush=True)
    elif variant in ("8bit", "4bit"):
        swap_in_bitsandbytes(model, variant, device)
    gc.collect()
    return model


@contextlib.contextmanager
def launches_without(flags: set[str]):
    """tune_launch offered no launch with any of ``flags`` (gemv.Launch's fields) set, for an
    A/B in one run: "int4wo,int4wo+unfolded" leaves out ``Launch.fold``.  tune_launch times
    each launch eagerly: a folded one's extra work (int4: a kernel preparing the input row;
    int8: the row's sum) is a kernel there and, for int4, in the compiled step too, while the
    unfolded one's conversion of its input to float32, a kernel when timed, fuses into the
    kernel before it in the step.  So the timing may keep folded launches where the step would
    be faster unfolded.  "+float-inputs" leaves out ``Launch.int8_inputs`` (session 22)."""
    from infill_ls.engine import gemv

    offered = gemv.candidates
    gemv.candidates = lambda *args, **kwargs: [launch for launch in offered(*args, **kwargs)
                                               if not any(getattr(launch, flag) for flag in flags)]
    try:
        yield
    finally:
        gemv.candidates = offered


def launches(model) -> dict[str, str]:
    """The launch of gemv.py's kernels for each weight shape ([out]x[in]), as
    quantize.tune_launch chose it on this GPU."""
    return {f"{m.out_features}x{m.in_features}": str(m.plan) for m in model.modules()
            if getattr(m, "plan", None) is not None}


def footprint_mb(model, device: str) -> float:
    import torch

    from infill_ls.engine.quantize import weight_bytes

    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20
    return weight_bytes(model) / 2**20


def bytes_read_per_token(model) -> int:
    """What decoding one token reads: every weight but the embedding table (one row of it)."""
    from infill_ls.engine.quantize import weight_bytes

    embed = model.model.embed_tokens.weight
    return weight_bytes(model) - embed.numel() * embed.element_size()


def bandwidth(bytes_per_token: int, ms_per_token: float | None) -> dict:
    if not ms_per_token:
        return {}
    rate = bytes_per_token / (ms_per_token / 1000)
    return {"achieved_GB_s": round(rate / 1e9, 1), "percent_of_h100": round(100 * rate / H100_BYTES_PER_S, 1)}


# A single-line suggestion as the issue sizes it.  Random weights never end a line (the
# number tokenizer has no newline, end-of-text is zeroed), so every suggestion is this long.
SUGGESTION_TOKENS = 16


def typing_replay(engine, requests: int, reuse: bool, context_tokens: int, order: str = "psm") -> dict:
    """Type new code into the middle of a real file at 30 ms/char; whenever the engine is
    free, ask for a single-line suggestion.

    The prompt is laid out as the server lays it out for a long file: the suffix (the
    code after the hole being typed, fixed while typing) takes a quarter of the budget,
    the prefix the rest.  ``order="psm"`` (prefix, suffix marker, suffix, middle marker:
    the server's order) puts each keystroke before the suffix, so a reused prompt still
    prefills the whole suffix; ``"spm"`` (suffix first, the prefix last: the FIM paper's
    other order) leaves only the typed characters to prefill.
    """
    from infill_ls.engine.base import GenerationRequest
    from infill_ls.postprocess import first_line_stop
    from infill_ls.prompt import SUFFIX_SHARE

    text = (REPO / "server" / "infill_ls" / "server.py").read_text()
    vocab = engine.model.config.vocab_size
    # The number tokenizer cannot encode text: map characters to token ids, one per char.
    to_ids = lambda chunk: [1 + (ord(c) * 7919) % (vocab - 3) for c in chunk]  # noqa: E731
    suffix_mark, middle_mark = vocab - 2, vocab - 1
    suffix_room = int((context_tokens - 2) * SUFFIX_SHARE)
    room = context_tokens - 2 - suffix_room
    position = len(text) // 3
    hole_end = position + 4000  # far more than 40 requests type
    suffix = to_ids(text[hole_end:][:suffix_room]) + [middle_mark]
    latencies, reused, prefill, decode, paths = [], [], [], [], {}
    # The prefix starts at a fixed anchor, moved only by big steps (as prompt.py's stable
    # cut does): a window that slides with every keystroke would defeat reuse.
    anchor = position - room // 2
    for _ in range(requests):
        if position - anchor > room:
            anchor = position - room // 2
        prefix = to_ids(text[anchor:position])
        ids = prefix + [suffix_mark] + suffix if order == "psm" else [suffix_mark] + suffix + prefix
        if not reuse:
            engine.clear_prompt_cache()
        synchronize()
        started = time.perf_counter()
        generation = engine.generate(GenerationRequest(prompt_ids=ids, max_new_tokens=SUGGESTION_TOKENS,
                                                       stop_rule=first_line_stop, prompt_lookup=True))
        synchronize()
        took = (time.perf_counter() - started) * 1000
        latencies.append(took)
        reused.append(generation.reused_tokens)
        prefill.append(generation.prefill_ms)
        decode.append(generation.decode_ms)
        paths[generation.path] = paths.get(generation.path, 0) + 1
        # The user typed on meanwhile: the next request is for where the cursor is now
        # (capped, so a slow machine still replays typing rather than jumps).
        position = min(position + min(max(1, int(took // 30)), room // 8), hole_end)
    return {"single_line_suggestion_ms": summary(latencies), "order": order, "suggestion_tokens": SUGGESTION_TOKENS,
            "prompt_tokens": len(ids), "prefill_ms": summary(prefill), "decode_ms": summary(decode), "paths": paths,
            "reused_tokens": summary(reused), "requests": requests, "samples_ms": [round(v, 2) for v in latencies]}


def measure_fast(engine, variant: str, args, result: dict) -> None:
    """The compiled static-cache path (fast.py) of ``engine``, into ``result``."""
    from infill_ls.engine import fast
    from infill_ls.engine.local import DRAFT_TOKENS, FAST_STEP_SIZES

    device = str(engine.device)
    # The typing variant compiles the server's step sizes (drafts checked in one graph);
    # the others only the one-token step, to keep the run inside one device call.
    step_sizes = FAST_STEP_SIZES if variant == args.typing_variant else (1,)
    decoder = fast.StaticDecoder(engine.model, args.prompt + args.new + DRAFT_TOKENS + 1, step_sizes=step_sizes)
    compile_now = device.startswith("cuda") or args.compile
    tune = args.tune or "+tune" in variant
    whole_model = "+whole" in variant
    attention = "sdpa" if "+sdpa" in variant else "kernel" if "+kernel" in variant else "fastest"
    if compile_now:
        decoder.compile(tune=tune, whole_model=whole_model, attention=attention)
    else:
        decoder.ready.set()  # uncompiled static cache: proves the path, not its speed
    engine.fast = decoder
    result["engine_fast"] = {**time_engine(engine, args.prompt, args.new, runs=args.fast_runs),
                             "compiled": compile_now, "compile_s": round(decoder.compile_seconds or 0, 1),
                             "step_sizes": list(step_sizes), "tuned": tune, "compiled_whole": decoder.compiled_whole,
                             "qkv_joined": decoder.qkv[0] is not None,
                             "attention_backend": decoder.step_attention_backend(),
                             "attention_as_two_matmuls": decoder.grouped_matmul,
                             "attention_kernel_steps": sorted(decoder.split_attention_steps),
                             "attention_timed": {str(size): timed for size, timed in decoder.step_attention.items()},
                             "compile_fallbacks": decoder.fallbacks,
                             "cuda_graphs": sum(isinstance(run, fast.CapturedStep) for run in decoder.runs.values())}
    if len(step_sizes) > 1:  # drafts are checked in the compiled graph: prompt lookup as the server runs it
        result["fast_repetitive_lookup_off"] = time_engine(engine, args.prompt, args.new, runs=args.runs, repetitive=True)
        result["fast_repetitive_lookup_on"] = time_engine(engine, args.prompt, args.new, runs=args.runs,
                                                          repetitive=True, prompt_lookup=True)


def measure(variant: str, args, shape, device: str) -> dict:
    import torch

    started = time.perf_counter()
    model = build(variant, shape, args.model, device)
    result: dict = {"build_s": round(time.perf_counter() - started, 1), "footprint_mb": round(footprint_mb(model, device))}
    chosen = launches(model)
    if chosen:
        result["launches"] = chosen
    if base_variant(variant) in MODEL_CARD_MB:
        result["model_card_mb"] = MODEL_CARD_MB[base_variant(variant)]
    bytes_per_token = bytes_read_per_token(model)
    result["weight_bytes_read_per_token"] = bytes_per_token
    runs = args.runs
    result["generate_eager"] = time_generate(model, args.prompt, args.new, runs=runs)
    engine = engine_for(model, "StarCoder2-15B shape" if not args.small else "small shape", variant)
    result["engine_eager"] = time_engine(engine, args.prompt, args.new, runs=runs)
    bitsandbytes = variant in ("8bit", "4bit")
    # Prompt lookup on a repetitive prompt, off and on, on the eager path (and below on the
    # compiled path when its step sizes include a draft check).  Not for bitsandbytes: the
    # issue's table does not ask for it, and at 8-bit's ~144 ms/token its 6 generations
    # would cost ~30 s of the one device call the table must fit in.
    if not bitsandbytes:
        result["repetitive_lookup_off"] = time_engine(engine, args.prompt, args.new, runs=runs, repetitive=True)
        result["repetitive_lookup_on"] = time_engine(engine, args.prompt, args.new, runs=runs, repetitive=True,
                                                     prompt_lookup=True)
    if bitsandbytes:
        result["engine_fast"] = {"skipped": "bitsandbytes kernels are opaque to torch.compile's fusion"}
    elif args.no_fast:
        result["engine_fast"] = {"skipped": "--no-fast"}
    else:
        try:
            measure_fast(engine, variant, args, result)
        except Exception as error:  # a compile that fails must not lose the eager figures above
            engine.fast = None
            result["engine_fast"] = {"error": f"{type(error).__name__}: {error}"[:2000],
                                     "traceback": traceback.format_exc().splitlines()[-12:]}
    for path in PATHS:
        decode = result[path].get("decode_ms_per_token", {}).get("p50")
        if decode:
            result[path].update(bandwidth(bytes_per_token, decode))
    if variant == args.typing_variant:
        result["typing_with_reuse"] = typing_replay(engine, args.typing_requests, True, args.prompt)
        result["typing_without_reuse"] = typing_replay(engine, args.typing_requests, False, args.prompt)
        result["typing_spm_with_reuse"] = typing_replay(engine, args.typing_requests, True, args.prompt, "spm")
    del engine, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def add_speedups(results: dict) -> None:
    """Each variant's decode against bf16's eager ``generate`` of the same run, bf16 measured
    before or after it (a run that ends on bf16 gets the ratios when bf16 is done)."""
    baseline = results.get("bf16", {}).get("generate_eager", {}).get("decode_ms_per_token", {}).get("p50")
    for result in results.values() if baseline else ():
        for path in PATHS:
            decode = result.get(path, {}).get("decode_ms_per_token", {}).get("p50")
            if decode:
                result[path]["speedup_vs_bf16_generate"] = round(baseline / decode, 2)


def measure_in_a_process(variant: str, name: str) -> dict:
    """``variant`` measured by a Python process of its own (--isolate), which adds it to this
    run's result file.  A CUDA error such as an illegal address poisons its process's context
    for good: in one process, a new kernel failing so would cost every variant after it
    (~5 s of imports and CUDA start per variant on the GPU machine)."""
    # Later options win: the child runs this one variant, into this run's file (its stamp).
    argv = [arg for arg in sys.argv[1:] if arg != "--isolate"] + ["--variants", variant, "--merge"]
    child = subprocess.run([sys.executable, __file__, *argv], env={**os.environ, "INFILL_BENCH_STAMP": RUN_STAMP})
    written = result_path(name)
    measured = json.loads(written.read_text())["results"].get(variant) if written.exists() else None
    return measured or {"error": f"its process ended with exit code {child.returncode} before writing a result "
                                 "(a crash: see the log above)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny shape on the CPU (checks the script)")
    parser.add_argument("--model", help="a model directory with real weights")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    # A compiled run of the 15B shape takes ~0.3 s: the figure the targets are about
    # gets more samples than the slow eager paths (2 each, session 21's p50s).
    parser.add_argument("--fast-runs", type=int, default=10, help="timed runs of the compiled static path")
    parser.add_argument("--typing-requests", type=int, default=40)
    parser.add_argument("--typing-variant", default="bf16", help="which variant gets the typing replay")
    parser.add_argument("--compile", action="store_true", help="compile the fast path on the CPU too (--small)")
    parser.add_argument("--no-fast", action="store_true")
    parser.add_argument("--tune", action="store_true", help="coordinate-descent tuning of the compiled step (fast.py)")
    parser.add_argument("--budget-s", type=float, default=540, help="skip variants not started within this time")
    parser.add_argument("--isolate", action="store_true",
                        help="each variant in a process of its own, all in one result file (measure_in_a_process)")
    parser.add_argument("--merge", action="store_true", help=argparse.SUPPRESS)  # an isolated variant's process
    args = parser.parse_args()
    # tune_launch and tune_fp8 log each shape's chosen call with its time in a CUDA graph
    # after an L2 flush: summed over a layer's linears, the linears' own share of a step.
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("infill_ls.engine.quantize").setLevel(logging.INFO)
    import torch

    device = "cuda:0" if torch.cuda.is_available() and not args.small else "cpu"
    shape = None if args.model else (SMALL if args.small else STARCODER2_15B)
    if args.small:
        args.prompt, args.new = min(args.prompt, 256), min(args.new, 16)
        args.typing_requests = min(args.typing_requests, 10)
        args.fast_runs = min(args.fast_runs, 3)
    began = time.perf_counter()
    name = "gpu-small" if args.small else "gpu"
    # --merge: one variant of an isolated run, added to what the run's earlier processes wrote.
    earlier = result_path(name)
    results: dict = json.loads(earlier.read_text())["results"] if args.merge and earlier.exists() else {}
    payload = {"model": args.model or {"random weights": shape}, "device": device, "prompt_tokens": args.prompt,
               "new_tokens": args.new, "results": results}
    for variant in args.variants.split(","):
        if time.perf_counter() - began > args.budget_s:
            results[variant] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
        elif args.isolate:
            print(f"--- {variant} ({time.perf_counter() - began:.0f} s, a process of its own)", flush=True)
            results[variant] = measure_in_a_process(variant, name)
        else:
            if not args.merge:  # an isolated variant's process: its parent said it
                print(f"--- {variant} ({time.perf_counter() - began:.0f} s)", flush=True)
            try:
                results[variant] = measure(variant, args, shape, device)
            except Exception as error:  # one variant failing (e.g. no bitsandbytes) must not lose the others
                # The traceback's last lines: a failure on a lent GPU must be diagnosable from the JSON.
                results[variant] = {"error": f"{type(error).__name__}: {error}",
                                    "traceback": traceback.format_exc().splitlines()[-12:]}
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        add_speedups(results)
        if not args.isolate:  # (the variant's process printed it)
            print(json.dumps(results[variant]), flush=True)
        payload["elapsed_s"] = round(time.perf_counter() - began, 1)
        path = write_result(name, payload)
    print(path)


if __name__ == "__main__":
    main()
