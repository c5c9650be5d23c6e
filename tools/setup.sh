#!/usr/bin/env bash
# Create .venv (once) with lrpgraph and what the demo needs; with --test, also what the
# tests need beyond Python (OpenVINO, Node + onnxruntime-web, Chromium). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import lrpgraph, onnxruntime, onnxscript, torch, torchvision, pytest, skimage, efficientnet_lite_pytorch, captum, ray.data, lxt.efficient" 2>/dev/null; then
    # torch first and pinned, with the torchvision built for it (the CNN families of
    # tests/test_families.py and tools/zoo.py): both from the local package index; an open
    # range would pick another build.
    .venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[cpu,test,demo,ray]"
fi
[ "${1:-}" = "--test" ] || exit 0
# What only the tests need: other runtimes and a real browser (tests/test_runtimes.py,
# tests/test_web.py): OpenVINO and Selenium, Node with onnxruntime-web from
# package-lock.json, Debian's chromium and its driver.
if ! .venv/bin/python -c "import openvino, selenium" 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[runtimes]"
fi
missing=""
command -v node >/dev/null && command -v npm >/dev/null || missing="$missing nodejs npm"
command -v chromium >/dev/null || missing="$missing chromium"
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get install -y -q $missing || (apt-get update -q && apt-get install -y -q $missing)) >/dev/null
    else
        echo "setup: needs$missing (as root: apt-get install$missing)" >&2
        exit 1
    fi
fi
if [ ! -f node_modules/onnxruntime-web/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
