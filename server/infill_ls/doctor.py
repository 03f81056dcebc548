"""``infill-ls doctor``: what is installed, what hardware there is, what auto would choose."""

from __future__ import annotations

import importlib.metadata
import platform

from . import __version__, hardware
from .hardware import bitsandbytes_available, choose_placement, gpu_options, suggestion_ms
from .settings import BUNDLED_MODEL_DIR, Settings

RECOMMENDATION = """\
Models: the default is a small model bundled with infill-ls so it works offline
right away; with 5M parameters (training/MODEL_CARD.md) it closes
brackets and finishes common lines, no more.
For real use point infill.model at
StarCoder2: bigcode/starcoder2-3b (6 GB bf16), -7b (15 GB) or -15b (32 GB bf16,
17 GB 8-bit, 9 GB 4-bit). On FIM benchmarks the 3B scores above the 15B."""


# Parameter counts of the StarCoder2 checkpoints (model cards).
STARCODER2_SIZES = {"bigcode/starcoder2-3b": 3_030_000_000, "bigcode/starcoder2-7b": 7_170_000_000,
                    "bigcode/starcoder2-15b": 15_960_000_000}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(settings: Settings) -> str:
    import torch

    from .engine.local import EAGER_ONLY

    lines = [f"infill-ls {__version__} (Python {platform.python_version()}, {platform.platform()})"]
    for package in ("torch", "transformers", "tokenizers", "pygls", "lsprotocol", "bitsandbytes"):
        lines.append(f"  {package:<13} {_version(package)}")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            lines.append(f"GPU cuda:{index}: {torch.cuda.get_device_name(index)}, "
                         f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    else:
        lines.append("GPU: none (torch.cuda.is_available() is False); models run on the CPU")
    lines.append(f"bitsandbytes (8-bit/4-bit): {'available' if bitsandbytes_available() else 'not installed (pip install infill-ls[gpu])'}")
    bundled = (BUNDLED_MODEL_DIR / "config.json").exists()
    lines.append(f"bundled model: {BUNDLED_MODEL_DIR if bundled else 'not installed'}")
    lines.append(f"configured model: {settings.model}")
    try:
        from transformers import AutoConfig

        from .engine.local import count_parameters, resolve_model_source

        config = AutoConfig.from_pretrained(resolve_model_source(settings.model), trust_remote_code=settings.trustRemoteCode)
        parameters = count_parameters(config)
        placement = choose_placement(settings.device, settings.quantization, parameters)
        lines.append(f"  {parameters / 1e6:,.1f} M parameters; device={settings.device} quantization={settings.quantization}"
                     f" -> {placement.device} {placement.precision} ({placement.reason})")
    except Exception as error:  # doctor reports problems, it never fails on them
        lines.append(f"  cannot inspect the model: {error}")
    lines.append(RECOMMENDATION)
    if torch.cuda.is_available():
        lines.append("On this GPU, quantization auto would run:")
        for name, parameters in STARCODER2_SIZES.items():
            placement = choose_placement("cuda", "auto", parameters)
            lines.append(f"  {name}: {placement.precision} ({placement.reason})")
        # The measured cost of a typing suggestion on the 15B shape (README "Performance").
        options = gpu_options(bitsandbytes_available(), hardware.fp8_capable("cuda:0"))
        tried = [f"{p} (~{suggestion_ms(p):.0f} ms)" for p in options]
        lines.append("  precisions auto tries, fastest first, 4-bit and fp8 only when over 10 % faster"
                     f" (a typing suggestion of StarCoder2-15B): {', '.join(tried)}")
        lines.append(f"  fastDecode compiles all but: {', '.join(sorted(EAGER_ONLY))} (decoded eager)")
    return "\n".join(lines)
