#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server for tests/test_remote.py: llama-cpp-python[server],
# built from source (there is no PyPI wheel), plus llama.cpp's GGUF converter from the
# same source distribution.  The build takes long on 2 cores, so the sdist, the built
# wheel and the unpacked converter are cached under $INFILL_LLAMACPP_CACHE
# (default ~/.cache/infill-ls/llamacpp) and reused by later runs.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VERSION=0.3.36
CACHE=${INFILL_LLAMACPP_CACHE:-$HOME/.cache/infill-ls/llamacpp}
SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
SOURCE=$CACHE/src/llama_cpp_python-$VERSION/vendor/llama.cpp

installed() {
  "$PYTHON" - "$VERSION" <<'EOF' 2>/dev/null
import sys
import llama_cpp, llama_cpp.server.app  # the server extra's imports too
sys.exit(llama_cpp.__version__ != sys.argv[1])
EOF
}

if installed && [ -f "$SOURCE/convert_hf_to_gguf.py" ]; then
  exit 0
fi
mkdir -p "$CACHE/wheels" "$CACHE/src"

if [ ! -f "$SDIST" ]; then
  echo "downloading the llama-cpp-python $VERSION source distribution"
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE"
fi

if [ ! -f "$SOURCE/convert_hf_to_gguf.py" ]; then
  tar -xzf "$SDIST" -C "$CACHE/src" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/conversion" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/gguf-py"
fi

WHEEL=$(ls "$CACHE"/wheels/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  echo "building llama-cpp-python $VERSION from source (about 25-40 minutes on 2 busy cores; cached afterwards)"
  started=$(date +%s)
  # Portable x86-64-v3 code rather than -march=native, so a cache copied to another
  # machine still runs; no tests, examples or curl.
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF" \
    nice "$PYTHON" -m pip wheel -q --no-deps -w "$CACHE/wheels" "$SDIST"
  echo "built in $(( $(date +%s) - started )) s"
  WHEEL=$(ls "$CACHE"/wheels/llama_cpp_python-"$VERSION"-*.whl | head -n1)
fi

"$PYTHON" -m pip install -q "$WHEEL[server]"
installed
