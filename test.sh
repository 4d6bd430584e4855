#!/usr/bin/env bash
# The whole test suite, from a clean clone: set-up with the test programs, then pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
exec .venv/bin/python -m pytest "$@"
