"""gemv.py's Triton kernels behind the weight-only linears, and attention.py's behind a
compiled decode step's attention, checked without a GPU.

Triton's interpreter (TRITON_INTERPRET=1) runs the same kernels on the CPU.  It runs in a
separate process, with Triton from the folder scripts/test-deps.d/50-triton.sh fills, so
that torch in the test process never sees Triton.  On a GPU machine
tests/test_engine.py::test_weight_only_kernels_on_cuda runs them for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TRITON_SITE = Path(os.environ.get("INFILL_TRITON_SITE", Path.home() / ".cache" / "infill-ls" / "triton-site"))
pytestmark = pytest.mark.skipif(not (TRITON_SITE / "triton").is_dir(),
                                reason=f"no Triton in {TRITON_SITE}: run scripts/test-deps.d/50-triton.sh")

CHECK = r"""
import dataclasses, json, sys
import torch
from torch import nn
from infill_ls.engine import gemv
from infill_ls.engine.quantize import Int4WeightOnlyLinear, Int8WeightOnlyLinear, quantize_weights, use_kernels
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
report = {"linears": [], "models": {}, "dtypes": []}
# Shapes with a ragged last block of rows, several groups, and splits that leave the last
# program past the end of the input dimension.
for k, n in ((256, 96), (640, 50), (128, 512)):
    linear = nn.Linear(k, n)
    for rows in (1, 3, 16):  # one row: the matrix-vector kernels; more: the tensor-core ones
        x = torch.randn(rows, k)
        for split in (1, 2, 3):
            int8, int4, int4_wide = (Int8WeightOnlyLinear(linear), Int4WeightOnlyLinear(linear),
                                     Int4WeightOnlyLinear(linear))
            want8, want4 = int8(x), int4(x)
            # Odd splits sum every step; even ones once after the loop (the deferred sum; for
            # four int4 groups per step the other way round).
            int8.plan = gemv.launch(n, k, 64, x.device, block_n=16, split_k=split, defer_sum=split % 2 == 0)
            int4.plan = gemv.launch(n, k, int4.group_size, x.device, block_n=16, split_k=split, defer_sum=split % 2 == 0)
            # Four groups per loop step: 5 groups leave a step part-empty.
            int4_wide.plan = gemv.launch(n, k, 4 * int4.group_size, x.device, block_n=32, split_k=split,
                                         defer_sum=split % 2 == 1)
            cases = [("int8", int8(x), want8), ("int4", int4(x), want4), ("int4 x4", int4_wide(x), want4)]
            if rows > 1:  # the fallback: the one-row kernels, once per row
                for module, want in ((int8, want8), (int4, want4)):
                    module.plan = dataclasses.replace(module.plan, rows_kernel=False)
                    cases.append((type(module).__name__ + " per row", module(x), want))
            # The dequantization folded out of the products (int4: each group's scale and minimum;
            # int8: the codes' offset): one row, and three on the one-row kernel once per row
            # (the sums per row); odd splits and even ones, i.e. the sum per step and deferred
            if rows < 16:
                folded, folded8 = Int4WeightOnlyLinear(linear), Int8WeightOnlyLinear(linear)
                folded.plan = dataclasses.replace(int4_wide.plan, fold=True, rows_kernel=False)
                folded8.plan = dataclasses.replace(int8.plan, fold=True, rows_kernel=False)
                cases += [("int4 x4 folded", folded(x), want4), ("int8 folded", folded8(x), want8)]
                # The row as 16-bit integers per group, on the integer dot products: one and
                # two-or-four groups per step (three rows: the one-row kernel once per row)
                for name, plan, make, want in (("int4 int8 inputs", int4.plan, Int4WeightOnlyLinear, want4),
                                               ("int4 x4 int8 inputs", int4_wide.plan, Int4WeightOnlyLinear, want4),
                                               ("int8 int8 inputs", gemv.launch(n, k, 256, x.device, split_k=split),
                                                Int8WeightOnlyLinear, want8)):
                    on_integers = make(linear)
                    on_integers.plan = dataclasses.replace(plan, int8_inputs=True, fold=False, rows_kernel=False)
                    cases.append((name, on_integers(x), want))
                if rows == 1 and split == 1:  # bf16 activations give bf16 outputs
                    half = x.to(torch.bfloat16)
                    report["dtypes"] += [
                        str(gemv.int4_matvec(half, folded.packed, folded.scales, folded.mins, folded.group_size,
                                             folded.plan).dtype),
                        str(gemv.int8_matvec(half, folded8.weight, folded8.scales, folded8.plan).dtype)]
            if rows == 1:  # the next step's weights requested early (launches tune_launch may pick)
                int8_ahead, int4_ahead = Int8WeightOnlyLinear(linear), Int4WeightOnlyLinear(linear)
                int8_ahead.plan = gemv.launch(n, k, 64, x.device, block_n=16, split_k=split, prefetch=True)
                int4_ahead.plan = gemv.launch(n, k, 2 * int4.group_size, x.device, block_n=16, split_k=split,
                                              prefetch=True)
                cases += [("int8 prefetch", int8_ahead(x), want8), ("int4 prefetch", int4_ahead(x), want4)]
                int8_ahead.plan = dataclasses.replace(int8_ahead.plan, fold=True)
                int4_ahead.plan = dataclasses.replace(int4_ahead.plan, fold=True)
                cases += [("int8 prefetch folded", int8_ahead(x), want8), ("int4 prefetch folded", int4_ahead(x), want4)]
                # ... and the row on the tensor-core kernels (padded to MAX_ROWS rows)
                int8_ahead.plan = dataclasses.replace(int8.plan, one_row_on_tensor_cores=True)
                int4_ahead.plan = dataclasses.replace(int4.plan, one_row_on_tensor_cores=True)
                cases += [("int8 row on tensor cores", int8_ahead(x), want8),
                          ("int4 row on tensor cores", int4_ahead(x), want4)]
            if rows == 1:  # a prompt's weight, dequantized by one kernel (the GPU's prefill path)
                cases.append(("int4 dequantized", gemv.int4_dequantize(int4.packed, int4.scales, int4.mins,
                                                                       int4.group_size, torch.float32),
                              int4.dequantized_by_tensor_ops(torch.float32)))
            for kind, got, want in cases:
                error = ((got - want).abs().max() / want.abs().max()).item()
                report["linears"].append({"kind": kind, "k": k, "n": n, "rows": rows, "split": split, "error": error})
