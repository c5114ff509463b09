"""PyTorch backend: the reference model (fp32), or the official-style eager forward used as the baseline."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SmplerError
from ..outputs import SMPLOutput
from .base import check_images


class TorchSession:
    backend = "torch"

    def __init__(self, model=None, *, variant="smpler", checkpoint=None, smpl_model=None, precision="fp32",
                 official=False, threads=None, attention="torch"):
        if precision != "fp32":
            raise SmplerError(f"--precisions {precision}: the torch backend runs fp32 only (fp16/int8 are graph "
                              "precisions: use onnxruntime or tensorrt)")
        if model is None:
            from ..model.smpler import load_model

            model = load_model(variant, checkpoint, smpl_model, attention=attention, official_style=official)
        self.model = model.eval()
        self.precision = precision
        self.official = bool(model.official_style)
        self.threads = threads
        if threads:  # process-wide in torch; set once (re-setting per call rebuilds the pool)
            torch.set_num_threads(int(threads))
        self.info = dict(model.info)

    def infer(self, images) -> SMPLOutput:
        x = torch.from_numpy(check_images(images))
        with torch.inference_mode():
            return self.model(x).numpy()

    def close(self) -> None:
        self.model = None
