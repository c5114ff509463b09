"""A tiny ONNX graph with SMPLer's input, outputs and smpler-deploy metadata: builds into a TensorRT-RTX engine in
well under a second, so engine-path checks (flags, metadata refusals, Ctrl-C) need no 10 s SMPLer export."""

from __future__ import annotations

import torch

from smpler_deploy.outputs import INPUT_NAME, OUTPUT_NAMES

HW = 32
SHAPES = {"vertices": (6890, 3), "joints": (14, 3), "smpl_joints": (24, 3), "smpl_joints2d": (24, 2),
          "rotmat": (24, 3, 3), "betas": (10,), "cam": (3,)}  # fmt: skip


class TinySmpler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.heads = torch.nn.ModuleList(
            torch.nn.Linear(8, int(torch.tensor(SHAPES[n]).prod())) for n in OUTPUT_NAMES)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean((2, 3))
        return tuple(h(f).reshape(-1, *SHAPES[n]) for h, n in zip(self.heads, OUTPUT_NAMES))


def tiny_smpler_onnx(path, precision: str = "fp32", int8_target: str | None = None, smpler: bool = True):
    """Write the graph; `smpler=False` leaves out the smpler-deploy metadata (a foreign graph)."""
    import onnx

    torch.manual_seed(0)
    dyn = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    torch.onnx.export(TinySmpler().eval(), (torch.randn(2, 3, HW, HW),), str(path), input_names=[INPUT_NAME],
                      output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, dynamo=False, opset_version=19)
    m = onnx.load(str(path))
    meta = {"producer": "smpler-deploy test", "variant": "smpler", "precision": precision}
    if int8_target:
        meta["int8_target"] = int8_target
    for k, v in (meta if smpler else {"producer": "someone else"}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path
