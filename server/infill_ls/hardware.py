"""Choosing the device and precision a model runs at, and explaining the choice."""

from __future__ import annotations

import functools
from dataclasses import dataclass

# Bytes per parameter at each precision, with the quantized ones measured on the
# StarCoder2-15B architecture (16,565 MB at 8-bit, 8,889 MB at nf4 for 15.96 B params).
BYTES_PER_PARAM = {"bf16": 2.0, "8bit": 1.04, "4bit": 0.56, "int8wo": 1.04, "int4wo": 0.6, "fp8": 1.04}
# CPU precision for quantization auto, measured with bench/cpu.py on the bundled model
# (1 thread, 1,024-token prompt; prefill ms / decode ms per token; 2026-11-25/26,
# `bench/cpu.py --threads 1 --model server/infill_ls/models/infill-small`):
#   Xeon with AMX:                 float32 108 / 5.7,  bf16 41 / 4.4,  int8dyn 83 / 3.8
#   same, limited to AVX2 (a laptop without bf16 instructions; MKL_ENABLE_INSTRUCTIONS=AVX2
#   ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2):
#                                  float32 149 / 10.3, bf16 520 / 6.6, int8dyn 105 / 3.3
# A suggestion (a prefill and ~16 tokens) is fastest in bf16 where the CPU has bf16 matrix
# instructions (AMX / AVX512-BF16: elsewhere bf16 is emulated, 5x slower prefill).  Those
# int8dyn figures are PyTorch's quantize_dynamic, whose one activation scale per call made
# a reused prompt's output differ from a fresh one's; int8dyn is now DynamicInt8Linear (a
# scale per token, exact reuse), which on a Xeon without AMX or bf16 (2026-11-27,
# cpu-20261127-011444.json, -011519.json with the AVX2 caps) ran the bundled model no faster
# than float32: 131 / 7.5 against 142 / 7.3 (AVX2: 204 / 8.6 against 204 / 7.0; the old
# kind 109 / 6.9 and 137 / 6.5).  On 4 layers of StarCoder2-3B's shape (2 threads, 256-token
# prompt; bench/cpu.py --shape 3b-4-layers, cpu-20261127-021301.json) it decoded at 37.8
# ms/token against float32's 114 and the old kind's 36.8.  So without bf16 instructions
# `auto` keeps small models in float32 (the reference; int8dyn agrees with it on 97.6 % of
# next tokens, the old kind on 92.3 %, quality-20261127-012310.json) and quantizes from
# INT8_CPU_PARAMETERS up, where reading the weights outweighs the per-op overhead of
# quantizing each token.
INT8_CPU_PARAMETERS = 100_000_000
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}
# Below this size a model runs fastest on one CPU thread: its matmuls are too small to
# split, and OpenMP threads spinning on a busy machine made decoding 8-20x slower
# (tiny model, 2 busy cores: 2.4 ms/token on 1 thread, 20-54 ms/token on 2).
SINGLE_THREAD_PARAMETERS = 100_000_000
CPU_CHOICES = ("float32", "bf16", "8bit", "4bit", "int8wo", "int4wo", "int8dyn")
# Measured on the StarCoder2-15B architecture per GPU precision, each on the path the
# engine uses for it (bench/gpu.py): (prefill of 2,048 tokens ms, decode ms/token).
# bf16, int8wo, int4wo and fp8: uncompiled prefill into the static cache (int8wo casts its
# weights for cuBLAS, int4wo dequantizes them with one Triton kernel), compiled static-cache
# decode (one layer's step compiled for all 40), the weight-only kinds on gemv.py's Triton
# kernels with the launches tune_launch chose, fp8 on torch._scaled_mm as tune_fp8 chose.
# One H100, 2026-11-27, all four in one call (bench/results/gpu-20261127-205631.json).  The
# H200 run just before it (gpu-20261127-205141.json) ranks them alike: int4wo 6.3, fp8 6.4,
# int8wo 6.5, bf16 9.7 ms/token.  bitsandbytes 4-bit eager (H100) and 8-bit (decode only,
# the H100 run); eager steps are bound by kernel launches, so they move little
# between the cards.
GPU_MEASURED_MS: dict[str, tuple[float | None, float]] = {
    "bf16": (102, 12.9), "int8wo": (160, 7.8), "int4wo": (118, 6.4), "fp8": (139, 8.1),
    "4bit": (131, 41.9), "8bit": (None, 144.0),
}
# Fewer bits cost quality (a 4-bit linear of the 15B shape is ~10 % off the bf16 one, an
# 8-bit one ~1 %: bench/gpu_linear.py), so ``auto`` puts a kind further from bf16 before a
# closer one only when its suggestion is more than this share faster: a tie goes to the
# bits.  Further: the 4-bit kinds, and fp8, which rounds the activations to float8 too (on
# the bundled model 94.3 % of next tokens agree with float32, int8wo 98.9 %, int4wo 84.7 %:
# bench/results/quality-20261127-083650.json).
COARSE_KINDS, QUALITY_MARGIN = ("int4wo", "4bit", "fp8"), 0.10
# What ``auto`` ranks by: a suggestion while typing prefills about a quarter of a 2,048-token
# prompt (prompt-cache reuse keeps the rest; the suffix after the cursor is re-read) and
# decodes a line of ~16 tokens.  An unmeasured prefill counts as nothing.
SUGGESTION_PREFILL_SHARE, SUGGESTION_TOKENS = 0.25, 16


def suggestion_ms(precision: str) -> float:
    """A typing suggestion of the 15B shape at ``precision`` (GPU_MEASURED_MS), in ms."""
    prefill, decode = GPU_MEASURED_MS[precision]
    return (prefill or 0) * SUGGESTION_PREFILL_SHARE + SUGGESTION_TOKENS * decode


