#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
# torch is installed first and pinned: an unpinned torch pulls gigabytes of
# CUDA packages. Re-running is cheap: nothing is reinstalled unless
# pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
# Test-only readers of the export formats (datumaro, label-studio-sdk) pin below this stack
# (older pyarrow, pillow, numpy), so they live in their own folder, installed without their
# dependency pins, and only the export tests put it on sys.path (tests/conftest.py).
TEST_READERS=(
  datumaro==1.13.12 label-studio-sdk==2.1.2 cachetools==8.0.2 defusedxml==0.7.1 ijson==3.6.0
  imagesize==2.0.1 json-stream==2.5.1 json-stream-rs-tokenizer==0.5.4 lxml==6.1.3
  orjson==3.13.0 pandas==2.3.3 pytz==2026.6 ruamel.yaml==0.19.1 shapely==2.2.0
  tzdata==2026.6 ujson==6.1.0
)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q "$TORCH_PIN"
  .venv/bin/python -m pip install -q -e ".[dev,export,onnx,train,detect]"
  # The official implementations, as test/benchmark references only: without their
  # dependency lists, which would pull a CUDA torchvision (the tests give them a stand-in).
  SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install -q --no-deps segment-anything==1.0 sam2==1.1.0
  .venv/bin/python -m pip install -q hydra-core==1.3.2 iopath==0.1.10
  rm -rf .venv/test-readers
  .venv/bin/python -m pip install -q --no-deps --target .venv/test-readers "${TEST_READERS[@]}"
  .venv/bin/python -c "import torch; assert torch.__version__.startswith('${TORCH_PIN#torch==}'), torch.__version__"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
