#!/usr/bin/env bash
# Set up a fresh machine and run the test suite (the CPU lane: Triton's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${KERNELAGENT_TEST_POSTGRES_URL:-}" ]; then
  KERNELAGENT_TEST_POSTGRES_URL=$(bash scripts/start_postgres.sh || true)
  export KERNELAGENT_TEST_POSTGRES_URL
fi
echo "PostgreSQL for the distributed test: ${KERNELAGENT_TEST_POSTGRES_URL:-none (that test will be skipped)}"
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
python -m pytest -q -n "${KERNELAGENT_TEST_WORKERS:-2}" --durations=15 "$@"
