"""The stages train and evaluate share: the method, its data, and the scoring of every test set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import DatasetConfig, InferenceConfig, LoaderConfig
from mr2ct.data.datamodule import SpineDataModule, TestVolume
from mr2ct.data.preprocess import REGISTRATION_REPORT, load_manifest, prepare_dataset
from mr2ct.data.sources import dataset_contrasts
from mr2ct.inference.checkpoint import kept_dir
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import MethodCard
from mr2ct.methods.registry import method_class
from mr2ct.pipeline.kept import kept_test_split
from mr2ct.pipeline.landmarks import landmark_source
from mr2ct.pipeline.run import flatten_aggregates
from mr2ct.registration import median_of, median_tre_mm, read_registration_report
from mr2ct.scoring.baselines import mean_ct_baseline_metrics, mean_training_ct_slice
from mr2ct.scoring.figures import translation_panel
from mr2ct.scoring.volumes import dice_summary, image_quality_summary, score_volumes
from mr2ct.segment import build_segmenter

log = logging.getLogger("mr2ct")


def build_method(cfg: DictConfig) -> TranslationModule:
    """The configured method with its settings checked against its card: build it before any data work."""
    model = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    return method_class(model["name"])(model=model)


def inference_settings(cfg: DictConfig) -> InferenceConfig:
    return OmegaConf.to_object(cfg.inference)  # type: ignore[return-value]


def prepared_dataset(dataset_cfg: DatasetConfig, cfg: DictConfig, card: MethodCard, source_run: Path | None) -> Path:
    """A dataset prepared for the method of ``card``: the test split the training run ``source_run`` kept
    (evaluate), else the cache's entry, built on first use."""
    kept = kept_test_split(dataset_cfg, cfg, card, source_run) if source_run is not None else None
    return kept or prepare_dataset(dataset_cfg, cfg.registration, cfg.preprocess, card.dims, cfg.paths.cache_dir,
                                   landmark_source=landmark_source(cfg.registration, cfg.paths.cache_dir))


def prepared_data(cfg: DictConfig, card: MethodCard, source_run: Path | None = None) -> tuple[Path, SpineDataModule]:
    """The prepared training data of ``cfg`` (see :func:`prepared_dataset`) and its data module."""
    loader: LoaderConfig = OmegaConf.to_object(cfg.loader)  # type: ignore[assignment]  # checked before the data work
    prepared = prepared_dataset(cfg.data, cfg, card, source_run)
    log.info("prepared dataset %s (%s registration): %s", cfg.data.name, cfg.registration.mode.value, prepared)
    datamodule = SpineDataModule(
        prepared, loader, dims=card.dims, paired=card.paired,
        min_spine_pixels=cfg.preprocess.min_spine_pixels, seed=cfg.seed,
    )
    return prepared, datamodule


def registration_summary(prepared: Path) -> dict[str, Any]:
    """The prepared dataset's registration report, for results.json and the W&B run: the median landmark
    error after registration, where ground truth exists the medians of the used landmarks' error and of the
    error against the true transform, which landmarks were used (the deriving run, if any; per subject in
    ``per_subject``), and the report's rows."""
    rows = read_registration_report(prepared / REGISTRATION_REPORT)
    return {
        "median_tre_mm": median_tre_mm(rows),
        "median_landmark_error_mm": median_of(rows, "landmark_error_mm"),
        "median_true_error_mm": median_of(rows, "true_error_mm"),
        "landmarks_from": load_manifest(prepared).get("landmarks_from"),
        "derived_landmarks": sum(str(row.get("landmarks")).startswith("derived") for row in rows),
        "per_subject": rows,
    }


@dataclass
class TestSet:
    """One dataset's test volumes; ``other_contrast`` marks a set scored although its MR contrast is not the
    training data's (a model trained on T1w scored on T2w says little about the method)."""

    volumes: list[TestVolume]
    contrasts: list[str]
    other_contrast: bool = False


