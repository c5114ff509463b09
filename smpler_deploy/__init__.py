"""smpler-deploy: SMPLer from PyTorch to ONNX and TensorRT engines."""

__version__ = "0.1.0"

from .errors import SmplerError  # noqa: E402
from .outputs import OUTPUT_NAMES, SMPLOutput  # noqa: E402


def load_model(*args, **kwargs):
    """See `smpler_deploy.model.checkpoint.load_model` (imported lazily: torch is heavy)."""
    from .model.checkpoint import load_model as _load

    return _load(*args, **kwargs)


__all__ = ["load_model", "SMPLOutput", "OUTPUT_NAMES", "SmplerError", "__version__"]
