#!/usr/bin/env bash
# What a device-tool session runs on one H100 (see bench/README.md):
#   run(command="bash bench/gpu-run.sh", carry=[".whl"], timeout_s=600)           # the benchmark
#   run(command="bash bench/gpu-run.sh --tests", carry=[".whl"], timeout_s=600)   # engine tests on CUDA
#   run(command="bash bench/gpu-run.sh --script bench/gpu_prefill.py", carry=[".whl"], timeout_s=300)
# .whl holds wheels the device lacks (its image has torch, transformers 5.17, pytest; the
# working tree plus .whl must stay under the tool's 64 MiB); fetch them here with: bash bench/gpu-run.sh --download
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--download" ]]; then
  mkdir -p .whl
  # The device runs Python 3.12 on x86-64: fetch wheels for it, not for this machine.
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl bitsandbytes==0.50.2 \
    pygls==2.1.1 lsprotocol==2025.0.0 cattrs==26.2.1 attrs==26.1.0 pytest-lsp==1.0.1 pytest-asyncio==1.5.0 pathspec==1.1.1
  # bitsandbytes' wheel (43 MB) holds a library per CUDA, ROCm and XPU version, which took
  # the carried tree over the tool's 64 MiB: keep the device's (its torch is built for CUDA
  # 13.0; 13.2 beside it) and the CPU's, dropping the rest from the archive and its RECORD.
  python3 - .whl/bitsandbytes-*.whl <<'SLIM'
import sys, zipfile
path = sys.argv[1]
keep = ("_cpu.so", "_cuda130.so", "_cuda132.so")
dropped = lambda name: "/libbitsandbytes_" in name and not name.endswith(keep)
with zipfile.ZipFile(path) as wheel:
    entries = [(info, wheel.read(info)) for info in wheel.infolist() if not dropped(info.filename)]
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
    for info, data in entries:
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not dropped(line.split(b",")[0].decode()))
        wheel.writestr(info, data)
SLIM
  exit 0
fi
# --no-deps: never let pip touch the device's CUDA build of torch.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 \
  | grep -v "WARNING: Running pip as" || true
export PYTHONPATH=/tmp/site:$PWD/server
# bitsandbytes (7 MB as --download slims it) is only needed by the 8bit/4bit variants.
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>/dev/null || echo "no bitsandbytes"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--script" ]]; then  # another benchmark, e.g. --script bench/gpu_prefill.py
  exec python3 "${@:2}"
fi
if [[ "${1:-}" == "--tests" ]]; then
  exec python3 -m pytest tests/test_engine.py -q -p no:cacheprovider "${@:2}"
fi
# --isolate: each variant in a process of its own, so a new kernel that kills its CUDA
# context (an illegal address) costs only its own variant.
python3 bench/gpu.py --isolate --budget-s 480 "${@}"
