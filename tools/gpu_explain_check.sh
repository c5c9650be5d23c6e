#!/usr/bin/env bash
# On a lent GPU machine (onnxruntime-gpu importable, wheels in .whl/): `lrpgraph explain`
# with the CUDA provider on the bundled photos, against the CPU provider. Writes $OUT/.
set -uo pipefail
OUT=${OUT:-/tmp/out}
W=/tmp/w
mkdir -p "$OUT" $W
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site .
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
python3 tools/export_efficientnet.py -o $W/eff.onnx 2>&1 | tail -1
python3 -m lrpgraph build $W/eff.onnx -o $W/eff.lrp.onnx | tail -1
python3 tools/sample_photos.py $W/orig
rm -rf $W/photos && mkdir -p $W/photos
for i in $(seq 1 12); do for f in $W/orig/*.jpg; do cp "$f" "$W/photos/$(basename "$f" .jpg)_$i.jpg"; done; done
for p in cuda cpu; do
  s=$(date +%s%N)
  python3 -m lrpgraph explain $W/eff.lrp.onnx $W/photos -o $W/$p --provider $p --batch-size 16 --quiet
  e=$(date +%s%N); echo "$p: $(( (e - s) / 1000000 )) ms for $(wc -l < $W/$p/results.jsonl) images (process start included)"
done
python3 - <<'PY'
import glob, json, os, numpy as np
worst = 0.0
for f in glob.glob("/tmp/w/cpu/*.npy"):
    a, b = np.load(f), np.load(f.replace("/cpu/", "/cuda/"))
    worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
print(f"CUDA vs CPU heatmaps: max |diff| / max |cpu| = {worst:.2e}")
same = all(json.loads(x)["class"] == json.loads(y)["class"] for x, y in
           zip(sorted(open("/tmp/w/cpu/results.jsonl")), sorted(open("/tmp/w/cuda/results.jsonl"))))
print("same predicted classes:", same)
PY
cp $W/cuda/results.jsonl "$OUT/results_cuda.jsonl"
