#!/usr/bin/env bash
# What a device-tool session runs on one H100 (see the report / README):
#   run(command="bash bench/gpu-run.sh", carry=[".whl"], timeout_s=600)
# .whl holds wheels the device lacks (fetch them here with: bash bench/gpu-run.sh --download).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--download" ]]; then
  mkdir -p .whl
  pip download --no-deps -d .whl bitsandbytes==0.50.2 transformers==5.24.0 tokenizers==0.23.3 \
    huggingface_hub==2.4.0 safetensors==0.8.0
  exit 0
fi
# --no-deps: never let pip touch the device's CUDA build of torch.
pip install --no-deps -q .whl/*.whl 2>&1 | grep -v "WARNING: Running pip as" || true
python -c "import torch, transformers, bitsandbytes; print(torch.__version__, transformers.__version__, bitsandbytes.__version__, torch.cuda.get_device_name(0))"
export PYTHONUNBUFFERED=1
python bench/gpu.py --budget-s 480 "${@}"