def test_sets(
    cfg: DictConfig, card: MethodCard, datamodule: SpineDataModule, source_run: Path | None = None
) -> dict[str, TestSet]:
    """The training data's test split and the extra test sets, by dataset name.

    Extra sets go through the same registration and preprocessing (cached), so their grids and value ranges
    match what the model was trained on. A set of another MR contrast than the training data is scored
    only with ``data.score_other_contrasts`` (evaluate: when named in ``test_sets``), and marked.
    """
    trained_on = datamodule.manifest["contrasts"]
    sets = {cfg.data.name: TestSet(datamodule.test_volumes(), trained_on)}
    for test_set in cfg.data.test_sets:
        kept = kept_test_split(test_set, cfg, card, source_run) if source_run is not None else None
        contrasts = load_manifest(kept)["contrasts"] if kept is not None else dataset_contrasts(test_set)
        other = contrasts != trained_on
        if other and not cfg.data.score_other_contrasts:
            log.info("not scoring %s: its MR contrast %s is not the training data's %s "
                     "(data.score_other_contrasts=true scores it)", test_set.name, contrasts, trained_on)
            continue
        prepared = prepared_dataset(test_set, cfg, card, source_run)
        module = SpineDataModule(prepared, cfg.loader, dims=card.dims, min_spine_pixels=cfg.preprocess.min_spine_pixels)
        sets[test_set.name] = TestSet(module.test_volumes(), contrasts, other)
    return sets


def score_test_sets(
    cfg: DictConfig, method: TranslationModule, datamodule: SpineDataModule, run_dir: Path, baseline: bool,
    source_run: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Translate and segment the test volumes of every test set, write NIfTIs and figures; return the
    results.json blocks (one per dataset) and the figures. With ``cfg.iso`` also the outputs on the 1 mm
    isotropic grid and, where the subjects have isotropic ground truth, their Dice there (``dice_iso``).
    ``source_run``: the training run being evaluated, whose kept test data and segmenter are used."""
    segmenter = build_segmenter(cfg.segmenter, cfg.paths.cache_dir, kept_dir(source_run) if source_run else None)
    mean_slice = mean_training_ct_slice(datamodule.train_files, cfg.preprocess.min_spine_pixels) if baseline else None
    datasets: dict[str, Any] = {}
    figures: dict[str, Path] = {}
    for name, test_set in test_sets(cfg, method.card, datamodule, source_run).items():
        volumes = test_set.volumes
        log.info("scoring %s: %d test volumes", name, len(volumes))
        outputs = score_volumes(
            method, volumes, inference_settings(cfg), cfg.loader.crop_size, run_dir / "predictions" / name,
            seed=cfg.seed, segmenter=segmenter, progress=cfg.trainer.enable_progress_bar, iso=cfg.iso,
        )
        block: dict[str, Any] = {
            "contrasts": test_set.contrasts,
            "other_contrast": test_set.other_contrast,
            "image_quality": image_quality_summary([(o.name, o.per_slice) for o in outputs]),
            "dice": dice_summary(outputs),
            "reference_ct_dice": dice_summary(outputs, "reference_dice"),
        }
        if cfg.iso:
            block["dice_iso"] = dice_summary(outputs, "iso_dice")
        if mean_slice is not None:
            per_volume = mean_ct_baseline_metrics(mean_slice, volumes)
            block["baseline_mean_ct"] = {"aggregates": image_quality_summary(
                [(test.name, metrics) for test, metrics in zip(volumes, per_volume)])["aggregates"]}
        datasets[name] = block
        for test, output in zip(volumes, outputs):
            figures[f"{name}/{test.name}"] = translation_panel(test, output.prediction, run_dir / "figures" / name / f"{test.name}.png")
    return {"datasets": datasets}, figures


def log_summary(results: dict[str, Any], run_dir: Path) -> None:
    """The run's mean metrics and output paths, on the console and in the run dir's log file."""
    lines = [f"mr2ct run finished: {run_dir}"]
    for key, value in flatten_aggregates(results).items():
        lines.append(f"  {key:<40} {value:10.4f}")
    if "training" in results:
        training = results["training"]
        lines.append(f"  training:     {training['seconds']:.0f} s, {training['batches']} batches "
                     f"({training['batches_per_second']:.2f} per s)")
    lines.append(f"  results:      {run_dir / 'results.json'}")
    lines.append(f"  synthetic CT: {run_dir / 'predictions'}")
    lines.append(f"  figures:      {run_dir / 'figures'}")
    log.info("\n".join(lines))
