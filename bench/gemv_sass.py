"""What gemv.py's kernels compile to on a Hopper GPU, without one: loads and instructions.

Triton compiles for a GPU it does not have (the target is named; ptxas ships with Triton),
so the machine code of a decode step's kernels can be read here.  For each kernel, with the
launch constants the server uses (quantize.py), this reports the instructions of the loop
over the input dimension — what a program repeats per step — and its global loads by width.
A memory-bound matrix-vector product wants few, wide loads per weight byte: one instruction
per byte (a load Triton could not vectorize) leaves the GPU issuing instructions, not
reading memory.  Static figures: they say nothing of time, which needs the GPU
(bench/gpu_linear.py).

    PYTHONPATH=~/.cache/infill-ls/triton-site python bench/gemv_sass.py [--server DIR] [--arch 90]

(Triton from scripts/test-deps.d/50-triton.sh.)  ``--server`` reads the kernels from another
checkout's ``server/`` folder, to compare a change with the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import REPO, machine, write_result

# Bytes a load instruction reads, by its SASS width suffix (none: 32 bits).
LOAD_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}


def kernels(gemv, quantize) -> dict:
    """name -> (kernel, constexprs, bytes of weights per loop step of a program)."""
    group, g_step = quantize.INT4_GROUP_SIZE, quantize.INT4_GROUPS_PER_STEP
    int8 = {"BLOCK_N": quantize.INT8_BLOCK_N, "BLOCK_K": quantize.INT8_BLOCK_K}
    int4 = {"BLOCK_N": quantize.INT4_BLOCK_N, "GROUP": group, "GROUPS_PER_STEP": g_step}
    int8_bytes = int8["BLOCK_N"] * int8["BLOCK_K"]
    int4_bytes = int4["BLOCK_N"] * g_step * group // 2
    rows_n = getattr(gemv, "ROWS_BLOCK_N", int8["BLOCK_N"])  # (a checkout before it: the one-row launch's)
    found = {}
    # EVEN: the 15B shapes' launches tile the weights exactly (no masks).  Launch.fold: FOLD (a
    # checkout before it has none; --tiles compares the int4 candidates' other tiles).
    for kind, fn, constexprs in (("int8", gemv._int8_gemv, int8), ("int4", gemv._int4_gemv, int4)):
        folds = (False, True) if "FOLD" in fn.arg_names else (None,)
        for fold in folds:
            for name, more in (("", {}), (", deferred sum", {"DEFER_SUM": True}), (", prefetch", {"PREFETCH": True})):
                launch = {**constexprs, "DEFER_SUM": False, "EVEN": True, "PREFETCH": False,
                          **({} if fold is None else {"FOLD": fold}), **more}
                found[f"{kind} one row{', folded' if fold else ''}{name}"] = (
                    fn, launch, int8_bytes if kind == "int8" else int4_bytes)
    if hasattr(gemv, "_int4_int8_gemv"):  # Launch.int8_inputs (since session 22)
        found["int8 one row, int8 inputs"] = (gemv._int8_int8_gemv, {**int8, "GROUP": gemv.int8_input_group(6144),
                                                                     "EVEN": True, "INTERPRET": False}, int8_bytes)
        found["int4 one row, int8 inputs"] = (gemv._int4_int8_gemv, {**int4, "EVEN": True, "INTERPRET": False},
                                              int4_bytes)
    # The tensor-core kernels (several rows) tile gemv.ROWS_BLOCK_N output rows, in ROWS_NUM_WARPS warps.
    found["int8 rows"] = (gemv._int8_rows, {**int8, "BLOCK_N": rows_n, "PADDED_ROWS": gemv.MAX_ROWS},
                          int8_bytes * rows_n // int8["BLOCK_N"])
    found["int4 rows"] = (gemv._int4_rows, {**int4, "BLOCK_N": rows_n, "PADDED_ROWS": gemv.MAX_ROWS},
                          int4_bytes * rows_n // int4["BLOCK_N"])
    return found


def signature(fn, constexprs: dict) -> dict:
    # The one-row kernels take float32 inputs (gemv.int8_matvec converts them), the tensor-core
    # ones the activations' bf16.
    types = {"x_ptr": "*bf16" if "PADDED_ROWS" in constexprs else "*fp32", "w_ptr": "*i8", "word_ptr": "*i32",
             "scale_ptr": "*bf16", "min_ptr": "*bf16", "out_ptr": "*fp32", "sums_ptr": "*fp32",
             "x_sum_ptr": "*fp32",
             # attention.py's kernel: a bf16 cache, the step's positions
             "q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "positions_ptr": "*i64", "stats_ptr": "*fp32",
             # torch.compile's inductor types a Python float argument fp64 (triton_utils.signature_of),
             # and the decode step launches the attention kernel inside the compiled graph
             "scale": "fp64", "partial_ptr": "*fp32", "attention_ptr": "*bf16",
             # gemv.int8_inputs' planes of bytes and per-group (scale, sum)
             "planes_ptr": "*i32", "stats_ptr": "*fp32"}
    return {name: "constexpr" if name in constexprs else types.get(name, "i32") for name in fn.arg_names}


def sass_of(triton, fn, constexprs: dict, arch: int, num_warps: int) -> tuple[str, int]:
    """The kernel's machine code and its registers per thread."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = signature(fn, constexprs)
    # Pointers and the matrix sizes divisible by 16, as Triton specializes them at a launch
    # with the 15B shapes (and as every shape of a StarCoder2 model is).
    aligned = [i for i, name in enumerate(fn.arg_names)
               if sig[name] not in ("constexpr", "fp32", "fp64") and name not in ("steps_per_split", "ROWS")]
    source = ASTSource(fn=fn, signature=sig, constexprs=constexprs,
                       attrs={(i,): [["tt.divisibility", 16]] for i in aligned})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([str(tools / "nvdisasm"), "-c", cubin.name], capture_output=True, text=True,
                              check=True).stdout
        usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", cubin.name],
                               capture_output=True, text=True, check=True).stdout
    return sass, int(re.search(r"REG:(\d+)", usage).group(1))


