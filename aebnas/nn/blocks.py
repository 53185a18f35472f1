"""The layers candidates are made of: conv-BN-act, MBConv (inverted residual, optional SE).

Convolutions carry no bias (BatchNorm follows), so their MACs are exactly what
``aebnas.cost.macs`` counts and what torch's FlopCounterMode reports.
"""

from __future__ import annotations

import torch
from torch import nn

from aebnas.nn.depthwise import DepthwiseConv2d


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"space.activation: unknown activation '{name}'; use relu or hswish")


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 activation: str | None = "relu"):
        conv = DepthwiseConv2d if groups > 1 and groups == c_in == c_out else nn.Conv2d
        layers: list[nn.Module] = [
            conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)


def se_channels(hidden: int) -> int:
    """Squeeze width of the SE module; shared with the analytic MAC counter."""
    return max(8, hidden // 4)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        mid = se_channels(channels)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise (stride) -> [SE] -> 1x1 project."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int = 1,
                 squeeze_excite: bool = False, activation: str = "relu"):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, activation=activation))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=activation))
        if squeeze_excite:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBNAct(hidden, c_out, 1, activation=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Classifier(nn.Module):
    """Global average pooling followed by one linear layer."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
