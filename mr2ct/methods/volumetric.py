"""The paper's 3D methods: Pix2Pix 3D and DDIM 3D in noise and image mode.

All three translate isotropic volumes (``preprocess.spacing_iso_mm``) with the 3D UNet of
:mod:`mr2ct.nets.unet3d` and see the MR next to its position ramps (:mod:`mr2ct.data.positions`): training
patches bring the crop of their volume's ramps (``batch["position"]``), and at inference the ramps are
computed for the whole volume and padded with it, so every window sees the same positions its voxels had in
training.

A volume is translated whole: one pass (Pix2Pix) or one diffusion trajectory with one noise draw per step
(DDIM), the network applied in Gaussian-blended windows of the volume at every step. The windows are at most
``inference.window`` voxels per axis (default: the card's ``tiling.window``), rounded to the network's stride,
and never larger than the volume padded to that stride, so a volume that fits is one window and a larger one
costs the memory of ``inference.batch_size`` windows, not of the volume. The reference code instead split
large volumes into two independently translated halves with a hard seam.

On a GPU the network runs in bfloat16 autocast on channels-last tensors; on the CPU in float32. Blending and
the sampler's arithmetic stay float32 everywhere.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.data.positions import POSITION_CHANNELS, centred_start, position_ramps
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import SAMPLING_SETTINGS, MethodCard, Tiling
from mr2ct.methods.diffusion import DDIMImage, DDIMNoise, DiffusionSettings
from mr2ct.methods.pix2pix import Pix2Pix, Pix2PixExtra, Pix2PixLoss
from mr2ct.methods.windows import Windows
from mr2ct.nets.generators import TanhHead
from mr2ct.nets.unet3d import UNet3DSettings

WINDOW_3D = 128  # default window side per axis: a whole lumbar spine at 2 mm is one window, at 1 mm a few
TILING_3D = Tiling(window=WINDOW_3D, overlap=0.25)
CONDITION_CHANNELS = 1 + POSITION_CHANNELS  # MR and its three position ramps


def fast_network_call(net: nn.Module, x: Tensor, *args: Any) -> Tensor:
    """``net(x, *args)``; on a GPU in bfloat16 autocast with ``x`` channels-last, the output back in float32."""
    if not x.is_cuda:
        return net(x, *args)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return net(x.contiguous(memory_format=torch.channels_last_3d), *args).float()


@dataclass
class Generator3DSettings(UNet3DSettings):
    """``model.net`` of Pix2Pix 3D: the 3D UNet without time input, MR and positions in, tanh out."""

    def build(self, dims: int) -> nn.Module:  # type: ignore[override]
        if dims != 3:
            raise ValueError(f"the 3D UNet generator needs dims=3, got {dims}")
        return TanhHead(super().build(in_channels=CONDITION_CHANNELS, out_channels=1, time_embedding=False))


@dataclass
class Denoiser3DSettings(UNet3DSettings):
    """``model.net`` of DDIM 3D: the 3D UNet with time embedding, [x_t, MR, positions] in."""

    def build(self, in_channels: int, out_channels: int, dims: int) -> nn.Module:  # type: ignore[override]
        if dims != 3:
            raise ValueError(f"the 3D UNet denoiser needs dims=3, got {dims}")
        return super().build(in_channels=in_channels, out_channels=out_channels, time_embedding=True)


class Volumetric(TranslationModule):
    """A 3D method conditioned on MR and position ramps, translating whole volumes in stride-aligned windows;
    a subclass says how a canvas-shaped condition becomes CT (:meth:`translate_condition`)."""

    @property
    def stride(self) -> int:
        """What every network input side must be a multiple of: 2 ** (levels - 1)."""
        return 2 ** (len(self.settings.net.dim_mults) - 1)

    def windows(self, inference: InferenceConfig, mr: Tensor) -> Windows:
        """Windows of ``inference.window`` (default: the card's) voxels per axis, rounded down to the stride and
        cut to the input's side rounded up to the stride, ``inference.batch_size`` of them per network call."""
        size = inference.window if inference.window is not None else self.card.tiling.window
        sizes = [size] * (mr.ndim - 2) if isinstance(size, int) else list(size)
        if len(sizes) != mr.ndim - 2:
            raise ValueError(f"inference.window {size} has {len(sizes)} sides, the input has {mr.ndim - 2} axes")
        window = tuple(min(max(s // self.stride, 1), math.ceil(n / self.stride)) * self.stride
                       for s, n in zip(sizes, mr.shape[2:]))
        overlap = inference.overlap if inference.overlap is not None else self.card.tiling.overlap
        return Windows(window, overlap, inference.batch_size)

    def condition_canvas(self, mr: Tensor, windows: Windows) -> Tensor:
        """[MR, position ramps] on the windows' canvas: MR padded with the background, ramps continued."""
        canvas = windows.pad(mr, BACKGROUND)
        spatial, padded = tuple(mr.shape[2:]), tuple(canvas.shape[2:])
        ramps = torch.from_numpy(position_ramps(spatial, centred_start(spatial, padded), padded)).to(canvas)
        return torch.cat([canvas, ramps.expand(mr.shape[0], *ramps.shape)], dim=1)

    def translate(self, mr: Tensor, inference: InferenceConfig, generator: torch.Generator | None = None) -> Tensor:
        """The whole input as one translation; see the module docstring."""
        if mr.is_cuda:
            self.to(memory_format=torch.channels_last_3d)
        windows = self.windows(inference, mr)
        out = self.translate_condition(self.condition_canvas(mr, windows), windows, inference, generator)
        return windows.crop(out, mr.shape[2:])

    @abc.abstractmethod
    def translate_condition(self, cond: Tensor, windows: Windows, inference: InferenceConfig,
                            generator: torch.Generator | None) -> Tensor:
        """CT (B, 1, *canvas) for a canvas-shaped condition [MR, positions] (B, 4, *canvas)."""

    def training_step(self, batch: dict[str, Tensor], batch_idx: int):
        return super().training_step(with_positions(batch), batch_idx)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation patches keep the positions of their volume: one window over the patch."""
        generator = torch.Generator(device=batch["mr"].device).manual_seed(batch_idx)
        cond = with_positions(batch)["mr"]
        fake = self.translate_condition(cond, Windows(tuple(cond.shape[2:])), self.validation_inference(), generator)
        self.log("val/l1", F.l1_loss(fake, batch["ct"]), prog_bar=True, batch_size=cond.shape[0])

    def on_fit_start(self) -> None:
        if self.device.type == "cuda":
            self.to(memory_format=torch.channels_last_3d)


def with_positions(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A 3D batch whose ``mr`` is the network's condition [MR, position ramps]."""
    return {**batch, "mr": torch.cat([batch["mr"], batch["position"]], dim=1)}


class Pix2Pix3D(Volumetric, Pix2Pix):
    """Pix2Pix with the 3D UNet generator; the discriminator sees [MR, CT] patches."""

    card = MethodCard(name="pix2pix_3d", label="Pix2Pix 3D", paired=True, dims=3, tiling=TILING_3D,
                      net=Generator3DSettings, loss=Pix2PixLoss, extra=Pix2PixExtra)

    def discriminate(self, cond: Tensor, ct: Tensor) -> Tensor:
        return super().discriminate(cond[:, :1], ct)

    def translate_condition(self, cond: Tensor, windows: Windows, inference: InferenceConfig,
                            generator: torch.Generator | None) -> Tensor:
        return windows.apply(lambda c, index: fast_network_call(self.generator, c), [cond])


class Diffusion3D(Volumetric):
    """DDIM 3D: the conditional diffusion of :mod:`mr2ct.methods.diffusion` on [x_t, MR, positions]."""

    condition_channels = CONDITION_CHANNELS

    def denoise(self, net: nn.Module, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return fast_network_call(net, torch.cat([x_t, cond], dim=1), t)

    def translate_condition(self, cond: Tensor, windows: Windows, inference: InferenceConfig,
                            generator: torch.Generator | None) -> Tensor:
        return self.sample_canvas(cond, windows, inference, generator)


class DDIMNoise3D(Diffusion3D, DDIMNoise):
    """DDIM 3D in noise mode."""

    card = MethodCard(name="ddim_noise_3d", label="DDIM 3D noise", paired=True, dims=3, reads=SAMPLING_SETTINGS,
                      tiling=TILING_3D, net=Denoiser3DSettings, extra=DiffusionSettings)


class DDIMImage3D(Diffusion3D, DDIMImage):
    """DDIM 3D in image mode (the authors' released 3D model)."""

    card = MethodCard(name="ddim_image_3d", label="DDIM 3D image", paired=True, dims=3, reads=SAMPLING_SETTINGS,
                      tiling=TILING_3D, net=Denoiser3DSettings, extra=DiffusionSettings)
