"""SMPLer: HRNet features -> HMR regressor -> 3 transformer refinement blocks -> SMPL mesh.

Parameter/buffer names equal the official release (`load_state_dict(strict=True)` takes an official
checkpoint). Intermediate stages compute only the 24 posed skeleton joints (joints-only refinement, exact);
the mesh is built once, at the end. `official_style=True` runs the official forward's computation in its layout
(`official_style.py`: full mesh at every stage, projected keys, grid_sample): the baseline benchmarks compare against.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from ..body.layer import SMPLHandler
from ..body.lbs import rot6d_to_rotmat
from ..outputs import SMPLOutput
from . import official_style
from .hrnet import HRNet
from .transformer import HIDDEN, NUM_JOINTS, TORCH_OPS, TransformerBlockWrapped

VARIANTS = {"smpler": 32, "smpler-l": 48}
NUM_BLOCKS = 3


class SMPLPredictor(nn.Module):
    """HMR/SPIN iterative regressor (3 iterations) on the pooled last HRNet map."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim + 24 * 6 + 10 + 3, 1024)
        self.drop1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout(0.5)
        self.decpose = nn.Linear(1024, 24 * 6)
        self.decshape = nn.Linear(1024, 10)
        self.deccam = nn.Linear(1024, 3)
        self.relu = nn.ReLU()
        self.register_buffer("init_pose", torch.zeros(1, 24 * 6))
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.tensor([[1.0, 0.0, 0.0]]))

    def forward(self, x, n_iter: int = 3):
        b = x.shape[0]
        pose, shape, cam = (t.expand(b, -1) for t in (self.init_pose, self.init_shape, self.init_cam))
        for _ in range(n_iter):
            h = self.drop1(self.relu(self.fc1(torch.cat([x, pose, shape, cam], 1))))
            h = self.drop2(self.relu(self.fc2(h)))
            pose = pose + self.decpose(h)
            shape = shape + self.decshape(h)
            cam = cam + self.deccam(h)
        return rot6d_to_rotmat(pose.reshape(b, NUM_JOINTS, 6)), shape, cam


class SMPLer(nn.Module):
    def __init__(self, variant: str = "smpler", num_blocks: int = NUM_BLOCKS):
        super().__init__()
        self.variant = variant
        width = VARIANTS[variant]
        self.backbone = HRNet(width)
        widths = self.backbone.out_channels
        self.SMPL_predictor = SMPLPredictor(widths[-1])
        self.smpl_handler = SMPLHandler()
        self.init_query_layer_beta = nn.Linear(10, HIDDEN)
        self.init_query_layer_theta = nn.Linear(9, HIDDEN)
        self.init_query_layer_cam = nn.Linear(3, HIDDEN)
        self.global_feat_projection = nn.Linear(widths[-1], HIDDEN)
        self.transformer = nn.ModuleList(TransformerBlockWrapped(widths) for _ in range(num_blocks))
        self.num_transformers = num_blocks
        self.ops = TORCH_OPS
        self.attention = "torch"
        self.official_style = False
        self.full_mesh_stages = False  # mesh at every stage but folded attention: isolates joints-only's saving
        self.compute_dtype = torch.float32
        self.info = {"variant": variant, "untrained": True, "standin_body": True, "checkpoint": None,
                     "checkpoint_sha256": None}
        # Derived constants follow any state-dict load.
        self.register_load_state_dict_post_hook(lambda module, keys: module.refresh())

    @torch.no_grad()
    def refresh(self):
        self.smpl_handler.refresh()
        for block in self.transformer:
            block.trans_block.refresh()

    def set_precision(self, precision) -> "SMPLer":
        """Mixed precision in the graph. fp16 (or bf16, the same policy in bfloat16): backbone, projections,
        attention and MLP matmuls in the half type; LayerNorm statistics, softmax, the HMR regressor, SMPL,
        rotation/camera math and the joints -> sampling-coordinate path stay float32 (a window that moves by a
        pixel changes the result). `precision`: a `Precision` the torch backend runs, or its report spelling."""
        from ..precision import TORCH_NAMES, Precision

        p = Precision.parse(precision, "precision", TORCH_NAMES)
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[p.name]
        self.backbone.to(dt)
        for block in self.transformer:
            for m in block.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)) and m not in (
                        block.theta_predictor, block.beta_predictor, block.cam_predictor):
                    m.to(dt)
            block.trans_block.feat_position_embedding.data = block.trans_block.feat_position_embedding.data.to(dt)
            block.trans_block.position_embeddings.to(dt)
            for s in range(4):
                buf = getattr(block.trans_block, f"pos_{s}")
                setattr(block.trans_block, f"pos_{s}", buf.to(dt))
        self.compute_dtype = dt
        return self

    def set_attention(self, kind: str) -> "SMPLer":
        """'torch' (reference), 'triton' (fused kernels; CPU via the interpreter), 'plugin' (ONNX custom nodes)."""
        if kind == "torch":
            self.ops = TORCH_OPS
        elif kind == "triton":
            from ..plugins import kernels

            self.ops = types.SimpleNamespace(local_attention=kernels.local_attention,
                                             global_attention_multiscale=kernels.global_attention_multiscale)
        elif kind == "plugin":
            from ..plugins import onnx_nodes

            self.ops = types.SimpleNamespace(local_attention=onnx_nodes.local_attention_plugin,
                                             global_attention_multiscale=onnx_nodes.global_attention_multiscale_plugin)
        else:
            from ..errors import SmplerError

            raise SmplerError(f"attention={kind!r}: expected 'torch', 'triton' or 'plugin'")
        self.attention = kind
        return self

    def forward(self, images: torch.Tensor) -> SMPLOutput:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            _check_input(images)
        if self.official_style:
            return official_style.forward(self, images)
        feats = self.backbone(images.to(self.compute_dtype))
        g = feats[3].float().mean(dim=(2, 3))
        rot, betas, cam = self.SMPL_predictor(g)
        handler = self.smpl_handler
        mesh = self.full_mesh_stages
        j2d = handler(rot, betas, cam)[3] if mesh else handler.joints2d(rot, betas, cam)
        b = images.shape[0]
        q = torch.cat([
            self.init_query_layer_theta(rot.reshape(b, NUM_JOINTS, 9)),
            self.init_query_layer_beta(betas).unsqueeze(1),
            self.init_query_layer_cam(cam).unsqueeze(1),
        ], dim=1) + self.global_feat_projection(g).unsqueeze(1)
        last = len(self.transformer) - 1
        for i, block in enumerate(self.transformer):
            d_rot, d_betas, d_cam, q = block(q, feats, j2d, self.ops)
            betas = betas + d_betas
            cam = cam + d_cam
            rot = torch.matmul(rot, d_rot)
            if i < last:
                j2d = handler(rot, betas, cam)[3] if mesh else handler.joints2d(rot, betas, cam)
        verts, joints, smpl_joints, smpl_j2d = handler(rot, betas, cam)
        return SMPLOutput(verts, joints, smpl_joints, smpl_j2d, rot, betas, cam)


def _check_input(images) -> None:
    from ..errors import SmplerError

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (224, 224):
        shape = list(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise SmplerError(f"images: expected a float tensor [B,3,224,224] (RGB, ImageNet-normalized), got {shape}")
    if not images.is_floating_point():
        raise SmplerError(f"images: expected a float tensor, got {images.dtype}")

