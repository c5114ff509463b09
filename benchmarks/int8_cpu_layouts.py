"""int8 --target cpu layouts that avoid AVX2's int16 saturation: fidelity and batch-1 latency on this CPU.

u8s8 with 7-bit weights (reduce_range, what smpler-export ships), s8s8 and u8u8 with 8-bit weights: the fidelity of
each graph on 8 held-out crops vs PyTorch fp32, how many convolutions ONNX Runtime fuses into int8 kernels
(QLinearConv/ConvInteger in the optimized graph) and batch-1 latency (2 threads, 20 interleaved iterations).

    python benchmarks/int8_cpu_layouts.py
"""
import os, statistics, tempfile, time
from pathlib import Path
import onnx, torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
import onnxruntime as ort
from smpler_deploy import load_model
from smpler_deploy.export.int8 import _Reader, backbone_convs
from smpler_deploy.export.onnx_export import export_torch_graph
from smpler_deploy.fidelity import fidelity
from smpler_deploy.model.checkpoint import calibration_batch
from smpler_deploy.preprocess import heldout_crops
from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

m = load_model("smpler"); x = heldout_crops(8)[0]
with torch.no_grad(): ref = m(torch.from_numpy(x)).numpy()
tmp = Path(tempfile.mkdtemp()); fp32 = tmp / "f.onnx"; export_torch_graph(m, fp32)
nodes = backbone_convs(onnx.load(str(fp32), load_external_data=False))
cells = {"u8s8 7-bit (shipped)": (QuantType.QUInt8, QuantType.QInt8, True),
         "s8s8 8-bit": (QuantType.QInt8, QuantType.QInt8, False),
         "u8u8 8-bit": (QuantType.QUInt8, QuantType.QUInt8, False)}
sess = {}
for name, (act, wt, rr) in cells.items():
    p = tmp / (name.split()[0] + ".onnx")
    quantize_static(str(fp32), str(p), _Reader(calibration_batch(16)), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], nodes_to_quantize=nodes, per_channel=True, activation_type=act,
                    weight_type=wt, calibrate_method=CalibrationMethod.MinMax, reduce_range=rr,
                    extra_options={"WeightSymmetric": wt == QuantType.QInt8})
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.optimized_model_filepath = str(tmp / (p.stem + "_opt.onnx"))
    s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    fused = sum(n.op_type in ("QLinearConv", "ConvInteger") for n in opt.graph.node)
    s2 = OnnxRuntimeSession(p, threads=2)
    v = fidelity(ref, s2.infer(x))["vertices"]
    sess[name] = [s2, [], fused, v]
for s2, ms, *_ in sess.values():
    for _ in range(3): s2.infer(x[:1])
for _ in range(20):
    for name, c in sess.items():
        t0 = time.perf_counter(); c[0].infer(x[:1]); c[1].append((time.perf_counter() - t0) * 1e3)
for name, (s2, ms, fused, v) in sess.items():
    print(f"{name}: fused int8 convs {fused}, vertices mean {v['mean_mm']:.2f} max {v['max_mm']:.1f} mm, "
          f"p50 {statistics.median(ms):.0f} ms min {min(ms):.0f} ms")
print("loadavg", os.getloadavg())
