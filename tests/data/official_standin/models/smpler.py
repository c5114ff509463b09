"""STAND-IN (tests) for the official models/smpler.py: the constructor signature and output structure, not its code.

It reads every file the official constructor reads, by the same working-directory-relative paths (config.py).
"""

from pathlib import Path

import numpy as np
import torch

import config as project_cfg
from models.transformer_basics import TranformerConfig
from smpler_deploy.body.loaders import load_body_model
from smpler_deploy.model import smpler as ours

OFFSET_M = 0.001  # every vertex moves 1 mm along x: what the comparison must report


class SMPLer(ours.SMPLer):
    def __init__(self, args, trans_cfg=None):
        trans_cfg = trans_cfg or TranformerConfig()
        variant = {"w32": "smpler", "w48": "smpler-l"}[args.hrnet_type]
        super().__init__(variant, args.num_transformers)
        assert list(trans_cfg.raw_feat_dim) == project_cfg.hrnet_dict[args.hrnet_type][2]
        self.smpl_handler.set_body_model(load_body_model(project_cfg.smpl_neutral))
        regressor = (project_cfg.JOINT_REGRESSOR_H36M_correct if args.data_mode == "h36m"
                     else project_cfg.JOINT_REGRESSOR_3DPW)
        self.smpl_handler.set_h36m_regressor(np.load(regressor))
        mean = np.load(project_cfg.smpl_mean_params_path)
        assert mean["pose"].shape == (144,) and mean["shape"].shape == (10,)
        yaml_path, init_path, _ = project_cfg.hrnet_dict[args.hrnet_type]
        assert "STAGE4" in Path(yaml_path).read_text()
        self.backbone.load_state_dict(torch.load(init_path, map_location="cpu"), strict=False)

    def forward(self, img):
        out = super().forward(img)
        verts = out.vertices + torch.tensor([OFFSET_M, 0.0, 0.0])
        stage = {"vertices": verts, "joints": out.joints, "smpl_joints": out.smpl_joints,
                 "smpl_joints2d": out.smpl_joints2d, "theta": out.rotmat, "beta": out.betas, "cam": out.cam}
        return [stage]
