"""Serving on NVIDIA Triton Inference Server: the model repository `smpler-export --format triton` writes, the
Python-backend model that does pre/post-processing (and can run the project's session), and a loopback launcher
for the tritonserver that NVIDIA's PyTriton wheel bundles (tests and the load benchmark)."""
