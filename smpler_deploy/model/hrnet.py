"""HRNet backbone as SMPLer uses it (pose-HRNet, multi-scale output, every stage-4 module fully fused).

Parameter names follow the official `pose_hrnet.py` so checkpoints load strictly. Widths C*[1,2,4,8] with
C = 32 (W32) or 48 (W48); all convolutions bias-free, BatchNorm eps 1e-5. Returns 4 maps at 1/4..1/32 of the
input: [B,C,56,56], [B,2C,28,28], [B,4C,14,14], [B,8C,7,7] for 224x224.
"""

from __future__ import annotations

import torch
from torch import nn

BN_MOMENTUM = 0.1
# (num_modules, num_branches, blocks per branch) per stage; the stock HRNet configs SMPLer ships (reference §5).
STAGES = ((1, 2, 4), (4, 3, 4), (3, 4, 4))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), bn(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), bn(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), bn(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), bn(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), bn(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class HighResolutionModule(nn.Module):
    """Parallel branches followed by all-to-all fusion: out_i = ReLU(sum_j T_ij(x_j))."""

    def __init__(self, channels: list[int], num_blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)]) for c in channels
        )
        fuse = []
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(
                        nn.Conv2d(channels[j], channels[i], 1, bias=False), bn(channels[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        layers = [conv3x3(channels[j], cout, 2), bn(cout)] + ([] if last else [nn.ReLU()])
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            # Same summation order as the official code (float rounding parity).
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(self.relu(y))
        return out


def _transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    layers = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(
                nn.Sequential(conv3x3(pre[i], c), bn(c), nn.ReLU()) if pre[i] != c else None
            )
        else:
            steps = []
            for j in range(i + 1 - len(pre)):
                cout = c if j == i - len(pre) else pre[-1]
                steps.append(nn.Sequential(conv3x3(pre[-1], cout, 2), bn(cout), nn.ReLU()))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.conv1, self.bn1 = conv3x3(3, 64, 2), bn(64)
        self.conv2, self.bn2 = conv3x3(64, 64, 2), bn(64)
        self.relu = nn.ReLU()
        down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), bn(256))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=down), *[Bottleneck(256, 64) for _ in range(3)])
        pre = [256]
        for s, (modules, branches, blocks) in enumerate(STAGES, start=2):
            channels = [width * 2**b for b in range(branches)]
            setattr(self, f"transition{s - 1}", _transition(pre, channels))
            setattr(self, f"stage{s}", nn.Sequential(*[HighResolutionModule(channels, blocks) for _ in range(modules)]))
            pre = channels
        self.out_channels = pre

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            trans = getattr(self, f"transition{s - 1}")
            # New branches grow from the last (lowest-resolution) output, as in pose_hrnet.
            xs = [ys[i] if t is None else t(ys[min(i, len(ys) - 1)]) for i, t in enumerate(trans)]
            ys = xs
            for module in getattr(self, f"stage{s}"):
                ys = module(ys)
        return ys