def loop_of(sass: str) -> list[str]:
    """The opcodes of the longest loop: from a label to the last branch back to it."""
    opcodes, labels, loops = [], {}, []
    for line in sass.splitlines():
        label = re.match(r"\s*(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(opcodes)
            continue
        op = re.search(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
        if not op:
            continue
        opcodes.append(op.group(1))
        target = re.search(r"`\((\.L_x_\d+)\)", op.group(2))
        if op.group(1).startswith("BRA") and target and target.group(1) in labels:
            loops.append((labels[target.group(1)], len(opcodes)))
    start, end = max(loops, key=lambda span: span[1] - span[0], default=(0, len(opcodes)))
    return opcodes[start:end]


def programs_per_sm(registers: int, threads: int) -> int:
    """Programs an SM holds at once as registers allow (Hopper: 64K registers, allocated per
    warp in units of 256, at most 2,048 threads and 32 blocks)."""
    per_warp = -(-registers * 32 // 256) * 256
    return min(65536 // (per_warp * threads // 32), 2048 // threads, 32)


def global_loads(opcodes: list[str]) -> Counter:
    """Global loads by opcode, direct (LDG) or into shared memory (LDGSTS); LDGDEPBAR only
    waits for them."""
    return Counter(op for op in opcodes if op.startswith("LDG") and not op.startswith("LDGDEPBAR"))


def describe(opcodes: list[str], registers: int, weight_bytes: int, threads: int, steps_ahead: int = 1) -> dict:
    widths = global_loads(opcodes)
    loaded = sum(LOAD_BYTES.get(op.rsplit(".", 1)[-1], 4) * count for op, count in widths.items())
    programs = programs_per_sm(registers, threads)
    return {
        "registers_per_thread": registers,
        "programs_per_sm": programs,
        # A warp waits for its step's loads before the next step's are issued (unless it
        # prefetches: then two steps' codes): what an SM can have in flight bounds the
        # bandwidth (Little's law).
        "weight_bytes_in_flight_per_sm": programs * weight_bytes * steps_ahead,
        "loop_instructions": len(opcodes),
        "loop_global_loads": dict(widths),
        "bytes_loaded_per_thread_per_step": loaded,
        "weight_bytes_per_thread_per_step": weight_bytes / threads,
        "instructions_per_weight_byte": round(len(opcodes) / (weight_bytes / threads), 2),
        "shared_memory_ops": sum(op.startswith(("LDS", "STS", "LDSM")) for op in opcodes),
        "integer_dot_products": sum(op.startswith("IDP") for op in opcodes),  # dp4a: Launch.int8_inputs
        "async_copies": sum(op.startswith(("LDGSTS", "UBLKCP", "UTMALDG")) for op in opcodes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", type=Path, default=REPO / "server", help="the server/ folder whose gemv.py to compile")
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    ap.add_argument("--num-warps", type=int, default=4)
    ap.add_argument("--json", type=Path, help="where to write the JSON (default: bench/results/gemv-sass-<time>.json)")
    ap.add_argument("--tiles", action="store_true",
                    help="also the int4 one-row kernel at each tile tune_launch tries, its scales folded and not, "
                         "and on int8 inputs; and the int8 one-row kernel's tiles, on int8 inputs and not")
    args = ap.parse_args()
    sys.path.insert(0, str(args.server.resolve()))  # ahead of this checkout's (common.py put it first)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said out loud
    import triton

    from infill_ls.engine import gemv, quantize

    report = {"what": "gemv.py's kernels compiled for a GPU that is not here; the loop over the input dimension",
              "target": f"cuda sm_{args.arch}", "triton": triton.__version__,
              "server": str(args.server.resolve()), "compiled_on": machine(), "kernels": {}}
    for name, (fn, constexprs, weight_bytes) in kernels(gemv, quantize).items():
        warps = getattr(gemv, "ROWS_NUM_WARPS", args.num_warps) if "PADDED_ROWS" in constexprs else args.num_warps
        sass, registers = sass_of(triton, fn, constexprs, args.arch, warps)
        report["kernels"][name] = {"constexprs": constexprs, "num_warps": warps,
                                   **describe(loop_of(sass), registers, weight_bytes, 32 * warps,
                                              2 if constexprs.get("PREFETCH") else 1)}
    if args.tiles:
        report["int4_tiles"] = int4_tiles(triton, gemv, quantize, args.arch)
        if hasattr(gemv, "_int8_int8_gemv"):
            report["int8_tiles"] = int8_tiles(triton, gemv, args.arch)
    report["attention"] = attention_kernels(triton, args.arch)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    out = args.json or write_result("gemv-sass", report)
    for name, row in report["kernels"].items():
        print(f"{name:28} {row['registers_per_thread']:3} registers, {row['programs_per_sm']:2} programs/SM, "
              f"{row['weight_bytes_in_flight_per_sm'] // 1024:3} KiB in flight/SM; {row['loop_instructions']:4} "
              f"instructions/step, {row['instructions_per_weight_byte']:5} per weight byte; loads {row['loop_global_loads']}")
    for row in report.get("int4_tiles", []):
        was, now = row["unfolded"], row["folded"]
        print(f"int4 one row, {row['BLOCK_N']} rows x {row['GROUPS_PER_STEP']} groups, {row['num_warps']} warps, "
              f"{'deferred sum' if row['DEFER_SUM'] else 'prefetch' if row['PREFETCH'] else 'sum per step'}, "
              "unfolded -> folded: "
              f"{was['instructions_per_weight_byte']} -> {now['instructions_per_weight_byte']} per weight byte, "
              f"{was['registers_per_thread']} -> {now['registers_per_thread']} registers, "
              f"{was['weight_bytes_in_flight_per_sm'] // 1024} -> {now['weight_bytes_in_flight_per_sm'] // 1024} KiB "
              f"in flight/SM" + (f"; on int8 inputs {row['int8_inputs']['instructions_per_weight_byte']} per "
                                 f"weight byte, {row['int8_inputs']['registers_per_thread']} registers, "
                                 f"{row['int8_inputs']['weight_bytes_in_flight_per_sm'] // 1024} KiB in flight/SM"
                                 if "int8_inputs" in row else ""))
    for row in report.get("int8_tiles", []):
        print(f"int8 one row, {row['BLOCK_N']} rows x {row['BLOCK_K']} inputs, {row['num_warps']} warps: "
              + ", ".join(f"{how} {figures['instructions_per_weight_byte']} per weight byte "
                          f"({figures['registers_per_thread']} registers)" for how, figures in row.items()
                          if isinstance(figures, dict)))
    for name, row in report["attention"].items():
        print(f"{name:28} {row['registers_per_thread']:3} registers, {row['spills']} spill instructions, "
              f"{row['loop_instructions']:4} instructions/step, {row['instructions_per_cache_byte']} per cache byte; "
              f"loads {row['loop_global_loads']}")
    print(f"wrote {out}")


def attention_kernels(triton, arch: int) -> dict:
    """attention.py's kernel with the 15B shape's heads (48 query heads, 4 key heads, 128
    dimensions), for a one-token step and a draft check's 9 tokens, with its launch's warps:
    registers, spills (local memory stores and loads) and the loop over the slots."""
    from infill_ls.engine import attention

    found = {}
    for tokens in (1, 9):
        rows = attention.tile_rows(tokens, 12)
        constexprs = {"TOKENS": tokens, "HEADS": 48, "GROUP": 12, "ROWS": rows, "DIM": 128,
                      "BLOCK_S": attention.BLOCK_S}
        warps = attention.num_warps(rows)
        sass, registers = sass_of(triton, attention._split_attention, constexprs, arch, warps)
        opcodes = loop_of(sass)
        cache_bytes = 2 * attention.BLOCK_S * 128 * 2 / (32 * warps)  # keys and values, bf16, per thread
        # A 4,096-slot cache in the default splits.
        combine = {name: constexprs[name] for name in ("HEADS", "GROUP", "ROWS", "DIM")} | {
            "SPLITS": 4096 // attention.SLOTS_PER_SPLIT, "CHUNK": attention.COMBINE_CHUNK}
        combine_sass, combine_registers = sass_of(triton, attention._combine_splits, combine, arch,
                                                  attention.COMBINE_NUM_WARPS)
        found[f"attention, {tokens} token{'s' if tokens > 1 else ''}"] = {
            "constexprs": constexprs, "num_warps": warps, "registers_per_thread": registers,
            "spills": spills(sass),
            "loop_instructions": len(opcodes),
            "loop_global_loads": dict(global_loads(opcodes)),
            "instructions_per_cache_byte": round(len(opcodes) / cache_bytes, 2),
            "combine": {"registers_per_thread": combine_registers, "spills": spills(combine_sass)}}
    return found


def spills(sass: str) -> int:
    """Local-memory stores and loads: registers spilled."""
    return sum(op.startswith(("STL", "LDL")) for op in re.findall(r"\b([A-Z][A-Z0-9_.]+)\b", sass))


def int4_tiles(triton, gemv, quantize, arch: int) -> list[dict]:
    """The int4 one-row kernel at each tile gemv.candidates offers (rows per program, groups
    per step, warps; the sum per step, deferred, or with the next step's codes prefetched),
    unfolded and folded (Launch.fold), and (summing per step) on int8 inputs (Launch.int8_inputs):
    instructions per weight byte, registers, programs and bytes in flight per SM."""
    rows = []
    for block_n in (16, 32):
        for groups in (2, 4):
            for warps in (2, 4):
                for defer, prefetch in ((False, False), (True, False), (False, True)):
                    row = {"BLOCK_N": block_n, "GROUPS_PER_STEP": groups, "num_warps": warps, "DEFER_SUM": defer,
                           "PREFETCH": prefetch}
                    for fold in (False, True):
                        constexprs = {"BLOCK_N": block_n, "GROUP": quantize.INT4_GROUP_SIZE, "GROUPS_PER_STEP": groups,
                                      "DEFER_SUM": defer, "EVEN": True, "PREFETCH": prefetch, "FOLD": fold}
                        sass, registers = sass_of(triton, gemv._int4_gemv, constexprs, arch, warps)
                        figures = describe(loop_of(sass), registers, block_n * groups * quantize.INT4_GROUP_SIZE // 2,
                                           32 * warps, 2 if prefetch else 1)
                        row["folded" if fold else "unfolded"] = tile_figures(figures)
                    if not defer and not prefetch and hasattr(gemv, "_int4_int8_gemv"):  # it has neither
                        constexprs = {"BLOCK_N": block_n, "GROUP": quantize.INT4_GROUP_SIZE, "GROUPS_PER_STEP": groups,
                                      "EVEN": True, "INTERPRET": False}
                        sass, registers = sass_of(triton, gemv._int4_int8_gemv, constexprs, arch, warps)
                        row["int8_inputs"] = tile_figures(describe(
                            loop_of(sass), registers, block_n * groups * quantize.INT4_GROUP_SIZE // 2, 32 * warps))
                    rows.append(row)
    return rows


def int8_tiles(triton, gemv, arch: int) -> list[dict]:
    """The int8 one-row kernel at each tile gemv.candidates offers (rows per program, inputs
    per step, warps): unfolded, folded with the deferred sum (its fewest instructions), and on
    int8 inputs (Launch.int8_inputs, the 15B shape's groups of inputs)."""
    rows = []
    for block_n in (16, 32):
        for block_k in (256, 512):
            for warps in (2, 4):
                row = {"BLOCK_N": block_n, "BLOCK_K": block_k, "num_warps": warps}
                for how, fn, more in (
                        ("unfolded", gemv._int8_gemv, {"DEFER_SUM": False, "PREFETCH": False, "FOLD": False}),
                        ("folded, deferred sum", gemv._int8_gemv, {"DEFER_SUM": True, "PREFETCH": False, "FOLD": True}),
                        ("int8 inputs", gemv._int8_int8_gemv, {"GROUP": gemv.int8_input_group(6144),
                                                               "INTERPRET": False})):
                    constexprs = {"BLOCK_N": block_n, "BLOCK_K": block_k, "EVEN": True, **more}
                    sass, registers = sass_of(triton, fn, constexprs, arch, warps)
                    row[how] = tile_figures(describe(loop_of(sass), registers, block_n * block_k, 32 * warps))
                rows.append(row)
    return rows


def tile_figures(figures: dict) -> dict:
    """What --tiles reports of a kernel's ``describe`` figures."""
    return {name: figures[name] for name in ("instructions_per_weight_byte", "registers_per_thread",
                                             "programs_per_sm", "weight_bytes_in_flight_per_sm")}


if __name__ == "__main__":
    main()
