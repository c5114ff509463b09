"""Every decision of the PyTorch session that needs no GPU: device and precision policy (when to capture a CUDA
graph is the one policy in `graphs.py`).

`runtime/torch_session.py` only executes what these functions decide, so they are tested on any CPU machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import OptionError, SmplerError, opt
from ..precision import FP32, TORCH_NAMES, Precision
from .graphs import GraphPolicy

# torch dtype name of the half-precision parts, per torch precision (precision.TORCH_NAMES)
DTYPES = dict(zip(TORCH_NAMES, ("float32", "float16", "bfloat16")))
# What stays float32 under fp16/bf16: the same islands the fp16 ONNX export keeps (`SMPLer.set_precision`).
FP32_PARTS = ("LayerNorm statistics", "softmax", "HMR regressor", "SMPL layer", "rotation/camera math",
              "joints -> sampling-window path", "transformer predictors (theta/beta/cam)")


@dataclass(frozen=True)
class TorchPlan:
    device: str  # "cpu" | "cuda" | "cuda:N"
    precision: Precision  # fp32 | fp16 | bf16 (`Precision.runs_in_torch`)
    dtype: str  # torch dtype name of the half-precision parts ("float32" for fp32)
    fp32_parts: tuple[str, ...]  # empty for fp32
    cuda_graphs: bool
    compile: bool
    attention: str

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def cuda_index(self) -> int | None:
        """The device to make current around GPU work: N for cuda:N, 0 for plain cuda, None on the CPU."""
        if not self.is_cuda:
            return None
        return int(self.device[5:]) if self.device.startswith("cuda:") else 0


def parse_device(device: str, field: str = "device") -> str:
    """'cpu' | 'cuda' | 'cuda:N', any case; errors name the option `field`."""
    d = str(device).strip().lower()
    if d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        return d
    raise OptionError(field, device, "expected cpu, cuda or cuda:N")


def cuda_unavailable_reason() -> str | None:
    """Why torch cannot use a CUDA device here (one line), or None when it can."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (no NVIDIA GPU or driver visible)"
    return None


def plan_torch(device: str = "cpu", precision: Precision | str = FP32, *, cuda_graphs: bool | None = None,
               compile: bool = False, attention: str = "torch", cuda_check: Callable[[], str | None] | None = None,
               field: str = "device") -> TorchPlan:
    """Validate a TorchSession request; raise a one-line SmplerError naming the option when it cannot run
    (`field`: the device option's name).

    precision: a Precision (or its report spelling, parsed here once).
    cuda_graphs: None = on for CUDA (capture per batch size, replay), off on CPU (nothing to capture).
    """
    device = parse_device(device, field)
    precision = Precision.parse(precision)
    precision.require_torch()
    is_cuda = device.startswith("cuda")
    if is_cuda:
        why = (cuda_check or cuda_unavailable_reason)()
        if why:
            raise OptionError(field, device, f"{why}; use {opt(field)} cpu")
    if cuda_graphs is None:
        cuda_graphs = is_cuda
    if cuda_graphs and not is_cuda:
        raise OptionError("cuda_graphs", None, f"CUDA graphs need {opt(field)} cuda (got {device})")
    if attention == "triton" and precision.kind == "bf16":
        raise SmplerError("attention triton: the Triton kernels store fp32 or fp16 (bf16 runs with attention torch)")
    if attention not in ("torch", "triton"):
        raise SmplerError(f"attention {attention}: expected torch or triton")
    return TorchPlan(device, precision, DTYPES[precision.name], () if precision == FP32 else FP32_PARTS,
                     bool(cuda_graphs), bool(compile), attention)


def torch_graph_policy(enabled: bool, max_graphs: int = 8) -> GraphPolicy:
    """The torch session's CUDA graphs: one per batch size (the key), captured at the first call with it (no plain
    warm-up runs: the capture warms up on a side stream itself, as torch's CUDA-graph docs require), at most
    `max_graphs` (each pins its static input/output buffers; other sizes run eagerly), never replaced."""
    return GraphPolicy(enabled, warmup=0, max_graphs=max_graphs, replace=False)
