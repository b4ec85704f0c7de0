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
# Headless Chromium renders the nightly HTML report in its test (Debian's package).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium: the report-rendering test will be skipped" >&2
fi
echo "PostgreSQL for the distributed test: ${KERNELAGENT_TEST_POSTGRES_URL:-none (that test will be skipped)}"
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
python -m pytest -q -n "${KERNELAGENT_TEST_WORKERS:-2}" --durations=15 "$@"
