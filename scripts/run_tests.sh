#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite on CPU. Extra arguments go to pytest.
# Usage: bash scripts/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" --dev
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
