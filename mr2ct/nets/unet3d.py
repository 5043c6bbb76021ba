"""The 3D UNet of the paper's 3D methods, with activation checkpointing.

The layout is the authors' 3D diffusion UNet: :class:`~mr2ct.nets.sa_unet.SAUNet` in Conv3d without attention,
skips averaged (x = (x + skip) / 2) instead of concatenated. Its weights and state-dict keys are SAUNet's.

What is new is how a training step stores its activations. The authors' network kept every intermediate of
every block for the backward pass, 9 GB for one 32 x 128 x 128 patch. With ``checkpointing`` each ResnetBlock
keeps only its input and recomputes its inner activations (convolutions, norms, modulation) in the backward
pass, which costs about one more forward pass and takes the dominant term out of the peak memory. Without
gradients (inference, validation) the blocks run plainly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mr2ct.nets.sa_unet import ResnetBlock, SAUNet


class UNet3D(SAUNet):
    """SAUNet(dims=3, attention=False, skip="average"); see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, dim: int = 64, dim_mults: tuple[int, ...] = (1, 2, 4, 8),
                 groups: int = 8, time_embedding: bool = True, checkpointing: bool = True) -> None:
        super().__init__(in_channels, out_channels, dim=dim, dim_mults=dim_mults, attention=False, groups=groups,
                         time_embedding=time_embedding, dims=3, skip="average")
        self.checkpointing = checkpointing

    def _block(self, block: ResnetBlock, x: Tensor, time_emb: Tensor | None) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, time_emb, use_reentrant=False)
        return block(x, time_emb)


@dataclass
class UNet3DSettings:
    """``model.net`` of the 3D methods: width, levels, GroupNorm groups and activation checkpointing."""

    dim: int = 64
    dim_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    groups: int = 8
    checkpointing: bool = True

    def build(self, in_channels: int, out_channels: int, time_embedding: bool = True) -> UNet3D:
        return UNet3D(in_channels, out_channels, dim=self.dim, dim_mults=tuple(self.dim_mults), groups=self.groups,
                      time_embedding=time_embedding, checkpointing=self.checkpointing)
