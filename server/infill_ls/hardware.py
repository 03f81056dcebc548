"""Choosing the device and precision a model runs at, and explaining the choice."""

from __future__ import annotations

from dataclasses import dataclass

# Bytes per parameter at each precision, with the quantized ones measured on the
# StarCoder2-15B architecture (16,565 MB at 8-bit, 8,889 MB at nf4 for 15.96 B params).
BYTES_PER_PARAM = {"bf16": 2.0, "8bit": 1.04, "4bit": 0.56}
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
        if quantization in ("8bit", "4bit"):
            return Placement(device, quantization, f"{quantization} requested on {device}")
        return Placement(device, "float32", f"{device}: float32 (bf16 matmuls are slow on most CPUs)")
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ValueError(f"device {device} is not available (torch.cuda.is_available() is False)")
    if quantization == "none":
        return Placement(device, "bf16", "quantization none: bf16")
    if quantization in ("8bit", "4bit"):
        return Placement(device, quantization, f"quantization {quantization} requested")
    free = cuda_free_bytes(device) or 0
    if parameter_count is None:
        return Placement(device, "bf16", "model size unknown: bf16")
    options = ["bf16"] + (["8bit", "4bit"] if bitsandbytes_available() else [])
    for precision in options:
        need = parameter_count * BYTES_PER_PARAM[precision] * (1 + HEADROOM_FRACTION) + HEADROOM_BYTES
        if need <= free:
            return Placement(
                device, precision, f"{precision} needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device}"
            )
    smallest = options[-1]
    return Placement(
        device,
        smallest,
        f"no precision fits {free / 2**30:.1f} GiB free on {device}; trying {smallest}"
        + ("" if bitsandbytes_available() else " (install infill-ls[gpu] for 8-bit/4-bit)"),
    )
