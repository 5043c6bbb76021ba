"""What lets a killed training run resume exactly and a re-run sweep skip finished jobs: the data order and the
random states kept in every checkpoint, and the test for a run dir that already holds a completed run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from mr2ct.data.datamodule import SpineDataModule
from mr2ct.pipeline.run import make_paths_absolute, resolved_config


def finished_run(cfg: DictConfig) -> dict[str, Any] | None:
    """results.json of this run dir when it records a completed run of the same config (ckpt_path aside), so
    a re-run sweep (same hydra.sweep.dir) skips the jobs that finished and resumes the others."""
    record = Path(cfg.paths.output_dir) / "results.json"
    if not record.is_file():
        return None
    results = json.loads(record.read_text())
    make_paths_absolute(cfg)
    config = {key: value for key, value in resolved_config(cfg).items() if key != "ckpt_path"}
    recorded = {key: value for key, value in results.get("config", {}).items() if key != "ckpt_path"}
    return results if results.get("status") == "complete" and recorded == config else None


class ResumableDataOrder(Callback):
    """Keeps in every checkpoint what Lightning does not: where the epoch's data order stood and the random
    generators' states, so a run resumed mid-epoch trains on the same batches with the same noise as a run never
    stopped (exact in one process; under DDP a rank's share is not split at the same item)."""

    KEY = "mr2ct_data_order"

    def __init__(self, datamodule: SpineDataModule):
        self.datamodule = datamodule
        self.rng_states: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        at_epoch_end = done >= trainer.num_training_batches
        numpy_state = np.random.get_state()
        checkpoint[self.KEY] = {
            "epoch": trainer.current_epoch + int(at_epoch_end),
            "items_done": 0 if at_epoch_end else done * self.datamodule.loader_cfg.batch_size,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.KEY)
        if state is None:
            return
        self.datamodule.setup("fit")
        self.datamodule.train_sampler.resume(state["epoch"], state["items_done"])
        self.rng_states = state

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.rng_states is None:
            return
        state, self.rng_states = self.rng_states, None
        torch.set_rng_state(state["torch"])
        if state["cuda"]:
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        random.setstate(state["python"])
