"""``python -m mr2ct.train``: phantom (cached) -> prepare (cached) -> fit -> translate test volumes -> results."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import register_configs
from mr2ct.pipeline.kept import keep_for_inference
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.pipeline.run import RunLogger, is_multirun, make_paths_absolute, objective, resolved_config, run_task
from mr2ct.pipeline.stages import (
    build_method,
    log_summary,
    prepared_data,
    registration_summary,
    score_test_sets,
)

register_configs()
log = logging.getLogger("mr2ct")

GPU_ACCELERATORS = ("gpu", "cuda")


def uses_gpu(accelerator: str) -> bool:
    return accelerator in GPU_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available())


def trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    """The Lightning Trainer's keyword arguments; ``precision: auto`` (trainer=auto) becomes bf16-mixed where
    the run trains on a GPU and 32-true on the CPU."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.pop("checkpoint_every_n_steps")
    if settings["precision"] == "auto":
        settings["precision"] = "bf16-mixed" if uses_gpu(settings["accelerator"]) else "32-true"
    return settings


def refuse_without_gpu(cfg: DictConfig) -> None:
    """A GPU configuration (trainer=gpu/ddp, every paper-scale experiment) on a machine without CUDA stops at
    start, not after its heavy preprocessing."""
    if cfg.trainer.accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
        raise ValueError(
            f"trainer.accelerator={cfg.trainer.accelerator}{f' (experiment={experiment})' if experiment else ''} "
            "needs a CUDA GPU and this machine has none; run it on a GPU node, or add trainer=auto to try it on the CPU")


def refuse_local_ddp_sweep(cfg: DictConfig) -> None:
    """Lightning starts DDP ranks above 0 by running the command line again, which in a local multirun would run
    the whole sweep again per rank; on SLURM the ranks are the job's own tasks."""
    if is_multirun() and cfg.trainer.strategy.startswith("ddp") and "SLURM_NTASKS" not in os.environ:
        raise ValueError("trainer.strategy=ddp in a local multirun: run the jobs one at a time, or sweep with "
                         "hydra/launcher=submitit_slurm (one task per GPU)")


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


def train(cfg: DictConfig, run_dir: Path, logger: RunLogger) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    if cfg.fail_on_purpose:
        raise RuntimeError("fail_on_purpose=true: this job fails by request (tests of sweep failure handling)")
    method = build_method(cfg)  # a bad model setting fails here, before minutes of data preparation
    prepared, datamodule = prepared_data(cfg, method.card)
    checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}", save_last=True, auto_insert_metric_name=False)
    resumable = [ResumableDataOrder(datamodule)]
    if cfg.trainer.checkpoint_every_n_steps:  # last.ckpt mid-epoch too, for ckpt_path=last after a kill
        resumable.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=True,
                                         every_n_train_steps=cfg.trainer.checkpoint_every_n_steps))
    trainer = L.Trainer(
        **trainer_settings(cfg),
        logger=logger.lightning,
        callbacks=[checkpoints, *resumable, *logger.callbacks],
        default_root_dir=str(run_dir),
    )
    trainer.fit(method, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if not trainer.is_global_zero:  # DDP: rank 0 alone evaluates (once) and records
        return {}
    results, figures = score_test_sets(cfg, method, datamodule, run_dir, baseline=True)
    keep_for_inference(cfg, method.card, run_dir, list(results["datasets"]))
    results["prepared_dataset"] = str(prepared)
    results["registration"] = registration_summary(prepared)
    results["checkpoint"] = checkpoints.last_model_path
    logger.log_results(results, figures)
    log_summary(results, run_dir)
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    with refuse_user_errors():
        refuse_without_gpu(cfg)
        refuse_local_ddp_sweep(cfg)
        finished = finished_run(cfg)
        if finished is not None:
            log.info("skipped: %s already holds a completed run of this config", cfg.paths.output_dir)
            return objective(finished)
        return run_task(cfg, "train", train)


if __name__ == "__main__":
    hydra_entry(main)
