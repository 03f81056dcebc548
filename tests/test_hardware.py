"""quantization auto: the fastest measured precision that fits the free GPU memory, and on
a CPU the fastest measured for its instruction set.

There is no GPU here, so CUDA's presence and its free memory are the test doubles, and
the CPU's flags for the CPU cases; the choice itself is the real code
(hardware.choose_placement, with the measured GPU figures or ones a test sets, and the CPU
figures).
"""

import re

import pytest
import torch

from infill_ls import hardware

STARCODER2_15B = 15_957_889_024
GIB = 2**30


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device (an H100's compute capability) with a settable amount of free memory."""
    free = {"bytes": 80 * GIB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(hardware, "cuda_free_bytes", lambda device: free["bytes"])
    return free


def choose(free_gib: float, gpu, monkeypatch, bitsandbytes: bool) -> hardware.Placement:
    gpu["bytes"] = int(free_gib * GIB)
    monkeypatch.setattr(hardware, "bitsandbytes_available", lambda: bitsandbytes)
    return hardware.choose_placement("auto", "auto", STARCODER2_15B)


def figures(monkeypatch, **decode_ms):
    """Measured figures set by the test: prefill 100 ms each, these decode ms/token."""
    monkeypatch.setattr(hardware, "GPU_MEASURED_MS", {p: (100, ms) for p, ms in decode_ms.items()})


@pytest.mark.parametrize("bitsandbytes", [True, False])
def test_a_gpu_that_holds_bf16_gets_bf16_where_it_is_fastest(gpu, monkeypatch, bitsandbytes):
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=11, **{"4bit": 30, "8bit": 100})
    assert choose(78, gpu, monkeypatch, bitsandbytes).precision == "bf16"


def test_without_room_for_bf16_the_fastest_measured_precision_that_fits_wins(gpu, monkeypatch):
    # 24 GiB holds int8wo and both 4-bit kinds, not bf16: the fastest of those three wins,
    # whichever it is.
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=11, **{"4bit": 30, "8bit": 100})
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "int8wo"
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=8, **{"4bit": 30, "8bit": 100})  # 17 % faster
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "int4wo"
    # A 4-bit kind only a little faster (4 %) loses to the one with more bits.
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=9.5, **{"4bit": 30, "8bit": 100})
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "int8wo"
    # 14 GiB holds only the 4-bit kinds: never an 8-bit kind that does not fit, however fast.
    figures(monkeypatch, bf16=9, int8wo=1, int4wo=11, **{"4bit": 30, "8bit": 1})
    placement = choose(14, gpu, monkeypatch, bitsandbytes=True)
    assert placement.precision == "int4wo" and "GiB free" in placement.reason
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=31, **{"4bit": 30, "8bit": 100})
    assert choose(14, gpu, monkeypatch, bitsandbytes=True).precision == "4bit"


def test_without_bitsandbytes_auto_uses_the_weight_only_kinds(gpu, monkeypatch):
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=11, **{"4bit": 1, "8bit": 1})
    assert choose(24, gpu, monkeypatch, bitsandbytes=False).precision == "int8wo"
    assert choose(14, gpu, monkeypatch, bitsandbytes=False).precision == "int4wo"
    # Room for neither: the smallest is tried, and the reason says so.
    placement = choose(6, gpu, monkeypatch, bitsandbytes=False)
    assert placement.precision == "int4wo" and "no precision fits" in placement.reason


def test_options_are_ordered_by_the_measured_time_of_a_suggestion():
    options = hardware.gpu_options(with_bitsandbytes=True)
    assert set(options) == set(hardware.GPU_MEASURED_MS)
    for same_bits in (("bf16", "int8wo", "8bit"), ("int4wo", "4bit")):  # the margin sits between these
        times = [hardware.suggestion_ms(p) for p in options if p in same_bits]
        assert times == sorted(times), (same_bits, options)
    assert set(hardware.gpu_options(with_bitsandbytes=False)) == {"bf16", "int8wo", "int4wo", "fp8"}
    assert set(hardware.gpu_options(with_bitsandbytes=False, with_fp8=False)) == {"bf16", "int8wo", "int4wo"}


