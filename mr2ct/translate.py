"""``python -m mr2ct.translate ckpt=RUN_OR_CKPT input=PATH output=DIR``: MRI in, synthetic CT (+ labels) out.

For cohort users. ``input`` is one NIfTI, a folder of NIfTIs (``*.nii``, ``*.nii.gz``), a DICOM series
folder, or a folder whose subfolders are DICOM series. Each MR is prepared exactly as the checkpoint's
training run prepared its MR (``mr_on_prepared_grid`` with the run's ``preprocess`` settings), translated by
``translate_volume`` (windows of the method's tiling) and written back in HU on the input's own header by
``write_on_mr_header``, as evaluation writes its outputs, so it overlays the MRI in any viewer:

- ``<name>_sct.nii.gz`` synthetic CT (HU); with ``inference.samples`` > 1 also ``<name>_sct_std.nii.gz``
  (per-voxel standard deviation of the draws, HU);
- ``segment=true``: ``<name>_seg.nii.gz`` (VerSe ids) and ``<name>_subreg.nii.gz`` (subregion ids, when the
  segmenter gives them), from segmenting the synthetic CT on the input's grid (as evaluation does);
- ``iso=true``: every output again as ``*_iso.nii.gz`` on a 1 mm grid covering the input (RAS+ voxel order),
  resampled from the grid it was made on (linear for images, nearest for labels), except that a 3D method's
  labels are segmented from its synthetic CT on the 1 mm grid: super-resolved in the slice direction, as the
  paper's Figure 7 (a 2D method's CT keeps the MR's slice thickness).

DICOM inputs get NIfTI outputs whose affine is the DICOM geometry. Every file's outputs are written into a
hidden temp folder and moved in at the end, so a crash never leaves half a set. A file that fails (unreadable,
not 3D, NaN/Inf, blank) is reported and the others go on; the command exits non-zero if any failed.
``output/translate_log.json`` records the checkpoint, the settings, each file's status and the run metadata.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import nibabel as nib
import numpy as np
import SimpleITK as sitk
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from tqdm.auto import tqdm

from mr2ct.core.cache import default_cache_dir
from mr2ct.core.cli import hydra_entry
from mr2ct.core.config import InferenceConfig, PreprocessConfig, SegmenterConfig
from mr2ct.core.io import Volume, canonical_volume, from_sitk, load_nifti
from mr2ct.core.runinfo import run_metadata, write_json
from mr2ct.core.values import model_to_ct
from mr2ct.data.preprocess import mr_on_prepared_grid
from mr2ct.inference.checkpoint import load_method, locate_checkpoint, trained_config
from mr2ct.inference.outputs import (
    Content,
    onto_mr_grid,
    write_on_grid,
    write_on_mr_header,
)
from mr2ct.inference.volume import iso_grid, segments_on_iso_grid, translate_volume
from mr2ct.methods.base import TranslationModule
from mr2ct.pipeline.kept import kept_dir
from mr2ct.segment import Segmentation, Segmenter, build_segmenter

NIFTI_SUFFIXES = (".nii.gz", ".nii")
LOG_NAME = "translate_log.json"


@dataclass
class TranslateConfig:
    """mr2ct.translate: a trained run (or checkpoint) applied to MR files; see the module docstring."""

    defaults: list[Any] = field(default_factory=list)
    ckpt: str = MISSING  # a train run dir, or a .ckpt file inside one
    input: str = MISSING  # a NIfTI file, a folder of NIfTIs, a DICOM series folder, or a folder of series folders
    output: str = MISSING  # folder for the outputs and translate_log.json (created)
    segment: bool = True
    iso: bool = False
    inference: InferenceConfig = MISSING
    segmenter: Optional[SegmenterConfig] = None  # None: the training run's segmenter
    cache_dir: Optional[str] = None  # None: the user's cache ($MR2CT_CACHE); only for a segmenter the run did not keep
    seed: int = 0  # sampling noise; every file uses it, so a file's output does not depend on the others
    progress: bool = True


def register_translate_config() -> None:
    ConfigStore.instance().store(name="translate_schema", node=TranslateConfig)


register_translate_config()


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class InputItem:
    """One MR volume to translate: a NIfTI file, or one DICOM series in a folder."""

    name: str
    source: Path
    series_id: str | None = None  # set for DICOM


def nifti_stem(path: Path) -> str | None:
    """The file name without .nii/.nii.gz, or None when it is not a NIfTI name."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def dicom_series(folder: Path) -> list[InputItem]:
    """The DICOM series directly inside ``folder``: one item named after the folder (``_<k>`` if several)."""
    series = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if len(series) == 1:
        return [InputItem(folder.name, folder, series[0])]
    return [InputItem(f"{folder.name}_{k}", folder, uid) for k, uid in enumerate(series)]


