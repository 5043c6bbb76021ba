"""Image-to-image generators for the GAN methods (architectures only; the methods own the losses)."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn


class TanhHead(nn.Module):
    """Bounds a network's output to the model space [-1, 1]."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))


def pix2pix_unet(dims: int = 2, channels: int = 64, levels: int = 5, dropout: float = 0.2) -> nn.Module:
    """The paper's Pix2Pix UNet: ``levels`` down/up blocks, instance norm + PReLU, dropout, tanh output.

    Built on MONAI's UNet (strided-conv down, transposed-conv up, concatenated skips); channels double per
    level from ``channels``.
    """
    widths = tuple(channels * 2**i for i in range(levels))
    body = UNet(
        spatial_dims=dims,
        in_channels=1,
        out_channels=1,
        channels=widths,
        strides=(2,) * (levels - 1),
        num_res_units=0,
        norm="INSTANCE",
        act="PRELU",
        dropout=dropout,
    )
    return TanhHead(body)