for kind in ("int8wo", "int4wo"):
    plain = quantize_weights(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval(), kind)
    switched = quantize_weights(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval(), kind)
    counts = use_kernels(switched, torch.float32)
    ids = torch.randint(4, 500, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        # One token (a decode step), a draft check's 9 (the kernels) and a prompt (more rows
        # than MAX_ROWS: plain).
        errors = [((switched(input_ids=i).logits - plain(input_ids=i).logits).abs().max().item())
                  for i in (ids[:, :1], ids[:, :9], ids)]
    report["models"][kind] = {"counts": counts, "errors": errors}
    # Every linear's one row on int8 inputs.
    for module in switched.modules():
        if isinstance(module, (Int4WeightOnlyLinear, Int8WeightOnlyLinear)) and module.plan is not None:
            module.plan = dataclasses.replace(module.plan, int8_inputs=True)
    with torch.inference_mode():
        report["models"][kind + " int8 inputs"] = {
            "counts": counts, "errors": [(switched(input_ids=ids[:, :1]).logits
                                          - plain(input_ids=ids[:, :1]).logits).abs().max().item()]}
    # The static decoder joins each layer's query, key and value projections: the joined
    # linear must decode on a kernel too, with the plain model's logits.
    from infill_ls.engine import fast
    decoder = fast.StaticDecoder(switched, 64)
    with torch.inference_mode():
        steps = [decoder.step(ids[0, :30].tolist(), 0, keep=1)] + [decoder.step([t], p) for p, t in
                                                                     ((30, ids[0, 30].item()), (31, ids[0, 31].item()))]
        want = plain(input_ids=ids[:, :32]).logits[0, 29:32]
    report["models"][kind + " joined"] = {"kernels": sum(j.plan is not None for j in decoder.qkv),
                                          "layers": len(decoder.qkv),
                                          "errors": [(torch.cat(steps) - want).abs().max().item()]}


class FailsToCompile:  # a tensor-core kernel that does not build on this GPU
    def __getitem__(self, grid):
        def run(*args, **kwargs):
            raise RuntimeError("tensor-core kernel: no such instruction here")
        return run


gemv._int8_rows = gemv._int4_rows = FailsToCompile()
for kind in ("int8wo", "int4wo"):
    plain = quantize_weights(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval(), kind)
    switched = quantize_weights(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval(), kind)
    counts = use_kernels(switched, torch.float32)
    plans = [m.plan for m in switched.modules() if isinstance(m, (Int8WeightOnlyLinear, Int4WeightOnlyLinear))]
    ids = torch.randint(4, 500, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        error = (switched(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max().item()
    report["models"][kind + " rows kernel failing"] = {
        "counts": counts, "errors": [error], "rows_kernels_on": sum(p.rows_kernel for p in plans if p)}
print(json.dumps(report))
"""


def run_with_triton(script: str, *args: str, interpret: bool = True) -> dict:
    """What ``script`` printed last (JSON), run with Triton's interpreter (or with Triton
    itself, ``interpret=False``) in a process of its own."""
    env = dict(os.environ, TRITON_INTERPRET="1" if interpret else "0", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(TRITON_SITE), str(REPO / "server")]))
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_triton_kernels_compute_what_the_plain_modules_compute(tiny_model):
    report = run_with_triton(CHECK, str(tiny_model))
    # shapes x rows x splits x kinds, + per-row fallbacks, + one row prefetching and on the
    # tensor-core kernels, + the dequantized weights, + the folded kernels (one row and three,
    # then one row prefetching), + on int8 inputs (one row and three; int4 at two tiles, int8)
    assert len(report["linears"]) == (3 * 3 * 3 * 3 + 3 * 2 * 3 * 2 + 3 * 3 * 2 * 2 + 3 * 3 + 3 * 2 * 3 * 2
                                      + 3 * 3 * 2 + 3 * 2 * 3 * 3)
    # float32 both ways: int8 differs only in the order of the sums; the int4 matrix-vector
    # kernel also folds its bit trick's offset into each group's minimum, which rounds that
    # minimum to ~2^-13 of a quantization step (gemv._weight); folded, each group's sum
    # carries its inputs' sum, taken away after it (~2^-16 of a step per input, relative).
    # On int8 inputs, each input is rounded to 2^-15 of its group's largest: ~3e-5 here, where
    # rounding the inputs to bf16 (as a GPU's activations are) moves the outputs ~1.4e-3.
    def family(kind: str) -> str:
        return "int8 inputs" if kind.endswith("int8 inputs") else "int4" if "int4" in kind.lower() else "int8"

    for kinds, bound in (("int8", 1e-5), ("int4", 1e-4), ("int8 inputs", 2e-4)):
        worst = max((case for case in report["linears"] if family(case["kind"]) == kinds), key=lambda case: case["error"])
        assert worst["error"] < bound, worst
    assert report["dtypes"] == ["torch.bfloat16"] * 2 * 3, report["dtypes"]
    for kind, result in report["models"].items():
        if kind.endswith("joined"):
            assert result["kernels"] == result["layers"] > 0, (kind, result)
        else:
            assert result["counts"]["plain"] == 0 and result["counts"]["kernel"] > 0, (kind, result)
        assert max(result["errors"]) < 1e-3, (kind, result)
    # A tensor-core kernel that fails its check at load leaves the linears on the one-row
    # kernels (not plain), each row at a time, with the same logits.
    for kind in ("int8wo", "int4wo"):
        assert report["models"][kind + " rows kernel failing"]["rows_kernels_on"] == 0


@pytest.fixture(scope="module")
def compiled_for_hopper(tmp_path_factory) -> dict:
    """bench/gemv_sass.py's report: the kernels compiled for an H100 (Triton compiles for a
    GPU it does not have)."""
    out = tmp_path_factory.mktemp("sass") / "sass.json"
    env = dict(os.environ, PYTHONPATH=str(TRITON_SITE))
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gemv_sass.py"), "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_one_row_kernels_read_weights_in_wide_loads(compiled_for_hopper):
    """Compiled for an H100 (bench/gemv_sass.py), each decode kernel's loop reads its weights
    with 8- or 16-byte loads, never a byte at a time: the int4 kernel once indexed its codes
    in a way Triton could not vectorize, which made it issue-bound on the GPU (38
    instructions per weight byte)."""
    kernels = compiled_for_hopper["kernels"]
    for name in ("int8 one row", "int8 one row, deferred sum", "int8 one row, prefetch", "int4 one row",
                 "int4 one row, deferred sum", "int4 one row, prefetch", "int4 one row, int8 inputs",
                 "int8 one row, int8 inputs"):
        kernel = kernels[name]
        wide = sum(count * (16 if op.endswith(".128") else 8)
                   for op, count in kernel["loop_global_loads"].items() if op.endswith((".64", ".128")))
        assert not any(op.endswith(".U8") for op in kernel["loop_global_loads"]), (name, kernel)
        assert wide >= kernel["weight_bytes_per_thread_per_step"], (name, kernel)
    # A draft check's rows go to the tensor-core kernels, which read each tile of weights once
    # for every row: per weight byte they must issue about what one row's kernel does.  With
    # 16 output rows per program each of the 4 warps converted the whole tile again (int4: 47.5
    # instructions per weight byte against the one-row kernel's 10.9).
    for kind in ("int8", "int4"):
        rows, one_row = kernels[kind + " rows"], kernels[kind + " one row"]
        assert rows["instructions_per_weight_byte"] < 2 * one_row["instructions_per_weight_byte"], (rows, one_row)
    # Folding the dequantization out of the products (Launch.fold) is worth its extra work per
    # call (int4: a kernel, int8: the row's sum) only while it issues fewer instructions per
    # weight byte, in no more registers, than the same launch unfolded.
    for name in ("int4 one row", "int4 one row, deferred sum", "int4 one row, prefetch", "int8 one row",
                 "int8 one row, deferred sum", "int8 one row, prefetch"):
        folded, unfolded = kernels[name.replace("one row", "one row, folded")], kernels[name]
        assert folded["instructions_per_weight_byte"] < 0.95 * unfolded["instructions_per_weight_byte"], (folded, unfolded)
        # (int8's row sum may take ptxas a register or three more: 119 against 118, sm_90)
        spare = 4 if name.startswith("int8") else 0
        assert folded["registers_per_thread"] <= unfolded["registers_per_thread"] + spare, (folded, unfolded)
    # On int8 inputs (Launch.int8_inputs) each 4-byte word of codes takes four dp4a (two
    # planes of bytes, two halves of the nibbles): one per weight byte.  Were the inline
    # assembly dropped (the interpreter's path), the integer products would be multiply-adds,
    # ~10 per word.  Its extra work per call (a kernel preparing the row) pays only while it
    # issues well under what the float kernels issue per weight byte (4.6 against 8.2-10.6, sm_90).
    # An int8 word takes two (1.8-2.2 instructions per weight byte against 3.3-5.7).
    for kind, dp4a_per_byte, share in (("int4", 1, 0.7), ("int8", 0.5, 0.8)):
        on_integers = kernels[f"{kind} one row, int8 inputs"]
        per_thread = on_integers["weight_bytes_per_thread_per_step"]
        assert on_integers["integer_dot_products"] == dp4a_per_byte * per_thread, on_integers
        floats = [kernel["instructions_per_weight_byte"] for name, kernel in kernels.items()
                  if name.startswith(f"{kind} one row") and not name.endswith("int8 inputs")]
        assert on_integers["instructions_per_weight_byte"] < share * min(floats), (on_integers, floats)



def test_the_split_slot_attention_kernel_compiles_for_hopper_without_spilling(compiled_for_hopper):
    """attention.py's kernel with the 15B shape's heads builds for an H100 (a kernel that
    does not build is only found on a GPU otherwise) as torch.compile builds it, its float
    argument typed fp64 (on an H100 it did not build so, session 21: the scores turned fp64
    in the loop), and keeps its tile in registers: a
    draft check's 108 query rows in 4 warps took 255 registers and spilled (27 local-memory
    instructions); its launch now takes 8 warps there."""
    attention = compiled_for_hopper["attention"]
    assert set(attention) == {"attention, 1 token", "attention, 9 tokens"}
    for name, kernel in attention.items():
        assert kernel["spills"] == 0 and kernel["loop_global_loads"], (name, kernel)
        assert kernel["combine"]["spills"] == 0, (name, kernel)


ATTENTION = r"""
import json, sys
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from infill_ls.engine import fast
from infill_ls.engine.attention import COMBINE_CHUNK, SLOTS_PER_SPLIT, SPLITS, decode_attention

torch.manual_seed(0)
report = {"kernel": [], "decoder": {}}


def check(heads, key_heads, dim, tokens, length, split, slots):
    q = torch.randn(1, heads, tokens, dim)
    keys, values = torch.randn(1, key_heads, slots, dim), torch.randn(1, key_heads, slots, dim)
    positions = torch.arange(length - tokens, length)
    mask = positions[:, None] >= torch.arange(slots)[None, :]
    want = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=0.2, enable_gqa=True)
    got = decode_attention(q, keys, values, positions, 0.2, split)
    report["kernel"].append({"heads": heads, "key_heads": key_heads, "tokens": tokens, "length": length,
                             "split": split, "slots": slots, "shape": list(got.shape) == list(want.shape),
                             "error": (got - want).abs().max().item()})


