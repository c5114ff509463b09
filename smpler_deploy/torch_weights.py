"""Torch weight files read without running their code: torch.load(weights_only=True), a refusal reduced to one line.

Both readers of a `.pt`/`.pth` use it, and `state_dict_in` to find the state dict in what was loaded:
`model.checkpoint.read_checkpoint` (the network's weights) and `body.loaders` (the SMPL arrays a SMPLer checkpoint
carries).
"""

from __future__ import annotations

import pickle
import re

import torch

from .errors import SmplerError


def _load_failure(e: BaseException) -> str:
    """torch's weights-only refusal, reduced to what the user needs: the refused global (the code the pickle
    would have run), else its first line of substance. Never torch's advice to retry with weights_only=False."""
    text = str(e)
    g = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global:? '?([\w]+\.[\w.]+)", text)
    if g:
        return f"refused GLOBAL {g.group(1)}: the pickle would run code; only tensors and plain containers load"
    for line in (s.strip() for s in text.splitlines()):
        if line and not re.search(r"weights.only|documentation|pytorch\.org|trusted source", line, re.I):
            return f"{e.__class__.__name__}: {line[:160]}"
    return e.__class__.__name__


def torch_load_weights(path, where: str):
    """torch.load with weights_only=True (no code runs), failures as one line naming `where`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, KeyError,
            ImportError, IndexError, OSError) as e:
        raise SmplerError(f"{where}: not a loadable weights-only checkpoint ({_load_failure(e)})") from None


def state_dict_in(obj, wrappers: tuple[str, ...] = ("model",)):
    """The state dict a loaded checkpoint holds: `obj` itself, or the dict under the first of `wrappers` it has
    (training scripts save {"model": sd}; `body.loaders` also takes {"state_dict": sd}), with a DDP `module.` prefix
    stripped from its keys. Anything that is not a dict comes back as is, for the caller to refuse in its words."""
    if isinstance(obj, dict):
        obj = next((obj[w] for w in wrappers if isinstance(obj.get(w), dict)), obj)
    if not isinstance(obj, dict):
        return obj
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in obj.items()}
