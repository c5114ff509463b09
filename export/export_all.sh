#!/usr/bin/env bash
# Every ONNX graph of one model into export/out/ (ignored by git): fp32, fp16, int8 for TensorRT and for
# ONNX Runtime CPU, and the plugin variants. Pass the usual smpler-export flags through, e.g.
#   export/export_all.sh --checkpoint SMPLer_h36m.pt --smpl-model SMPL_NEUTRAL.pkl --calib crops/
set -euo pipefail
out="$(dirname "$0")/out"
mkdir -p "$out"
calib=()
args=()
while [ $# -gt 0 ]; do  # --calib only applies to the int8 exports
  if [ "$1" = "--calib" ]; then calib=(--calib "$2"); shift 2; else args+=("$1"); shift; fi
done
smpler-export "${args[@]}" --precision fp32 --force -o "$out/smpler_fp32.onnx"
smpler-export "${args[@]}" --precision fp16 --force -o "$out/smpler_fp16.onnx"
smpler-export "${args[@]}" --precision int8 --target trt "${calib[@]}" --force -o "$out/smpler_int8_trt.onnx"
smpler-export "${args[@]}" --precision int8 --target cpu "${calib[@]}" --force -o "$out/smpler_int8_cpu.onnx"
smpler-export "${args[@]}" --precision fp32 --plugins --force -o "$out/smpler_fp32_plugins.onnx"
smpler-export "${args[@]}" --precision fp16 --plugins --force -o "$out/smpler_fp16_plugins.onnx"
