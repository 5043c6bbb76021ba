"""Where subjects come from: the generated phantom (built once into the cache) or a subject root on disk.

Both end in the same subject layout (README, "Data layout"), so everything downstream takes one path.
"""

from __future__ import annotations

import csv
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mr2ct.core.cache import cached
from mr2ct.core.config import DataConfig, PhantomConfig

SUBJECT_MANIFEST = "manifest.csv"


def plain_config(config: Any) -> dict:
    """A dataclass or DictConfig as a plain dict with enums as strings (stable cache keys, JSON manifests)."""
    node = OmegaConf.structured(config) if is_dataclass(config) else config
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def data_key(data_cfg: DataConfig) -> dict:
    """Exactly the part of the data config that determines the subjects (the display name does not)."""
    if data_cfg.kind == "phantom":
        return {"kind": "phantom", "phantom": plain_config(data_cfg.phantom)}
    if data_cfg.kind == "nifti":
        return {"kind": "nifti", "root": str(Path(str(data_cfg.root)).resolve())}
    raise ValueError(f"data.kind must be 'phantom' or 'nifti', got {data_cfg.kind!r}")


def dataset_contrasts(data_cfg: DataConfig) -> list[str]:
    """The MR contrasts of a dataset (sorted), known without generating or preparing it: the phantom's from
    its preset, a subject root's from its manifest."""
    if data_cfg.kind == "phantom":
        from mr2ct.phantom.contrast import PROTOCOLS

        preset = getattr(data_cfg.phantom.preset, "value", data_cfg.phantom.preset)
        return [PROTOCOLS[preset].contrast]
    with (nifti_root(data_cfg) / SUBJECT_MANIFEST).open(newline="") as handle:
        return sorted({row.get("contrast", "").strip() for row in csv.DictReader(handle)})


def subject_root(data_cfg: DataConfig, cache_dir: str | Path, progress: bool = True) -> Path:
    """The folder holding the subjects: a cached phantom build, or ``data_cfg.root`` once checked."""
    if data_key(data_cfg)["kind"] == "phantom":
        return _phantom_root(data_cfg.phantom, cache_dir, progress)
    return nifti_root(data_cfg)


def nifti_root(data_cfg: DataConfig) -> Path:
    """``data_cfg.root``, checked to be a subject root (a folder with a manifest)."""
    root = Path(str(data_cfg.root)) if data_cfg.root is not None else None
    if root is None or not root.is_dir():
        raise FileNotFoundError(f"data.root {data_cfg.root!r} is not a folder (data={data_cfg.name!r}, kind=nifti)")
    if not (root / SUBJECT_MANIFEST).is_file():
        raise FileNotFoundError(f"data.root {root} has no {SUBJECT_MANIFEST} (see the README's Data layout)")
    return root


def _phantom_root(phantom_cfg: Any, cache_dir: str | Path, progress: bool) -> Path:
    """Generate the phantom once per phantom config; a typed PhantomConfig instance goes to the generator."""
    # Imported here: the phantom package is only needed when phantom data are asked for.
    from mr2ct.phantom import PHANTOM_VERSION, generate_dataset

    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PhantomConfig), phantom_cfg))
    return cached(
        "phantom",
        {"phantom_version": PHANTOM_VERSION, **plain_config(config)},
        cache_dir,
        lambda folder: generate_dataset(config, folder, progress=progress),
    )
