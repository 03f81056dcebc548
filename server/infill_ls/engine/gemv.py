"""Matrix-vector kernels (Triton) for the weight-only linears of quantize.py on a GPU.

Decoding one token multiplies a row of activations by every weight matrix: the time is
the time to read the weights once.  PyTorch's own kernels did not get there on an H200
(bench/gpu_linear.py): ``_weight_int8pack_mm`` took 150 ms per token for the 15B shape's
linears, inductor's fused dequantize-and-reduce 25 (7.4-14.8 with coordinate-descent
tuning), and tinygemm's int4 (6.7 eager) needs its own tiled copy of the weights, which
prefills 2,048 tokens in 2.1 s.  These kernels read quantize.py's own layouts directly
(int8 rows with a scale per row; int4 codes in int32 words with a scale and a minimum per
group of 128), so one copy of the weights serves decoding and a prompt's prefill (cuBLAS
on the weight dequantized by ``int4_dequantize``, or cast for int8).

Each program reduces ``BLOCK_N`` output rows over a ``1/split_k`` share of the input
dimension in float32 and writes its partial sums; ``sum_of_splits`` adds them.  Split-K
gives narrow matrices (the 512-row key/value projections) enough programs to keep every
SM reading.  The launch of each shape is timed on the GPU at load (quantize.tune_launch
over ``candidates``).  One input row (a decode step) runs on the matrix-vector kernels,
which turn codes into floats with bit operations, not conversion instructions (Hopper
issues those at 1/8 the rate of an add: the int4 kernel was bound by them, 128 per 64
bytes of codes, bench/gemv_sass.py), and may take the dequantization out of the products
(``Launch.fold``: int4's scale and minimum once per group, int8's offset once per row), or
multiply integers (``Launch.int8_inputs``: the row as 16-bit integers per group of inputs,
four products per ``dp4a`` instruction);
2-16 rows (a draft check, a few typed tokens) on
``_int8_rows``/``_int4_rows``, which read each tile of weights once for all the rows and
multiply on the tensor cores (where one fails its check at load, those rows take the
one-row kernel once per row, ``Launch.rows_kernel``).

Measured on an H200 (2026-11-26, bench/results/gpu-20261126-190332.json and -190919.json),
the whole 15B-shape model compiled decodes at 8.6 ms/token in int4 and 9.1 in int8,
against bf16's 11.2 in the same session (the kernels before these changes: 10.1 in int4
where bf16 took 10.6, 12.8 in int8 where bf16 took 12.0); on an H100 (2026-11-27, run 8,
gpu-20261127-205631.json), with the folded and tensor-core launches: 6.43 in int4, 7.83 in
int8, against bf16's 12.90 (``int8_inputs`` came after).  The same kernels run on the
CPU under ``TRITON_INTERPRET=1``, which is how the tests check them without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU-only install: the plain paths serve
    triton = None

# Whether Triton's interpreter runs the kernels (the tests, on a CPU): it runs no inline assembly.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Rows of input a call handles (decode steps and draft checks); longer inputs (a prefill)
# take the plain path, whose cuBLAS matmul is faster there.
MAX_ROWS = 16
# The bits of the float 1.0, an argument of the int4 kernels (see _weight).
ONE_BITS = 0x3F800000
# Output rows per program of the tensor-core kernels (_int8_rows/_int4_rows), in one
# warpgroup (4 warps).  With the one-row launches' 16, the 4 warps of a program each
# converted the whole tile of weights for their share of the products: compiled for an H100
# (bench/gemv_sass.py) the int4 loop took 47.5 instructions per weight byte, int8's 9.1; with
# 64 rows each weight is converted once and a step is one wgmma: 12.5 and 3.9.
ROWS_BLOCK_N, ROWS_NUM_WARPS = 64, 4


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
    # The blocks tile the weight exactly and every split has whole steps: the one-row kernels
    # then load without masks.
    even: bool = False
    # One row: request the next step's weights before this step's arithmetic (more registers
    # for int8; more bytes in flight per SM).  Candidates tune_launch times, unmeasured yet.
    prefetch: bool = False
    # One row on the tensor-core kernel too (padded to MAX_ROWS rows; block_n ROWS_BLOCK_N):
    # Triton pipelines its loads through shared memory (int4: 64 KiB in flight per SM against
    # the one-row kernel's 16, at 12.5 instructions per weight byte against 10.9,
    # bench/gemv_sass.py).  A candidate tune_launch times, unmeasured yet.
    one_row_on_tensor_cores: bool = False
    # One row, the dequantization folded out of the products (the kernels' FOLD).  int4: each
    # group's scale and minimum applied once per group of a thread's products, not to every
    # weight (int4_fold_inputs prepares the row, one small kernel more per call); compiled for
    # an H100 (bench/gemv_sass.py --tiles), over the candidates' tiles, 9-32 % fewer
    # instructions per weight byte (e.g. 7.0 against 8.8), as many registers or fewer and up to
    # 2.5x the bytes in flight per SM.  int8: the codes' offset taken off once per row, from
    # the row's sum (3.44 against 4.45 instructions per weight byte with the deferred sum).
    # Candidates tune_launch times, unmeasured yet.
    fold: bool = False
    # One row as 16-bit integers under a scale per group of inputs, in two planes of bytes,
    # multiplied with the codes on the integer dot-product instruction (dp4a: four products and
    # their sum in one instruction), each group's scales once per group (int8_inputs below).
    # int4's float kernels spend a mask and a multiply-add per weight, ~4 instructions per code
    # with the rest, about as many per weight as int8's kernel: so int4 ran no faster than int8
    # (6.43 against 7.83 ms/token on an H100, bench/README.md run 8), bound by issuing
    # instructions (as fast on an H200's faster memory).  Here an int4 code costs under one, an
    # int8 weight about one (bench/gemv_sass.py).  Candidates tune_launch times, unmeasured on
    # a GPU yet.
    int8_inputs: bool = False


# Programs a launch aims for, per SM.  The sweep on an H200 (bench/gpu_linear.py --sweep,
# bench/results/gpu-linear-20261126-053414.json) found every one of the 15B shapes fastest
# with ~750-3,000 programs (132 SMs) and at least two splits of the input dimension: e.g.
# the 24,576-row c_fc in int8 at 0.066 ms with 16 rows x 2 splits against 0.076 with the
# old rule's 32 rows x 1 split.  It tried no program with fewer than 2 loop steps, nor does the rule.
PROGRAMS_PER_SM = 6


def launch(n: int, k: int, block_k: int, device: torch.device, block_n: int = 16, split_k: int | None = None,
           num_warps: int = 4, defer_sum: bool = False, prefetch: bool = False, fold: bool = False,
           int8_inputs: bool = False) -> Launch:
    """A launch for an [n, k] weight: ``split_k`` (by default as many splits as bring the
    programs to ``PROGRAMS_PER_SM`` per SM, at least 2, each program keeping 2 steps)."""
    n_blocks = -(-n // block_n)
    steps = -(-k // block_k)
    if split_k is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        split_k = max(1, min(steps // 2, max(2, PROGRAMS_PER_SM * sms // n_blocks)))
        split_k = max(d for d in range(1, split_k + 1) if steps % d == 0)  # whole steps per split
    even = n % block_n == 0 and k % block_k == 0 and steps % split_k == 0
    return Launch(block_n, block_k, split_k, -(-steps // split_k), num_warps, defer_sum, even=even, prefetch=prefetch,
                  fold=fold, int8_inputs=int8_inputs)


def int8_input_group(k: int) -> int | None:
    """Inputs per scale of a row of ``k`` on int8 inputs (Launch.int8_inputs) for int8 weights
    (int4's follow its weights' groups): 128 (the most whose sum of products fits int32
    exactly), or fewer where ``k`` is not a multiple; None where no power of two from 32 is."""
    return next((group for group in (128, 64, 32) if k % group == 0), None)


def candidates(n: int, k: int, block_ks: tuple[int, ...], device: torch.device,
               int8_inputs: bool = False) -> list[Launch]:
    """Launches worth timing for an [n, k] weight (quantize.tune_launch): each ``block_k``
    (inputs per loop step), 16 or 32 rows per program, 2 or 4 warps, the sum per step or
    deferred, ``launch``'s split of the input dimension or twice as many — the ranges inside
    which the sweeps on an H200 found every shape's best (bench/gpu_linear.py --sweep) — and
    each of those that sums per step again with the next step's weights requested early
    (``Launch.prefetch``; not swept yet; the deferred sum's registers left out); the row
    on the tensor-core kernel (``Launch.one_row_on_tensor_cores``; not swept yet); and each
    of those one-row launches again with the dequantization folded out of the products
    (``Launch.fold``; not swept yet: compiled, e.g. int4 at 32 rows x 2 groups x 2 warps with
    the prefetch folded came to 6.95 instructions per weight byte in 96 registers, 80 KiB in
    flight per SM, against 9.02 in 254 and 32 KiB unfolded); with ``int8_inputs``, each
    tile, split and warps again on int8 inputs (``Launch.int8_inputs``; not swept yet)."""
    found = []
    for block_k in block_ks:
        steps = -(-k // block_k)
        found.append(replace(launch(n, k, block_k, device, ROWS_BLOCK_N), one_row_on_tensor_cores=True))
        for block_n in (16, 32):
            split = launch(n, k, block_k, device, block_n).split_k
            more = next((d for d in range(2 * split, steps // 2 + 1) if steps % d == 0), split)  # whole steps
            for split_k in sorted({split, more}):
                for num_warps in (2, 4):
                    for fold in (False, True):
                        for defer_sum in (False, True):
                            found.append(launch(n, k, block_k, device, block_n, split_k, num_warps, defer_sum,
                                                fold=fold))
                        found.append(launch(n, k, block_k, device, block_n, split_k, num_warps, prefetch=True,
                                            fold=fold))
                    if int8_inputs:
                        found.append(launch(n, k, block_k, device, block_n, split_k, num_warps, int8_inputs=True))
    return found


if triton is not None:

    # Integer to float without a conversion instruction: Hopper issues those at 1/8 the rate of
    # an add, which left the int4 kernel bound by its conversions (bench/gemv_sass.py).  The
    # inputs are float32 and loaded in the shape of the weight tile (every thread reads the
    # inputs of its own columns, from L1): a [BLOCK_K] load was re-laid out through shared
    # memory, with barriers, at every step.

    @triton.jit
    def _load(pointer, mask, EVEN: tl.constexpr):
        """Without masks where the launch tiles the weight exactly (``Launch.even``): each
        masked load also zeroes its registers first, ~15 % of the int4 loop's instructions."""
        if EVEN:
            return tl.load(pointer)
        else:
            return tl.load(pointer, mask=mask, other=0)

    @triton.jit
    def _int8_gemv(x_ptr, x_sum_ptr, w_ptr, scale_ptr, out_ptr, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DEFER_SUM: tl.constexpr, EVEN: tl.constexpr,
                   PREFETCH: tl.constexpr, FOLD: tl.constexpr):
        # FOLD (Launch.fold): each code v becomes 1 + (v + 128) / 256 in one shift-and-add, and
        # the row's sum (``x_sum_ptr``) takes the offset off once: sum(v * x) = 256 * sum((1 +
        # (v + 128) / 256) * x) - 384 * sum(x).  Unfolded, v + 2^23 + 128 needs a subtraction
        # of its own per weight.
        row = tl.program_id(0)  # grid (input rows, n blocks, splits); out: [splits, rows, N]
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        in_n = rows_n < N
        k_start = tl.program_id(2) * steps_per_split * BLOCK_K
        acc = tl.zeros((BLOCK_N, BLOCK_K) if DEFER_SUM else (BLOCK_N,), dtype=tl.float32)
        if PREFETCH:  # as in _int4_gemv: the next step's weights are requested before this step's arithmetic
            ks = k_start + tl.arange(0, BLOCK_K)
            next_w = _load(w_ptr + rows_n[:, None] * K + ks[None, :], in_n[:, None] & (ks[None, :] < K), EVEN)
        for step in range(steps_per_split):
            ks = k_start + step * BLOCK_K + tl.arange(0, BLOCK_K)
            in_k = ks[None, :] < K
            x = _load(x_ptr + row * K + rows_n[:, None] * 0 + ks[None, :], in_k, EVEN)
            if PREFETCH:
                w = next_w
                ahead = k_start + tl.minimum(step + 1, steps_per_split - 1) * BLOCK_K + tl.arange(0, BLOCK_K)
                next_w = _load(w_ptr + rows_n[:, None] * K + ahead[None, :], in_n[:, None] & (ahead[None, :] < K),
                               EVEN)
            else:
                w = _load(w_ptr + rows_n[:, None] * K + ks[None, :], in_n[:, None] & in_k, EVEN)
            if FOLD:  # (v + 128) * 2^15 in the mantissa of 1.0
                w = ((w.to(tl.int32) << 15) + 0x3FC00000).to(tl.float32, bitcast=True)
            else:  # v + 2^23 + 128 (v a signed byte) has the bits of the float 2^23 + 128 + v.
                w = (w.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
            if DEFER_SUM:
                acc += w * x
            else:
                acc += tl.sum(w * x, axis=1)
        if DEFER_SUM:
            acc = tl.sum(acc, axis=1)
        if FOLD:  # the first split takes the offset off
            acc = 256.0 * acc - tl.where(tl.program_id(2) == 0, 384.0 * tl.load(x_sum_ptr + row), 0.0)
        scale = tl.load(scale_ptr + rows_n, mask=in_n, other=0.0).to(tl.float32)
        tl.store(out_ptr + (tl.program_id(2) * tl.num_programs(0) + row) * N + rows_n, acc * scale, mask=in_n)

    # ``one`` is the bits of 1.0f (0x3F800000), passed at run time: as a constant it took one of
    # the two constant operands of each nibble's LOP3, and ptxas moved the nibble masks into
    # registers again at every step (compiled for sm_90, bench/gemv_sass.py: the int4 loop took
    # 175 instructions per step that way, 156 with ``one``).

    @triton.jit
    def _unit(bits, one):
        """A 4-bit code in the mantissa bits of ``bits`` (nothing else set) under the exponent of
        1.0: bits 15-18 read 1 + code * 2^-8, 19-22 1 + code * 2^-4."""
        return (bits | one).to(tl.float32, bitcast=True)

    @triton.jit
    def _weight(bits, scale, offset, one):
        """A 4-bit code sitting in mantissa bits 12-15 or 16-19 of ``bits`` (``_unit``: 1 + code *
        2^-11 or 2^-7), so ``scale`` = s * 2^11 (2^7) and ``offset`` = min - s * 2^11 (2^7) give
        code * s + min in one multiply-add."""
        return _unit(bits, one) * scale + offset

    @triton.jit
    def _int4_group_loads(word_ptr, scale_ptr, min_ptr, rows_n, in_n, g, K, GROUP: tl.constexpr, EVEN: tl.constexpr):
        """The codes ([rows, groups, words]), scales and minimums ([rows, groups]) of groups ``g``."""
        WORDS: tl.constexpr = GROUP // 8
        groups = K // GROUP
        word_of_group = tl.arange(0, WORDS)
        in_k = g < groups  # the last split may run past the groups
        # The last term is all true: it widens the mask to the tile's whole shape (N, G, WORDS).
        where = in_n[:, None, None] & in_k[None, :, None] & (word_of_group[None, None, :] >= 0)
        word = _load(word_ptr + rows_n[:, None, None] * (K // 8) + g[None, :, None] * WORDS
                     + word_of_group[None, None, :], where, EVEN)
        where2 = in_n[:, None] & in_k[None, :]
        scale = _load(scale_ptr + rows_n[:, None] * groups + g[None, :], where2, EVEN).to(tl.float32)
        low_value = _load(min_ptr + rows_n[:, None] * groups + g[None, :], where2, EVEN).to(tl.float32)
        return word, scale, low_value

    @triton.jit
    def _one_row_program(N, K, steps_per_split, BLOCK_N: tl.constexpr, GROUP: tl.constexpr,
                         GROUPS_PER_STEP: tl.constexpr, WORDS: tl.constexpr):
        """What a one-row program over groups of GROUP inputs (WORDS int32 words of weights
        each) works on: its input row, output rows (and which exist), first group, the groups
        of the input, and the ranges of groups in a step and of words in a group.  Grid
        (input rows, n blocks, splits); out: [splits, rows, N]."""
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        return (tl.program_id(0), rows_n, rows_n < N, tl.program_id(2) * steps_per_split * GROUPS_PER_STEP, K // GROUP,
                tl.arange(0, GROUPS_PER_STEP), tl.arange(0, WORDS))

    @triton.jit
    def _int4_gemv(x_ptr, sums_ptr, word_ptr, scale_ptr, min_ptr, out_ptr, N, K, steps_per_split, one,
                   BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUPS_PER_STEP: tl.constexpr,
                   DEFER_SUM: tl.constexpr, EVEN: tl.constexpr, PREFETCH: tl.constexpr, FOLD: tl.constexpr):
        # quantize.py's layout: a group is GROUP/8 int32 words; nibble p of word w holds the
        # code of input p * GROUP/8 + w, so the inputs of one nibble of all the words are one
        # contiguous read.  Tiles are [rows, groups of the step, words of a group].
        #
        # FOLD (Launch.fold): ``x_ptr`` holds int4_fold_inputs' row, each input of an odd
        # nibble divided by 16, and ``sums_ptr`` each group's sums of the row as it was and as
        # divided.  A nibble then costs a mask and one multiply-add: (1 + code * 2^-8) * x, or
        # (1 + code * 2^-4) * x/16 for an odd nibble, is x' + code * 2^-8 * x; and a group's
        # scale and minimum come in once per group of a thread's products: code * s + min summed
        # over a group is s * 2^8 * (the sum of those products - the divided row's sum) + min *
        # the row's sum.  (Three shifts and bits 11-22 took one instruction less per word, but
        # rounded 1 + code * 2^-12 to ~2^-12 of a step: 5x the error of the unfolded kernel.)
        WORDS: tl.constexpr = GROUP // 8
        row, rows_n, in_n, first_group, groups, in_step, word_of_group = _one_row_program(
            N, K, steps_per_split, BLOCK_N, GROUP, GROUPS_PER_STEP, WORDS)
        acc = tl.zeros((BLOCK_N, GROUPS_PER_STEP, WORDS) if DEFER_SUM else (BLOCK_N,), dtype=tl.float32)
        # FOLD: each group's min * the row's sum - s * 2^8 * the divided row's sum
        offsets = tl.zeros((BLOCK_N, GROUPS_PER_STEP) if DEFER_SUM else (BLOCK_N,), dtype=tl.float32)
        if PREFETCH:
            next_codes = _int4_group_loads(word_ptr, scale_ptr, min_ptr, rows_n, in_n, first_group + in_step, K,
                                           GROUP, EVEN)
        for step in range(steps_per_split):
            g = first_group + step * GROUPS_PER_STEP + in_step  # [G]
            if PREFETCH:
                # The next step's codes are requested before this step's arithmetic, so a warp's
                # loads stay in flight while it computes (the last step requests its own again,
                # from the cache: no mask).
                word, scale, low_value = next_codes
                ahead = first_group + tl.minimum(step + 1, steps_per_split - 1) * GROUPS_PER_STEP + in_step
                next_codes = _int4_group_loads(word_ptr, scale_ptr, min_ptr, rows_n, in_n, ahead, K, GROUP, EVEN)
            else:
                word, scale, low_value = _int4_group_loads(word_ptr, scale_ptr, min_ptr, rows_n, in_n, g, K, GROUP, EVEN)
            x = x_ptr + row * K + rows_n[:, None, None] * 0 + g[None, :, None] * GROUP + word_of_group[None, None, :]
            in_x = (g < groups)[None, :, None]
            if FOLD:
                # Four shifts of the word put its nibbles in mantissa bits 15-18 and 19-22.
                n01, n23, n45, n67 = word << 15, word << 7, word >> 1, word >> 9
                dot = _unit(n01 & 0x78000, one) * _load(x, in_x, EVEN)
                dot += _unit(n01 & 0x780000, one) * _load(x + WORDS, in_x, EVEN)
                dot += _unit(n23 & 0x78000, one) * _load(x + 2 * WORDS, in_x, EVEN)
                dot += _unit(n23 & 0x780000, one) * _load(x + 3 * WORDS, in_x, EVEN)
                dot += _unit(n45 & 0x78000, one) * _load(x + 4 * WORDS, in_x, EVEN)
                dot += _unit(n45 & 0x780000, one) * _load(x + 5 * WORDS, in_x, EVEN)
                dot += _unit(n67 & 0x78000, one) * _load(x + 6 * WORDS, in_x, EVEN)
                dot += _unit(n67 & 0x780000, one) * _load(x + 7 * WORDS, in_x, EVEN)
                in_g = g < groups
                row_sum = _load(sums_ptr + row * groups + g, in_g, EVEN)
                divided_sum = _load(sums_ptr + (tl.num_programs(0) + row) * groups + g, in_g, EVEN)
                scale8 = scale * 256.0
                offset = low_value * row_sum[None, :] - scale8 * divided_sum[None, :]
                if DEFER_SUM:
                    acc += dot * scale8[:, :, None]
                    offsets += offset
                else:
                    acc += tl.sum(tl.sum(dot, axis=2) * scale8, axis=1)
                    offsets += tl.sum(offset, axis=1)
            else:
                scale11, offset11 = (scale * 2048.0)[:, :, None], (low_value - scale * 2048.0)[:, :, None]
                scale7, offset7 = (scale * 128.0)[:, :, None], (low_value - scale * 128.0)[:, :, None]
                # Nibbles 3 and 4 already sit in bits 12-19; four shifts of the word bring the other six there.
                up, down = word << 12, word >> 8
                products = _weight(up & 0xF000, scale11, offset11, one) * _load(x, in_x, EVEN)
                products += _weight(up & 0xF0000, scale7, offset7, one) * _load(x + WORDS, in_x, EVEN)
                products += _weight((word << 8) & 0xF0000, scale7, offset7, one) * _load(x + 2 * WORDS, in_x, EVEN)
                products += _weight(word & 0xF000, scale11, offset11, one) * _load(x + 3 * WORDS, in_x, EVEN)
                products += _weight(word & 0xF0000, scale7, offset7, one) * _load(x + 4 * WORDS, in_x, EVEN)
                products += _weight(down & 0xF000, scale11, offset11, one) * _load(x + 5 * WORDS, in_x, EVEN)
                products += _weight(down & 0xF0000, scale7, offset7, one) * _load(x + 6 * WORDS, in_x, EVEN)
                products += _weight((word >> 16) & 0xF000, scale11, offset11, one) * _load(x + 7 * WORDS, in_x, EVEN)
                if DEFER_SUM:
                    acc += products
                else:
                    acc += tl.sum(tl.sum(products, axis=2), axis=1)
        if DEFER_SUM:
            acc = tl.sum(tl.sum(acc, axis=2), axis=1)
            if FOLD:
                acc += tl.sum(offsets, axis=1)
        elif FOLD:
            acc += offsets
        tl.store(out_ptr + (tl.program_id(2) * tl.num_programs(0) + row) * N + rows_n, acc, mask=in_n)

    @triton.jit
    def _int4_fold_inputs(x_ptr, out_ptr, sums_ptr, K, GROUP: tl.constexpr):
        # grid (rows, groups): one group of a row, as _int4_gemv's FOLD reads it.
        WORDS: tl.constexpr = GROUP // 8
        row, g = tl.program_id(0), tl.program_id(1)
        nibble = tl.arange(0, 8)
        at = row * K + g * GROUP + nibble[:, None] * WORDS + tl.arange(0, WORDS)[None, :]
        x = tl.load(x_ptr + at).to(tl.float32)
        divided = x * tl.where(nibble % 2 == 0, 1.0, 0.0625)[:, None]
        tl.store(out_ptr + at, divided)
        groups = K // GROUP
        tl.store(sums_ptr + row * groups + g, tl.sum(tl.sum(x, axis=1), axis=0))
        tl.store(sums_ptr + (tl.num_programs(0) + row) * groups + g, tl.sum(tl.sum(divided, axis=1), axis=0))

    # Launch.int8_inputs: int4 codes times a row of 16-bit integers, four products per
    # instruction.  A row's group of GROUP inputs becomes X = round(x / a), |X| <= 32639, with
    # a = the group's largest |x| / 32639 (2^-15 of it: finer than bf16's 2^-8 for all but
    # inputs under 1/128 of the largest), split into bytes X = 256 * high + low (high in
    # [-127, 127], low in [-128, 127]).  Byte j of ``word & 0x0F0F0F0F`` is the code of nibble 2j,
    # of ``(word >> 4) & 0x0F0F0F0F`` of nibble 2j + 1, so each plane holds the bytes of those
    # nibbles' inputs in the same places: dp4a(plane, codes) sums four products exactly in
    # int32, and a group's sum(x * (code * s + min)) = s * a * sum(X * code) + min * sum(x).

    @triton.jit
    def _dp4a(a, b, total, SIGNED_B: tl.constexpr, INTERPRET: tl.constexpr):
        """``total`` + the sum of the products of the signed bytes of ``a`` with the bytes of
        ``b``, signed or not (one instruction on the GPU; Triton's interpreter runs no assembly)."""
        if INTERPRET:
            for j in tl.static_range(4):
                b_byte = ((b << (24 - 8 * j)) >> 24) if SIGNED_B else ((b >> (8 * j)) & 0xFF)
                total += ((a << (24 - 8 * j)) >> 24) * b_byte
            return total
        elif SIGNED_B:
            return tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, total],
                                             dtype=tl.int32, is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise("dp4a.s32.u32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, total],
                                             dtype=tl.int32, is_pure=True, pack=1)

    @triton.jit
    def _int8_inputs(x_ptr, planes_ptr, stats_ptr, K, GROUP: tl.constexpr, NIBBLE_ORDER: tl.constexpr):
        # grid (rows, groups): one group of a row.  planes: [rows, groups, 2 * GROUP/4 bytes] as
        # int32 words, the high bytes then the low; stats: [rows, groups, 2] (a, the sum of the
        # group's x).  NIBBLE_ORDER (int4): word w of the high bytes holds the inputs of nibbles
        # 0, 2, 4, 6 of code word w, word GROUP/8 + w those of nibbles 1, 3, 5, 7 (then the low
        # bytes alike); otherwise (int8) word m holds inputs 4m..4m+3, as the int8 weights' words.
        WORDS: tl.constexpr = GROUP // 8
        row, g = tl.program_id(0), tl.program_id(1)
        groups = K // GROUP
        j = tl.arange(0, 4)  # the byte of a word
        if NIBBLE_ORDER:  # [j, q, w]: nibble 2j + q of code word w
            q, w = tl.arange(0, 2), tl.arange(0, WORDS)
            index = (2 * j[:, None, None] + q[None, :, None]) * WORDS + w[None, None, :]
        else:  # [m, j]
            index = 4 * tl.arange(0, 2 * WORDS)[:, None] + j[None, :]
        x = tl.load(x_ptr + row * K + g * GROUP + index).to(tl.float32)
        flat = tl.reshape(x, (GROUP,))
        largest = tl.maximum(tl.max(tl.abs(flat), axis=0), 1e-30)  # (an all-zero group: any a serves)
        a = largest / 32639.0
        whole = tl.floor(x * (32639.0 / largest) + 0.5).to(tl.int32)
        high = (whole + 128) >> 8
        low = whole - (high << 8)
        planes = planes_ptr + (row * groups + g) * 4 * WORDS
        if NIBBLE_ORDER:
            shifts = 8 * j[:, None, None]
            words = q[:, None] * WORDS + w[None, :]
            tl.store(planes + words, tl.sum((high & 0xFF) << shifts, axis=0))
            tl.store(planes + 2 * WORDS + words, tl.sum((low & 0xFF) << shifts, axis=0))
        else:
            words = tl.arange(0, 2 * WORDS)
            tl.store(planes + words, tl.sum((high & 0xFF) << (8 * j[None, :]), axis=1))
            tl.store(planes + 2 * WORDS + words, tl.sum((low & 0xFF) << (8 * j[None, :]), axis=1))
        tl.store(stats_ptr + (row * groups + g) * 2, a)
        tl.store(stats_ptr + (row * groups + g) * 2 + 1, tl.sum(flat, axis=0))

    @triton.jit
    def _int4_int8_gemv(planes_ptr, stats_ptr, word_ptr, scale_ptr, min_ptr, out_ptr, N, K, steps_per_split,
                        BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUPS_PER_STEP: tl.constexpr,
                        EVEN: tl.constexpr, INTERPRET: tl.constexpr):
        # Tiles as _int4_gemv's: [rows, groups of the step, words of a group]; each plane is
        # loaded in that shape (every thread reads the planes of its own words, from L1).
        WORDS: tl.constexpr = GROUP // 8
        row, rows_n, in_n, first_group, groups, in_step, word_of_group = _one_row_program(
            N, K, steps_per_split, BLOCK_N, GROUP, GROUPS_PER_STEP, WORDS)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            g = first_group + step * GROUPS_PER_STEP + in_step  # [G]
            word, scale, low_value = _int4_group_loads(word_ptr, scale_ptr, min_ptr, rows_n, in_n, g, K, GROUP, EVEN)
            in_g = g < groups
            plane = (planes_ptr + (row * groups + g[None, :, None]) * 4 * WORDS + rows_n[:, None, None] * 0
                     + word_of_group[None, None, :])
            in_x = in_g[None, :, None]
            even, odd = word & 0x0F0F0F0F, (word >> 4) & 0x0F0F0F0F
            high = _dp4a(_load(plane, in_x, EVEN), even,
                         _dp4a(_load(plane + WORDS, in_x, EVEN), odd, word * 0, False, INTERPRET), False, INTERPRET)
            whole = _dp4a(_load(plane + 2 * WORDS, in_x, EVEN), even,
                          _dp4a(_load(plane + 3 * WORDS, in_x, EVEN), odd, high << 8, False, INTERPRET), False,
                          INTERPRET)
            a = _load(stats_ptr + (row * groups + g) * 2, in_g, EVEN)
            x_sum = _load(stats_ptr + (row * groups + g) * 2 + 1, in_g, EVEN)
            dots = tl.sum(whole, axis=2).to(tl.float32)  # [N, G]: sum(X * code) per group, exact
            acc += tl.sum(dots * (scale * a[None, :]) + low_value * x_sum[None, :], axis=1)
        tl.store(out_ptr + (tl.program_id(2) * tl.num_programs(0) + row) * N + rows_n, acc, mask=in_n)

    @triton.jit
    def _int8_int8_gemv(planes_ptr, stats_ptr, word_ptr, scale_ptr, out_ptr, N, K, steps_per_split,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr, EVEN: tl.constexpr,
                        INTERPRET: tl.constexpr):
        # int8 weights (``word_ptr``: their int32 words, 4 inputs each) times _int8_inputs' planes in
        # the inputs' order: sum(X * v) per group exact in int32 (|X * v| * 128 < 2^31), each
        # group's a once per group, the row's scale after the loop.  Tiles [rows, groups of the
        # step, words of a group].
        WORDS: tl.constexpr = GROUP // 4
        GROUPS_PER_STEP: tl.constexpr = BLOCK_K // GROUP
        row, rows_n, in_n, first_group, groups, in_step, word_of_group = _one_row_program(
            N, K, steps_per_split, BLOCK_N, GROUP, GROUPS_PER_STEP, WORDS)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for step in range(steps_per_split):
            g = first_group + step * GROUPS_PER_STEP + in_step  # [G]
            in_g = g < groups
            at = g[None, :, None] * WORDS + word_of_group[None, None, :]
            w = _load(word_ptr + rows_n[:, None, None] * (K // 4) + at, in_n[:, None, None] & in_g[None, :, None],
                      EVEN)
            plane = (planes_ptr + (row * groups + g[None, :, None]) * 2 * WORDS + rows_n[:, None, None] * 0
                     + word_of_group)
            in_x = in_g[None, :, None]
            high = _dp4a(_load(plane, in_x, EVEN), w, w * 0, True, INTERPRET)
            whole = _dp4a(_load(plane + WORDS, in_x, EVEN), w, high << 8, True, INTERPRET)
            a = _load(stats_ptr + (row * groups + g) * 2, in_g, EVEN)
            acc += tl.sum(tl.sum(whole, axis=2).to(tl.float32) * a[None, :], axis=1)
        scale = tl.load(scale_ptr + rows_n, mask=in_n, other=0.0).to(tl.float32)
        tl.store(out_ptr + (tl.program_id(2) * tl.num_programs(0) + row) * N + rows_n, acc * scale, mask=in_n)

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
        tl.store(out_ptr + (tl.program_id(2) * ROWS + rows[:, None]) * N + rows_n[None, :], acc * scale[None, :],
                 mask=(rows[:, None] < ROWS) & (rows_n[None, :] < N))

    @triton.jit
    def _int4_rows(x_ptr, word_ptr, scale_ptr, min_ptr, out_ptr, ROWS, N, K, steps_per_split,
                   BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUPS_PER_STEP: tl.constexpr,
                   PADDED_ROWS: tl.constexpr):
        WORDS: tl.constexpr = GROUP // 8  # quantize.py's layout, as in _int4_gemv
        rows = tl.arange(0, PADDED_ROWS)
        in_rows = rows < ROWS
        rows_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        in_n = rows_n < N
        first_group = tl.program_id(2) * steps_per_split * GROUPS_PER_STEP
        groups = K // GROUP
        word_of_group = tl.arange(0, WORDS)
        acc = tl.zeros((PADDED_ROWS, BLOCK_N), dtype=tl.float32)
        for step in range(steps_per_split):
            for in_step in tl.static_range(GROUPS_PER_STEP):
                g = first_group + step * GROUPS_PER_STEP + in_step
                # Masks as blocks, not scalars (Triton's interpreter takes no scalar mask).
                in_k = word_of_group * 0 + g < groups  # [WORDS]: the last split may run past the groups
                n_and_k = in_n & (rows_n * 0 + g < groups)  # [BLOCK_N]
                word = tl.load(word_ptr + rows_n[:, None] * (K // 8) + g * WORDS + word_of_group[None, :],
                               mask=n_and_k[:, None], other=0)
                scale = tl.load(scale_ptr + rows_n * groups + g, mask=n_and_k, other=0.0).to(tl.float32)
                low_value = tl.load(min_ptr + rows_n * groups + g, mask=n_and_k, other=0.0).to(tl.float32)
                for nibble in tl.static_range(8):
                    x = tl.load(x_ptr + rows[:, None] * K + g * GROUP + nibble * WORDS + word_of_group[None, :],
                                mask=in_rows[:, None] & in_k[None, :], other=0.0)
                    codes = ((word >> (4 * nibble)) & 15).to(tl.float32)
                    # Dequantized to the activations' dtype, as the plain module does.
                    w = (codes * scale[:, None] + low_value[:, None]).to(x.dtype)
                    acc += tl.dot(x, tl.trans(w))
        tl.store(out_ptr + (tl.program_id(2) * ROWS + rows[:, None]) * N + rows_n[None, :], acc,
                 mask=in_rows[:, None] & in_n[None, :])

    @triton.jit
    def _int4_dequantize(word_ptr, scale_ptr, min_ptr, out_ptr, N, K, BLOCK_N: tl.constexpr, GROUP: tl.constexpr):
        # grid (n blocks, groups): one group of BLOCK_N rows of the weight, in out's dtype.
        WORDS: tl.constexpr = GROUP // 8
        rows_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        in_n = rows_n < N
        g = tl.program_id(1)
        word_of_group = tl.arange(0, WORDS)
        word = tl.load(word_ptr + rows_n[:, None] * (K // 8) + g * WORDS + word_of_group[None, :],
                       mask=in_n[:, None], other=0)
        scale = tl.load(scale_ptr + rows_n * (K // GROUP) + g, mask=in_n, other=0.0).to(tl.float32)
        low_value = tl.load(min_ptr + rows_n * (K // GROUP) + g, mask=in_n, other=0.0).to(tl.float32)
        for nibble in tl.static_range(8):
            codes = ((word >> (4 * nibble)) & 15).to(tl.float32)
            tl.store(out_ptr + rows_n[:, None] * K + g * GROUP + nibble * WORDS + word_of_group[None, :],
                     (codes * scale[:, None] + low_value[:, None]).to(out_ptr.dtype.element_ty), mask=in_n[:, None])


def int4_dequantize(packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """quantize.py's int4 weight as a [N, K] tensor of ``dtype``, for a prompt's cuBLAS matmul:
    one kernel that reads half a byte and writes one value per weight, where the tensor ops
    (unpack, convert, scale, shift) wrote and read ~15 bytes of intermediates per weight."""
    n, k = packed.shape[0], packed.shape[1] * 2
    out = torch.empty(n, k, dtype=dtype, device=packed.device)
    block_n = 32
    _int4_dequantize[(-(-n // block_n), k // group)](packed.view(torch.int32), scales, mins, out, n, k,
                                                     BLOCK_N=block_n, GROUP=group)
    return out


def int8_matvec(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, plan: Launch) -> torch.Tensor:
    """``x @ (weight * scales[:, None]).T`` for ``x`` [rows, K] (rows <= MAX_ROWS) and int8 ``weight`` [N, K]:
    one row on _int8_gemv, more on _int8_rows (or on _int8_gemv once per row)."""
    rows, k = x.shape
    n = weight.shape[0]
    partial = torch.empty(plan.split_k, rows, n, dtype=torch.float32, device=x.device)
    blocks = -(-n // plan.block_n)
    if plan.int8_inputs and (rows == 1 or not plan.rows_kernel):
        group = int8_input_group(k)
        if group is None or plan.block_k % group:
            raise ValueError(f"no int8 inputs for {k} inputs in steps of {plan.block_k}")
        planes, stats = int8_inputs(x, group, nibble_order=False)
        _int8_int8_gemv[(rows, blocks, plan.split_k)](planes, stats, weight.view(torch.int32), scales, partial, n, k,
                                                      plan.steps_per_split, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k,
                                                      GROUP=group, EVEN=plan.even, INTERPRET=INTERPRET,
                                                      num_warps=plan.num_warps)
    elif (rows == 1 and not plan.one_row_on_tensor_cores) or not plan.rows_kernel:
        inputs = x.float().contiguous()  # (x keeps the dtype of the output)
        _int8_gemv[(rows, blocks, plan.split_k)](inputs, inputs.sum(1) if plan.fold else inputs, weight, scales, partial,
                                                 n, k, plan.steps_per_split, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k,
                                                 DEFER_SUM=plan.defer_sum, EVEN=plan.even, PREFETCH=plan.prefetch,
                                                 FOLD=plan.fold, num_warps=plan.num_warps)
    else:
        _int8_rows[(1, -(-n // ROWS_BLOCK_N), plan.split_k)](
            x.contiguous(), weight, scales, partial, rows, n, k, plan.steps_per_split, BLOCK_N=ROWS_BLOCK_N,
            BLOCK_K=plan.block_k, PADDED_ROWS=MAX_ROWS, num_warps=ROWS_NUM_WARPS)
    return sum_of_splits(partial, x.dtype)


def int4_matvec(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int,
                plan: Launch) -> torch.Tensor:
    """``x @ W.T`` for ``x`` [rows, K] and quantize.py's int4 ``W``: ``packed`` [N, K/2] bytes,
    read as int32 words (nibble p of word w of a group: input p * group/8 + w), weight =
    code * scale + min per ``group`` inputs; ``plan.block_k`` is a whole number of groups (a
    power of two of them)."""
    rows, k = x.shape
    n = packed.shape[0]
    words = packed.view(torch.int32)
    partial = torch.empty(plan.split_k, rows, n, dtype=torch.float32, device=x.device)
    blocks, groups_per_step = -(-n // plan.block_n), plan.block_k // group
    if plan.int8_inputs and (rows == 1 or not plan.rows_kernel):
        planes, stats = int8_inputs(x, group, nibble_order=True)
        _int4_int8_gemv[(rows, blocks, plan.split_k)](planes, stats, words, scales, mins, partial, n, k,
                                                      plan.steps_per_split, BLOCK_N=plan.block_n, GROUP=group,
                                                      GROUPS_PER_STEP=groups_per_step, EVEN=plan.even,
                                                      INTERPRET=INTERPRET, num_warps=plan.num_warps)
    elif (rows == 1 and not plan.one_row_on_tensor_cores) or not plan.rows_kernel:
        inputs, sums = int4_fold_inputs(x, group) if plan.fold else (x.float().contiguous(), x)
        _int4_gemv[(rows, blocks, plan.split_k)](inputs, sums, words, scales, mins, partial, n, k, plan.steps_per_split,
                                                 ONE_BITS, BLOCK_N=plan.block_n, GROUP=group,
                                                 GROUPS_PER_STEP=groups_per_step, DEFER_SUM=plan.defer_sum,
                                                 EVEN=plan.even, PREFETCH=plan.prefetch, FOLD=plan.fold,
                                                 num_warps=plan.num_warps)
    else:
        _int4_rows[(1, -(-n // ROWS_BLOCK_N), plan.split_k)](
            x.contiguous(), words, scales, mins, partial, rows, n, k, plan.steps_per_split, BLOCK_N=ROWS_BLOCK_N,
            GROUP=group, GROUPS_PER_STEP=groups_per_step, PADDED_ROWS=MAX_ROWS, num_warps=ROWS_NUM_WARPS)
    return sum_of_splits(partial, x.dtype)


def int4_fold_inputs(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [rows, K] as _int4_gemv's FOLD reads it: float32, each input of an odd nibble of
    a group divided by 16, and [2, rows, groups]: each group's sum of ``x`` and of the divided
    row."""
    rows, k = x.shape
    divided = torch.empty(rows, k, dtype=torch.float32, device=x.device)
    sums = torch.empty(2, rows, k // group, dtype=torch.float32, device=x.device)
    _int4_fold_inputs[(rows, k // group)](x.contiguous(), divided, sums, k, GROUP=group)
    return divided, sums


def int8_inputs(x: torch.Tensor, group: int, nibble_order: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [rows, K] as _int4_int8_gemv (``nibble_order``) or _int8_int8_gemv reads it:
    [rows, groups, group/2] int32 words of bytes (high, then low) and [rows, groups, 2]
    float32 (each group's scale and sum)."""
    rows, k = x.shape
    planes = torch.empty(rows, k // group, group // 2, dtype=torch.int32, device=x.device)
    stats = torch.empty(rows, k // group, 2, dtype=torch.float32, device=x.device)
    _int8_inputs[(rows, k // group)](x.contiguous(), planes, stats, k, GROUP=group, NIBBLE_ORDER=nibble_order,
                                     num_warps=1)
    return planes, stats


def sum_of_splits(partial: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each split of the input dimension wrote its own partial sums ([splits, rows, N]): adding
    them here instead of atomically in the kernels saves zeroing the output first, one kernel
    per linear (under torch.compile the sum fuses with what follows)."""
    return partial.sum(0).to(dtype)
