"""Matrix-vector kernels (Triton) for the weight-only linears of quantize.py on a GPU.

Decoding one token multiplies a row of activations by every weight matrix: the time is
the time to read the weights once.  PyTorch's own kernels did not get there on an H200
(bench/gpu_linear.py, 2026-11-26; per token for the 15B shape's linears, bf16 cuBLAS
10.1 ms): ``_weight_int8pack_mm`` took 150 ms, inductor's fused dequantize-and-reduce
25 ms (7.4 with coordinate-descent tuning, but the whole compiled model lost that
elsewhere), tinygemm int4 6.7 ms — and tinygemm needs its own tiled copy of the weights,
which prefills 2,048 tokens in 2.1 s.  These kernels read quantize.py's own layouts
directly (int8 rows with a scale per row; int4 codes two per byte with a scale and a
minimum per group of 128), so a prompt's prefill keeps the plain dequantize-then-cuBLAS
path, and one copy of the weights serves both.

Each program reduces ``BLOCK_N`` output rows over a ``1/split_k`` share of the input
dimension in float32 and adds its partial sums atomically: split-K gives narrow matrices
(the 512-row key/value projections) enough programs to keep every SM reading.  The block
sizes are a starting point for bench/gpu_linear.py to tune on the hardware.  The same
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
    block_k: int  # int8: inputs per loop step; int4: the group size
    split_k: int
    steps_per_split: int  # loop steps of a program: blocks of block_k inputs (int8), groups (int4)


def launch(n: int, k: int, block_k: int, device: torch.device, block_n: int = 32, split_k: int | None = None) -> Launch:
    """A launch that fills the GPU: two programs per SM (split-K where the matrix has few
    rows), each with at least 4 steps of its loop."""
    n_blocks = -(-n // block_n)
    steps = -(-k // block_k)
    if split_k is None:
        programs = 2 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        split_k = max(1, min(steps // 4, -(-programs // n_blocks)))
    return Launch(block_n, block_k, split_k, -(-steps // split_k))


if triton is not None:

    @triton.jit
    def _int8_gemv(x_ptr, w_ptr, scale_ptr, out_ptr, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        row = tl.program_id(0)  # which input row
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        k_start = tl.program_id(2) * steps_per_split * BLOCK_K
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            ks = k_start + step * BLOCK_K + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + row * K + ks, mask=ks < K, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rows_n[:, None] * K + ks[None, :],
                        mask=(rows_n[:, None] < N) & (ks[None, :] < K), other=0).to(tl.float32)
            acc += tl.sum(w * x[None, :], axis=1)
        scale = tl.load(scale_ptr + rows_n, mask=rows_n < N, other=0.0).to(tl.float32)
        tl.atomic_add(out_ptr + row * N + rows_n, acc * scale, mask=rows_n < N)

    @triton.jit
    def _int4_gemv(x_ptr, packed_ptr, scale_ptr, min_ptr, out_ptr, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, GROUP: tl.constexpr):
        row = tl.program_id(0)
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        first_group = tl.program_id(2) * steps_per_split
        groups = K // GROUP
        half = tl.arange(0, GROUP // 2)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            g = first_group + step
            k0 = g * GROUP
            # Byte j of a group holds code 2j in its low nibble and 2j+1 in its high one.
            even = k0 + 2 * half
            in_k = even < K  # the last split may run past the groups
            x_even = tl.load(x_ptr + row * K + even, mask=in_k, other=0.0).to(tl.float32)
            x_odd = tl.load(x_ptr + row * K + even + 1, mask=in_k, other=0.0).to(tl.float32)
            byte = tl.load(packed_ptr + rows_n[:, None] * (K // 2) + k0 // 2 + half[None, :],
                           mask=(rows_n[:, None] < N) & in_k[None, :], other=0).to(tl.int32)
            low = (byte & 15).to(tl.float32)
            high = (byte >> 4).to(tl.float32)
            codes_dot = tl.sum(low * x_even[None, :] + high * x_odd[None, :], axis=1)
            x_sum = tl.sum(x_even + x_odd, axis=0)
            where = (rows_n < N) & (rows_n * 0 + g < groups)
            scale = tl.load(scale_ptr + rows_n * groups + g, mask=where, other=0.0).to(tl.float32)
            low_value = tl.load(min_ptr + rows_n * groups + g, mask=where, other=0.0).to(tl.float32)
            acc += scale * codes_dot + low_value * x_sum
        tl.atomic_add(out_ptr + row * N + rows_n, acc, mask=rows_n < N)


def int8_matvec(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, plan: Launch) -> torch.Tensor:
    """``x @ (weight * scales[:, None]).T`` for ``x`` [rows, K] (rows <= MAX_ROWS) and int8 ``weight`` [N, K]."""
    rows, k = x.shape
    n = weight.shape[0]
    out = torch.zeros(rows, n, dtype=torch.float32, device=x.device)
    grid = (rows, -(-n // plan.block_n), plan.split_k)
    _int8_gemv[grid](x.contiguous(), weight, scales, out, n, k, plan.steps_per_split,
                     BLOCK_N=plan.block_n, BLOCK_K=plan.block_k)
    return out.to(x.dtype)


def int4_matvec(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                plan: Launch) -> torch.Tensor:
    """``x @ W.T`` for ``x`` [rows, K] and quantize.py's int4 ``W``: codes two per byte
    (``packed`` [N, K/2]), weight = code * scale + min per group of ``plan.block_k`` inputs."""
    rows, k = x.shape
    n = packed.shape[0]
    out = torch.zeros(rows, n, dtype=torch.float32, device=x.device)
    grid = (rows, -(-n // plan.block_n), plan.split_k)
    _int4_gemv[grid](x.contiguous(), packed, scales, mins, out, n, k, plan.steps_per_split,
                     BLOCK_N=plan.block_n, GROUP=plan.block_k)
    return out.to(x.dtype)
