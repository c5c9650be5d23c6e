#!/usr/bin/env bash
# Create .venv (once) with lrpgraph and what the demo and tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import lrpgraph, onnxruntime, onnxscript, torch, torchvision, pytest, skimage, efficientnet_lite_pytorch, captum, ray.data" 2>/dev/null; then
    # torch first and pinned, with the torchvision built for it (the CNN families of
    # tests/test_families.py and tools/zoo.py): both from the local package index; an open
    # range would pick another build.
    .venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[cpu,test,demo,ray]"
fi
