"""Pix2Pix (Isola et al. 2017) as in the paper: generator + conditional PatchGAN, LSGAN, L1 and SSIM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.networks.nets import PatchDiscriminator

from mr2ct.core.config import InferenceConfig
from mr2ct.methods.base import TranslationModule, checked_kwargs
from mr2ct.nets.generators import build_generator


class Pix2Pix(TranslationModule):
    """Paired translation. Generator loss = gan * LSGAN + l1 * (L1 + ssim * (1 - SSIM)) as in the authors' code.

    The discriminator sees [MR, CT] pairs (conditional). Learning rate decays linearly to zero over the
    second half of training (reference implementation).
    """

    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.automatic_optimization = False
        net = dict(model["net"])
        kind = net.pop("kind")
        self.generator = build_generator(kind, dims=model["dims"], **net)
        disc = checked_kwargs(PatchDiscriminator, dict(model["extra"].get("discriminator", {})), "model.extra.discriminator")
        self.discriminator = PatchDiscriminator(spatial_dims=model["dims"], in_channels=2, norm="INSTANCE", **disc)
        loss = checked_kwargs(_loss_weights, dict(model["loss"]), "model.loss")
        self.loss_weights = _loss_weights(**loss)
        self.ssim_loss = SSIMLoss(spatial_dims=model["dims"], data_range=2.0)

    def translate(self, mr: torch.Tensor, inference: InferenceConfig, generator=None) -> torch.Tensor:
        return self.generator(mr)

    def discriminate(self, mr: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([mr, ct], dim=1))[-1]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        mr, ct = batch["mr"], batch["ct"]
        weights = self.loss_weights
        fake = self.generator(mr)

        score_real = self.discriminate(mr, ct)
        score_fake = self.discriminate(mr, fake.detach())
        loss_d = 0.5 * (F.mse_loss(score_real, torch.ones_like(score_real)) + F.mse_loss(score_fake, torch.zeros_like(score_fake)))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        score = self.discriminate(mr, fake)
        loss_gan = F.mse_loss(score, torch.ones_like(score))
        loss_l1 = F.l1_loss(fake, ct)
        loss_ssim = self.ssim_loss(fake, ct) if weights["ssim"] else torch.zeros((), device=mr.device)
        loss_g = weights["gan"] * loss_gan + weights["l1"] * (loss_l1 + weights["ssim"] * loss_ssim)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        batch_size = mr.shape[0]
        self.log_dict(
            {"train/loss_g": loss_g, "train/loss_d": loss_d, "train/l1": loss_l1, "train/gan": loss_gan},
            prog_bar=True,
            batch_size=batch_size,
        )

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        lr, betas = self.model_cfg["lr"], tuple(self.model_cfg["betas"])
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        decay = linear_decay_second_half(epochs)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]


def _loss_weights(gan: float = 1.0, l1: float = 10.0, ssim: float = 1.0) -> dict[str, float]:
    return {"gan": gan, "l1": l1, "ssim": ssim}


def linear_decay_second_half(epochs: int):
    """LR factor per epoch: 1 for the first half, then linearly down to 1/(half+1) at the last epoch."""
    half = epochs // 2

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch - half) / (epochs - half + 1)

    return factor
