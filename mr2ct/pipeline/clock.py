"""Training cost as a run records it: wall time and batches of the training loop itself."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TrainingClock(L.Callback):
    """Wall time and batches from the first to the last training batch of this process (validation epochs
    included; setup, data preparation and the sanity check not): the training cost a method's row reports. A
    resumed run counts only what it trained itself. One batch is one update of every network of the method."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds = 0.0
        self.batches = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batches += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started is not None:
            self.seconds = time.perf_counter() - self.started

    def summary(self) -> dict[str, float]:
        """results.json's ``training`` block."""
        rate = self.batches / self.seconds if self.seconds > 0 else 0.0
        return {"seconds": round(self.seconds, 3), "batches": self.batches, "batches_per_second": round(rate, 3)}