# fp8 matrix multiplication on the tensor cores (torch._scaled_mm): Ada (8.9) and Hopper (9.0) up.
FP8_CAPABILITY = (8, 9)

# Room kept free beside the weights for the KV cache, activations and the CUDA context.
HEADROOM_BYTES = 2 * 1024**3
HEADROOM_FRACTION = 0.10


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda:0", ...
    precision: str  # "float32", "bf16", "8bit", "4bit"
    reason: str


def cuda_free_bytes(device: str) -> int | None:
    """Free memory on a CUDA device, or None when there is no CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    free, _total = torch.cuda.mem_get_info(index)
    return free


def bitsandbytes_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def choose_placement(device: str, quantization: str, parameter_count: int | None) -> Placement:
    """Resolve ``device``/``quantization`` settings (possibly ``auto``) to a concrete placement."""
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = "cuda:0"
    if device == "cpu" or device == "mps":
        # fp8 runs on a CPU (the tests use it), but PyTorch's CPU fp8 matmul is a slow reference.
        if quantization == "fp8" and device == "cpu":
            if not cpu_fp8_scales_per_row():
                return Placement(device, "int8wo", f"fp8 requested on cpu, where torch {torch.__version__}'s fp8"
                                                   " matmul takes no scale per row: int8wo, the other 8-bit kind")
            return Placement(device, "fp8", "fp8 requested on cpu: emulated there, ~40x slower than float32")
        if quantization in CPU_CHOICES:
            return Placement(device, quantization, f"{quantization} requested on {device}")
        if quantization == "none" or device == "mps":
            return Placement(device, "float32", f"{device}: float32")
        precision = cpu_precision(parameter_count)
        why = {"bf16": "bf16 matrix instructions", "int8dyn": "no bf16 matrix instructions, a large model",
               "float32": "no bf16 matrix instructions, a small model"}[precision]
        return Placement(device, precision, f"{why}: the fastest measured, bench/cpu.py; none = float32")
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ValueError(f"device {device} is not available (torch.cuda.is_available() is False)")
    if quantization == "none":
        return Placement(device, "bf16", "quantization none: bf16")
    if quantization == "fp8" and not fp8_capable(device):
        major, minor = torch.cuda.get_device_capability(device)
        return Placement(device, "int8wo", f"fp8 needs compute capability 8.9+ (Ada, Hopper; {device} has"
                                           f" {major}.{minor}): int8wo, the other 8-bit kind")
    if quantization in ("8bit", "4bit", "int8wo", "int4wo", "fp8"):
        return Placement(device, quantization, f"quantization {quantization} requested")
    if quantization == "int8dyn":
        return Placement(device, "bf16", "int8dyn runs on the CPU only; bf16 on the GPU")
    free = cuda_free_bytes(device) or 0
    if parameter_count is None:
        return Placement(device, "bf16", "model size unknown: bf16")
    options = gpu_options(bitsandbytes_available(), fp8_capable(device))
    for precision in options:
        need = parameter_count * BYTES_PER_PARAM[precision] * (1 + HEADROOM_FRACTION) + HEADROOM_BYTES
        if need <= free:
            return Placement(
                device, precision, f"{precision} needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device}"
            )
    smallest = min(options, key=BYTES_PER_PARAM.get)
    return Placement(
        device,
        smallest,
        f"no precision fits {free / 2**30:.1f} GiB free on {device}; trying {smallest}"
        + ("" if bitsandbytes_available() else " (install infill-ls[gpu] for 8-bit/4-bit)"),
    )


def gpu_options(with_bitsandbytes: bool, with_fp8: bool = True) -> list[str]:
    """GPU precisions for ``auto``, fastest first by the time of a typical suggestion, the
    kinds further from bf16 (COARSE_KINDS) counted QUALITY_MARGIN slower."""
    def rank(precision: str) -> float:
        return suggestion_ms(precision) * (1 + QUALITY_MARGIN if precision in COARSE_KINDS else 1)

    left_out = ({"8bit", "4bit"} if not with_bitsandbytes else set()) | ({"fp8"} if not with_fp8 else set())
    return sorted((p for p in GPU_MEASURED_MS if p not in left_out), key=rank)


def fp8_capable(device: str) -> bool:
    """Whether the CUDA ``device`` multiplies in fp8 (``torch._scaled_mm``)."""
    import torch

    return torch.cuda.get_device_capability(device) >= FP8_CAPABILITY


@functools.cache
def cpu_fp8_scales_per_row() -> bool:
    """Whether this torch's CPU ``_scaled_mm`` takes a scale per row and per column, as
    quantize.Fp8Linear calls it: torch 2.13's does; 2.11's scales per tensor only on a CPU
    (an internal assert at the first suggestion), and older ones may have no CPU fp8."""
    import torch

    try:
        codes = torch.zeros(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(codes, codes.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16),
                         out_dtype=torch.float32)
    except (AttributeError, RuntimeError, TypeError):
        return False
    return True


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_precision(parameter_count: int | None) -> str:
    """The fastest precision measured on a CPU like this one for a model of this size (see
    the figures above; a model of unknown size counts as large)."""
    if cpu_flags() & BF16_CPU_FLAGS:
        return "bf16"
    return "float32" if parameter_count is not None and parameter_count < INT8_CPU_PARAMETERS else "int8dyn"


def cpu_threads(parameter_count: int) -> int | None:
    """Torch threads for a model of this size on the CPU, or None to keep torch's default."""
    return 1 if parameter_count < SINGLE_THREAD_PARAMETERS else None
