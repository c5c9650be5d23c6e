#!/usr/bin/env bash
# The GPU benchmark as run on a lent H100/H200 (see ../shared/device/README.md for bringing
# onnxruntime-gpu there in parts). Expects onnxruntime-gpu importable (PYTHONPATH) and the
# wheels of onnx-graphsurgeon and zennit in .whl/. Writes $OUT/bench_gpu.md.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
PYTHONUNBUFFERED=1 timeout 500 python3 tools/bench.py --provider cuda --batches 1 8 64 --runs 10 --dtypes float32 float16 --cuda-graph --cuda-nhwc \
    --workdir /tmp/work --out "$OUT/bench_gpu.md" 2>&1 | grep -v -i "warning" | tee "$OUT/bench_gpu.log"
