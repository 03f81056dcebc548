#!/usr/bin/env bash
# Triton for tests/test_gemv.py, which runs gemv.py's kernels in Triton's interpreter on the
# CPU.  Installed into its own folder (not this environment: torch here must not see a
# Triton without a GPU) and kept there for later runs.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VERSION=3.9.0
SITE=${INFILL_TRITON_SITE:-$HOME/.cache/infill-ls/triton-site}
if PYTHONPATH="$SITE" "$PYTHON" -c "import sys, triton; sys.exit(triton.__version__ != '$VERSION')" 2>/dev/null; then
  exit 0
fi
echo "installing triton $VERSION into $SITE"
rm -rf "$SITE"
"$PYTHON" -m pip install -q --no-deps --no-compile --target "$SITE" "triton==$VERSION"