def discover_inputs(path: str | Path) -> list[InputItem]:
    """Every MR volume under ``input``; raises before any work when there is none or names collide."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"input={path}: no such file or folder")
    if root.is_file():
        if nifti_stem(root) is None:
            raise ValueError(f"input={path}: not a NIfTI file (.nii, .nii.gz); give a file, a folder of NIfTIs "
                             "or a DICOM series folder")
        return [InputItem(nifti_stem(root), root)]
    niftis = [InputItem(nifti_stem(p), p) for p in sorted(root.iterdir()) if p.is_file() and nifti_stem(p)]
    if not niftis and (here := dicom_series(root)):
        return here
    items = niftis + [item for sub in sorted(p for p in root.iterdir() if p.is_dir()) for item in dicom_series(sub)]
    if not items:
        raise ValueError(f"input={path}: no NIfTI files (*.nii, *.nii.gz) and no DICOM series found")
    duplicates = sorted(name for name, count in Counter(item.name for item in items).items() if count > 1)
    if duplicates:
        raise ValueError(f"input={path}: several inputs would write the same outputs: {duplicates}")
    return items


def read_dicom(item: InputItem) -> nib.Nifti1Image:
    """A DICOM series as an in-memory NIfTI image whose affine is the series' geometry (RAS)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(item.source), item.series_id))
    image = reader.Execute()
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"expected a 3D scalar series, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} components")
    volume = from_sitk(image)
    nifti = nib.Nifti1Image(volume.array, volume.affine)
    nifti.header.set_qform(volume.affine, code=1)
    nifti.header.set_sform(volume.affine, code=1)
    return nifti


def read_input(item: InputItem) -> tuple[Volume, nib.Nifti1Image]:
    """(MR in RAS+ voxel order, the image whose header the outputs are written on), checked for use."""
    if item.series_id is None:
        mr, reference = load_nifti(item.source)
    else:
        reference = read_dicom(item)
        mr = canonical_volume(reference)
    check_mr(mr.array)
    return mr, reference


def check_mr(array: np.ndarray) -> None:
    """Reject what cannot be translated meaningfully: non-finite voxels and blank images."""
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{int((~finite).sum())} voxels are NaN/Inf")
    if not array.max() > max(array.min(), 0):
        raise ValueError(f"blank image (all voxels in [{array.min()}, {array.max()}], no positive contrast)")


# ------------------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class Layer:
    """One output volume: written as ``<name><suffix>.nii.gz`` on the input's header (and ``_iso``)."""

    suffix: str
    volume: Volume
    content: Content
    iso_volume: Volume | None = None  # made on the 1 mm grid itself; None: ``volume`` resampled there


def segmentation_layers(segmenter: Segmenter, sct: Volume, mr: Volume, iso: Volume | None = None) -> list[Layer]:
    """The segmenter's labels (``_seg``) and, when it gives them, subregions (``_subreg``) of the synthetic
    CT on the MR's grid, where evaluation segments it too; with an ``iso`` grid also of the CT on that grid."""
    native = segment(segmenter, sct, mr)
    fine = segment(segmenter, sct, iso) if iso is not None else None
    layers = [Layer("_seg", native.labels, "labels", fine.labels if fine is not None else None)]
    if native.subregions is not None:
        layers.append(Layer("_subreg", native.subregions, "labels", fine.subregions if fine is not None else None))
    return layers


def segment(segmenter: Segmenter, sct: Volume, grid: Volume) -> Segmentation:
    """The segmentation of a model-space synthetic CT resampled onto ``grid``."""
    on_grid = onto_mr_grid(sct, grid, labels=False)
    return segmenter.segment(on_grid.with_array(model_to_ct(on_grid.array).astype(np.float32)))


def write_layers(
    layers: list[Layer], mr: Volume, reference: nib.Nifti1Image, name: str, folder: Path, iso: bool
) -> list[Path]:
    """Each layer written on the input's header; with ``iso`` also onto a 1 mm grid covering the input (its
    ``iso_volume`` where it has one). Linear for images (float32 HU), nearest for labels (int16)."""
    fine = iso_grid(mr) if iso else None
    paths = []
    for layer in layers:
        paths.append(write_on_mr_header(layer.volume, reference, folder / f"{name}{layer.suffix}.nii.gz", layer.content))
        if fine is not None:
            source = layer.iso_volume if layer.iso_volume is not None else layer.volume
            paths.append(write_on_grid(source, fine, folder / f"{name}{layer.suffix}_iso.nii.gz", layer.content))
    return paths


