"""Matrix-vector kernels (Triton) for the weight-only linears of quantize.py on a GPU.

Decoding one token multiplies a row of activations by every weight matrix: the time is
the time to read the weights once.  PyTorch's own kernels did not get there on an H200
(bench/gpu_linear.py; per token for the 15B shape's linears, bf16 cuBLAS 10.1 ms):
``_weight_int8pack_mm`` took 150 ms, inductor's fused dequantize-and-reduce 25 ms (7.4
with coordinate-descent tuning, but the whole compiled model lost that elsewhere),
tinygemm int4 6.7 ms — and tinygemm needs its own tiled copy of the weights, which
prefills 2,048 tokens in 2.1 s.  These kernels read quantize.py's own layouts directly
(int8 rows with a scale per row; int4 codes two per byte with a scale and a minimum per
group of 128), so a prompt's prefill keeps the plain dequantize-then-cuBLAS path, and one
copy of the weights serves both.

Each program reduces ``BLOCK_N`` output rows over a ``1/split_k`` share of the input
dimension in float32 and adds its partial sums atomically: split-K gives narrow matrices
(the 512-row key/value projections) enough programs to keep every SM reading.  One input
row (a decode step) runs on the matrix-vector kernels; 2-16 rows (a draft check, a few
typed tokens) on ``_int8_rows``/``_int4_rows``, which read each tile of weights once for
all the rows and multiply on the tensor cores (where one fails its check at load, those
rows take the one-row kernel once per row, ``Launch.rows_kernel``): 9 rows cost the 15B
shape's int4 linears 11.2 ms against 10.6 for one row, int8 12.5 against 9.6 (H200,
bench/results/gpu-linear-20261126-151314.json).
Measured on an H200 (2026-11-26, gpu-20261126-053058.json): the whole 15B-shape model in int8,
compiled, decodes at 12.8 ms/token (bf16 12.0 in the same run); per token its linears
take 13.2 ms with the first launches and 9.5 with the sweep's best (``launch`` now
follows the sweep), int4's 18.0 and 13.2 — int4 lost to tinygemm's 6.8 there.  Those int4
figures predate quantize.py's present layout: the kernel then read every code and input
with its own load (bench/gemv_sass.py: 38 instructions per weight byte in its loop, now 16;
int8's 4.8), which left it issuing instructions rather than reading memory.  With the
present layout int4's linears take 10.6 ms, 8.9 at the best launch (quantize.py's), and
the whole int4 model compiled decodes at 10.1 ms/token against bf16's 10.6.  The same
kernels run on the CPU under ``TRITON_INTERPRET=1``, which is how the tests check them
without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU-only install: the plain paths serve
    triton = None

# Rows of input a call handles (decode steps and draft checks); longer inputs (a prefill)
# take the plain path, whose cuBLAS matmul is faster there.
MAX_ROWS = 16


def available() -> bool:
    return triton is not None


@dataclass(frozen=True)
class Launch:
    """Block sizes and split of one weight shape, fixed when a module switches to a kernel
    (plain ints: torch.compile sees constants)."""

    block_n: int
    block_k: int  # inputs per loop step (int4: a whole number of groups)
    split_k: int
    steps_per_split: int  # loop steps of a program: blocks of block_k inputs
    num_warps: int = 4  # Triton's default; bench/gpu_linear.py --sweep tries others
    # One row: sum each program's products once after its loop instead of every step (no
    # cross-thread reduction per step, more registers; int4 then scales each weight, not each
    # group's sum).  Off: the measured layout; the sweep tries it.
    defer_sum: bool = False
    # 2-16 rows on the tensor-core kernels (_int8_rows/_int4_rows); False: the one-row kernel
    # once per row, which reads the weights once per row (quantize.kernel_agrees turns the
    # tensor-core kernel off for a shape where it fails its check: it is new to GPUs).
    rows_kernel: bool = True


# Programs a launch aims for, per SM.  The sweep on an H200 (bench/gpu_linear.py --sweep,
# bench/results/gpu-linear-20261126-053414.json) found every one of the 15B shapes fastest
# with ~750-3,000 programs (132 SMs) and at least two splits of the input dimension: e.g.
# the 24,576-row c_fc in int8 at 0.066 ms with 16 rows x 2 splits against 0.076 with the
# old rule's 32 rows x 1 split.  It tried no program with fewer than 2 loop steps, nor does the rule.
PROGRAMS_PER_SM = 6


def launch(n: int, k: int, block_k: int, device: torch.device, block_n: int = 16, split_k: int | None = None,
           num_warps: int = 4, defer_sum: bool = False) -> Launch:
    """A launch for an [n, k] weight: ``split_k`` (by default as many splits as bring the
    programs to ``PROGRAMS_PER_SM`` per SM, at least 2, each program keeping 2 steps)."""
    n_blocks = -(-n // block_n)
    steps = -(-k // block_k)
    if split_k is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        split_k = max(1, min(steps // 2, max(2, PROGRAMS_PER_SM * sms // n_blocks)))
    return Launch(block_n, block_k, split_k, -(-steps // split_k), num_warps, defer_sum)


if triton is not None:

    @triton.jit
    def _int8_gemv(x_ptr, w_ptr, scale_ptr, out_ptr, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DEFER_SUM: tl.constexpr):
        row = tl.program_id(0)  # grid (input rows, n blocks, splits)
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        k_start = tl.program_id(2) * steps_per_split * BLOCK_K
        acc = tl.zeros((BLOCK_N, BLOCK_K) if DEFER_SUM else (BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            ks = k_start + step * BLOCK_K + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + row * K + ks, mask=ks < K, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rows_n[:, None] * K + ks[None, :],
                        mask=(rows_n[:, None] < N) & (ks[None, :] < K), other=0).to(tl.float32)
            if DEFER_SUM:
                acc += w * x[None, :]
            else:
                acc += tl.sum(w * x[None, :], axis=1)
        if DEFER_SUM:
            acc = tl.sum(acc, axis=1)
        scale = tl.load(scale_ptr + rows_n, mask=rows_n < N, other=0.0).to(tl.float32)
        tl.atomic_add(out_ptr + row * N + rows_n, acc * scale, mask=rows_n < N)

    @triton.jit
    def _int4_gemv(x_ptr, packed_ptr, scale_ptr, min_ptr, out_ptr, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUPS_PER_STEP: tl.constexpr,
                   DEFER_SUM: tl.constexpr):
        # Tiles are [rows, groups of the step, bytes of a group]: each row's codes of a step
        # are one contiguous read, and its scales and minimums of the step one short one.
        row = tl.program_id(0)  # grid (input rows, n blocks, splits)
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        first_group = tl.program_id(2) * steps_per_split * GROUPS_PER_STEP
        groups = K // GROUP
        in_step = tl.arange(0, GROUPS_PER_STEP)
        half = tl.arange(0, GROUP // 2)
        in_n = rows_n < N
        acc = tl.zeros((BLOCK_N, GROUPS_PER_STEP, GROUP // 2) if DEFER_SUM else (BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            g = first_group + step * GROUPS_PER_STEP + in_step  # [G]
            in_k = g < groups  # the last split may run past the groups
            # Byte j of a group holds code j in its low nibble and j + GROUP/2 in its high one,
            # so the codes and both halves of the inputs are contiguous reads: Triton vectorizes
            # those, while an index with a stride of 2 or a division it reads element by element.
            first_half = g[:, None] * GROUP + half[None, :]  # [G, GROUP/2]
            x_low = tl.load(x_ptr + row * K + first_half, mask=in_k[:, None], other=0.0).to(tl.float32)
            x_high = tl.load(x_ptr + row * K + first_half + GROUP // 2, mask=in_k[:, None], other=0.0).to(tl.float32)
            byte = tl.load(packed_ptr + rows_n[:, None, None] * (K // 2) + g[None, :, None] * (GROUP // 2)
                           + half[None, None, :],
                           mask=in_n[:, None, None] & in_k[None, :, None], other=0).to(tl.int32)
            low = (byte & 15).to(tl.float32)
            high = (byte >> 4).to(tl.float32)
            where = in_n[:, None] & in_k[None, :]
            scale = tl.load(scale_ptr + rows_n[:, None] * groups + g[None, :], mask=where, other=0.0).to(tl.float32)
            low_value = tl.load(min_ptr + rows_n[:, None] * groups + g[None, :], mask=where, other=0.0).to(tl.float32)
            if DEFER_SUM:  # each weight dequantized, products summed once after the loop
                scale, low_value = scale[:, :, None], low_value[:, :, None]
                acc += ((low * scale + low_value) * x_low[None, :, :]
                        + (high * scale + low_value) * x_high[None, :, :])
            else:  # per group: scale * (codes . x) + min * sum(x)
                codes_dot = tl.sum(low * x_low[None, :, :] + high * x_high[None, :, :], axis=2)  # [N, G]
                x_sum = tl.sum(x_low + x_high, axis=1)  # [G]
                acc += tl.sum(scale * codes_dot + low_value * x_sum[None, :], axis=1)
        if DEFER_SUM:
            acc = tl.sum(tl.sum(acc, axis=2), axis=1)
        tl.atomic_add(out_ptr + row * N + rows_n, acc, mask=in_n)

    # Several input rows (a draft check, a few typed tokens): each tile of weights is read
    # once for all the rows and multiplied on the tensor cores (tl.dot wants 16 rows or
    # more: the rows are padded to MAX_ROWS).  The first version ran one program per row,
    # which reads every weight once per row: a 9-token draft check cost 9 decode steps.

    @triton.jit
    def _int8_rows(x_ptr, w_ptr, scale_ptr, out_ptr, ROWS, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PADDED_ROWS: tl.constexpr):
        rows = tl.arange(0, PADDED_ROWS)
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        k_start = tl.program_id(2) * steps_per_split * BLOCK_K
        acc = tl.zeros((PADDED_ROWS, BLOCK_N), dtype=tl.float32)
        for step in range(steps_per_split):
            ks = k_start + step * BLOCK_K + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < ROWS) & (ks[None, :] < K),
                        other=0.0)
            w = tl.load(w_ptr + rows_n[:, None] * K + ks[None, :],
                        mask=(rows_n[:, None] < N) & (ks[None, :] < K), other=0)
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))  # int8 values are exact in bf16
        scale = tl.load(scale_ptr + rows_n, mask=rows_n < N, other=0.0).to(tl.float32)
        tl.atomic_add(out_ptr + rows[:, None] * N + rows_n[None, :], acc * scale[None, :],
                      mask=(rows[:, None] < ROWS) & (rows_n[None, :] < N))

    @triton.jit
    def _int4_rows(x_ptr, packed_ptr, scale_ptr, min_ptr, out_ptr, ROWS, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUPS_PER_STEP: tl.constexpr,
                   PADDED_ROWS: tl.constexpr):
        rows = tl.arange(0, PADDED_ROWS)
        in_rows = rows < ROWS
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        in_n = rows_n < N
        first_group = tl.program_id(2) * steps_per_split * GROUPS_PER_STEP
        groups = K // GROUP
        half = tl.arange(0, GROUP // 2)
        acc = tl.zeros((PADDED_ROWS, BLOCK_N), dtype=tl.float32)
        for step in range(steps_per_split):
            for in_step in tl.static_range(GROUPS_PER_STEP):
                g = first_group + step * GROUPS_PER_STEP + in_step
                # Masks as blocks, not scalars (Triton's interpreter takes no scalar mask).
                in_k = half * 0 + g < groups  # [GROUP/2]: the last split may run past the groups
                n_and_k = in_n & (rows_n * 0 + g < groups)  # [BLOCK_N]
                first_half = g * GROUP + half  # low nibbles hold a group's first half, high ones its second
                x_low = tl.load(x_ptr + rows[:, None] * K + first_half[None, :], mask=in_rows[:, None] & in_k[None, :],
                                other=0.0)
                x_high = tl.load(x_ptr + rows[:, None] * K + first_half[None, :] + GROUP // 2,
                                 mask=in_rows[:, None] & in_k[None, :], other=0.0)
                byte = tl.load(packed_ptr + rows_n[:, None] * (K // 2) + g * (GROUP // 2) + half[None, :],
                               mask=n_and_k[:, None], other=0).to(tl.int32)
                scale = tl.load(scale_ptr + rows_n * groups + g, mask=n_and_k, other=0.0).to(tl.float32)
                low_value = tl.load(min_ptr + rows_n * groups + g, mask=n_and_k, other=0.0).to(tl.float32)
                # Dequantized to the activations' dtype, as the plain module does.
                w_low = ((byte & 15).to(tl.float32) * scale[:, None] + low_value[:, None]).to(x_low.dtype)
                w_high = ((byte >> 4).to(tl.float32) * scale[:, None] + low_value[:, None]).to(x_low.dtype)
                acc += tl.dot(x_low, tl.trans(w_low)) + tl.dot(x_high, tl.trans(w_high))
        tl.atomic_add(out_ptr + rows[:, None] * N + rows_n[None, :], acc,
                      mask=in_rows[:, None] & in_n[None, :])


def int8_matvec(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, plan: Launch) -> torch.Tensor:
    """``x @ (weight * scales[:, None]).T`` for ``x`` [rows, K] (rows <= MAX_ROWS) and int8 ``weight`` [N, K]:
    one row on _int8_gemv, more on _int8_rows (or on _int8_gemv once per row)."""
    rows, k = x.shape
    n = weight.shape[0]
    out = torch.zeros(rows, n, dtype=torch.float32, device=x.device)
    blocks = -(-n // plan.block_n)
    if rows == 1 or not plan.rows_kernel:
        _int8_gemv[(rows, blocks, plan.split_k)](x.contiguous(), weight, scales, out, n, k, plan.steps_per_split,
                                                 BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, DEFER_SUM=plan.defer_sum,
                                                 num_warps=plan.num_warps)
    else:
        _int8_rows[(1, blocks, plan.split_k)](x.contiguous(), weight, scales, out, rows, n, k, plan.steps_per_split,
                                              BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, PADDED_ROWS=MAX_ROWS,
                                              num_warps=plan.num_warps)
    return out.to(x.dtype)


def int4_matvec(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int,
                plan: Launch) -> torch.Tensor:
    """``x @ W.T`` for ``x`` [rows, K] and quantize.py's int4 ``W``: codes two per byte, a
    group's first half in the low nibbles (``packed`` [N, K/2]), weight = code * scale + min
    per ``group`` inputs; ``plan.block_k`` is a whole number of groups (a power of two of them)."""
    rows, k = x.shape
    n = packed.shape[0]
    out = torch.zeros(rows, n, dtype=torch.float32, device=x.device)
    blocks, groups_per_step = -(-n // plan.block_n), plan.block_k // group
    if rows == 1 or not plan.rows_kernel:
        _int4_gemv[(rows, blocks, plan.split_k)](x.contiguous(), packed, scales, mins, out, n, k, plan.steps_per_split,
                                                 BLOCK_N=plan.block_n, GROUP=group, GROUPS_PER_STEP=groups_per_step,
                                                 DEFER_SUM=plan.defer_sum, num_warps=plan.num_warps)
    else:
        _int4_rows[(1, blocks, plan.split_k)](x.contiguous(), packed, scales, mins, out, rows, n, k,
                                              plan.steps_per_split, BLOCK_N=plan.block_n, GROUP=group,
                                              GROUPS_PER_STEP=groups_per_step, PADDED_ROWS=MAX_ROWS,
                                              num_warps=plan.num_warps)
    return out.to(x.dtype)
