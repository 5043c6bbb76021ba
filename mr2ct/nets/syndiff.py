"""SynDiff's diffusive networks (Özbey et al. 2023, after Xiao et al.'s denoising diffusion GAN).

:class:`DiffusiveGenerator` maps (x_{t+1}, source image, t, latent z) to x_0: a compact NCSN++-style UNet
whose BigGAN-style residual blocks take the timestep as an added projection and the latent z, mapped by an
MLP, through adaptive GroupNorm (so one condition gives many samples); skips are rescaled by 1/sqrt(2),
self-attention sits at chosen levels and in the middle, and a tanh bounds the output. Down and up are a
stride-2 conv and nearest upsampling + conv (NCSN++ blurs with a FIR filter instead).

:class:`TimeConditionedDiscriminator` scores (x_t, x_{t+1}, t): is x_t a plausible step back from x_{t+1}?
Residual down blocks with the timestep added, summed over space, one logit (the reference's large
discriminator, without its minibatch-stddev feature). Both take 2D inputs of side divisible by
2 ** (levels - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mr2ct.nets.sa_unet import FullAttention, SinusoidalTimeEmbedding

SKIP_SCALE = 1 / math.sqrt(2)
MAX_GROUPS = 32
LEAKY_SLOPE = 0.2


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    """NCSN++'s GroupNorm: min(channels / 4, 32) groups."""
    return nn.GroupNorm(max(min(channels // 4, MAX_GROUPS), 1), channels, affine=affine)


class LatentMapping(nn.Sequential):
    """z -> style: pixel norm, then ``layers`` Linear + SiLU (StyleGAN's mapping network, as DDGAN)."""

    def __init__(self, latent_dim: int, style_dim: int, layers: int = 3):
        dims = [latent_dim] + [style_dim] * layers
        super().__init__(*[m for d_in, d_out in zip(dims[:-1], dims[1:]) for m in (nn.Linear(d_in, d_out), nn.SiLU())])

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8))


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose per-channel scale and shift come from the style vector."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = group_norm(channels, affine=False)
        self.style = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        scale, shift = self.style(style)[..., None, None].chunk(2, dim=1)
        return (1 + scale) * self.norm(x) + shift


class StyledResBlock(nn.Module):
    """AdaGN-SiLU-conv, + time projection, AdaGN-SiLU-dropout-conv, added to the (projected) input / sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, style_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = AdaptiveGroupNorm(c_in, style_dim), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2, self.conv2 = AdaptiveGroupNorm(c_out, style_dim), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, time: Tensor, style: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, style))) + self.time(F.silu(time))[..., None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h, style))))
        return (self.skip(x) + h) * SKIP_SCALE


class SelfAttention(nn.Module):
    """GroupNorm, single-head attention over all pixels, residual / sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.attend = FullAttention(channels, dims=2, heads=1, dim_head=channels)

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.attend(self.norm(x))) * SKIP_SCALE


class Level(nn.Module):
    """One resolution: residual blocks, then attention (or nothing), then resampling (or nothing)."""

    def __init__(self, blocks: list[StyledResBlock], attention: nn.Module, resample: nn.Module):
        super().__init__()
        self.blocks, self.attention, self.resample = nn.ModuleList(blocks), attention, resample

    def features(self, x: Tensor, time: Tensor, style: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, time, style)
        return self.attention(x)


class Upsample(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))


