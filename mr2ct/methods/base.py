"""The contract every translation method fulfils, so evaluation, translate and tables never branch on it."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F

from mr2ct.core.config import InferenceConfig
from mr2ct.methods.card import MethodCard
from mr2ct.methods.windows import Windows


class TranslationModule(L.LightningModule, abc.ABC):
    """A LightningModule that maps MR to CT in model space ([-1, 1]) through ``translate``.

    ``card`` (declared once on each method class) says what the method is; ``model`` is the resolved
    ``model`` config group (a plain dict, so checkpoints load with weights_only), whose ``net``, ``loss``
    and ``extra`` are parsed into the card's schemas here, so a bad key fails when the method is built.
    """

    card: ClassVar[MethodCard]

    def __init__(self, model: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model
        self.settings = self.card.parse(model)

    @abc.abstractmethod
    def translate(
        self, mr: torch.Tensor, inference: InferenceConfig, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MR batch (B, 1, *spatial) in [-1, 1], of any spatial size, -> synthetic CT batch of the same shape.

        The network sees the input in the windows of :meth:`windows`; a sampling method takes every step for
        the whole input at once, with one noise draw from ``generator``.
        """

    def windows(self, inference: InferenceConfig, mr: torch.Tensor) -> Windows:
        """The windows the network sees: ``inference.window`` (None: one window over the whole input),
        ``inference.overlap`` (None: the card's), ``inference.batch_size`` windows per call."""
        size = inference.window if inference.window is not None else tuple(mr.shape[2:])
        overlap = inference.overlap if inference.overlap is not None else self.card.tiling.overlap
        return Windows(size, overlap, inference.batch_size)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        generator = torch.Generator(device=batch["mr"].device).manual_seed(batch_idx)
        fake = self.translate(batch["mr"], self.validation_inference(), generator)
        self.log("val/l1", F.l1_loss(fake, batch["ct"]), prog_bar=True, batch_size=batch["mr"].shape[0])

    def validation_inference(self) -> InferenceConfig:
        """Inference settings for the validation loss during training (cheap ones for samplers)."""
        return InferenceConfig(t=10)

    def adam(self, parameters) -> torch.optim.Adam:
        """Adam with the method's ``model.lr`` and ``model.betas``."""
        return torch.optim.Adam(parameters, lr=self.model_cfg["lr"], betas=tuple(self.model_cfg["betas"]))
