#!/usr/bin/env bash
# One training leg on the device tool's GPU (training/README.md), continuing from the
# shipped model with a fresh optimizer (--init-from) for MINUTES of training:
#   run(command="bash training/gpu-run.sh 7", carry=[".corpus", ".whl-train"], timeout_s=560)
# The new model comes back as $OUT/model.tar.part-* (the tool returns files under 16 MiB;
# here: cat model.tar.part-* | tar x), the whole log as $OUT/train.log.  Extra arguments go
# to training.train.  A dry run on the CPU:
#   DEVICE=cpu WORKERS=0 WORK=/tmp/work OUT=/tmp/out bash training/gpu-run.sh 1 --max-steps 1
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-7}
shift || true
OUT=${OUT:-/tmp/out}
WORK=${WORK:-training/work}
mkdir -p "$OUT" "$WORK"
if [[ -d .whl-train ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl-train/*.whl 2>&1 \
    | grep -v "Running pip as" || true
fi
export PYTHONPATH=/tmp/site:$PWD/server PYTHONUNBUFFERED=1
[[ -f "$WORK/data/manifest.json" ]] || tar xJf .corpus/corpus.tar.xz -C "$WORK"
python3 -m training.train --preset gpu-small --device "${DEVICE:-cuda}" --workers "${WORKERS:-14}" --threads 4 \
  --seed 0 --max-minutes "$MINUTES" --save-every 400 --work "$WORK" \
  --init-from server/infill_ls/models/infill-small --out /tmp/infill-model "$@" 2>&1 | tee "$OUT/train.log" | tail -25
tar cf - -C /tmp infill-model | split -b 15000000 - "$OUT/model.tar.part-"
ls -la "$OUT"
