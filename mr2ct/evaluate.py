"""``python -m mr2ct.evaluate ckpt=RUN_OR_CKPT``: a trained model on the test sets with any inference settings.

The data, registration, preprocessing, model and segmenter come from the training run's own resolved config,
and the test data and segmenter from what the run kept in its dir, so nothing is prepared or retrained (from
any working directory, on any machine that has the run dir); the inference settings, seed and logger
come from this command line. The result is a run dir like training's (job_type = evaluate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import register_configs
from mr2ct.inference.checkpoint import load_method, locate_checkpoint, trained_config
from mr2ct.pipeline.run import RunLogger, run_task
from mr2ct.pipeline.stages import log_summary, prepared_data, score_test_sets

register_configs()


def selected_test_sets(test_sets: list, names: list[str] | None, train_run: Path) -> list:
    """The run's extra test sets named in ``names`` (all of them when ``names`` is None), in the run's order."""
    if names is None:
        return list(test_sets)
    available = [test_set.name for test_set in test_sets]
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"test_sets={list(names)}: {unknown} not among the test sets of {train_run}; valid: {available}")
    return [test_set for test_set in test_sets if test_set.name in names]


def evaluation_config(cfg: DictConfig, train_run: Path) -> DictConfig:
    """The training run's config with this command's inference, seed, logger, paths, isotropic outputs, test sets
    and segmenter (when one is chosen; else the run's own, which the run keeps)."""
    trained = trained_config(train_run)
    for key in ("inference", "seed", "logger", "paths", "experiment_name", "iso"):
        trained[key] = cfg[key]
    if cfg.segmenter is not None:
        trained.segmenter = cfg.segmenter
    names = None if cfg.test_sets is None else list(cfg.test_sets)
    trained.data.test_sets = selected_test_sets(trained.data.test_sets, names, train_run)
    trained.data.score_other_contrasts = names is not None  # sets named on the command line are scored whatever their contrast
    trained.trainer.enable_progress_bar = True
    return trained


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, logger: RunLogger) -> dict[str, Any]:
    checkpoint = Path(cfg.ckpt_path)
    source_run = checkpoint.parent.parent
    method = load_method(cfg.model.name, checkpoint)
    prepared, datamodule = prepared_data(cfg, method.card, source_run)
    results, figures = score_test_sets(cfg, method, datamodule, run_dir, baseline=False, source_run=source_run)
    results.update(source_run=str(source_run), checkpoint=str(checkpoint), prepared_dataset=str(prepared))
    logger.log_results(results, figures)
    log_summary(results, run_dir)
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    with refuse_user_errors():
        train_run, checkpoint = locate_checkpoint(cfg.ckpt)
        merged = evaluation_config(cfg, train_run)
        merged.ckpt_path = str(checkpoint)
        return run_task(merged, "evaluate", evaluate_checkpoint)


if __name__ == "__main__":
    hydra_entry(main, config_name="evaluate")
