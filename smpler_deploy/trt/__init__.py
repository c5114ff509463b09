"""The TensorRT plumbing both `engine/` (build) and `runtime/` (sessions) use, and nothing heavier:

`importer` (tensorrt / tensorrt_rtx, lazily), `plugins` (IPluginV3 creators and their registration),
`launch` (AOT kernels through the CUDA driver API), `cuda_mem` (buffers, streams, graphs over cuda-python's
runtime API) and `manifest` (the JSON beside every engine). No torch, no Triton.
"""
