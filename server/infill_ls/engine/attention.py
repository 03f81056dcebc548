"""Attention of a compiled decode step over the static KV cache (Triton), split over the slots.

A compiled step has fixed shapes, so it attends over every slot of the cache with a mask
(fast.py): SDPA then reads all ``max_tokens`` slots of every layer, whatever the length in
use, and with one query token its kernels have little to spread over the SMs but the heads
(48 query heads on 4 key heads for the 15B shape; how they fare is not measured).  This kernel reads
the step's positions on the GPU (a CUDA graph replays it at any length), skips the slots past
them, runs the query heads of one key head as the rows of one tile (a step's tokens too: a
draft check's 9 tokens x 12 heads are 108 rows), and splits the slots among programs, as
flash-decoding does: every SM reads a share of the cache.  Each split writes its partial
softmax sums, and a second kernel combines them.

Whether it is faster than SDPA on a GPU is timed where it runs (fast.StaticDecoder chooses
per step size at load); the same kernel runs on the CPU under ``TRITON_INTERPRET=1``, which
is how tests/test_gemv.py checks it without a GPU.
"""

from __future__ import annotations

import torch

from .gemv import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _split_attention(q_ptr, k_ptr, v_ptr, positions_ptr, out_ptr, stats_ptr, scale, slots_in_cache,
                         slots_per_split, TOKENS: tl.constexpr, HEADS: tl.constexpr, GROUP: tl.constexpr,
                         ROWS: tl.constexpr, DIM: tl.constexpr, BLOCK_S: tl.constexpr):
        # q: [tokens, heads, dim]; keys, values: [key heads, slots, dim]; out: [key heads,
        # splits, ROWS, dim]; stats: [2, key heads, splits, ROWS].  grid (key heads, splits).
        # Row r of the tile: token r // GROUP, query head key_head * GROUP + r % GROUP; rows
        # past TOKENS * GROUP pad the tile to ROWS.
        key_head, split = tl.program_id(0), tl.program_id(1)
        rows = tl.arange(0, ROWS)
        token = rows // GROUP
        in_rows = rows < TOKENS * GROUP
        dims = tl.arange(0, DIM)
        q = tl.load(q_ptr + (token * HEADS + key_head * GROUP + rows % GROUP)[:, None] * DIM + dims[None, :],
                    mask=in_rows[:, None], other=0.0)
        # A token sees the slots up to its own position; the last token's is the furthest.
        seen_to = tl.load(positions_ptr + tl.minimum(token, TOKENS - 1))
        length = tl.load(positions_ptr + TOKENS - 1) + 1
        first = split * slots_per_split
        last = tl.minimum(first + slots_per_split, length)
        top = tl.full((ROWS,), float("-inf"), tl.float32)
        total = tl.zeros((ROWS,), tl.float32)
        acc = tl.zeros((ROWS, DIM), tl.float32)
        kv = key_head * slots_in_cache * DIM
        # torch.compile passes a Python float as fp64 (Triton's own launch, as fp32): in fp64
        # the scores would no longer match ``top``'s type across the loop.
        scale = tl.cast(scale, tl.float32)  # (a plain float under the interpreter)
        for start in range(first, last, BLOCK_S):
            slots = start + tl.arange(0, BLOCK_S)
            in_slots = slots < last
            k = tl.load(k_ptr + kv + slots[:, None] * DIM + dims[None, :], mask=in_slots[:, None], other=0.0)
            v = tl.load(v_ptr + kv + slots[:, None] * DIM + dims[None, :], mask=in_slots[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale
            scores = tl.where(in_slots[None, :] & (slots[None, :] <= seen_to[:, None]), scores, float("-inf"))
            new_top = tl.maximum(top, tl.max(scores, axis=1))
            # Rows that have seen nothing yet keep -inf: exp against 0 then gives 0, not NaN.
            base = tl.where(new_top == float("-inf"), 0.0, new_top)
            weights = tl.exp(scores - base[:, None])
            shrink = tl.exp(top - base)
            total = total * shrink + tl.sum(weights, axis=1)
            acc = acc * shrink[:, None] + tl.dot(weights.to(v.dtype), v)
            top = new_top
        at = (key_head * tl.num_programs(1) + split) * ROWS + rows
        tl.store(out_ptr + at[:, None] * DIM + dims[None, :], acc)
        tl.store(stats_ptr + at, top)
        tl.store(stats_ptr + tl.num_programs(0) * tl.num_programs(1) * ROWS + at, total)

    @triton.jit
    def _combine_splits(partial_ptr, stats_ptr, attention_ptr, splits, HEADS: tl.constexpr, GROUP: tl.constexpr,
                        ROWS: tl.constexpr, DIM: tl.constexpr, SPLITS: tl.constexpr, CHUNK: tl.constexpr):
        # grid (key heads, the step's rows): one query head of one token.  Each split's sums
        # rescaled to the row's largest score over all the splits (SPLITS, a power of two, at
        # least ``splits``) and added; attention: [tokens, heads, dim] in its own dtype.  The
        # splits' statistics come in one load, their partial sums CHUNK splits per load.
        # (Until session 23 one program per key head looped over the splits one at a time,
        # waiting on each load in turn: 9 splits made 18 loads one after another.)
        key_head, row = tl.program_id(0), tl.program_id(1)
        key_heads = tl.num_programs(0)
        split = tl.arange(0, SPLITS)
        at = (key_head * splits + split) * ROWS + row
        tops = tl.load(stats_ptr + at, mask=split < splits, other=float("-inf"))
        # Split 0 holds slot 0, which every token sees: ``top`` is finite, and a split past
        # the length (its largest -inf) weighs 0.
        top = tl.max(tops, axis=0)
        totals = tl.load(stats_ptr + key_heads * splits * ROWS + at, mask=split < splits, other=0.0)
        total = tl.sum(tl.exp(tops - top) * totals, axis=0)
        dims = tl.arange(0, DIM)
        acc = tl.zeros((DIM,), tl.float32)
        for first in range(0, splits, CHUNK):
            chunk = first + tl.arange(0, CHUNK)
            in_chunk = chunk < splits
            # (each chunk reads its splits' largest scores again: a Triton tile cannot be indexed)
            chunk_at = (key_head * splits + chunk) * ROWS + row
            weight = tl.exp(tl.load(stats_ptr + chunk_at, mask=in_chunk, other=float("-inf")) - top)
            partial = tl.load(partial_ptr + chunk_at[:, None] * DIM + dims[None, :], mask=in_chunk[:, None],
                              other=0.0)
            acc += tl.sum(weight[:, None] * partial, axis=0)
        head = key_head * GROUP + row % GROUP
        tl.store(attention_ptr + ((row // GROUP) * HEADS + head) * DIM + dims,
                 (acc / total).to(attention_ptr.dtype.element_ty))


# Slots per loop step, and per program (a multiple of BLOCK_S): the StaticDecoder times each
# of SPLITS at load and keeps the fastest (none measured on a GPU yet).  256 slots of one key
# head are 128 KiB of bf16 keys and values: a 4,096-slot cache of 4 key heads is 64
# programs, of which the 15B shape's ~2,000 slots in use keep 32 busy (the rest only write
# empty sums); 64 slots make 4x as many, each with a quarter of the work.
BLOCK_S = 64
SPLITS = (64, 128, 256, 512)
SLOTS_PER_SPLIT = 256  # where nothing was timed
# Splits per load when combining a row's partial sums: [32, 128] float32 over 4 warps, 32
# registers per thread.
COMBINE_CHUNK, COMBINE_NUM_WARPS = 32, 4


def tile_rows(tokens: int, group: int) -> int:
    """Rows of the kernel's tile for ``tokens`` query tokens of ``group`` heads per key head:
    a power of two, 16 or more (tl.dot's least); plain Python, which torch.compile traces."""
    rows = 16
    while rows < tokens * group:
        rows *= 2
    return rows


def num_warps(rows: int) -> int:
    """Warps of a program of ``rows`` query rows: a draft check's 128-row tile held 255
    registers per thread in 4 warps, spilling (compiled for sm_90, bench/gemv_sass.py)."""
    return 4 if rows <= 32 else 8


def available() -> bool:
    return triton is not None


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                     scale: float, slots_per_split: int = SLOTS_PER_SPLIT) -> torch.Tensor:
    """Attention of ``q`` ([1, heads, tokens, dim], the step's queries at ``positions``,
    increasing) over the cache ``keys`` and ``values`` ([1, key heads, slots, dim]), each
    token seeing the slots up to its own position: what SDPA gives with the mask
    ``positions[:, None] >= slots[None, :]``, as [1, heads, tokens, dim]."""
    _, heads, tokens, dim = q.shape
    key_heads, slots = keys.shape[1], keys.shape[2]
    group = heads // key_heads
    rows = tile_rows(tokens, group)
    splits = -(-slots // slots_per_split)
    partial = torch.empty(key_heads, splits, rows, dim, dtype=torch.float32, device=q.device)
    stats = torch.empty(2, key_heads, splits, rows, dtype=torch.float32, device=q.device)
    _split_attention[(key_heads, splits)](
        q.transpose(1, 2).contiguous(), keys.contiguous(), values.contiguous(), positions, partial, stats, scale, slots,
        slots_per_split, TOKENS=tokens, HEADS=heads, GROUP=group, ROWS=rows, DIM=dim, BLOCK_S=BLOCK_S,
        num_warps=num_warps(rows))
    out = torch.empty(1, tokens, heads, dim, dtype=q.dtype, device=q.device)
    _combine_splits[(key_heads, tokens * group)](partial, stats, out, splits, HEADS=heads, GROUP=group, ROWS=rows,
                                                 DIM=dim, SPLITS=triton.next_power_of_2(splits),
                                                 CHUNK=COMBINE_CHUNK, num_warps=COMBINE_NUM_WARPS)
    return out.transpose(1, 2)
