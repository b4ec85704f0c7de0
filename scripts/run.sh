#!/usr/bin/env bash
# Set up a fresh machine and run the main job on embedded defaults (no GPU, server or API key).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
. .venv/bin/activate
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
kernelagent verify softmax kernels/softmax/kernel.py "$@"
