"""Weight-only quantized linear layers, written the way gpt-fast writes them.

Decoding one token is bound by reading the weights, so storing them in 8 or 4 bits
should make it faster, not slower.  These modules keep the weights small and
dequantize inside ``forward`` with plain tensor ops; under ``torch.compile`` the
dequantization fuses into the matmul (no bf16 copy of the weight is written), while
in eager mode they still work, just without the speed.  bitsandbytes stays available
for users who ask for ``8bit``/``4bit``; these are ``int8wo``/``int4wo``.

On a GPU, ``use_kernels`` switches both to gemv.py's Triton kernels for decode-sized
inputs, each shape checked once against the plain module's output and its launch timed
on the GPU at hand (``tune_launch``); a prompt's prefill multiplies on cuBLAS (int4: the
weight dequantized by one Triton kernel).  int4 can also use tinygemm's
``_weight_int4pack_mm`` (gpt-fast's int4 path), which needs its own tiled copy of the
weights.  A kernel that is missing or disagrees is not used.  Measured on an H200
(bench/gpu.py, 2026-11-26): the whole 15B-shape model compiled decodes at 8.6 ms/token in
int4 and 9.1 in int8 against bf16's 11.2 (bench/results/gpu-20261126-190332.json,
-190919.json); per linear, tinygemm int4 took 6.7 ms per token eager and 10.0 compiled,
the plain modules compiled 48-51 (int4) and 25 (int8; 7.4 with inductor's
coordinate-descent tuning, fast.py's ``tune``), ``_weight_int8pack_mm`` 150 ms, hence no
longer used (bench/gpu_linear.py).  Not on the CPU: there (2 cores, bundled model,
float32; bench/results/cpu-20261126-003259.json) tinygemm's CPU port decoded no faster than
the plain modules (8.8 vs 8.9 ms/token) and prefilled 1,024 tokens in 5.1 s against 0.12 s.

``int8dyn`` quantizes the activations too, one scale per token, and multiplies in integers
(``torch._int_mm``): a CPU option (``DynamicInt8Linear``).  ``fp8`` does the same in float8
on the tensor cores of Ada and Hopper GPUs (``torch._scaled_mm``, ``Fp8Linear``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import gemv

log = logging.getLogger(__name__)

INT4_GROUP_SIZE = 128
# gemv.py's launches before tune_launch times the candidates on the GPU at hand (and where
# it cannot): int8 the fastest of the H200 sweep (bench/results/gpu-linear-20261126-053414.json);
# int4's kernel changed after its sweep (codes as words, turned into floats by bit operations),
# so 2 groups of 128 per step and 16 rows per program: the fewest registers (64, 8 programs
# per SM) among launches that compile to the same instructions per weight byte (bench/gemv_sass.py).
INT8_BLOCK_K, INT8_BLOCK_N = 512, 16
INT4_GROUPS_PER_STEP, INT4_BLOCK_N = 2, 16
# tinygemm's int4 layout tiles the input dimension by 16 x this (largest that divides it).
INNER_K_TILES = (8, 4, 2)


def symmetric_int8(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` as int8 codes with one float32 scale per row (the last dimension shares it)."""
    scales = values.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-8).div_(127)
    return torch.div(values, scales).round_().clamp_(-127, 127).to(torch.int8), scales


