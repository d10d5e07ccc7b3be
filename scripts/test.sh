#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh, cheap when nothing changed) and runs the test suite
# with the venv's Python. Arguments go to pytest, e.g. scripts/test.sh test/test_setup_colcon.py -x
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/setup.sh
PY="$REPO_ROOT/.venv/bin/python"
# A sourced system ROS puts its own rclpy (another Python) on PYTHONPATH; the venv brings everything.
unset PYTHONPATH

args=(-q -ra --durations=15)
# A hung DDS exchange or subprocess must fail its test, not stall the whole run.
if "$PY" -c 'import pytest_timeout' >/dev/null 2>&1; then
  args+=(--timeout="${PYTEST_TIMEOUT:-600}")
fi

# No arguments: the whole suite under test/. Otherwise the arguments choose (pytest.ini's
# testpaths still limits collection to test/ when they name no path).
if (($# == 0)); then
  set -- test/
fi
echo "[test] $PY -m pytest ${args[*]} $*"
exec "$PY" -m pytest "${args[@]}" "$@"
