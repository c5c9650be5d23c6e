#!/usr/bin/env bash
# Create .venv (once) with lrpgraph and what the demo and tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import lrpgraph, onnxruntime, torch, pytest, skimage, efficientnet_lite_pytorch, captum, ray.data" 2>/dev/null; then
    # torch first and pinned: 2.13.0 is the CPU wheel on local disk; an open range would
    # pull a multi-GB CUDA build.
    .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[cpu,test,demo,ray]"
fi
