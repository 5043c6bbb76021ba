"""CT vertebra segmenters behind ``segmenter=``: a phantom-trained UNet or an external command.

``build_segmenter(cfg, cache_dir)`` returns an object with ``segment(ct_hu: Volume) -> Segmentation``;
the labels are VerSe ids on the input grid, the subregions 50 (body) and 41..48 (posterior) or None.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import SEGMENTER_KINDS, SegmenterConfig
from mr2ct.segment.base import Segmentation, Segmenter
from mr2ct.segment.command import (
    TOTALSEGMENTATOR_V2_TO_VERSE,
    CommandSegmenter,
    SegmenterCommandError,
)
from mr2ct.segment.phantom_unet import PhantomUNetSegmenter, keep, load_or_train

__all__ = [
    "CommandSegmenter",
    "PhantomUNetSegmenter",
    "Segmentation",
    "Segmenter",
    "SegmenterCommandError",
    "SegmenterConfig",
    "TOTALSEGMENTATOR_V2_TO_VERSE",
    "build_segmenter",
    "keep_segmenter",
]


def as_segmenter_config(cfg: SegmenterConfig | DictConfig | dict) -> SegmenterConfig:
    """A typed SegmenterConfig from a dataclass, a composed DictConfig or a plain dict (unknown keys fail)."""
    if isinstance(cfg, SegmenterConfig):
        return cfg
    merged = OmegaConf.merge(OmegaConf.structured(SegmenterConfig), cfg)
    return OmegaConf.to_object(merged)


def build_segmenter(
    segmenter_cfg: SegmenterConfig | DictConfig | dict, cache_dir: str | Path, kept_dir: Path | None = None
) -> Segmenter:
    """The configured segmenter, ready to use: a command is checked, a phantom UNet loaded (from a training
    run's ``kept_dir`` when it kept this one) or trained."""
    cfg = as_segmenter_config(segmenter_cfg)
    if cfg.kind == "phantom_unet":
        return load_or_train(cfg, cache_dir, kept_dir)
    if cfg.kind == "command":
        segmenter = CommandSegmenter(
            command=cfg.command, label_map={int(k): int(v) for k, v in cfg.label_map.items()},
            subregion_command=cfg.subregion_command,
            subregion_label_map={int(k): int(v) for k, v in cfg.subregion_label_map.items()},
            required_paths=list(cfg.required_paths), timeout_s=cfg.timeout_s,
        )
        segmenter.check()
        return segmenter
    raise ValueError(f"segmenter.kind {cfg.kind!r} is not one of {list(SEGMENTER_KINDS)}")


def keep_segmenter(segmenter_cfg: SegmenterConfig | DictConfig | dict, cache_dir: str | Path, kept_dir: Path) -> None:
    """Keep what the segmenter needs in a run's ``kept_dir``: a phantom UNet's weights and settings (a command's
    settings are in the run's config; the program itself cannot be kept)."""
    cfg = as_segmenter_config(segmenter_cfg)
    if cfg.kind == "phantom_unet":
        keep(cfg, cache_dir, kept_dir)
