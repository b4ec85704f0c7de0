#!/usr/bin/env bash
# The GPU lane, one command on a GPU machine that has torch and triton but no network:
#   bash scripts/gpu_lane.sh [--budget-s 480] [--dry-run] [--only STEP,…]
# (1) a venv that sees the machine's CUDA torch (--system-site-packages) gets kernelagent's other
#     dependencies from .whl/ (built here by scripts/build_wheelhouse.sh, carried with the tree)
#     and kernelagent itself (no build step: the checkout goes on the path);
# (2)-(6) benchmarks/gpu_lane.py: gpu tests, re-verification, benchmarks, static compile, tuning,
#     summary — within the budget, everything under $OUT (or ./gpu-lane-out).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python3}
VENV=${KERNELAGENT_GPU_VENV:-/tmp/kernelagent-gpu-venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
. "$VENV/bin/activate"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-index --find-links .whl --no-cache-dir \
    optuna langgraph langgraph-checkpoint-sqlite openai nvidia-ml-py pytest-timeout 2>&1 | tail -5 || true
fi
# kernelagent from this checkout, editable: no build isolation (which would fetch setuptools
# from the network); setuptools >= 68 and wheel come from .whl when the image's are older.
python -m pip install -q --no-index --find-links .whl "setuptools>=68" wheel 2>&1 | tail -3 || true
python -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -5
python -c "import kernelagent.kernels, kernelagent.harness, torch, triton, optuna; print(f'kernelagent ready on {torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\"}: torch {torch.__version__}, triton {triton.__version__}')"
budget=${KERNELAGENT_GPU_LANE_BUDGET_S:-480}
left=$(( budget - ($(date +%s) - start) ))
exec python benchmarks/gpu_lane.py --budget-s "$left" "$@"
