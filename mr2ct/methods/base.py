"""The contract every translation method fulfils, so evaluation, translate and tables never branch on it."""

from __future__ import annotations

import abc
import inspect
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F

from mr2ct.core.config import InferenceConfig


def checked_kwargs(factory: Callable, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Fail at start, listing the valid keys, when a config passes a keyword ``factory`` does not take."""
    valid = [name for name in inspect.signature(factory).parameters if name not in ("self", "dims")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {valid}")
    return kwargs


class TranslationModule(L.LightningModule, abc.ABC):
    """A LightningModule that maps MR to CT in model space ([-1, 1]) through ``translate``.

    ``model`` is the resolved ``model`` config group (a plain dict, so checkpoints load with weights_only).
    """

    def __init__(self, model: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model

    @abc.abstractmethod
    def translate(
        self, mr: torch.Tensor, inference: InferenceConfig, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MR batch (B, 1, *spatial) in [-1, 1] -> synthetic CT batch of the same shape in [-1, 1]."""

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        generator = torch.Generator(device=batch["mr"].device).manual_seed(batch_idx)
        fake = self.translate(batch["mr"], self.validation_inference(), generator)
        self.log("val/l1", F.l1_loss(fake, batch["ct"]), prog_bar=True, batch_size=batch["mr"].shape[0])

    def validation_inference(self) -> InferenceConfig:
        """Inference settings for the validation loss during training (cheap ones for samplers)."""
        return InferenceConfig(t=10)
