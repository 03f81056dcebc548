"""Latency distributions for the README: bench/results/latency.png.

    python bench/plot.py

Draws what the latest results hold: the CPU typing replay (keystroke to suggestion,
server overhead) and, when bench/gpu.py has run, the GPU typing replay with and
without prompt-cache reuse.
"""

from __future__ import annotations

import json

from common import RESULTS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}-latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    typing = load("typing")
    if typing:
        samples = typing["results"]["samples"]
        where = typing["machine"].get("cpu_model", typing["machine"]["cpu"])
        panels.append(("CPU typing replay: keystroke to suggestion (ms)", {"answered": samples["keystroke_to_suggestion_ms"]}, where))
        panels.append(("CPU typing replay: server overhead, model excluded (ms)", {"per generation": samples["server_overhead_ms"]}, where))
    gpu = load("gpu")
    if gpu:
        for variant, result in gpu["results"].items():
            if "typing_with_reuse" in result:
                series = {"with reuse": result["typing_with_reuse"]["samples_ms"],
                          "without reuse": result["typing_without_reuse"]["samples_ms"]}
                if "typing_spm_with_reuse" in result:
                    series["suffix first (SPM), reuse"] = result["typing_spm_with_reuse"]["samples_ms"]
                panels.append((f"GPU typing replay, {variant}: single-line suggestion (ms)", series,
                               gpu["machine"].get("gpu", "")))
    if not panels:
        raise SystemExit("no results yet: run bench/typing.py (and bench/gpu.py on a GPU) first")
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for axis, (title, series, machine) in zip(axes[:, 0], panels):
        axis.boxplot(list(series.values()), orientation="horizontal", tick_labels=list(series.keys()), whis=(5, 95), showfliers=True)
        axis.set_title(f"{title}\n{machine}", fontsize=9)
        axis.set_xscale("log")
        axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    out = RESULTS / "latency.png"
    figure.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
