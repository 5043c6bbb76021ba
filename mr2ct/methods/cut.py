"""CUT, contrastive unpaired translation (Park et al. 2020), the paper's unpaired baseline.

The generator maps MR to CT against a PatchGAN (LSGAN) that only ever sees real CT, never the MR's own
CT. What ties the output to the input is PatchNCE: features of the output at a patch must match the input's
features at the same patch better than at any other patch of the image. The identity term does the same
for CT pushed through the generator. Learning rate decays linearly to zero over the second half of
training (reference implementation). Unlike the reference code, the projection heads are built with the
method (not on the first batch), so checkpoints load with ``weights_only``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import Tensor, nn

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import MethodCard
from mr2ct.methods.pix2pix import PatchGANSettings, linear_decay_second_half
from mr2ct.nets.generators import TanhHead
from mr2ct.nets.resnet import ResnetGenerator, ResnetSettings
from mr2ct.nets.sa_unet import SAUNetSettings

PROBE_SIZE = 32  # side of the blank image that reads the feature widths off a new generator (2 ** 5 levels)


@contextmanager
def captured_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """The outputs of ``modules`` during the forward passes inside the block, in call order."""
    outputs: list[Tensor] = []
    handles = [m.register_forward_hook(lambda module, args, out: outputs.append(out)) for m in modules]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class FeaturesComplete(Exception):
    """Raised by the last feature layer: the rest of the forward pass is not needed."""


def read_features(generator: nn.Module, layers: Sequence[nn.Module], image: Tensor) -> list[Tensor]:
    """The outputs of ``layers`` (in call order) for ``image``; the pass stops after the last of them."""

    def stop(module, args, out):
        raise FeaturesComplete

    with captured_outputs(layers) as features:
        handle = layers[-1].register_forward_hook(stop)
        try:
            generator(image)
        except FeaturesComplete:
            pass
        finally:
            handle.remove()
    return features


def sample_patches(features: Tensor, ids: Tensor) -> Tensor:
    """(B, C, *spatial) features at the flat spatial positions ``ids`` -> (B, len(ids), C)."""
    return features.flatten(2)[:, :, ids].transpose(1, 2)


def patch_nce_loss(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """Mean over patches i of -log softmax_j(q_i . k_j / temperature) at j = i, with j over the patches of
    the same image: (B, P, D) query and key; the keys are targets, so no gradient flows into them."""
    logits = query @ key.detach().transpose(1, 2) / temperature
    batch, patches = logits.shape[:2]
    own = torch.arange(patches, device=logits.device).repeat(batch)
    return F.cross_entropy(logits.flatten(0, 1), own)


class PatchProjection(nn.Module):
    """CUT's per-layer head: Linear - ReLU - Linear to ``width``, then L2 normalisation."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, patches: Tensor) -> Tensor:
        return F.normalize(self.mlp(patches), dim=-1)


class PatchNCE(nn.Module):
    """PatchNCE over several generator layers: per layer the same ``patches`` random positions of output
    and input features, each projected by that layer's head; the mean loss over the layers."""

    def __init__(self, channels: Sequence[int], patches: int, temperature: float, width: int):
        super().__init__()
        self.heads = nn.ModuleList(PatchProjection(c, width) for c in channels)
        self.patches, self.temperature = patches, temperature

    def forward(self, output_features: Sequence[Tensor], input_features: Sequence[Tensor]) -> Tensor:
        losses = []
        for head, query, key in zip(self.heads, output_features, input_features, strict=True):
            ids = torch.randperm(query[0, 0].numel(), device=query.device)[: self.patches]
            losses.append(patch_nce_loss(head(sample_patches(query, ids)), head(sample_patches(key, ids)), self.temperature))
        return torch.stack(losses).mean()


@dataclass
class CUTResnetSettings(ResnetSettings):
    """``model.net`` of CUT ResNet: the generator (the paper's tuning) and the layer indices PatchNCE reads."""

    channels: int = 32
    downsamplings: int = 1
    blocks: int = 8
    nce_layers: list[int] = field(default_factory=lambda: [0, 4, 8, 12, 16])

    def build(self) -> ResnetGenerator:
        generator = super().build()
        outside = [i for i in self.nce_layers if not 0 <= i < len(generator)]
        if outside:
            raise ValueError(f"nce_layers {outside} outside the generator's {len(generator)} layers")
        return generator

    def feature_layers(self, generator: ResnetGenerator) -> list[nn.Module]:
        return [generator[i] for i in sorted(self.nce_layers)]


