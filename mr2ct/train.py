"""``python -m mr2ct.train``: phantom (cached) -> prepare (cached) -> fit -> translate test volumes -> results."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import register_configs
from mr2ct.pipeline.clock import TrainingClock
from mr2ct.pipeline.kept import keep_for_inference
from mr2ct.pipeline.resume import ResumableDataOrder, finished_run
from mr2ct.pipeline.run import RunLogger, is_multirun, objective, run_task
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
    clock = TrainingClock()
    trainer = L.Trainer(
        **trainer_settings(cfg),
        logger=logger.lightning,
        callbacks=[checkpoints, *resumable, clock, *logger.callbacks],
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
    results["training"] = clock.summary()
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
