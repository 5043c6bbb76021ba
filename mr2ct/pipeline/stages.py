"""The stages train and evaluate share: data from config, the method, and the evaluation of a run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import InferenceConfig
from mr2ct.data.datamodule import SpineDataModule, TestVolume
from mr2ct.data.preprocess import REGISTRATION_REPORT, prepare_dataset
from mr2ct.methods.base import TranslationModule
from mr2ct.pipeline.run import flatten_aggregates, resolved_config
from mr2ct.registration import median_tre_mm, read_registration_report
from mr2ct.scoring.baselines import mean_ct_baseline_metrics, mean_training_ct_slice
from mr2ct.scoring.figures import translation_panel
from mr2ct.scoring.volumes import (
    IMAGE_METRICS,
    dice_summary,
    evaluate_volumes,
    image_quality_summary,
)
from mr2ct.segment import build_segmenter

log = logging.getLogger("mr2ct")


def build_method(cfg: DictConfig) -> TranslationModule:
    model = resolved_config(cfg)["model"]
    return get_class(model["target"])(model=model)


def inference_settings(cfg: DictConfig) -> InferenceConfig:
    return OmegaConf.to_object(cfg.inference)  # type: ignore[return-value]


def prepared_data(cfg: DictConfig) -> tuple[Path, SpineDataModule]:
    """The cached prepared dataset of ``cfg`` (built on first use) and its data module."""
    prepared = prepare_dataset(cfg.data, cfg.registration, cfg.preprocess, cfg.paths.cache_dir)
    log.info("prepared dataset %s (%s registration): %s", cfg.data.name, cfg.registration.mode.value, prepared)
    datamodule = SpineDataModule(
        prepared, cfg.loader, dims=cfg.model.dims, paired=cfg.model.paired,
        min_spine_pixels=cfg.preprocess.min_spine_pixels, seed=cfg.seed,
    )
    return prepared, datamodule


def registration_summary(prepared: Path) -> dict[str, Any]:
    """The prepared dataset's registration report, for results.json and the W&B run."""
    rows = read_registration_report(prepared / REGISTRATION_REPORT)
    return {"median_tre_mm": median_tre_mm(rows), "per_subject": rows}


def evaluation_sets(cfg: DictConfig, datamodule: SpineDataModule) -> dict[str, list[TestVolume]]:
    """The test volumes of the training data's test split and of every extra test set, by dataset name.

    Extra sets go through the same registration and preprocessing (cached), so their grids and value
    ranges match what the model was trained on.
    """
    sets = {cfg.data.name: datamodule.test_volumes()}
    for test_set in cfg.data.test_sets:
        prepared = prepare_dataset(test_set, cfg.registration, cfg.preprocess, cfg.paths.cache_dir)
        module = SpineDataModule(prepared, cfg.loader, dims=cfg.model.dims, min_spine_pixels=cfg.preprocess.min_spine_pixels)
        sets[test_set.name] = module.test_volumes()
    return sets


def evaluate(
    cfg: DictConfig, method: TranslationModule, datamodule: SpineDataModule, run_dir: Path, baseline: bool
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Translate and segment the test volumes of every test set, write NIfTIs and figures; return the
    results.json blocks (one per dataset) and the figures."""
    segmenter = build_segmenter(cfg.segmenter, cfg.paths.cache_dir)
    mean_slice = mean_training_ct_slice(datamodule.train_files, cfg.preprocess.min_spine_pixels) if baseline else None
    datasets: dict[str, Any] = {}
    figures: dict[str, Path] = {}
    for name, volumes in evaluation_sets(cfg, datamodule).items():
        log.info("evaluating %s: %d test volumes", name, len(volumes))
        outputs = evaluate_volumes(
            method, volumes, inference_settings(cfg), cfg.loader.crop_size, run_dir / "predictions" / name,
            seed=cfg.seed, segmenter=segmenter, progress=cfg.trainer.enable_progress_bar,
        )
        block: dict[str, Any] = {
            "image_quality": image_quality_summary(outputs),
            "dice": dice_summary(outputs),
            "reference_ct_dice": dice_summary(outputs, "reference_dice"),
        }
        if mean_slice is not None:
            per_volume = mean_ct_baseline_metrics(mean_slice, volumes)
            block["baseline_mean_ct"] = {
                "aggregates": {m: float(np.mean(np.concatenate([v[m] for v in per_volume]))) for m in IMAGE_METRICS}
            }
        datasets[name] = block
        for test, output in zip(volumes, outputs):
            figures[f"{name}/{test.name}"] = translation_panel(test, output.prediction, run_dir / "figures" / name / f"{test.name}.png")
    return {"datasets": datasets}, figures


def log_summary(results: dict[str, Any], run_dir: Path) -> None:
    """The run's mean metrics and output paths, on the console and in the run dir's log file."""
    lines = [f"mr2ct run finished: {run_dir}"]
    for key, value in flatten_aggregates(results).items():
        lines.append(f"  {key:<40} {value:10.4f}")
    lines.append(f"  results:      {run_dir / 'results.json'}")
    lines.append(f"  synthetic CT: {run_dir / 'predictions'}")
    lines.append(f"  figures:      {run_dir / 'figures'}")
    log.info("\n".join(lines))
