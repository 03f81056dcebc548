"""The issue's table from one run of bench/gpu.py: a Markdown table to paste into the README.

    python bench/gpu_table.py                                   # bench/results/gpu-latest.json
    python bench/gpu_table.py bench/results/gpu-20261127-205631.json

Per variant: footprint against the model card's, prefill of the run's prompt, decode ms/token
p50 (p95) on each path (transformers' eager ``generate``, the engine's eager loop, its compiled
static-cache path), the best path's achieved bandwidth (and % of an H100's 3.35 TB/s), its
ratio to bf16's eager ``generate`` in the same run, and the issue's targets (8-bit kinds
<= 8 ms/token, 4-bit kinds <= 6, footprint within the card's).  Reads what gpu.py wrote;
measures nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpu import H100_BYTES_PER_S, PATHS  # gpu.py imports torch only where it measures
# The decode targets (ms/token on an H100), by the bits a kind stores per weight.
TARGET_MS = {"int8wo": 8.0, "fp8": 8.0, "8bit": 8.0, "int4wo": 6.0, "4bit": 6.0}


def p50(measured: dict, field: str) -> float | None:
    return (measured.get(field) or {}).get("p50")


def cell(measured: dict, field: str) -> str:
    """``p50 (p95)`` of one path's field, or why the path has none."""
    if not measured:
        return "—"
    if "skipped" in measured or "error" in measured:
        return "not run"
    figures = measured.get(field) or {}
    if figures.get("p50") is None:
        return "—"
    return f"{figures['p50']:.2f} ({figures['p95']:.2f})" if field == "decode_ms_per_token" else f"{figures['p50']:.0f}"


def best_path(result: dict) -> str | None:
    """The path with the lowest decode p50."""
    timed = [(p50(result.get(path, {}), "decode_ms_per_token"), path) for path in PATHS]
    timed = [(ms, path) for ms, path in timed if ms]
    return min(timed)[1] if timed else None


def verdict(variant: str, result: dict, best_ms: float | None, bf16_best_ms: float | None) -> str:
    """The issue's targets: the kind's ms/token, faster than bf16's best path, footprint within the card's."""
    kind = variant.partition("+")[0].partition("-")[0]
    notes = []
    if kind in TARGET_MS and best_ms:
        notes.append(f"≤ {TARGET_MS[kind]:g} ms: {'met' if best_ms <= TARGET_MS[kind] else 'missed'}")
        if bf16_best_ms:
            notes.append(f"{'faster' if best_ms < bf16_best_ms else 'not faster'} than bf16's best")
    card = result.get("model_card_mb")
    if card and result.get("footprint_mb"):
        notes.append(f"footprint: {'within' if result['footprint_mb'] <= card else 'over'}")
    return "; ".join(notes)


def table(run: dict) -> str:
    machine = run.get("machine", {})
    peak = f"{H100_BYTES_PER_S / 1e12:g} TB/s"
    lines = [f"{machine.get('gpu') or machine.get('cpu_model', 'CPU')}, torch {machine.get('torch', '?')}, "
             f"{run.get('time', '?')}; prompt {run.get('prompt_tokens')} tokens, {run.get('new_tokens')} new; "
             f"decode ms/token p50 (p95); paths: `generate` / engine eager / engine compiled; "
             f"ratios to bf16's `generate` in the same run; {run.get('elapsed_s', '?')} s in all",
             "",
             f"| variant | footprint MB (card) | prefill ms | decode ms/token | best: GB/s (% of {peak}) "
             "| best vs bf16 `generate` | targets |",
             "|---|---:|---|---|---:|---:|---|"]
    bf16 = run["results"].get("bf16", {})
    baseline = p50(bf16.get("generate_eager", {}), "decode_ms_per_token")
    bf16_best = p50(bf16.get(best_path(bf16) or "", {}), "decode_ms_per_token")
    for variant, result in run["results"].items():
        if "error" in result or "skipped" in result:
            why = result.get("error") or result.get("skipped")
            lines.append(f"| {variant} | not run: {why[:120]} | | | | | |")
            continue
        best = best_path(result)
        chosen = result.get(best, {}) if best else {}
        footprint = f"{result['footprint_mb']:,}" + (f" ({result['model_card_mb']:,})" if "model_card_mb" in result else "")
        prefill = " / ".join(cell(result.get(path, {}), "prefill_ms") for path in PATHS)
        decode = " / ".join(cell(result.get(path, {}), "decode_ms_per_token") for path in PATHS)
        rate = f"{chosen['achieved_GB_s']:,.0f} ({chosen['percent_of_h100']:.0f} %)" if "achieved_GB_s" in chosen else "—"
        best_ms = p50(chosen, "decode_ms_per_token")
        # Computed here rather than read from gpu.py's speedup fields, which runs before
        # 2026-11-27 21:19 lack when bf16 came last.
        ratio = f"{baseline / best_ms:.2f}×" if baseline and best_ms else "—"
        target = verdict(variant, result, best_ms, bf16_best)
        lines.append(f"| {variant} | {footprint} | {prefill} | {decode} | {rate} | {ratio} | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", nargs="?", default=str(Path(__file__).parent / "results" / "gpu-latest.json"))
    print(table(json.loads(Path(parser.parse_args().result).read_text())))


if __name__ == "__main__":
    main()
