"""SA-UNet: the self-attention UNet of the paper's diffusion models (lucidrains' denoising-diffusion-pytorch).

Layout (2D, as the reference code's models/diffusion_unet.py): a 7x7 stem conv; per level two ResnetBlocks
(conv3x3 -> GroupNorm -> scale/shift from the time embedding -> SiLU) and a residual pre-norm linear
attention (4 heads x 32), then a 4x4 stride-2 conv down (not after the deepest level); a middle of
ResnetBlock, full attention, ResnetBlock; the decoder mirrors it, merging each skip and upsampling with a
4x4 stride-2 transposed conv; finally the stem features are concatenated back, one ResnetBlock and a 1x1
conv. The timestep enters as a sinusoidal embedding -> Linear-GELU-Linear (4 * dim) feeding every block.

The same class builds the paper's 3D UNet: ``SAUNet(..., dims=3, attention=False, skip="average")`` uses
Conv3d, no attention, and averages skips (x = (x + skip) / 2) instead of concatenating them, which is what
made the 3D models fit and converge (Bieder et al.). ``time_embedding=False`` gives a plain image-to-image
generator (Pix2Pix/CUT SA-UNet) whose ``forward(x)`` takes no timestep; it returns unbounded values, so a
GAN generator adds its own output activation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SkipMode = Literal["concat", "average"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _broadcast_channels(v: Tensor, spatial_rank: int) -> Tensor:
    """(B, C) -> (B, C, 1, ..., 1) so it scales feature maps of any spatial rank."""
    return v.reshape(*v.shape, *([1] * spatial_rank))


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sin/cos features of the (integer) diffusion timestep."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"sinusoidal time embedding needs an even dim >= 4, got {dim}")
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(10000) / (half - 1) * torch.arange(half)), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each voxel, with a learned per-channel gain and bias."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        rank = x.ndim - 2
        normalised = (x - mean) * (var + self.eps).rsqrt()
        return normalised * _broadcast_channels(self.gain[None], rank) + _broadcast_channels(self.bias[None], rank)


class ConvNormAct(nn.Module):
    """conv3x3 -> GroupNorm -> optional (1 + scale, shift) modulation -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dims: int) -> None:
        super().__init__()
        self.conv = _CONV[dims](in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(groups, out_channels)

    def forward(self, x: Tensor, scale_shift: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    """Two ConvNormAct with a residual 1x1 projection; the time embedding modulates the first one."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None, groups: int, dims: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_channels)) if time_dim else None
        self.block1 = ConvNormAct(in_channels, out_channels, groups, dims)
        self.block2 = ConvNormAct(out_channels, out_channels, groups, dims)
        self.residual = _CONV[dims](in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, time_emb: Tensor | None) -> Tensor:
        scale_shift = None
        if self.time_mlp is not None:
            modulation = _broadcast_channels(self.time_mlp(time_emb), x.ndim - 2)
            scale_shift = modulation.chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.residual(x)


class LinearAttention(nn.Module):
    """Efficient attention, linear in the number of voxels (softmax over features for q, voxels for k)."""

    def __init__(self, channels: int, dims: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = _CONV[dims](channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(_CONV[dims](hidden, channels, 1), ChannelLayerNorm(channels))

    def forward(self, x: Tensor) -> Tensor:
        b, _, *spatial = x.shape
        q, k, v = (part.reshape(b, self.heads, -1, math.prod(spatial)) for part in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, *spatial))


class FullAttention(nn.Module):
    """Multi-head softmax self-attention over all voxels (used at the coarsest resolution only)."""

    def __init__(self, channels: int, dims: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = _CONV[dims](channels, 3 * hidden, 1, bias=False)
        self.to_out = _CONV[dims](hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, *spatial = x.shape
        q, k, v = (
            part.reshape(b, self.heads, -1, math.prod(spatial)).transpose(-1, -2)
            for part in self.to_qkv(x).chunk(3, dim=1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, voxels, dim_head), scale dim_head^-0.5
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, *spatial))


class PreNormResidual(nn.Module):
    """x + fn(LayerNorm(x))."""

    def __init__(self, channels: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(self.norm(x))


class Level(nn.Module):
    """One resolution of the encoder or decoder: two ResnetBlocks, optional attention, then resampling."""

    def __init__(self, block1: ResnetBlock, block2: ResnetBlock, attention: nn.Module, resample: nn.Module) -> None:
        super().__init__()
        self.block1, self.block2, self.attention, self.resample = block1, block2, attention, resample


class SAUNet(nn.Module):
    """Self-attention UNet for 2D (B, C, H, W) or 3D (B, C, D, H, W) inputs; see the module docstring.

    Spatial sizes must be divisible by 2 ** (len(dim_mults) - 1). Channel widths dim * m must be
    divisible by ``groups`` (GroupNorm). ``heads`` x ``dim_head`` is the attention width (paper 4 x 32).
    ``level_attention=False`` keeps only the middle (coarsest) full attention: linear attention at every
    level dominates the cost of narrow networks, which is what the CPU defaults use.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 64,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        attention: bool = True,
        level_attention: bool = True,
        heads: int = 4,
        dim_head: int = 32,
        groups: int = 8,
        time_embedding: bool = True,
        dims: int = 2,
        skip: SkipMode = "concat",
    ) -> None:
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"SAUNet supports dims 2 or 3, got {dims}")
        if skip not in ("concat", "average"):
            raise ValueError(f"skip must be 'concat' or 'average', got {skip!r}")
        if not dim_mults:
            raise ValueError("dim_mults needs at least one level")
        widths = [dim, *(dim * m for m in dim_mults)]
        bad = [w for w in widths if w % groups]
        if bad:
            raise ValueError(f"channel widths {bad} (dim={dim}, dim_mults={tuple(dim_mults)}) not divisible by groups={groups}")
        self.in_channels, self.dims, self.skip = in_channels, dims, skip
        self.downsample_factor = 2 ** (len(dim_mults) - 1)
        conv = _CONV[dims]

        time_dim = 4 * dim if time_embedding else None
        self.time_mlp = (
            nn.Sequential(SinusoidalTimeEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
            if time_embedding
            else None
        )

        def res(c_in: int, c_out: int) -> ResnetBlock:
            return ResnetBlock(c_in, c_out, time_dim, groups, dims)

        def linear_attention(channels: int) -> nn.Module:
            if not (attention and level_attention):
                return nn.Identity()
            return PreNormResidual(channels, LinearAttention(channels, dims, heads, dim_head))

        self.stem = conv(in_channels, dim, 7, padding=3)
        pairs = list(zip(widths[:-1], widths[1:]))
        deepest = len(pairs) - 1
        self.encoder = nn.ModuleList(
            Level(
                res(c_in, c_out),
                res(c_out, c_out),
                linear_attention(c_out),
                conv(c_out, c_out, 4, stride=2, padding=1) if i < deepest else nn.Identity(),
            )
            for i, (c_in, c_out) in enumerate(pairs)
        )
        mid = widths[-1]
        self.mid_block1 = res(mid, mid)
        self.mid_attention = PreNormResidual(mid, FullAttention(mid, dims, heads, dim_head)) if attention else nn.Identity()
        self.mid_block2 = res(mid, mid)
        merged = 2 if skip == "concat" else 1
        self.decoder = nn.ModuleList(
            Level(
                res(merged * c_out, c_in),
                res(c_in, c_in),
                linear_attention(c_in),
                _CONV_TRANSPOSE[dims](c_in, c_in, 4, stride=2, padding=1) if i < deepest else nn.Identity(),
            )
            for i, (c_in, c_out) in enumerate(reversed(pairs))
        )
        self.final_block = res(2 * dim, dim)
        self.head = conv(dim, out_channels, 1)

    def _check_input(self, x: Tensor, t: Tensor | None) -> None:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SAUNet(dims={self.dims}, in_channels={self.in_channels}) expects (B, {self.in_channels}, "
                f"{', '.join('*' * self.dims)}) input, got shape {tuple(x.shape)}"
            )
        if any(size % self.downsample_factor for size in x.shape[2:]):
            raise ValueError(
                f"SAUNet input spatial size {tuple(x.shape[2:])} must be divisible by {self.downsample_factor} "
                f"(2 ** (levels - 1)); pad or crop the input"
            )
        if self.time_mlp is None and t is not None:
            raise ValueError("this SAUNet was built with time_embedding=False; call forward(x) without t")
        if self.time_mlp is not None and (t is None or t.shape != (x.shape[0],)):
            got = None if t is None else tuple(t.shape)
            raise ValueError(f"SAUNet with time embedding needs t of shape ({x.shape[0]},), got {got}")

    def _merge(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([x, skip], dim=1) if self.skip == "concat" else 0.5 * (x + skip)

    def _block(self, block: nn.Module, x: Tensor, time_emb: Tensor | None) -> Tensor:
        """One ResnetBlock call; subclasses route it (e.g. UNet3D recomputes it in the backward pass)."""
        return block(x, time_emb)

    def _features(self, level: nn.Module, x: Tensor, time_emb: Tensor | None) -> Tensor:
        return level.attention(self._block(level.block2, self._block(level.block1, x, time_emb), time_emb))

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        self._check_input(x, t)
        time_emb = self.time_mlp(t) if self.time_mlp is not None else None
        x = self.stem(x)
        stem_features = x
        skips = []
        for level in self.encoder:
            x = self._features(level, x, time_emb)
            skips.append(x)
            x = level.resample(x)
        x = self._block(self.mid_block2, self.mid_attention(self._block(self.mid_block1, x, time_emb)), time_emb)
        for level in self.decoder:
            x = level.resample(self._features(level, self._merge(x, skips.pop()), time_emb))
        x = self._block(self.final_block, torch.cat([x, stem_features], dim=1), time_emb)
        return self.head(x)


@dataclass
class SAUNetSettings:
    """The configurable width and attention of an SA-UNet (``model.net`` of the methods built on it); the
    network checks them when it is built."""

    dim: int = 64
    dim_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    attention: bool = True
    level_attention: bool = True
    heads: int = 4
    dim_head: int = 32
    groups: int = 8

    def build(self, in_channels: int, out_channels: int, dims: int, time_embedding: bool = True,
              skip: SkipMode = "concat") -> SAUNet:
        return SAUNet(in_channels, out_channels, dim=self.dim, dim_mults=tuple(self.dim_mults), attention=self.attention,
                      level_attention=self.level_attention, heads=self.heads, dim_head=self.dim_head,
                      groups=self.groups, time_embedding=time_embedding, dims=dims, skip=skip)
