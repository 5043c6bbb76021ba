"""Conditional denoising diffusion (the paper's DDIM noise and image mode), 2D and 3D.

The network sees [x_t, MR] on channels and predicts the noise (``prediction: epsilon``, noise mode) or the
clean CT (``prediction: sample``, image mode); the loss is per-pixel L1 without timestep weighting, as in
the authors' code. The MR condition is replaced by the null condition with probability
``condition_dropout`` so classifier-free guidance works at inference. Sampling uses the EMA weights (the
reference code updated an EMA but sampled with the raw weights; we do not copy that).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from mr2ct.core.config import InferenceConfig
from mr2ct.diffusion.sampler import null_condition_like, sample
from mr2ct.diffusion.schedule import NoiseSchedule
from mr2ct.methods.base import TranslationModule, checked_kwargs
from mr2ct.nets.sa_unet import SAUNet


def diffusion_settings(
    prediction: str = "sample", timesteps: int = 1000, condition_dropout: float = 0.3, ema_decay: float = 0.999
) -> dict[str, Any]:
    """The method's own settings (``model.extra``); validated here so a typo fails at start."""
    if prediction not in ("epsilon", "sample"):
        raise ValueError(f"model.extra.prediction={prediction!r}; valid: epsilon (noise mode), sample (image mode)")
    if not 0.0 <= condition_dropout < 1.0:
        raise ValueError(f"model.extra.condition_dropout={condition_dropout} must lie in [0, 1)")
    return {"prediction": prediction, "timesteps": timesteps, "condition_dropout": condition_dropout, "ema_decay": ema_decay}


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as (1 + n) / (10 + n), so short runs still average sensibly."""

    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return rate * averaged + (1.0 - rate) * current

    return update


class ConditionalDiffusion(TranslationModule):
    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.settings = diffusion_settings(**checked_kwargs(diffusion_settings, dict(model["extra"]), "model.extra"))
        net = checked_kwargs(SAUNet, dict(model["net"]), "model.net")
        self.net = SAUNet(in_channels=2, out_channels=1, dims=model["dims"], **net)
        self.ema = AveragedModel(self.net, avg_fn=ema_with_warmup(self.settings["ema_decay"]), use_buffers=True)
        self.schedule = NoiseSchedule.cosine(self.settings["timesteps"])

    def denoise(self, net: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x_t, cond], dim=1), t)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ct, mr = batch["ct"], batch["mr"]
        batch_size = ct.shape[0]
        t = torch.randint(0, self.schedule.T, (batch_size,), device=ct.device)
        noise = torch.randn_like(ct)
        x_t = self.schedule.q_sample(ct, t, noise)
        dropped = torch.rand(batch_size, device=ct.device) < self.settings["condition_dropout"]
        cond = torch.where(dropped.view(-1, *[1] * (mr.ndim - 1)), null_condition_like(mr), mr)
        target = noise if self.settings["prediction"] == "epsilon" else ct
        loss = F.l1_loss(self.denoise(self.net, x_t, t, cond), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def translate(self, mr: torch.Tensor, inference: InferenceConfig, generator: torch.Generator | None = None) -> torch.Tensor:
        net = self.ema.module
        return sample(
            lambda x_t, t, cond: self.denoise(net, x_t, t, cond),
            mr,
            self.schedule,
            prediction=self.settings["prediction"],
            sampler=getattr(inference.sampler, "value", inference.sampler),
            steps=inference.t,
            eta=inference.eta,
            w=inference.w,
            null_cond=null_condition_like(mr),
            generator=generator,
        )

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.model_cfg["lr"], betas=tuple(self.model_cfg["betas"]))
