#!/usr/bin/env bash
# Create .venv and install kernelagent with its test tools. Idempotent and quiet: when
# pyproject.toml and this script are unchanged since the last successful run, it only checks
# the install; otherwise pip's output goes to .venv/setup.log (shown if pip fails).
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
stamp=.venv/.kernelagent-setup
want=$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)-${KERNELAGENT_KEEP_TORCH:-0}-${KERNELAGENT_TORCH_VERSION:-2.13.0}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! python -c "import kernelagent" 2>/dev/null; then
  log=.venv/setup.log
  {
    python -m pip install -q --upgrade pip
    if [ "${KERNELAGENT_KEEP_TORCH:-0}" != "1" ]; then
      python -m pip install -q "torch==${KERNELAGENT_TORCH_VERSION:-2.13.0}"
    fi
    python -m pip install -q -e ".[test,postgres]"
  } >"$log" 2>&1 || { cat "$log" >&2; echo "setup failed (log: $log)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
python -c "import kernelagent, torch, triton; print(f'kernelagent ready: torch {torch.__version__}, triton {triton.__version__}')"