@pytest.mark.parametrize("capability, expected", [((9, 0), "fp8"), ((8, 9), "fp8"), ((8, 0), "int8wo")])
def test_fp8_runs_where_the_gpu_multiplies_in_fp8_and_falls_back_to_int8wo_elsewhere(gpu, monkeypatch, capability,
                                                                                      expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    placement = hardware.choose_placement("cuda", "fp8", STARCODER2_15B)
    assert placement.precision == expected
    if expected != "fp8":
        assert "8.9" in placement.reason and f"{capability[0]}.{capability[1]}" in placement.reason


def test_fp8_once_measured_goes_first_only_when_over_10_percent_faster_and_where_the_gpu_has_it(gpu, monkeypatch):
    """fp8 rounds the activations too, so like the 4-bit kinds it must beat int8wo by more
    than the margin; and auto never picks it on a GPU without fp8 matrix multiplication."""
    figures(monkeypatch, bf16=20, int8wo=10, int4wo=30, fp8=9.5, **{"4bit": 40, "8bit": 100})
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "int8wo"  # 5 % faster: not enough
    figures(monkeypatch, bf16=20, int8wo=10, int4wo=30, fp8=8, **{"4bit": 40, "8bit": 100})
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "fp8"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100
    assert choose(24, gpu, monkeypatch, bitsandbytes=True).precision == "int8wo"
    assert "fp8" not in hardware.gpu_options(True, with_fp8=False)


def test_fp8_on_a_cpu_runs_and_says_it_is_emulated_where_torch_scales_its_rows(monkeypatch):
    """torch 2.13's CPU ``_scaled_mm`` takes Fp8Linear's scales per row (the probe runs it
    here); 2.11's scales per tensor only, which failed at the first suggestion: there fp8
    falls back to int8wo and says why (a torch without it is the test double)."""
    per_row = hardware.cpu_fp8_scales_per_row()
    assert per_row or torch.torch_version.TorchVersion(torch.__version__) < "2.13"  # (compared as versions)
    if per_row:
        placement = hardware.choose_placement("cpu", "fp8", 5_000_000)
        assert placement.precision == "fp8" and "emulated" in placement.reason
    monkeypatch.setattr(hardware, "cpu_fp8_scales_per_row", lambda: False)
    placement = hardware.choose_placement("cpu", "fp8", 5_000_000)
    assert placement.precision == "int8wo" and torch.__version__ in placement.reason


@pytest.mark.parametrize("flags, parameters, expected", [
    ({"avx2", "fma", "amx_bf16", "amx_tile"}, 5_000_000, "bf16"),  # Sapphire Rapids and later
    ({"avx2", "avx512f", "avx512_bf16"}, 3_000_000_000, "bf16"),  # Cooper Lake, Zen 4
    ({"avx2", "fma"}, 5_000_000, "float32"),  # a laptop (bf16 would be emulated), the bundled model
    ({"avx2", "fma"}, 3_000_000_000, "int8dyn"),  # the same laptop, StarCoder2-3B
    (set(), None, "int8dyn"),  # no /proc/cpuinfo (macOS) or an ARM CPU, a model of unknown size
])
def test_a_cpu_gets_the_precision_measured_fastest_for_its_instructions(monkeypatch, flags, parameters, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    placement = hardware.choose_placement("auto", "auto", parameters)
    assert (placement.device, placement.precision) == ("cpu", expected)
    # "none" means no quantization: float32, whatever the CPU.
    assert hardware.choose_placement("cpu", "none", 5_000_000).precision == "float32"


def test_doctor_on_a_gpu_lists_the_precisions_with_their_measured_cost(gpu, monkeypatch):
    """What `infill-ls doctor` prints on a GPU machine (CUDA's answers are test doubles)."""
    from infill_ls import doctor
    from infill_ls.settings import Settings

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (30 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "a test GPU")
    monkeypatch.setattr(hardware, "bitsandbytes_available", lambda: False)
    figures(monkeypatch, bf16=9, int8wo=10, int4wo=11, fp8=12, **{"4bit": 30, "8bit": 100})
    gpu["bytes"] = 30 * GIB
    text = doctor.report(Settings())
    assert "GPU cuda:0: a test GPU, 30.0 GiB free of 80.0 GiB" in text
    # 30 GiB holds bf16 for the 3B and 7B, not for the 15B: its fastest fitting precision.
    fastest_that_fits = next(p for p in hardware.gpu_options(False) if p != "bf16")
    assert "bigcode/starcoder2-7b: bf16" in text and f"bigcode/starcoder2-15b: {fastest_that_fits}" in text
    tried, shown = precisions_tried(text)
    assert [p for p, _ in shown] == hardware.gpu_options(False) and "4bit" not in tried
    assert {p: int(ms) for p, ms in shown} == {p: round(hardware.suggestion_ms(p)) for p in hardware.gpu_options(False)}
    assert "fastDecode compiles all but: 4bit, 8bit" in text
    assert "fp8" in [p for p, _ in shown]  # measured, and an H100 multiplies in fp8
    # A GPU without fp8 matrix multiplication: auto never tries it there.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    _, shown = precisions_tried(doctor.report(Settings()))
    assert [p for p, _ in shown] == ["bf16", "int8wo", "int4wo"]


def precisions_tried(report: str) -> tuple[str, list[tuple[str, str]]]:
    """Doctor's line of the precisions auto tries, and each with its measured suggestion time."""
    tried = next(line for line in report.splitlines() if "precisions auto tries" in line)
    return tried, re.findall(r"(\w+) \(~(\d+) ms\)", tried)