class DiffusiveGenerator(nn.Module):
    """(x_{t+1}, source, t, z) -> x_0 in [-1, 1]; level i has width ``channels * mults[i]`` and ``blocks``
    residual blocks, attention at ``attention_levels`` (0 = full resolution)."""

    def __init__(self, channels: int = 64, mults: Sequence[int] = (1, 1, 2, 2, 4, 4), blocks: int = 2,
                 attention_levels: Sequence[int] = (4,), latent_dim: int = 100, style_dim: int = 256,
                 dropout: float = 0.0):
        super().__init__()
        if not mults or blocks < 1 or any(not 0 <= level < len(mults) for level in attention_levels):
            raise ValueError(f"DiffusiveGenerator needs levels (mults={list(mults)}), blocks >= 1 and attention "
                             f"levels among them, got blocks={blocks}, attention_levels={list(attention_levels)}")
        widths = [channels * m for m in mults]
        time_dim, last = 4 * channels, len(widths) - 1
        self.latent_dim, self.downsample_factor = latent_dim, 2**last
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(channels), nn.Linear(channels, time_dim), nn.SiLU(),
                                      nn.Linear(time_dim, time_dim))
        self.mapping = LatentMapping(latent_dim, style_dim)

        def res(c_in: int, c_out: int) -> StyledResBlock:
            return StyledResBlock(c_in, c_out, time_dim, style_dim, dropout)

        def attention(level: int) -> nn.Module:
            return SelfAttention(widths[level]) if level in attention_levels else nn.Identity()

        self.stem = nn.Conv2d(2, channels, 3, padding=1)
        inputs = [channels, *widths[:-1]]
        self.encoder = nn.ModuleList(
            Level([res(c_in, w)] + [res(w, w) for _ in range(blocks - 1)], attention(i),
                  nn.Conv2d(w, w, 3, stride=2, padding=1) if i < last else nn.Identity())
            for i, (c_in, w) in enumerate(zip(inputs, widths))
        )
        self.middle = nn.ModuleList([res(widths[-1], widths[-1]), SelfAttention(widths[-1]), res(widths[-1], widths[-1])])
        self.decoder = nn.ModuleList(
            Level([res(2 * w, w)] + [res(w, w) for _ in range(blocks - 1)], attention(i),
                  Upsample(w, widths[i - 1]) if i > 0 else nn.Identity())
            for i, w in reversed(list(enumerate(widths)))
        )
        self.head = nn.Sequential(group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 1, 3, padding=1), nn.Tanh())

    def forward(self, x_next: Tensor, source: Tensor, t: Tensor, z: Tensor) -> Tensor:
        if any(side % self.downsample_factor for side in x_next.shape[2:]):
            raise ValueError(f"input side {tuple(x_next.shape[2:])} must be divisible by {self.downsample_factor}")
        time, style = self.time_mlp(t), self.mapping(z)
        x = self.stem(torch.cat([x_next, source], dim=1))
        skips = []
        for level in self.encoder:
            x = level.features(x, time, style)
            skips.append(x)
            x = level.resample(x)
        first, attend, second = self.middle
        x = second(attend(first(x, time, style)), time, style)
        for level in self.decoder:
            x = level.resample(level.features(torch.cat([x, skips.pop()], dim=1), time, style))
        return self.head(x)


class TimedDownBlock(nn.Module):
    """LeakyReLU-conv, + time projection, LeakyReLU, 2x average pool, conv; plus the pooled 1x1-projected
    input, / sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, LEAKY_SLOPE)) + self.time(time)[..., None, None]
        h = self.conv2(F.avg_pool2d(F.leaky_relu(h, LEAKY_SLOPE), 2))
        return (h + self.skip(F.avg_pool2d(x, 2))) * SKIP_SCALE


class TimeConditionedDiscriminator(nn.Module):
    """(x_t, x_{t+1}, t) -> one logit per image; a 1x1 stem to ``channels``, then down blocks of width
    ``channels * m`` for m in ``mults``."""

    def __init__(self, channels: int = 128, mults: Sequence[int] = (2, 4, 4, 4, 4, 4)):
        super().__init__()
        widths = [channels, *(channels * m for m in mults)]
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(channels), nn.Linear(channels, channels),
                                      nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(channels, channels), nn.LeakyReLU(LEAKY_SLOPE))
        self.stem = nn.Conv2d(2, channels, 1)
        self.blocks = nn.ModuleList(TimedDownBlock(c_in, c_out, channels) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.final = nn.Conv2d(widths[-1], widths[-1], 3, padding=1)
        self.logit = nn.Linear(widths[-1], 1)

    def forward(self, x_t: Tensor, x_next: Tensor, t: Tensor) -> Tensor:
        time = self.time_mlp(t)
        h = self.stem(torch.cat([x_t, x_next], dim=1))
        for block in self.blocks:
            h = block(h, time)
        h = F.leaky_relu(self.final(F.leaky_relu(h, LEAKY_SLOPE)), LEAKY_SLOPE)
        return self.logit(h.sum(dim=(2, 3))).squeeze(1)