# 12 query heads per key head (the 15B shape's), 2, and none; a step of 1, 3 and 9 tokens;
# splits of the fewest slots and of the default; a cache of 2.5 splits; lengths of one
# slot, inside the first split, one past a split's end, and the whole cache.
for split in (SPLITS[0], SLOTS_PER_SPLIT):
    slots = 2 * split + split // 2
    for heads, key_heads, dim in ((48, 4, 32), (8, 2, 64), (4, 4, 16)):
        for tokens in (1, 3, 9):
            for length in (tokens, 40, split + 1, slots):
                check(heads, key_heads, dim, tokens, length, split, slots)
# More splits than the combining kernel reads per load.
for tokens in (1, 9):
    for length in (100, SPLITS[0] * (COMBINE_CHUNK + 9) + 10):
        check(8, 2, 16, tokens, length, SPLITS[0], SPLITS[0] * (COMBINE_CHUNK + 9) + 10)
# The decoder's compiled-step path (every slot, end=None) with the kernel, against SDPA's.
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.randint(4, 500, (1, 40), generator=torch.Generator().manual_seed(1))
logits = {}
for way in ("sdpa", "kernel"):
    decoder = fast.StaticDecoder(model, 64, step_sizes=(1, 9))
    if way == "kernel":
        decoder.split_attention_steps = {1, 9}
    with torch.inference_mode():
        decoder.step(ids[0, :30].tolist(), 0)
        one = decoder.forward(ids[:, 30:31], torch.arange(30, 31))
        nine = decoder.forward(ids[:, 31:40], torch.arange(31, 40))
    logits[way] = torch.cat([one, nine])
