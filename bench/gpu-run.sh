#!/usr/bin/env bash
# What a device-tool session runs on one H100 (see bench/README.md):
#   run(command="bash bench/gpu-run.sh", carry=[".whl"], timeout_s=600)           # the benchmark
#   run(command="bash bench/gpu-run.sh --tests", carry=[".whl"], timeout_s=600)   # engine tests on CUDA
# .whl holds wheels the device lacks; fetch them here with: bash bench/gpu-run.sh --download
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--download" ]]; then
  mkdir -p .whl
  pip download --no-deps -d .whl bitsandbytes==0.50.2 transformers==5.24.0 tokenizers==0.23.3 \
    huggingface_hub==2.4.0 safetensors==0.8.0 \
    pygls==2.1.1 lsprotocol==2025.0.0 cattrs==26.2.1 attrs==26.1.0 \
    pytest-lsp==1.0.1 pytest-asyncio==1.5.0 pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0
  exit 0
fi
# --no-deps: never let pip touch the device's CUDA build of torch.
pip install --no-deps -q .whl/*.whl 2>&1 | grep -v "WARNING: Running pip as" || true
python -c "import torch, transformers, bitsandbytes; print(torch.__version__, transformers.__version__, bitsandbytes.__version__, torch.cuda.get_device_name(0))"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--tests" ]]; then
  exec python -m pytest tests/test_engine.py -q -x -p no:cacheprovider
fi
python bench/gpu.py --budget-s 480 "${@}"
