"""``python -m mr2ct.train``: phantom (cached) -> prepare (cached) -> fit -> translate test volumes -> results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import register_configs
from mr2ct.pipeline.kept import keep_for_inference
from mr2ct.pipeline.run import RunLogger, resolved_config, run_task
from mr2ct.pipeline.stages import (
    build_method,
    log_summary,
    prepared_data,
    registration_summary,
    score_test_sets,
)

register_configs()


def train(cfg: DictConfig, run_dir: Path, logger: RunLogger) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    if cfg.fail_on_purpose:
        raise RuntimeError("fail_on_purpose=true: this job fails by request (tests of sweep failure handling)")
    method = build_method(cfg)  # a bad model setting fails here, before minutes of data preparation
    prepared, datamodule = prepared_data(cfg, method.card)
    checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}", save_last=True, auto_insert_metric_name=False)
    trainer = L.Trainer(
        **resolved_config(cfg)["trainer"],
        logger=logger.lightning,
        callbacks=[checkpoints],
        default_root_dir=str(run_dir),
    )
    trainer.fit(method, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
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
        return run_task(cfg, "train", train)


if __name__ == "__main__":
    hydra_entry(main)
