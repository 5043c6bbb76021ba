"""SynDiff (Özbey et al. 2023): adversarial diffusion in four large steps, trained on unpaired MR and CT.

Two parts are trained jointly, for both directions alike. The non-diffusive part is a CycleGAN: ResNet
translators MR -> CT and CT -> MR, PatchGAN critics, cycle L1. Its translations give every real image a
synthetic partner in the other domain, so the diffusive part can be trained as if paired: a generator maps
(x_{t+1} of the real image, the partner as source, t, latent z) to x_0 and steps back with the posterior
q(x_t | x_{t+1}, x_0); a time-conditioned critic judges (x_t, x_{t+1}). Losses: non-saturating (softplus)
adversarial terms with an R1 penalty on the diffusion critics, 0.5-weighted cycle and diffusion L1. One forward
pass of the generators per batch serves the critics' and the generators' update (the reference code draws a
second step t and runs the generators again for the generator update).

Inference uses only the MR -> CT diffusive generator (its EMA weights), conditioned on the real MR: four
steps, each with a fresh z, the network applied in windows at every step and all noise drawn for the whole
input from the caller's generator. Unlike the reference code, anomaly detection is not switched on at every
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import Tensor, nn

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.diffusion.large_steps import LargeStepSchedule, sample_large_steps
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import MethodCard
from mr2ct.methods.diffusion import frozen_ema
from mr2ct.methods.pix2pix import PatchGANSettings
from mr2ct.nets.resnet import ResnetSettings
from mr2ct.nets.syndiff import DiffusiveGenerator, TimeConditionedDiscriminator

DOMAINS = ("ct", "mr")
OTHER = {"ct": "mr", "mr": "ct"}


@dataclass
class DiffusiveGeneratorSettings:
    """``model.net``: the diffusive generators (reference: 64 channels, multipliers 1,1,2,2,4,4, two blocks
    per level, attention at 16 x 16, which is level 4 of a 256 crop; z of 100 mapped to 256)."""

    channels: int = 64
    mults: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4, 4])
    blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [4])
    latent_dim: int = 100
    style_dim: int = 256
    dropout: float = 0.0

    def build(self) -> DiffusiveGenerator:
        return DiffusiveGenerator(self.channels, self.mults, self.blocks, self.attention_levels, self.latent_dim,
                                  self.style_dim, self.dropout)


@dataclass
class SynDiffLoss:
    """Generator loss = adversarial + cycle_adversarial + cycle_l1 * L1(cycle) + diffusion_l1 * L1(x_0);
    the diffusion critics add r1_gamma / 2 * |grad D(real)|^2 every ``r1_every`` batches."""

    adversarial: float = 1.0
    cycle_adversarial: float = 1.0
    cycle_l1: float = 0.5
    diffusion_l1: float = 0.5
    r1_gamma: float = 1.0
    r1_every: int = 10

    def __post_init__(self) -> None:
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise ValueError(f"r1_gamma={self.r1_gamma} must be >= 0 and r1_every={self.r1_every} >= 1")


@dataclass
class DiffusionCriticSettings:
    channels: int = 128
    mults: list[int] = field(default_factory=lambda: [2, 4, 4, 4, 4, 4])


@dataclass
class CycleSettings:
    """The non-diffusive CycleGAN: ResNet-6 translators and 70 x 70 PatchGANs (reference)."""

    translator: ResnetSettings = field(default_factory=lambda: ResnetSettings(channels=64, downsamplings=2, blocks=6))
    critic: PatchGANSettings = field(default_factory=PatchGANSettings)


@dataclass
class SynDiffExtra:
    """Schedule (T steps of the VP SDE), critics, the critics' learning rate, cosine decay to ``lr_min``, EMA."""

    steps: int = 4
    beta_min: float = 0.1
    beta_max: float = 20.0
    critic: DiffusionCriticSettings = field(default_factory=DiffusionCriticSettings)
    cycle: CycleSettings = field(default_factory=CycleSettings)
    lr_critic: float = 1e-4
    lr_min: float = 1e-5
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")


class DiffusionStep(NamedTuple):
    """One training step of the diffusive part for a batch: t, the real pair (x_t, x_{t+1}), the predicted
    x_0 and the generator's x_t (``fake``) drawn from the posterior."""

    t: Tensor
    x_t: Tensor
    x_next: Tensor
    x0: Tensor
    fake: Tensor