report["decoder"] = {"rows": logits["kernel"].shape[0], "error": (logits["kernel"] - logits["sdpa"]).abs().max().item()}
print(json.dumps(report))
"""


def test_the_split_slot_attention_kernel_computes_what_sdpa_computes(tiny_model):
    """attention.py's kernel, which a compiled decode step may attend with on a GPU
    (fast.StaticDecoder.choose_step_attention), gives SDPA's output under the mask the step
    uses (each token sees the slots up to its position) for grouped query heads, steps of
    several tokens and lengths across its splits, and more splits than its second kernel
    combines per load; in the decoder, the logits SDPA's give."""
    report = run_with_triton(ATTENTION, str(tiny_model))
    assert len(report["kernel"]) == 2 * 3 * 3 * 4 + 4
    for case in report["kernel"]:
        assert case["shape"] and case["error"] < 1e-5, case
    assert report["decoder"]["rows"] == 10
    assert report["decoder"]["error"] < 1e-4, report["decoder"]


TRACE = r"""
import dataclasses, json, sys
import torch
import torch.utils._triton
import triton
from triton.backends.compiler import GPUTarget
from torch._functorch.aot_autograd import aot_module_simplified
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from transformers import AutoConfig, AutoModelForCausalLM
from infill_ls.engine import fast
from infill_ls.engine.quantize import Int4WeightOnlyLinear, Int8WeightOnlyLinear, quantize_weights

# The test doubles for a GPU: Dynamo traces a Triton kernel into the graph only where
# torch finds a GPU for Triton, and torch's analysis of which arguments a kernel writes
# compiles it to Triton's IR for the current GPU, here an H100's (sm_90, as gemv_sass.py).
torch.utils._triton.has_triton = lambda: True


class Hopper:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


triton.runtime.driver.set_active(Hopper())


class Traced(Exception):
    pass


def trace(decoder: fast.StaticDecoder) -> list[dict]:
    # Per step size, the layer step as inductor gets it (Dynamo's graph, functionalized by
    # AOT autograd), without running it: its Triton kernels and what they write besides the
    # buffers allocated for them (torch.empty) — the KV cache, a weight, an input.
    torch.compiler.reset()  # (as StaticDecoder.compile_steps: each trace within Dynamo's recompile limit)
    graphs = []

    def keep(graph, inputs):
        graphs.append(graph)

        def run(*args):
            raise Traced()
        return run

    step = torch.compile(decoder.layer_step, fullgraph=True, dynamic=False,
                         backend=lambda graph, inputs: aot_module_simplified(graph, inputs, fw_compiler=keep))
    for size in decoder.step_sizes:
        try:
            with torch.inference_mode():
                decoder.forward(torch.zeros((1, size), dtype=torch.long), torch.arange(size), layer_step=step)
        except Traced:
            pass
    steps = []
    for graph in graphs:
        kernels = [node for node in graph.graph.nodes if "triton_kernel_wrapper" in str(node.target)]
        steps.append({"kernels": len(kernels),
                      "functional": all("functional" in str(node.target) for node in kernels),
                      "writes": sorted(name for node in kernels for name in node.kwargs["tensors_to_clone"]
                                       if "empty" not in str(node.kwargs["kwargs"][name].target)),
                      "float_arguments": sorted({f"{kernel_name(node)}.{name}" for node in kernels
                                                 for name, value in arguments(node).items()
                                                 if isinstance(value, float)})})
    return steps


def arguments(node) -> dict:
    # A kernel's arguments in the graph: tensors (graph nodes) and the constants Dynamo keeps aside.
    return {**node.kwargs["kwargs"], **kernel_side_table.get_constant_args(node.kwargs["constant_args_idx"])}


def kernel_name(node) -> str:
    kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
    return getattr(kernel, "fn", kernel).__name__


# The tiny model's architecture, wide enough for the 15B shape's int4 groups of 128 inputs
# (narrower linears get smaller groups, too small for tl.dot in the tensor-core kernels:
# quantize.kernel_agrees turns those off on a GPU), in bf16 as on a GPU.
config = AutoConfig.from_pretrained(sys.argv[1])
config.update({"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 8, "num_key_value_heads": 2})


def built(kind: str):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    return model if kind == "none" else quantize_weights(model, kind)


report = {}
decoder = fast.StaticDecoder(built("none"), 64, step_sizes=(1, 9))
decoder.split_attention_steps = {1, 9}
report["none"] = trace(decoder)
# Each kind of launch quantize.tune_launch may keep, on every linear of the step.
flavours = {"sum per step": {}, "deferred sum": {"defer_sum": True}, "prefetch": {"prefetch": True},
            "folded": {"fold": True}, "prefetch folded": {"prefetch": True, "fold": True},
            "row on tensor cores": {"one_row_on_tensor_cores": True}, "int8 inputs": {"int8_inputs": True}}
for kind in ("int8wo", "int4wo"):
    quantized = built(kind)
    decoder = fast.StaticDecoder(quantized, 64, step_sizes=(1, 9))  # q/k/v joined
    decoder.split_attention_steps = {1, 9}
    linears = [m for m in [*quantized.modules(), *decoder.qkv] if isinstance(m, (Int8WeightOnlyLinear, Int4WeightOnlyLinear))]
    for flavour, settings in flavours.items():
        for linear in linears:
            linear.switch_to_kernel()
            linear.plan = dataclasses.replace(linear.plan, **settings)
        report[f"{kind} {flavour}"] = trace(decoder)
print(json.dumps(report))
"""


