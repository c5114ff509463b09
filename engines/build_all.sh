#!/usr/bin/env bash
# Engines from the graphs export/export_all.sh wrote, into engines/out/ (ignored by git), each with its
# NAME.engine.json manifest. Defaults: whichever TensorRT flavour is installed; TensorRT-RTX targets SM89 and
# SM86 (override: engines/build_all.sh --sm 120). Batch profile 1:1:8.
set -euo pipefail
here="$(dirname "$0")"
src="$here/../export/out"
out="$here/out"
mkdir -p "$out"
extra=("$@")
if [ ${#extra[@]} -eq 0 ] && python -c "import tensorrt_rtx" 2>/dev/null && ! python -c "import tensorrt; tensorrt.Builder" 2>/dev/null; then
  extra=(--sm 89 --sm 86)
fi
for name in smpler_fp32 smpler_fp16 smpler_int8_trt smpler_fp32_plugins smpler_fp16_plugins; do
  [ -f "$src/$name.onnx" ] || { echo "skip $name: $src/$name.onnx missing (run export/export_all.sh)"; continue; }
  plugins=(); [[ $name == *plugins ]] && plugins=(--plugins)
  smpler-export --format engine --onnx "$src/$name.onnx" "${plugins[@]}" --batch 1:1:8 "${extra[@]}" \
    --timing-cache "$out/timing.cache" --force -o "$out/$name.engine"
done
