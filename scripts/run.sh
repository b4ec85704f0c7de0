#!/usr/bin/env bash
# Set up a fresh machine and run the main job on embedded defaults: tune ops for an H100 with
# no GPU, no server and no API key. Without a GPU the `model` backend predicts from the SKU's
# spec sheet and a static compile for sm_90 (results are labelled predicted); every winning
# config is re-verified by the sandboxed harness (which runs Triton's interpreter itself).
# Studies resume from SQLite under ~/.cache/kernelagent; results go to the user library
# (~/.cache/kernelagent/library, or $KERNELAGENT_LIBRARY), which `kernelagent.kernels` reads.
# Extra arguments are passed to `kernelagent tune` (e.g. --ops all --trials 48).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
. .venv/bin/activate
if [ "$#" -eq 0 ]; then
  set -- --op softmax --op rms_norm --dtype bf16 --trials 12 --max-cases 1
fi
exec kernelagent tune --sku "${KERNELAGENT_SKU:-h100}" "$@"