@dataclass
class CUTSAUNetSettings(SAUNetSettings):
    """``model.net`` of CUT SA-UNet: the diffusion SA-UNet without time input, tanh output; PatchNCE reads
    the features after every down-convolution and the first up-convolution (the paper's choice)."""

    def build(self) -> TanhHead:  # type: ignore[override]
        if len(self.dim_mults) < 2:
            raise ValueError("CUT SA-UNet needs at least two levels (dim_mults), so it has down/up-convolutions")
        return TanhHead(super().build(in_channels=1, out_channels=1, dims=2, time_embedding=False))

    def feature_layers(self, generator: TanhHead) -> list[nn.Module]:
        unet = generator.body
        downs = [level.resample for level in unet.encoder if not isinstance(level.resample, nn.Identity)]
        return [*downs, unet.decoder[0].resample]


@dataclass
class CUTLoss:
    """Generator loss = gan * LSGAN + nce * PatchNCE, PatchNCE averaged with the identity term on CT when
    ``nce_identity``; ``patches`` positions per layer, ``temperature``, heads of width ``projection``."""

    gan: float = 1.0
    nce: float = 1.0
    nce_identity: bool = True
    patches: int = 256
    temperature: float = 0.07
    projection: int = 256

    def __post_init__(self) -> None:
        if self.patches < 1 or self.temperature <= 0 or self.projection < 1:
            raise ValueError(f"patches={self.patches} and projection={self.projection} must be >= 1, "
                             f"temperature={self.temperature} > 0")


@dataclass
class CUTExtra:
    discriminator: PatchGANSettings = field(default_factory=PatchGANSettings)


def lsgan(score: Tensor, real: bool) -> Tensor:
    return F.mse_loss(score, torch.full_like(score, float(real)))


class CUT(TranslationModule):
    """Unpaired MR -> CT with the paper's tuned ResNet generator (one down/up convolution, 8 blocks)."""

    card = MethodCard(name="cut", label="CUT ResNet", paired=False, dims=2, net=CUTResnetSettings, loss=CUTLoss,
                      extra=CUTExtra)

    def __init__(self, model: dict[str, Any]):
        super().__init__(model)
        self.automatic_optimization = False
        self.generator = self.settings.net.build()
        self.feature_layers = self.settings.net.feature_layers(self.generator)
        loss = self.settings.loss
        self.patch_nce = PatchNCE(self.feature_widths(), loss.patches, loss.temperature, loss.projection)
        disc = self.settings.extra.discriminator
        self.discriminator = PatchDiscriminator(spatial_dims=2, in_channels=1, norm="INSTANCE",
                                                channels=disc.channels, num_layers_d=disc.num_layers_d)

    def feature_widths(self) -> list[int]:
        """Channels of each PatchNCE layer, read off one forward pass of a blank image."""
        with torch.no_grad():
            features = read_features(self.generator, self.feature_layers, torch.zeros(1, 1, PROBE_SIZE, PROBE_SIZE))
        return [f.shape[1] for f in features]

    def translate(self, mr: Tensor, inference: InferenceConfig, generator=None) -> Tensor:
        """One deterministic pass of the generator over the windows of ``mr``."""
        return self.windows(inference, mr).apply(lambda x, index: self.generator(x), [mr], pad_values=[BACKGROUND])

    def translated(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The generator's output for ``image`` and the features PatchNCE reads on the way."""
        with captured_outputs(self.feature_layers) as features:
            output = self.generator(image)
        return output, features

    def nce(self, output: Tensor, input_features: list[Tensor]) -> Tensor:
        """PatchNCE between the features of ``output`` (passed through the generator again) and its input's."""
        return self.patch_nce(read_features(self.generator, self.feature_layers, output), input_features)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        mr, ct = batch["mr"], batch["ct"]
        weights = self.settings.loss
        fake, mr_features = self.translated(mr)

        loss_d = 0.5 * (lsgan(self.discriminator(ct)[-1], True) + lsgan(self.discriminator(fake.detach())[-1], False))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        loss_gan = lsgan(self.discriminator(fake)[-1], True)
        loss_nce = self.nce(fake, mr_features)
        if weights.nce_identity:
            identity, ct_features = self.translated(ct)
            loss_nce = 0.5 * (loss_nce + self.nce(identity, ct_features))
        loss_g = weights.gan * loss_gan + weights.nce * loss_nce
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        self.log_dict({"train/loss_g": loss_g, "train/loss_d": loss_d, "train/gan": loss_gan, "train/nce": loss_nce},
                      prog_bar=True, batch_size=mr.shape[0])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        opt_g = self.adam(itertools.chain(self.generator.parameters(), self.patch_nce.parameters()))
        opt_d = self.adam(self.discriminator.parameters())
        decay = linear_decay_second_half(max(int(self.trainer.max_epochs or 1), 1))
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]


class CUTSAUNet(CUT):
    """CUT with the diffusion SA-UNet as generator (no time input), the paper's "CUT SA-UNet" row."""

    card = MethodCard(name="cut_sa_unet", label="CUT SA-UNet", paired=False, dims=2, net=CUTSAUNetSettings,
                      loss=CUTLoss, extra=CUTExtra)
