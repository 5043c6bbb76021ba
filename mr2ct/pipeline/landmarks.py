"""A trained run as a source of MR landmarks (paper Fig. 1): translate the MR, segment the synthetic CT on the
MR grid with the run's own segmenter, take body and spinous-process centres and check the spinous ones against
the subject's CT (:mod:`mr2ct.registration.derive`).

``python -m mr2ct.landmarks`` writes them into a subject root; ``registration.landmarks_from=<run>`` derives
them while preparing the data and caches them with the prepared entry. Both use :class:`RunLandmarks`, so a
subject gets the same landmarks either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import RUNTIME_FIELDS
from mr2ct.core.io import Volume
from mr2ct.core.subjects import Subject
from mr2ct.core.values import model_to_ct
from mr2ct.data.preprocess import mr_on_prepared_grid
from mr2ct.data.sources import plain_config
from mr2ct.inference.checkpoint import kept_dir, load_method, locate_checkpoint, resolve_device, trained_config
from mr2ct.inference.outputs import onto_mr_grid
from mr2ct.inference.records import file_digest
from mr2ct.inference.volume import translate_volume
from mr2ct.registration.derive import DerivedLandmarks, checked_against_ct, derive_landmarks
from mr2ct.registration.rigid import ct_landmarks
from mr2ct.segment import Segmentation, build_segmenter


@dataclass
class RunLandmarks:
    """MR landmarks from a training run (dir or .ckpt): its method, preprocessing, inference settings and
    kept segmenter. The model and segmenter load on first use, so a cached prepared entry costs no load."""

    ckpt: str
    cache_dir: str
    device: str = "auto"
    seed: int = 0  # sampling noise of a diffusion model's translation
    run_dir: Path = field(init=False)
    checkpoint: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir, self.checkpoint = locate_checkpoint(self.ckpt)

    @cached_property
    def config(self) -> DictConfig:
        return trained_config(self.run_dir)

    @cached_property
    def identity(self) -> dict[str, str]:
        """Resolved run dir, checkpoint file and the checkpoint's sha256 (a retrained run is another source)."""
        return {"run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint),
                "checkpoint_sha256": file_digest(self.checkpoint)}

    @cached_property
    def method(self):
        return load_method(self.config.model.name, self.checkpoint, resolve_device(self.device))

    @cached_property
    def segmenter(self):
        segmenter_cfg = self.config.segmenter
        if self.device != "auto":
            segmenter_cfg = OmegaConf.merge(segmenter_cfg, {"device": self.device})
        return build_segmenter(segmenter_cfg, self.cache_dir, kept_dir(self.run_dir))

    def segmentation(self, mr: Volume) -> Segmentation:
        """The run's segmenter on the synthetic CT of ``mr`` (canonical RAS+), on the MR's own grid."""
        model_mr, grid, _ = mr_on_prepared_grid(mr, OmegaConf.to_object(self.config.preprocess), self.method.card.dims)
        translation = translate_volume(self.method, model_mr, OmegaConf.to_object(self.config.inference),
                                       self.config.loader.crop_size, seed=self.seed,
                                       bf16=next(self.method.parameters()).device.type == "cuda")
        on_mr = onto_mr_grid(grid.with_array(translation.mean), mr, labels=False)
        return self.segmenter.segment(on_mr.with_array(model_to_ct(on_mr.array).astype(np.float32)))

    def derive(self, subject: Subject) -> DerivedLandmarks:
        """The subject's landmarks from the run's segmentation, spinous centres checked against its CT."""
        segmentation = self.segmentation(subject.mr)
        return checked_against_ct(derive_landmarks(segmentation.labels, segmentation.subregions), ct_landmarks(subject))

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """What a derived landmarks file records: that it was derived, by which checkpoint, translation and
        segmenter settings (``write_if_plausible`` adds each vertebra's quality)."""
        return {
            "derived": True,
            **self.identity,
            "method": self.config.model.name,
            "inference": plain_config(self.config.inference),
            "seed": self.seed,
            "segmenter": {k: v for k, v in plain_config(self.config.segmenter).items() if k not in RUNTIME_FIELDS},
        }


def landmark_source(registration_cfg: Any, cache_dir: str) -> RunLandmarks | None:
    """The run named by ``registration.landmarks_from``, or None when the subjects' own landmarks are used."""
    landmarks_from = getattr(registration_cfg, "landmarks_from", None)
    if landmarks_from is None:
        return None
    return _run_landmarks(str(landmarks_from), str(cache_dir))


_SOURCES: dict[tuple[str, str], RunLandmarks] = {}


def _run_landmarks(ckpt: str, cache_dir: str) -> RunLandmarks:
    """One RunLandmarks per run and cache in a process: the checkpoint is hashed and the model loaded once,
    however often a run's stages ask for the prepared data's key."""
    key = (str(Path(ckpt).expanduser().resolve()), cache_dir)
    if key not in _SOURCES:
        try:
            _SOURCES[key] = RunLandmarks(ckpt, cache_dir)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"registration.landmarks_from: {error}") from error
    return _SOURCES[key]