def r1_penalty(score: Tensor, inputs: Tensor) -> Tensor:
    """Mean over the batch of |d score / d inputs|^2 (Mescheder et al.), differentiable for the critic."""
    (grad,) = torch.autograd.grad(score.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class SynDiff(TranslationModule):
    """The networks come in pairs keyed by the domain they produce ("ct" or "mr")."""

    card = MethodCard(name="syndiff", label="SynDiff", paired=False, dims=2, reads=("samples",),
                      net=DiffusiveGeneratorSettings, loss=SynDiffLoss, extra=SynDiffExtra)

    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.automatic_optimization = False
        net, extra = self.settings.net, self.settings.extra
        cycle = extra.cycle
        self.diffusive = nn.ModuleDict({d: net.build() for d in DOMAINS})
        self.translators = nn.ModuleDict({d: cycle.translator.build() for d in DOMAINS})  # "ct": MR -> CT
        self.critics = nn.ModuleDict({d: TimeConditionedDiscriminator(extra.critic.channels, extra.critic.mults)
                                      for d in DOMAINS})
        self.cycle_critics = nn.ModuleDict({
            d: PatchDiscriminator(spatial_dims=2, in_channels=1, norm="INSTANCE", channels=cycle.critic.channels,
                                  num_layers_d=cycle.critic.num_layers_d)
            for d in DOMAINS})
        self.ema = frozen_ema(self.diffusive["ct"], extra.ema_decay)
        self.schedule = LargeStepSchedule.vp(extra.steps, extra.beta_min, extra.beta_max)

    def translate(self, mr: Tensor, inference: InferenceConfig, generator: torch.Generator | None = None) -> Tensor:
        net = self.ema.module
        windows = self.windows(inference, mr)
        canvas = windows.pad(mr, BACKGROUND)

        def model_fn(x_next: Tensor, t: Tensor, source: Tensor, z: Tensor) -> Tensor:
            return windows.apply(lambda x, c, index: net(x, c, t[index], z[index]), (x_next, source))

        x0 = sample_large_steps(model_fn, canvas, self.schedule, net.latent_dim, generator)
        return windows.crop(x0, mr.shape[2:])

    def diffusion_step(self, domain: str, real: Tensor, source: Tensor) -> DiffusionStep:
        """A random step t per image of ``real``, its forward pair, and the generator's way back from x_{t+1}
        given the partner ``source``: x_0 and x_t drawn from the posterior around it."""
        t = torch.randint(0, self.schedule.T, (real.shape[0],), device=real.device)
        x_t, x_next = self.schedule.q_pair(real, t, torch.randn_like(real), torch.randn_like(real))
        z = torch.randn(real.shape[0], self.settings.net.latent_dim, device=real.device)
        x0 = self.diffusive[domain](x_next, source, t, z)
        return DiffusionStep(t, x_t, x_next, x0, self.schedule.posterior_sample(x0, x_next, t, torch.randn_like(real)))

    def critic_loss(self, real: dict[str, Tensor], synthetic: dict[str, Tensor], steps: dict[str, DiffusionStep],
                    r1: bool) -> Tensor:
        """Softplus losses of both diffusion critics (real (x_t, x_{t+1}) against the generator's x_t, R1 on
        the real ones when ``r1``) and both cycle critics (real images against translations)."""
        loss = real["ct"].new_zeros(())
        for d in DOMAINS:
            step = steps[d]
            x_t = step.x_t.requires_grad_(r1)
            score = self.critics[d](x_t, step.x_next, step.t)
            loss = loss + F.softplus(-score).mean() + F.softplus(self.critics[d](step.fake.detach(), step.x_next, step.t)).mean()
            if r1:
                loss = loss + self.settings.loss.r1_gamma / 2 * r1_penalty(score, x_t)
            loss = loss + F.softplus(-self.cycle_critics[d](real[d])[-1]).mean()
            loss = loss + F.softplus(self.cycle_critics[d](synthetic[d].detach())[-1]).mean()
        return loss

    def generator_losses(self, real: dict[str, Tensor], synthetic: dict[str, Tensor],
                         steps: dict[str, DiffusionStep]) -> dict[str, Tensor]:
        terms = dict.fromkeys(("adversarial", "cycle_adversarial", "cycle_l1", "diffusion_l1"), real["ct"].new_zeros(()))
        for d in DOMAINS:
            step = steps[d]
            terms["adversarial"] = terms["adversarial"] + F.softplus(-self.critics[d](step.fake, step.x_next, step.t)).mean()
            terms["cycle_adversarial"] = terms["cycle_adversarial"] + F.softplus(-self.cycle_critics[d](synthetic[d])[-1]).mean()
            terms["cycle_l1"] = terms["cycle_l1"] + F.l1_loss(self.translators[d](synthetic[OTHER[d]]), real[d])
            terms["diffusion_l1"] = terms["diffusion_l1"] + F.l1_loss(step.x0, real[d])
        return terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One forward pass of the generators serves both updates: the critics see its outputs detached, then
        the generators are scored by the updated critics."""
        opt_g, opt_d = self.optimizers()
        weights = self.settings.loss
        real = {d: batch[d] for d in DOMAINS}
        synthetic = {d: self.translators[d](real[OTHER[d]]) for d in DOMAINS}
        steps = {d: self.diffusion_step(d, real[d], synthetic[OTHER[d]]) for d in DOMAINS}

        loss_d = self.critic_loss(real, synthetic, steps, r1=weights.r1_gamma > 0 and batch_idx % weights.r1_every == 0)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        terms = self.generator_losses(real, synthetic, steps)
        loss_g = sum(getattr(weights, name) * value for name, value in terms.items())
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        self.log_dict({"train/loss_g": loss_g, "train/loss_d": loss_d, **{f"train/{k}": v for k, v in terms.items()}},
                      prog_bar=True, batch_size=batch["mr"].shape[0])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.diffusive["ct"])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        generators = [*self.diffusive.parameters(), *self.translators.parameters()]
        critics = [*self.critics.parameters(), *self.cycle_critics.parameters()]
        opt_g = self.adam(generators)
        opt_d = torch.optim.Adam(critics, lr=self.settings.extra.lr_critic, betas=tuple(self.model_cfg["betas"]))
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=self.settings.extra.lr_min)
                      for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers
