"""One `Session` base class over torch, onnxruntime and tensorrt (see `base.py`)."""

from .base import Session, SessionInfo, check_images  # noqa: F401
from .factory import BACKENDS, open_session  # noqa: F401
