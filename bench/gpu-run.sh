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
  exit 0
fi
# --no-deps: never let pip touch the device's CUDA build of torch.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 \
  | grep -v "WARNING: Running pip as" || true
export PYTHONPATH=/tmp/site:$PWD/server
# bitsandbytes (43 MB) is left out of .whl when the working tree would pass the tool's limit:
# only the bnb-8bit/bnb-4bit variants need it.
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>/dev/null || echo "no bitsandbytes"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--script" ]]; then  # another benchmark, e.g. --script bench/gpu_prefill.py
  exec python3 "${@:2}"
fi
if [[ "${1:-}" == "--tests" ]]; then
  exec python3 -m pytest tests/test_engine.py -q -p no:cacheprovider "${@:2}"
fi
python3 bench/gpu.py --budget-s 480 "${@}"
