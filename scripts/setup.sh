#!/usr/bin/env bash
# Create .venv and install kernelagent with its test tools. Idempotent.
# torch is pinned to the CPU wheel this machine class ships (asking for a newer torch pulls
# several GB of CUDA packages); on a GPU machine, install your CUDA torch first and set
# KERNELAGENT_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "${KERNELAGENT_KEEP_TORCH:-0}" != "1" ]; then
  python -m pip install -q "torch==${KERNELAGENT_TORCH_VERSION:-2.13.0}"
fi
python -m pip install -q -e ".[test,postgres]"
python -c "import kernelagent, torch, triton; print(f'kernelagent ready: torch {torch.__version__}, triton {triton.__version__}')"
