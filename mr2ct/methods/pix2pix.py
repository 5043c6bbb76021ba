"""Pix2Pix (Isola et al. 2017) as in the paper: generator + conditional PatchGAN, LSGAN, L1 and SSIM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.networks.nets import PatchDiscriminator
from torch import nn

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import MethodCard
from mr2ct.nets.generators import TanhHead, pix2pix_unet
from mr2ct.nets.sa_unet import SAUNetSettings


@dataclass
class UNetSettings:
    """``model.net`` of Pix2Pix UNet: ``levels`` down/up blocks with widths doubling from ``channels``."""

    channels: int = 64
    levels: int = 5
    dropout: float = 0.2

    def build(self, dims: int) -> nn.Module:
        return pix2pix_unet(dims=dims, channels=self.channels, levels=self.levels, dropout=self.dropout)


@dataclass
class GeneratorSAUNetSettings(SAUNetSettings):
    """``model.net`` of Pix2Pix SA-UNet: the diffusion SA-UNet without time input, tanh output."""

    def build(self, dims: int) -> nn.Module:  # type: ignore[override]
        return TanhHead(super().build(in_channels=1, out_channels=1, dims=dims, time_embedding=False))


@dataclass
class Pix2PixLoss:
    """Generator loss = gan * LSGAN + l1 * (L1 + ssim * (1 - SSIM)), the authors' weighting."""

    gan: float = 1.0
    l1: float = 10.0
    ssim: float = 1.0


@dataclass
class PatchGANSettings:
    channels: int = 64
    num_layers_d: int = 3


@dataclass
class Pix2PixExtra:
    discriminator: PatchGANSettings = field(default_factory=PatchGANSettings)


class Pix2Pix(TranslationModule):
    """Paired translation with the paper's UNet generator. The discriminator sees [MR, CT] pairs
    (conditional). Learning rate decays linearly to zero over the second half of training (reference
    implementation)."""

    card = MethodCard(name="pix2pix", label="Pix2Pix UNet", paired=True, dims=2, net=UNetSettings, loss=Pix2PixLoss,
                      extra=Pix2PixExtra)

    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.automatic_optimization = False
        dims = self.card.dims
        self.generator = self.settings.net.build(dims)
        disc = self.settings.extra.discriminator
        self.discriminator = PatchDiscriminator(spatial_dims=dims, in_channels=2, norm="INSTANCE",
                                                channels=disc.channels, num_layers_d=disc.num_layers_d)
        self.ssim_loss = SSIMLoss(spatial_dims=dims, data_range=2.0)

    def translate(self, mr: torch.Tensor, inference: InferenceConfig, generator=None) -> torch.Tensor:
        """One deterministic pass of the generator over the windows of ``mr``."""
        return self.windows(inference, mr).apply(lambda x, index: self.generator(x), [mr], pad_values=[BACKGROUND])

    def discriminate(self, mr: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([mr, ct], dim=1))[-1]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        mr, ct = batch["mr"], batch["ct"]
        weights = self.settings.loss
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
        loss_ssim = self.ssim_loss(fake, ct) if weights.ssim else torch.zeros((), device=mr.device)
        loss_g = weights.gan * loss_gan + weights.l1 * (loss_l1 + weights.ssim * loss_ssim)
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
        opt_g, opt_d = self.adam(self.generator.parameters()), self.adam(self.discriminator.parameters())
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        decay = linear_decay_second_half(epochs)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]


class Pix2PixSAUNet(Pix2Pix):
    """Pix2Pix with the diffusion SA-UNet as generator (no time input), the paper's "Pix2Pix SA-UNet" row."""

    card = MethodCard(name="pix2pix_sa_unet", label="Pix2Pix SA-UNet", paired=True, dims=2,
                      net=GeneratorSAUNetSettings, loss=Pix2PixLoss, extra=Pix2PixExtra)


def linear_decay_second_half(epochs: int):
    """LR factor per epoch: 1 for the first half, then linearly down to 1/(half+1) at the last epoch."""
    half = epochs // 2

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch - half) / (epochs - half + 1)

    return factor
