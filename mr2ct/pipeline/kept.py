"""What a training run keeps in its run dir so that evaluate and translate need nothing else.

``<run>/kept`` is laid out like a cache (``mr2ct.core.cache``): ``test_data/<key>/`` holds the test split of
every dataset the run scored (manifest, test volumes and each subject's MR image, whose header outputs are
written on), keyed like the prepared dataset it came from; ``segmenter/<key>/`` holds the CT segmenter's
weights and settings. Paths inside point into the kept entry itself, so a run dir copied to another folder or
machine works without the cache, the phantom or the segmenter's training.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from mr2ct.core.cache import cached, find_entry
from mr2ct.core.config import DatasetConfig
from mr2ct.data.preprocess import MANIFEST, REGISTRATION_REPORT, load_manifest, prepare_dataset, prepared_key
from mr2ct.inference.checkpoint import kept_dir
from mr2ct.methods.card import MethodCard
from mr2ct.pipeline.landmarks import landmark_source
from mr2ct.segment import keep_segmenter

TEST_DATA = "test_data"
KEPT_MR = "mr"
LANDMARK_SOURCE = "landmark_source.json"  # identity of the run that derived the MR landmarks (landmarks_from)


def kept_test_split(dataset_cfg: DatasetConfig, cfg: DictConfig, card: MethodCard, run_dir: Path) -> Path | None:
    """The test split of ``dataset_cfg`` kept by the training run ``run_dir``, or None when it kept none."""
    return find_entry(TEST_DATA, _key(dataset_cfg, cfg, card, _recorded_source(cfg, run_dir)), kept_dir(run_dir))


def keep_for_inference(cfg: DictConfig, card: MethodCard, run_dir: Path, scored: list[str]) -> None:
    """Keep the test split of each scored dataset (by name) and the segmenter in the training run's dir, and
    the identity of the run that derived its MR landmarks (if one did), which keys the kept split."""
    source = _landmark_source(cfg)
    for dataset in [cfg.data, *cfg.data.test_sets]:
        if dataset.name in scored:
            entry = prepare_dataset(dataset, cfg.registration, cfg.preprocess, card.dims, cfg.paths.cache_dir,
                                    landmark_source=source)
            cached(TEST_DATA, _key(dataset, cfg, card, source), kept_dir(run_dir),
                   lambda folder: copy_test_split(entry, folder))
    if source is not None:
        (kept_dir(run_dir) / LANDMARK_SOURCE).write_text(json.dumps(source.identity, indent=1))
    keep_segmenter(cfg.segmenter, cfg.paths.cache_dir, kept_dir(run_dir))


def copy_test_split(prepared: Path, folder: Path) -> None:
    """The test files of a prepared entry with their MR images, each record's ``mr_path`` made relative."""
    manifest = load_manifest(prepared)
    (folder / "test").mkdir()
    (folder / KEPT_MR).mkdir()
    for relative in manifest["files"]["test"]:
        with np.load(prepared / relative) as stored:
            record = dict(stored)
        mr_copy = Path(KEPT_MR) / f"{Path(relative).stem}.nii.gz"
        shutil.copyfile(str(record["mr_path"]), folder / mr_copy)
        record["mr_path"] = np.str_(str(mr_copy))
        np.savez_compressed(folder / relative, **record)
    manifest["files"] = {split: files if split == "test" else [] for split, files in manifest["files"].items()}
    manifest["subjects"] = {split: names if split == "test" else [] for split, names in manifest["subjects"].items()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if (prepared / REGISTRATION_REPORT).is_file():
        shutil.copyfile(prepared / REGISTRATION_REPORT, folder / REGISTRATION_REPORT)


def _key(dataset_cfg: DatasetConfig, cfg: DictConfig, card: MethodCard, source) -> dict:
    return prepared_key(dataset_cfg, cfg.registration, cfg.preprocess, card.dims, source)


def _landmark_source(cfg: DictConfig):
    """The run deriving MR landmarks (``registration.landmarks_from``), or None."""
    return landmark_source(cfg.registration, cfg.paths.cache_dir)


@dataclass(frozen=True)
class RecordedSource:
    """The identity of the run that derived a training run's MR landmarks, as the training run recorded it."""

    identity: dict


def _recorded_source(cfg: DictConfig, run_dir: Path):
    """The landmark source that keyed ``run_dir``'s kept test data: as recorded there, so the run evaluates
    without the run that derived its landmarks; else (a run kept before recording) the live source."""
    recorded = kept_dir(run_dir) / LANDMARK_SOURCE
    if cfg.registration.get("landmarks_from") is not None and recorded.is_file():
        return RecordedSource(json.loads(recorded.read_text()))
    return _landmark_source(cfg)