def test_a_compiled_step_takes_the_kernels_into_its_graph_and_they_write_only_their_outputs(tiny_model):
    """What a GPU's torch.compile gets from the decode step, traced here for an H100 (the
    first compile with these kernels on a GPU is otherwise where a failure shows, and a
    compile failure only costs the kernel: fast.StaticDecoder.compile falls back): with
    the split-slot attention kernel and each launch of gemv.py's kernels that tune_launch
    may keep, each step size traces as one graph (no break), with every linear and the
    attention on its kernel, and the kernels write only the buffers allocated for their
    outputs, not the KV cache, a weight or an input: torch copies whatever a kernel may
    write (a layer's cache every step), and torch's analysis of what a kernel writes takes
    everything where it cannot compile the kernel (it found the tiny model's int4 groups of
    64 too small for the tensor-core kernels)."""
    report = run_with_triton(TRACE, str(tiny_model), interpret=False)
    # Per layer: attention's two kernels (the splits, then their sum); four linears (the
    # joined query/key/value, o_proj, c_fc, c_proj), each one kernel, and int4's folded one-row
    # launches and all on int8 inputs a kernel more to prepare the row.  Step sizes 1 and
    # 9: the second's rows go to the tensor-core kernels, one per linear, whatever the one-row
    # launch.
    assert report["none"] == [{"kernels": 2, "functional": True, "writes": [],
                               "float_arguments": ["_split_attention.scale"]}] * 2
    for name, steps in report.items():
        if name == "none":
            continue
        one_row = 2 + 4 * (2 if (name.startswith("int4") and "folded" in name) or "int8 inputs" in name else 1)
        assert [step["kernels"] for step in steps] == [one_row, 2 + 4], (name, steps)
        assert all(step["functional"] and not step["writes"] for step in steps), (name, steps)
        # Inductor hands a kernel's Python float to it as fp64 (its split-slot attention did
        # not build so on an H100, session 21): bench/gemv_sass.py compiles each kernel that
        # takes one with that type, and knows of no other.
        assert all(step["float_arguments"] == ["_split_attention.scale"] for step in steps), (name, steps)
