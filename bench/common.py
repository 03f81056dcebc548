"""Helpers shared by the benchmark scripts: statistics, the machine's name, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "tests"))
# Every run times the kernel choices at load and prints them (quantize.keep_fastest): none
# is taken from a file an earlier run (or a server) left.
os.environ["INFILL_LS_KERNEL_CHOICES"] = os.path.join(tempfile.mkdtemp(prefix="infill-bench-"), "choices.json")


def percentile(values: list[float], share: float) -> float | None:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3) if values else None,
        "p95": round(percentile(values, 0.95), 3) if values else None,
        "mean": round(statistics.fmean(values), 3) if values else None,
    }


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    # Instruction-set caps (to measure a CPU without AVX-512/AMX on one that has them).
    caps = {k: os.environ[k] for k in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    if caps:
        info["isa_limits"] = caps
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# A run split over processes (bench/gpu.py --isolate) passes its stamp on: one result file.
RUN_STAMP = os.environ.get("INFILL_BENCH_STAMP") or time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def result_path(name: str) -> Path:
    """This run's result file for benchmark NAME: ``bench/results/NAME-<run start>.json``."""
    return RESULTS / f"{name}-{RUN_STAMP}.json"


def write_result(name: str, payload: dict) -> Path:
    """Write ``bench/results/NAME-<run start>.json`` and ``NAME-latest.json``; return the first.

    Written again as a run goes on, the same files hold its latest figures.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **payload}
    text = json.dumps(payload, indent=2)
    path = result_path(name)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    if os.environ.get("OUT"):  # on the device tool's machine: what is under $OUT comes back
        (Path(os.environ["OUT"]) / path.name).write_text(text)
    return path
