#!/usr/bin/env bash
# The Python packages the lent GPU machines lack, as wheels for their Python, into .whl/ (ignored by git; the device
# tool carries it with `carry: [".whl"]`, and tests/gpu/on_device.sh installs it there):
#
#   tests/gpu/wheels.sh [DIR] [PYTHON_VERSION]      # default .whl and 3.12 (the GPU image's Python)
#
# - deepspeed: a source package; built here, with the checkout's torch, into a pure-Python wheel (no compiler there
#   is needed for it; its JIT ops are compiled there at first use);
# - deepspeed's and the web stack's packages that the GPU image does not have (listed in
#   /work/.library/device/KINDS.md, 2026-11-17): pydantic, gradio, fastapi, uvicorn, …, at the versions .venv runs.
# About 42 MB, under the tool's 64 MiB with the checkout. The machine's own torch, transformers, numpy, httpx,
# prometheus_client, psutil and nvidia-ml-py are used as they are (README "On a GPU" names the versions seen).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
PYVER=${2:-3.12}
VENV_PY=.venv/bin/python
NEEDED="hjson pydantic pydantic-core annotated-types typing-inspection gradio gradio-client fastapi starlette uvicorn
opentelemetry-api brotli groovy hf-gradio orjson pydub python-multipart pytz safehttpx semantic-version tomlkit tzdata"

mkdir -p "$DIR"
"$VENV_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" \
  "deepspeed==$("$VENV_PY" -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
pins=()
for name in $NEEDED; do
  pins+=("$name==$("$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${pins[@]}"
du -sh "$DIR"
