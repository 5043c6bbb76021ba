"""The ResNet image-to-image generator of CycleGAN, CUT and SynDiff's non-diffusive part (Johnson et al.).

A flat ``nn.Sequential``, as in the reference implementations, so a layer index means the same thing as
there: CUT reads its contrastive features at layer indices (0, 4, 8, 12, 16). Layout: reflection pad +
7x7 conv, ``downsamplings`` stride-2 3x3 convs doubling the width, ``blocks`` residual blocks, as many
stride-2 transposed convs back, reflection pad + 7x7 conv and tanh; instance norm and ReLU throughout.
Down and up are the plain strided convs of CycleGAN (CUT's anti-aliased variant blurs before striding).
Inputs must be divisible by 2 ** downsamplings.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

STEM_KERNEL = 7


def conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels), nn.ReLU()]


class ResidualBlock(nn.Module):
    """x + (reflect pad, conv3x3, IN, ReLU, [dropout], reflect pad, conv3x3, IN)(x)."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), *conv_norm_relu(nn.Conv2d(channels, channels, 3), channels),
            *([nn.Dropout(dropout)] if dropout else []),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Sequential):
    """One channel in, one channel out in [-1, 1]; ``channels`` is the width of the stem (ngf)."""

    def __init__(self, channels: int = 64, downsamplings: int = 2, blocks: int = 9, dropout: float = 0.0):
        if channels < 1 or downsamplings < 0 or blocks < 0:
            raise ValueError(f"ResnetGenerator needs channels >= 1, downsamplings >= 0 and blocks >= 0, got "
                             f"{channels}, {downsamplings}, {blocks}")
        widths = [channels * 2**i for i in range(downsamplings + 1)]
        layers: list[nn.Module] = [nn.ReflectionPad2d(STEM_KERNEL // 2),
                                   *conv_norm_relu(nn.Conv2d(1, channels, STEM_KERNEL), channels)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += conv_norm_relu(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), c_out)
        layers += [ResidualBlock(widths[-1], dropout) for _ in range(blocks)]
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1]):
            layers += conv_norm_relu(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), c_out)
        layers += [nn.ReflectionPad2d(STEM_KERNEL // 2), nn.Conv2d(channels, 1, STEM_KERNEL), nn.Tanh()]
        super().__init__(*layers)
        self.downsample_factor = 2**downsamplings


@dataclass
class ResnetSettings:
    """The configurable part of a :class:`ResnetGenerator` (``model.net`` of CUT ResNet, SynDiff's translators)."""

    channels: int = 64
    downsamplings: int = 2
    blocks: int = 9
    dropout: float = 0.0

    def build(self) -> ResnetGenerator:
        return ResnetGenerator(self.channels, self.downsamplings, self.blocks, self.dropout)