class Int8WeightOnlyLinear(nn.Module):
    """int8 weights with one float scale per output channel (symmetric)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        codes, scales = symmetric_int8(linear.weight.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", codes)
        self.register_buffer("scales", scales.squeeze(1).to(linear.weight.dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.plan: gemv.Launch | None = None  # set by switch_to_kernel: decode-sized inputs take gemv.py

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plan is not None and x.numel() <= gemv.MAX_ROWS * self.in_features:
            out = gemv.int8_matvec(x.reshape(-1, self.in_features), self.weight, self.scales, self.plan)
            out = out.reshape(*x.shape[:-1], self.out_features)
        else:
            # Scaling the output instead of the weight keeps the matmul on the int8 tensor
            # cast to x's dtype, which inductor fuses into one kernel.
            out = F.linear(x, self.weight.to(x.dtype)) * self.scales
        return out if self.bias is None else out + self.bias

    def switch_to_kernel(self, kind: str = "triton") -> None:
        if kind != "triton" or not gemv.available():
            raise NotImplementedError(f"no {kind} int8 kernel here")
        self.plan = gemv.launch(self.out_features, self.in_features, INT8_BLOCK_K, self.weight.device, INT8_BLOCK_N)

    def switch_to_plain(self) -> None:
        self.plan = None


class Int4WeightOnlyLinear(nn.Module):
    """4-bit weights, two per byte, with a scale and a minimum per group of input channels."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        group_size = min(group_size, in_features)
        if in_features % group_size or group_size % 8:
            raise ValueError(f"in_features {in_features} is not a multiple of a group size {group_size} "
                             "that is a multiple of 8")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low = groups.amin(dim=2, keepdim=True)
        scales = ((groups.amax(dim=2, keepdim=True) - low) / 15).clamp(min=1e-8)
        codes = torch.round((groups - low) / scales).clamp(0, 15).to(torch.uint8)
        # A group is group/8 little-endian int32 words; nibble p of word w holds the code of
        # input p * group/8 + w: gemv.py's kernel then reads the inputs of one nibble of all
        # the words contiguously, and turns each code into a float with bit operations.
        nibbles = codes.reshape(out_features, -1, 8, group_size // 8).transpose(2, 3)  # [out, groups, word, p]
        self.register_buffer("packed", (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).reshape(out_features, -1))
        self.register_buffer("scales", scales.squeeze(2).to(linear.weight.dtype))
        self.register_buffer("mins", low.squeeze(2).to(linear.weight.dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.kernel = False  # tinygemm's tiles in use (see use_kernels)
        self.plan: gemv.Launch | None = None  # gemv.py's kernel in use, for decode-sized inputs

    def codes(self) -> torch.Tensor:
        """The 4-bit codes, one per weight ([out, in], uint8)."""
        pairs = self.packed.reshape(self.out_features, -1, self.group_size // 8, 4)  # [out, groups, word, byte]
        nibbles = torch.stack([pairs & 0x0F, pairs >> 4], dim=4).reshape(*pairs.shape[:3], 8)  # [.., word, p]
        return nibbles.transpose(2, 3).reshape(self.out_features, -1)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        if self.packed.is_cuda and gemv.available():  # one kernel (a prompt's prefill)
            return gemv.int4_dequantize(self.packed, self.scales, self.mins, self.group_size, dtype)
        return self.dequantized_by_tensor_ops(dtype)

    def dequantized_by_tensor_ops(self, dtype: torch.dtype) -> torch.Tensor:
        groups = self.codes().reshape(self.out_features, -1, self.group_size).to(dtype)
        weight = groups * self.scales[:, :, None].to(dtype) + self.mins[:, :, None].to(dtype)
        return weight.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.plan is not None and x.numel() <= gemv.MAX_ROWS * self.in_features:
            out = gemv.int4_matvec(rows, self.packed, self.scales, self.mins, self.group_size, self.plan)
        elif self.kernel:
            matmul = torch.ops.aten._weight_int4pack_mm if x.is_cuda else torch.ops.aten._weight_int4pack_mm_for_cpu
            out = matmul(rows, self.tiles, self.group_size, self.scales_and_zeros)
        else:
            return F.linear(x, self.dequantized(x.dtype), self.bias)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def switch_to_kernel(self, kind: str = "triton") -> None:
        """``triton``: gemv.py's kernel reads these codes as they are (a group must be a power
        of two for it).  ``tinygemm``: repack for tinygemm, codes tiled for the kernel, and
        per group (scale, zero) with weight = (code - 8) * scale + zero, i.e. zero = min + 8 * scale."""
        if kind == "triton":
            if not gemv.available() or self.group_size & (self.group_size - 1):
                raise NotImplementedError(f"no triton int4 kernel here for groups of {self.group_size}")
            self.plan = gemv.launch(self.out_features, self.in_features, self.group_size * INT4_GROUPS_PER_STEP,
                                    self.packed.device, INT4_BLOCK_N)
            return
        tiles = next((t for t in INNER_K_TILES if self.in_features % (16 * t) == 0), None)
        if tiles is None:
            raise ValueError(f"in_features {self.in_features} is not a multiple of 32")
        codes = self.codes()
        if codes.is_cuda:  # two codes per byte, the even one in the high nibble (as torchao packs for this op)
            packed = torch.ops.aten._convert_weight_to_int4pack((codes[:, 0::2] << 4 | codes[:, 1::2]).to(torch.uint8), tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), tiles)
        zeros = self.mins + 8 * self.scales
        self.register_buffer("tiles", packed)
        self.register_buffer("scales_and_zeros", torch.stack([self.scales, zeros], dim=2).transpose(0, 1).contiguous())
        self.kernel = True

    def switch_to_plain(self) -> None:
        self.kernel, self.plan = False, None
        for name in ("tiles", "scales_and_zeros"):
            self._buffers.pop(name, None)

    def drop_plain_weights(self) -> None:
        del self.packed, self.scales, self.mins  # the kernel's copy replaces them


class DynamicInt8Linear(nn.Module):
    """int8 weights (a scale per output channel) times int8 activations (a scale per token),
    multiplied in integers: a CPU option for large models on machines without bf16 instructions.

    Each token is scaled on its own and integer sums are exact, so a token's output does not
    depend on the other tokens of the call: a prompt prefilled whole, a prompt-cache reuse
    that prefills only the edited tail, and a speculative step checking 9 tokens at once all
    give the logits of the tokens run one at a time.  PyTorch's ``quantize_dynamic`` (used
    before 2026-11-27) scaled each call as a whole, so they did not."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        codes, scales = symmetric_int8(linear.weight.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", codes)  # [out, in]; _int_mm reads its transpose as is
        self.register_buffer("scales", scales.squeeze(1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, row_scales = symmetric_int8(x.reshape(-1, self.in_features).float())
        # In place: a decoded token's linears are small enough that each op's overhead counts.
        out = torch._int_mm(rows, self.weight.t()).float().mul_(row_scales).mul_(self.scales)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


# The largest finite float8_e4m3fn value.
FP8_MAX = 448.0


def fp8_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` as float8 e4m3 codes with one float32 scale per row ([rows, 1])."""
    scales = values.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12).div_(FP8_MAX)
    return torch.div(values, scales).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scales


def zero_padded(values: torch.Tensor, rows: int) -> torch.Tensor:
    """``values`` ([n, k]) with rows of zeros after them up to ``rows`` (as they are if n >= rows)."""
    missing = rows - values.shape[0]
    return torch.cat([values, values.new_zeros(missing, values.shape[1])]) if missing > 0 else values


class Fp8Linear(nn.Module):
    """float8 (e4m3) weights with a scale per output channel times activations turned into
    float8 with a scale per token, multiplied on the tensor cores by ``torch._scaled_mm``
    (GPUs of compute capability 8.9 and up: Ada, Hopper), which applies both scales.

    Why beside int8wo: a decode step is bound by reading the weights, and here they are read
    by NVIDIA's own fp8 GEMM (cuBLASLt from CUDA 12.9; CUTLASS in PyTorch before), as bf16's
    are by cuBLAS, which reached 3.1-3.5 TB/s on an H200 where gemv.py's int8 kernel reached
    ~2.4 (bench/gpu_linear.py).  Unmeasured on a GPU as yet, so ``auto`` does not pick it.  As
    with int8dyn each token is scaled on its own, so a token's output does not depend on the
    other tokens of the call (prompt-cache reuse and draft checks keep the greedy output).  On
    a CPU ``_scaled_mm`` is a slow reference (~40x float32's matmul at the bundled model's
    shapes): there it serves tests."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        codes, scales = fp8_rows(linear.weight.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", codes)  # [out, in]: its transpose is the column-major operand _scaled_mm wants
        self.register_buffer("scales", scales.squeeze(1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        # How a decode step's few rows (up to gemv.MAX_ROWS: one token, a draft check) are
        # multiplied; tune_fp8 times the choices per shape on the GPU at hand.  unit_scale None:
        # the scales go into the call (cuBLASLt's scaling per row and column); a scalar 1: the
        # call scales per tensor, by 1, and the scales are applied after it (another kernel).
        # pad_rows: the rows are padded with zeros to this many first (vLLM pads to 17: "more
        # performant for matrices with batch dimension > 16").  A prompt's rows always take
        # the scales inside, unpadded.
        self.unit_scale: torch.Tensor | None = None
        self.pad_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        count = flat.shape[0]
        few = count <= gemv.MAX_ROWS
        rows, row_scales = fp8_rows(zero_padded(flat, self.pad_rows) if few else flat)
        out = self.matmul(rows, row_scales, x.dtype, self.unit_scale if few else None)[:count]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def matmul(self, rows: torch.Tensor, row_scales: torch.Tensor, dtype: torch.dtype,
               unit_scale: torch.Tensor | None) -> torch.Tensor:
        """float8 ``rows`` (their scales ``row_scales``) times the weight, in ``dtype``: the
        scales inside the call, or (``unit_scale``, a scalar 1) applied after it."""
        weight, scales = self.weight.t(), self.scales[None]
        if unit_scale is None:
            return torch._scaled_mm(rows, weight, scale_a=row_scales, scale_b=scales, out_dtype=dtype)
        out = torch._scaled_mm(rows, weight, scale_a=unit_scale, scale_b=unit_scale, out_dtype=torch.float32)
        return (out * row_scales * scales).to(dtype)

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        """``_scaled_mm`` takes inner and output sizes that are multiples of 16."""
        return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


QUANTIZED_LINEARS = {"int8wo": Int8WeightOnlyLinear, "int4wo": Int4WeightOnlyLinear, "int8dyn": DynamicInt8Linear,
                     "fp8": Fp8Linear}


# The kind an untied output projection takes when quantize_weights skips nothing by name.
# int4wo's is int8 weight-only, as llama.cpp's 4-bit files keep theirs at 6 bits: on the
# StarCoder2-15B shape (whose head is untied) the bf16 head is 604 of the 8,765 MB read per
# int4wo token, the int8 one 302; against float32 it moved the bundled model's logits far
# less than int4's rounding of the body does (mean |difference| 0.4626 against 0.4621, the
# next token agreeing at 84.7 % either way: bench/quality.py's "int4wo-untied",
# quality-20261128-032543.json).  Not yet timed on a GPU ("+bf16-head" in bench/gpu.py).
HEAD_KINDS = {"int8dyn": "int8dyn", "int4wo": "int8wo"}


def quantize_weights(model: nn.Module, kind: str, skip: tuple[str, ...] | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``) in place.

    By default (``skip`` None) the output projection ``lm_head`` takes HEAD_KINDS' kind, or
    stays in full precision, as bitsandbytes keeps it: it is the layer most sensitive to
    rounding.  int8dyn quantizes it too: it is the bundled model's largest linear (8192 x
    256), which a CPU reads whole for every decoded token (quantized, the bundled model
    decoded ~8 % faster on 1 thread).  int4wo makes it int8 where it is a matrix of its own;
    a head tied to the input embedding stays as it is, since a quantized copy beside the
    table would add memory.  fp8 keeps any linear ``_scaled_mm`` cannot take
    (``Fp8Linear.fits``).
    """
    head_kind = None
    if skip is None:
        skip = ("lm_head",)
        head = getattr(model, "lm_head", None)
        # int8dyn's CPU decode gains even with a quantized copy of a tied head.
        if isinstance(head, nn.Linear) and (kind == "int8dyn" or not head_is_tied(model)):
            head_kind = HEAD_KINDS.get(kind)
    make = QUANTIZED_LINEARS[kind]
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if (isinstance(child, nn.Linear) and child_name not in skip and full not in skip
                    and getattr(make, "fits", lambda _: True)(child)):
                setattr(module, child_name, make(child))
    if head_kind:
        model.lm_head = QUANTIZED_LINEARS[head_kind](model.lm_head)
    return model


def head_is_tied(model: nn.Module) -> bool:
    """Whether ``model``'s output projection shares its weight with the input embedding."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embeddings is not None and model.lm_head.weight is embeddings.weight


def use_kernels(model: nn.Module, dtype: torch.dtype, kind: str = "triton") -> dict[str, int]:
    """Switch the weight-only linears of ``model`` (on its device, activations in ``dtype``)
    to a kernel — ``triton`` (gemv.py, int8 and int4) or ``tinygemm`` (int4 only) — each
    shape after a check against the plain module; how many linears use a kernel and how
    many stay plain."""
    kinds = (Int4WeightOnlyLinear,) if kind == "tinygemm" else (Int8WeightOnlyLinear, Int4WeightOnlyLinear)
    verdicts: dict[tuple, tuple[bool, gemv.Launch | None]] = {}  # per shape: passed, and the launch checked
    counts = {"kernel": 0, "plain": 0}
    for name, module in model.named_modules():
        if not isinstance(module, kinds):
            continue
        key = (type(module).__name__, module.in_features, module.out_features)
        if key not in verdicts:
            verdicts[key] = (kernel_agrees(module, dtype, name, kind), module.plan)
        elif verdicts[key][0]:
            module.switch_to_kernel(kind)
            module.plan = verdicts[key][1] or module.plan  # as checked (its tensor-core kernel may be off)
        passed = verdicts[key][0]
        if passed and getattr(module, "kernel", False):
            module.drop_plain_weights()  # tinygemm's tiles replace the codes
        counts["kernel" if passed else "plain"] += 1
    return counts


def on_triton_kernels(model: nn.Module) -> bool:
    """Whether every weight-only linear of ``model`` decodes on gemv.py's kernels."""
    linears = [m for m in model.modules() if isinstance(m, (Int8WeightOnlyLinear, Int4WeightOnlyLinear))]
    return bool(linears) and all(m.plan is not None for m in linears)


# A kernel's output may differ from the plain module's by this much (relative to its largest value).
KERNEL_TOLERANCE = 0.02


def why_failed(error: BaseException) -> str:
    """Why ``error`` happened, in a line for the log.  torch.compile wraps what the code it
    traced raised in errors of its own: where one of ``error``'s chain names it on its
    "Developer debug context" line (torch 2.11, the GPU machines', names it only there: the
    innermost error says "raised exception ExceptionVariable(<class 'RuntimeError'>)"), that
    line; otherwise the first line of the innermost exception."""
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for link in chain:
        for line in str(link).splitlines():
            if line.strip().startswith(DYNAMO_CONTEXT):
                return line.strip()[len(DYNAMO_CONTEXT):].strip()[:300]
    return (str(chain[-1]).splitlines() or [type(chain[-1]).__name__])[0][:300]


DYNAMO_CONTEXT = "Developer debug context:"


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference of ``got`` from ``want``, relative to ``want``'s largest value."""
    return (got.float() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)


@torch.inference_mode()
def kernel_agrees(module: nn.Module, dtype: torch.dtype, name: str, kind: str) -> bool:
    """Switch ``module`` to its kernel if the kernel exists here and gives the plain
    module's output (to rounding) on a random input; else leave it plain.  When only
    gemv.py's tensor-core kernel for several rows fails, several rows take the one-row
    kernel once per row instead (slower draft checks, but the decode steps keep the kernel)."""
    device = next(module.buffers()).device
    # One row (a decode step) and several (a draft check) take different kernels in gemv.py.
    inputs = [torch.randn(rows, module.in_features, dtype=dtype, device=device,
                          generator=torch.Generator(device).manual_seed(0)) for rows in (1, 3)]
    expected = [module(x).float() for x in inputs]

    def error_on(index: int) -> float:
        want = expected[index]
        return relative_error(module(inputs[index]), want)

    try:
        module.switch_to_kernel(kind)
        if kind == "triton" and device.type == "cuda":
            tune_launch(module, inputs[0], expected[0], name)
        one_row = error_on(0)
        try:
            several = error_on(1)
        except Exception as error:
            if module.plan is None:
                raise
            several, why = float("inf"), why_failed(error)
        else:
            why = f"relative error {several:.3g}"
        if one_row <= KERNEL_TOLERANCE < several and module.plan is not None and module.plan.rows_kernel:
            log.warning("%s: the tensor-core kernel for several rows is not used (%s); one row at a time", name, why)
            module.plan = dataclasses.replace(module.plan, rows_kernel=False)
            several = error_on(1)
    except Exception as error:  # no kernel for this device/dtype/shape (Triton raises its own kinds too)
        module.switch_to_plain()
        log.info("%s: plain weight-only linear (%s)", name, why_failed(error))
        return False
    error = max(one_row, several)
    if error > KERNEL_TOLERANCE:
        module.switch_to_plain()
        log.warning("%s: the weight-only kernel disagrees with the plain module (relative error %.3g); not used", name, error)
        return False
    return True


def tune_launch(module: nn.Module, x: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Time gemv.py's one-row kernel for ``module``'s shape with each of ``gemv.candidates`` on
    this GPU and keep the fastest launch that computes ``expected`` (the plain module's output
    for the row ``x``).  The best launch differs by shape and GPU (the H200 sweeps' best were
    up to 25 % faster than a fixed one), so it is measured where it runs, once per shape at load."""
    group = getattr(module, "group_size", None)
    block_ks = (2 * group, 4 * group) if group else (256, 512)
    on_integers = group is not None or gemv.int8_input_group(module.in_features) is not None  # Launch.int8_inputs
    launches = [module.plan] + gemv.candidates(module.out_features, module.in_features, block_ks, x.device,
                                               int8_inputs=on_integers)
    keep_fastest(module, [{"plan": launch} for launch in launches], x, expected, name)


# vLLM pads an fp8 matmul's rows to 17 ("more performant for matrices with batch dimension > 16").
FP8_PADDED_ROWS = 17


@torch.inference_mode()
def tune_fp8(model: nn.Module, dtype: torch.dtype) -> dict[str, int]:
    """On a GPU, how each fp8 shape multiplies a decode step's row (``Fp8Linear.unit_scale``,
    ``pad_rows``): with its scales inside ``_scaled_mm`` or after it, its row padded to 17 or
    not — whichever is fastest here (none is measured on a one-row product yet;
    bench/gpu_linear.py times the first two); how many linears take each.  Timed uncompiled,
    where the scaling after the call is kernels of its own (compiled, it fuses into one): a
    tie goes to the scales inside.  Raises where none computes what float32 arithmetic on
    the same float8 values gives."""
    chosen: dict[tuple[int, int], dict] = {}
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, Fp8Linear):
            continue
        key = (module.in_features, module.out_features)
        if key not in chosen:
            device = module.weight.device
            x = torch.randn(1, module.in_features, dtype=dtype, device=device,
                            generator=torch.Generator(device).manual_seed(0))
            rows, row_scales = fp8_rows(x.float())  # what all must compute, in float32 arithmetic
            expected = (rows.float() * row_scales) @ (module.weight.float() * module.scales[:, None]).t()
            if module.bias is not None:
                expected += module.bias.float()
            unit = torch.ones((), device=device)
            choices = [{"unit_scale": scale, "pad_rows": pad} for pad in (0, FP8_PADDED_ROWS) for scale in (None, unit)]
            chosen[key] = keep_fastest(module, choices, x, expected, name)
            error = relative_error(module(x), expected)
            if error > KERNEL_TOLERANCE:
                raise RuntimeError(f"fp8: torch._scaled_mm is off by {error:.3g} (relative) on {device} for {name}")
        for attribute, value in chosen[key].items():
            setattr(module, attribute, value)
        label = ("scales inside" if module.unit_scale is None else "scales after") + (
            f", rows padded to {module.pad_rows}" if module.pad_rows else "")
        counts[label] = counts.get(label, 0) + 1
    return counts


# Timing one choice in full (graph_ms: 20 ms of calls in a CUDA graph, replayed 10 times,
# after capturing hundreds of calls) takes ~0.3 s; tune_launch offers ~100 launches per
# shape since session 18, which would make that ~2 minutes of a quantized 15B model's first
# load.  Where there are more choices than FINALISTS, each is first timed briefly and the
# FINALISTS fastest again in full.
FINALISTS = 4
BRIEF_REP_MS, FULL_REP_MS = 2, 20


def keep_fastest(module: nn.Module, choices: list[dict], x: torch.Tensor, expected: torch.Tensor,
                 name: str) -> dict:
    """Set the attributes of each of ``choices`` on ``module`` in turn, time ``module(x)`` on
    this GPU, and keep (and return) the fastest choice that computes ``expected`` to
    KERNEL_TOLERANCE; the first choice where none does.  The choice is remembered on disk
    (``remember_choice``): a later load on the same GPU and software checks it and skips the
    timing."""
    started = time.perf_counter()
    key = choice_key(module, choices, x)
    remembered = remembered_choices().get(key)
    if isinstance(remembered, int) and 0 <= remembered < len(choices) and computes(module, choices[remembered], x,
                                                                                  expected, name):
        log.info("%s: %s (remembered; checked in %.1f s)", name, choices[remembered], time.perf_counter() - started)
        return choices[remembered]

    def timed(indices, rep: int) -> dict[int, float]:
        """Milliseconds per call of each choice of ``indices`` that computes ``expected``."""
        times = {}
        for index in indices:
            if not computes(module, choices[index], x, expected, name):
                continue
            try:
                times[index] = graph_ms(lambda: module(x), x.device, rep=rep)
            except Exception as error:  # noqa: BLE001 - a call that cannot be captured is not a candidate
                log.debug("%s: %s could not be timed: %s", name, choices[index], error)
        return times

    times = timed(range(len(choices)), BRIEF_REP_MS if len(choices) > FINALISTS else FULL_REP_MS)
    if len(choices) > FINALISTS:  # (should every finalist fail its full timing, the brief round decides)
        times = timed(sorted(times, key=times.get)[:FINALISTS], FULL_REP_MS) or times
    best = min(times, key=times.get, default=0)
    for attribute, value in choices[best].items():
        setattr(module, attribute, value)
    if times:
        remember_choice(key, best)
    log.info("%s: %s (%.4f ms; tuned in %.1f s)", name, choices[best], times.get(best, float("inf")),
             time.perf_counter() - started)
    return choices[best]


def computes(module: nn.Module, choice: dict, x: torch.Tensor, expected: torch.Tensor, name: str) -> bool:
    """Set ``choice``'s attributes on ``module``; whether ``module(x)`` then gives ``expected``
    (not where it fails, e.g. a block too large for this GPU's registers or shared memory)."""
    for attribute, value in choice.items():
        setattr(module, attribute, value)
    try:
        got = module(x).float()
    except Exception as error:  # noqa: BLE001 - any failure rules the choice out
        log.debug("%s: %s failed: %s", name, choice, error)
        return False
    return relative_error(got, expected) <= KERNEL_TOLERANCE


# Timing every candidate of every shape took ~25 s of a 15B model's load on an H200 (run 5),
# at every start of the server: the fastest choice per shape is kept in a file, under a key
# naming the GPU, the software and the choices themselves (choice_key).  The
# variable names another file (the benches give each run a new one, so that every run
# times its choices).
CHOICES_FILE_VARIABLE = "INFILL_LS_KERNEL_CHOICES"


def choices_path() -> Path:
    if os.environ.get(CHOICES_FILE_VARIABLE):
        return Path(os.environ[CHOICES_FILE_VARIABLE])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "infill-ls" / "kernel-choices.json"


def choice_key(module: nn.Module, choices: list[dict], x: torch.Tensor) -> str:
    """What a timing depends on: the GPU, torch, CUDA and Triton, the kernels' source, the
    module's kind and shape, the input's dtype, and the list of choices."""
    device = torch.cuda.get_device_name(x.device) if x.is_cuda else str(x.device)
    triton_version = getattr(getattr(gemv, "triton", None), "__version__", "none")
    sources = hashlib.sha256((inspect.getsource(gemv) + repr(choices)).encode()).hexdigest()[:16]
    return (f"{device} | torch {torch.__version__} cuda {torch.version.cuda} triton {triton_version} | "
            f"{type(module).__name__} {module.in_features}x{module.out_features} {x.dtype} | {sources}")


def remembered_choices() -> dict:
    """The file's choices: {} where there is none yet or it cannot be read (then every shape
    is timed, and the file written anew)."""
    try:
        known = json.loads(choices_path().read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remember_choice(key: str, index: int) -> None:
    known = remembered_choices()
    known[key] = index
    path = choices_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(known, indent=1))
        partial.replace(path)  # whole or not at all, even with two servers loading at once
    except OSError as error:  # a read-only home must not fail the load
        log.debug("could not remember the kernel choice: %s", error)


FLUSH_MS: dict[str, float] = {}  # graph_ms's L2 flush alone, per device


def graph_ms(call, device: torch.device, rep: int = FULL_REP_MS) -> float:
    """Milliseconds of ``call`` in a CUDA graph, as decoding runs it, each time after a write
    of more memory than the L2 cache holds, as a decode step finds its weights (the other
    layers' went through the cache since); the write's own time (timed once per device) taken
    off, so that the logged figures are the call's."""
    from triton.testing import do_bench_cudagraph

    flush = torch.empty(128 * 2**20, dtype=torch.int8, device=device)
    if str(device) not in FLUSH_MS:
        FLUSH_MS[str(device)] = do_bench_cudagraph(flush.zero_, rep=20)
    return do_bench_cudagraph(lambda: (flush.zero_(), call()), rep=rep) - FLUSH_MS[str(device)]



def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (what decoding reads per token)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)
