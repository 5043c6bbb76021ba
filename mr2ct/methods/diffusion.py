"""Conditional denoising diffusion (the paper's DDIM noise and image mode), 2D and 3D.

The network sees [x_t, MR] on channels and predicts the noise (noise mode, :class:`DDIMNoise`) or the
clean CT (image mode, :class:`DDIMImage`); the loss is per-pixel L1 without timestep weighting, as in
the authors' code. The MR condition is replaced by the null condition with probability
``condition_dropout`` so classifier-free guidance works at inference. Sampling uses the EMA weights (the
reference code updated an EMA but sampled with the raw weights; we do not copy that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.diffusion.sampler import Prediction, null_condition_like, sample
from mr2ct.diffusion.schedule import NoiseSchedule
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import SAMPLING_SETTINGS, MethodCard
from mr2ct.methods.windows import Windows, windowed_model_fn
from mr2ct.nets.sa_unet import SAUNetSettings


@dataclass
class DiffusionSettings:
    """``model.extra`` of the diffusion methods."""

    timesteps: int = 1000
    condition_dropout: float = 0.3  # probability of training with the null condition (classifier-free guidance)
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise ValueError(f"timesteps={self.timesteps} must be at least 1")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout={self.condition_dropout} must lie in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as (1 + n) / (10 + n), so short runs still average sensibly."""

    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return rate * averaged + (1.0 - rate) * current

    return update


def frozen_ema(net: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``net`` whose weights train nothing (requires_grad False): no optimiser sees them and DDP
    neither reduces gradients for them nor rejects them as parameters without gradients."""
    return AveragedModel(net, avg_fn=ema_with_warmup(decay), use_buffers=True).requires_grad_(False)


class ConditionalDiffusion(TranslationModule):
    """The shared machinery; a subclass fixes what the network predicts (``prediction``) and its card."""

    prediction: ClassVar[Prediction]
    condition_channels: ClassVar[int] = 1  # the MR; the 3D methods add their position ramps

    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.net = self.settings.net.build(in_channels=1 + self.condition_channels, out_channels=1, dims=self.card.dims)
        self.ema = frozen_ema(self.net, self.settings.extra.ema_decay)
        self.schedule = NoiseSchedule.cosine(self.settings.extra.timesteps)

    def denoise(self, net: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x_t, cond], dim=1), t)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ct, mr = batch["ct"], batch["mr"]
        batch_size = ct.shape[0]
        t = torch.randint(0, self.schedule.T, (batch_size,), device=ct.device)
        noise = torch.randn_like(ct)
        x_t = self.schedule.q_sample(ct, t, noise)
        dropped = torch.rand(batch_size, device=ct.device) < self.settings.extra.condition_dropout
        cond = torch.where(dropped.view(-1, *[1] * (mr.ndim - 1)), null_condition_like(mr), mr)
        target = noise if self.prediction == "epsilon" else ct
        loss = F.l1_loss(self.denoise(self.net, x_t, t, cond), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The EMA follows every optimiser step within the step, so a checkpoint saved at the step's end (a
        resumable mid-epoch checkpoint) holds the EMA of that step too."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.net)

    def translate(self, mr: torch.Tensor, inference: InferenceConfig, generator: torch.Generator | None = None) -> torch.Tensor:
        windows = self.windows(inference, mr)
        canvas = windows.pad(mr, BACKGROUND)
        return windows.crop(self.sample_canvas(canvas, windows, inference, generator), mr.shape[2:])

    def sample_canvas(self, cond: torch.Tensor, windows: Windows, inference: InferenceConfig,
                      generator: torch.Generator | None) -> torch.Tensor:
        """x0 for a canvas-shaped condition (at least a window per axis): one trajectory, with the EMA
        network applied in ``windows`` at every step."""
        net = self.ema.module
        return sample(
            windowed_model_fn(lambda x_t, t, c: self.denoise(net, x_t, t, c), windows),
            cond,
            self.schedule,
            prediction=self.prediction,
            sampler=getattr(inference.sampler, "value", inference.sampler),
            steps=inference.t,
            eta=inference.eta,
            w=inference.w,
            null_cond=null_condition_like(cond) if inference.w else None,  # only guidance reads it
            generator=generator,
        )

    def configure_optimizers(self):
        return self.adam(self.net.parameters())


class DDIMNoise(ConditionalDiffusion):
    """Noise mode: the network predicts the added noise, as in DDPM/DDIM."""

    prediction = "epsilon"
    card = MethodCard(name="ddim_noise", label="DDIM noise", paired=True, dims=2, reads=SAMPLING_SETTINGS,
                      net=SAUNetSettings, extra=DiffusionSettings)


class DDIMImage(ConditionalDiffusion):
    """Image mode: the network predicts the clean CT (the paper's best 2D method)."""

    prediction = "sample"
    card = MethodCard(name="ddim_image", label="DDIM image", paired=True, dims=2, reads=SAMPLING_SETTINGS,
                      net=SAUNetSettings, extra=DiffusionSettings)