def move_in_atomically(name: str, output: Path, write) -> list[Path]:
    """Run ``write(temp_folder) -> paths`` in a hidden temp folder inside ``output``, then move the files in.

    A failure or crash while writing leaves no output of this file (at most a hidden ``.tmp-*`` folder
    after a hard kill); each move is an atomic rename within one file system.
    """
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=output))
    try:
        written = write(temp)
        final = [output / path.name for path in written]
        for path, target in zip(written, final):
            os.replace(path, target)
        return final
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ translate
@dataclass
class Translator:
    """A trained method with its run's preprocessing and the settings of this command."""

    method: TranslationModule
    preprocess: PreprocessConfig
    crop_size: int
    inference: InferenceConfig
    seed: int
    segmenter: Segmenter | None
    iso: bool

    def layers(self, mr: Volume) -> list[Layer]:
        """Synthetic CT and its std over samples (model space, on the run's prepared grid) and the segmentation."""
        model_mr, grid, _ = mr_on_prepared_grid(mr, self.preprocess, self.method.card.dims)
        translation = translate_volume(self.method, model_mr, self.inference, self.crop_size, seed=self.seed)
        sct = grid.with_array(translation.mean)
        layers = [Layer("_sct", sct, "ct")]
        if translation.std is not None:
            layers.append(Layer("_sct_std", grid.with_array(translation.std), "std"))
        if self.segmenter is not None:
            super_resolved = self.iso and segments_on_iso_grid(self.method)
            layers += segmentation_layers(self.segmenter, sct, mr, iso_grid(mr) if super_resolved else None)
        return layers

    def translate_item(self, item: InputItem, output: Path) -> list[Path]:
        mr, reference = read_input(item)
        layers = self.layers(mr)
        return move_in_atomically(item.name, output, lambda temp: write_layers(layers, mr, reference, item.name, temp, self.iso))


def translate(cfg: DictConfig) -> dict[str, Any]:
    """Translate every input of ``cfg`` into ``cfg.output``; return the log (also written as translate_log.json).

    Checkpoint and input are checked before any work; a failing file is recorded and the others go on.
    """
    run_dir, checkpoint = locate_checkpoint(cfg.ckpt)
    items = discover_inputs(cfg.input)
    output = Path(cfg.output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output={cfg.output}: exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)

    trained = trained_config(run_dir)
    segmenter_cfg = cfg.segmenter if cfg.segmenter is not None else trained.segmenter
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()
    translator = Translator(
        method=load_method(trained.model.name, checkpoint),
        preprocess=OmegaConf.to_object(trained.preprocess),
        crop_size=trained.loader.crop_size,
        inference=OmegaConf.to_object(cfg.inference),
        seed=cfg.seed,
        segmenter=build_segmenter(segmenter_cfg, cache_dir, kept_dir(run_dir)) if cfg.segment else None,
        iso=cfg.iso,
    )
    log: dict[str, Any] = {
        "ckpt": str(checkpoint),
        "run_dir": str(run_dir),
        "input": str(Path(cfg.input).expanduser().resolve()),
        "output": str(output),
        "settings": {
            "segment": cfg.segment, "iso": cfg.iso, "seed": cfg.seed, "crop_size": translator.crop_size,
            "inference": _plain(cfg.inference), "preprocess": _plain(trained.preprocess),
            "segmenter": _plain(segmenter_cfg) if cfg.segment else None,
        },
        "meta": run_metadata(cfg.seed),
        "files": [],
    }
    for item in tqdm(items, desc="translate", unit="file", disable=not cfg.progress):
        started = time.perf_counter()
        record: dict[str, Any] = {"name": item.name, "source": str(item.source), "series_id": item.series_id}
        try:
            record.update(status="ok", outputs=[str(p) for p in translator.translate_item(item, output)], error=None)
            line = f"ok      {item.name}: {len(record['outputs'])} files"
        except Exception as error:  # one bad file must not stop a cohort run
            record.update(status="failed", outputs=[], error=f"{type(error).__name__}: {error}")
            line = f"FAILED  {item.name} ({item.source}): {record['error']}"
        record["seconds"] = round(time.perf_counter() - started, 3)
        log["files"].append(record)
        tqdm.write(line)
    failed = [r for r in log["files"] if r["status"] == "failed"]
    log["summary"] = {"files": len(items), "ok": len(items) - len(failed), "failed": len(failed)}
    write_json(log, output / LOG_NAME)
    print(f"mr2ct translate: {log['summary']['ok']}/{len(items)} files translated into {output}"
          + (f"; {len(failed)} failed:" if failed else ""))
    for record in failed:
        print(f"  {record['source']}: {record['error']}")
    return log


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True) if OmegaConf.is_config(node) else node


@hydra.main(version_base="1.3", config_path="conf", config_name="translate")
def main(cfg: DictConfig) -> None:
    log = translate(cfg)
    if log["summary"]["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    hydra_entry(main, config_name="translate")
