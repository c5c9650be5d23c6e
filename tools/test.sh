#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
