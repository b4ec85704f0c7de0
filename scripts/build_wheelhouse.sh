#!/usr/bin/env bash
# Build .whl/: the wheels scripts/gpu_lane.sh installs on a GPU machine with no network, for
# Python 3.11 and 3.12 (x86_64 manylinux). Run here, where pip reaches the registry:
#   bash scripts/build_wheelhouse.sh            # → .whl/ (git-ignored; carry it to the GPU machine)
# kernelagent's dependencies, at the versions this checkout's .venv runs, with their own
# dependencies; wheels of packages the GPU image already has (torch, triton, numpy, …, see
# /work/.library/device/KINDS.md) are left out to keep the carried tree small.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
PKGS=(setuptools wheel optuna langgraph langgraph-checkpoint-sqlite openai nvidia-ml-py typer rich jinja2 hypothesis pytest pytest-timeout)
pins=()
for p in "${PKGS[@]}"; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | sed -n "s/^Version: //p" || true)
  pins+=("$p${v:+==$v}")
done
# On the image already (leave out): big binary wheels that must match its torch/CUDA build.
SKIP='^(torch|triton|numpy|nvidia_|sympy|networkx|filelock|fsspec|mpmath|jinja2|markupsafe|pyyaml|PyYAML|tqdm|packaging|typing_extensions|hypothesis|attrs|sortedcontainers|pytest|iniconfig|pluggy|pygments|rich|markdown_it_py|mdurl|typer|click|shellingham|httpx|httpcore|h11|anyio|idna|certifi|sniffio)-'
tmp=$(mktemp -d)
for py in 3.11 3.12; do
  "$PY" -m pip download -q --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$tmp" "${pins[@]}"
done
mkdir -p "$OUT"
for w in "$tmp"/*.whl; do
  name=$(basename "$w")
  if ! echo "$name" | grep -Eq "$SKIP" || echo "$name" | grep -Eq '^(pytest_timeout|nvidia_ml_py)-'; then
    cp "$w" "$OUT/"
  fi
done
rm -rf "$tmp"
echo "wheelhouse $OUT: $(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1)"
