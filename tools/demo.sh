#!/usr/bin/env bash
# The main job on built-in defaults: install, export two classifiers, build their
# explainers, explain scikit-image's bundled photos into demo_out/heatmaps/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PY=.venv/bin/python
LRP=.venv/bin/lrpgraph
# A real ImageNet classifier that installs offline: the heatmaps mean something.
$PY tools/export_efficientnet.py -o exported_models/efficientnet_lite0.onnx
# ResNet50 with torchvision's ImageNet weights where they can be had; else seeded weights (said so).
$PY tools/export_resnet.py resnet50 --weights IMAGENET1K_V1 --seed 0 -o exported_models/resnet50.onnx
$LRP build exported_models/efficientnet_lite0.onnx -o exported_models/efficientnet_lite0.lrp.onnx
$LRP build exported_models/resnet50.onnx -o exported_models/resnet50.lrp.onnx
$PY tools/sample_photos.py demo_out/photos
status=0
$LRP explain exported_models/efficientnet_lite0.lrp.onnx demo_out/photos -o demo_out/heatmaps/efficientnet_lite0 --sheet --overwrite || status=$?
$LRP explain exported_models/resnet50.lrp.onnx demo_out/photos -o demo_out/heatmaps/resnet50 --sheet --overwrite || status=$?
echo "heatmaps (.npy, .png, _overlay.png), results.jsonl and sheet.png are in demo_out/heatmaps/; start with efficientnet_lite0/sheet.png (ResNet50 has random weights here)"
exit $status
