"""``python -m mr2ct.translate ckpt=RUN_OR_CKPT input=PATH output=DIR``: MRI in, synthetic CT (+ labels) out.

For cohort users. ``input`` is a NIfTI file, a folder searched recursively (mr2ct's subject layout gives each
subject's ``mr.nii.gz``, a BIDS tree its ``anat/*_T1w``/``*_T2w`` images), a glob
(``'data/**/mr.nii.gz'``), a text file listing paths, or DICOM series folders; see
:mod:`mr2ct.inference.inputs`. Outputs mirror the input's relative paths under ``output``, so names never
collide. Each MR is prepared exactly as the checkpoint's training run prepared its MR
(``mr_on_prepared_grid`` with the run's ``preprocess`` settings), translated by ``translate_volume`` (one
sampling trajectory per volume, windows of the method's tiling, batched) and written back in HU on the
input's own header by ``write_on_mr_header``, as evaluation writes its outputs, so it overlays the MRI in any
viewer:

- ``<name>_sct.nii.gz`` synthetic CT (HU); with ``inference.samples`` > 1 also ``<name>_sct_std.nii.gz``
  (per-voxel standard deviation of the draws, HU);
- ``segment=true``: ``<name>_seg.nii.gz`` (VerSe ids) and ``<name>_subreg.nii.gz`` (subregion ids, when the
  segmenter gives them), from segmenting the synthetic CT on the input's grid (as evaluation does);
- ``iso=true``: every output again as ``*_iso.nii.gz`` on a 1 mm grid covering the input (RAS+ voxel order),
  resampled from the grid it was made on (linear for images, nearest for labels), except that a 3D method's
  labels are segmented from its synthetic CT on the 1 mm grid: super-resolved in the slice direction, as the
  paper's Figure 7 (a 2D method's CT keeps the MR's slice thickness);
- ``<name>_translate.json``: provenance (checkpoint digest, settings, outputs); a re-run skips an input whose
  sidecar matches (``overwrite=true`` forces), so a killed job resumed with the same command does the rest.

Cohort runs: ``shard=i/n`` takes a disjoint, deterministic share of the inputs (a Hydra multirun over
``shard=0/4,1/4,2/4,3/4`` or a SLURM array covers a cohort without two jobs touching one file);
``device=auto|cpu|cuda`` (auto takes a GPU when present; on a GPU the networks run in bfloat16 autocast).
DICOM inputs get NIfTI outputs whose affine is the DICOM geometry. Every file's outputs are written into a
hidden temp folder and moved in at the end, so a crash never leaves half a set. An input that is not a
sagittal grey-scale volume (axial or coronal slices, a single slice, colour, an undecodable compressed
DICOM, a truncated file; :mod:`mr2ct.inference.acquisition`) is found from its header in seconds. A file
that fails (those, unreadable, NaN/Inf, blank) is reported and the others go on; a run of a single input
refuses it in one line before anything is loaded or written; the command exits non-zero if any failed and lists
them. ``output/translate_log.jsonl`` gets one line per file as the run goes (status, error, seconds,
outputs); ``output/translate_log.json`` the checkpoint, settings, run metadata and summary at the end (with
``shard=i/n``, n > 1: ``translate_log.shard-i-of-n.*``, one pair per shard).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import nibabel as nib
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from tqdm.auto import tqdm

from mr2ct.core.cache import default_cache_dir
from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import RUNTIME_FIELDS, InferenceConfig, PreprocessConfig, SegmenterConfig
from mr2ct.core.io import Volume
from mr2ct.core.runinfo import run_metadata, write_json
from mr2ct.core.values import model_to_ct
from mr2ct.data.preprocess import mr_on_prepared_grid
from mr2ct.inference.checkpoint import (Device, kept_dir, load_method, locate_checkpoint, resolve_device,
                                       trained_config)
from mr2ct.inference.inputs import InputItem, discover_inputs, in_shard, parse_shard, read_input
from mr2ct.inference.outputs import (
    Content,
    onto_mr_grid,
    write_on_grid,
    write_on_mr_header,
)
from mr2ct.inference.records import (
    RunLog,
    done_outputs,
    file_digest,
    fingerprint,
    sidecar_path,
    source_stamp,
    write_sidecar,
)
from mr2ct.inference.volume import iso_grid, segments_on_iso_grid, translate_volume
from mr2ct.methods.base import TranslationModule
from mr2ct.segment import Segmentation, Segmenter, build_segmenter


@dataclass
class TranslateConfig:
    """mr2ct.translate: a trained run (or checkpoint) applied to MR files; see the module docstring."""

    defaults: list[Any] = field(default_factory=list)
    ckpt: str = MISSING  # a train run dir, or a .ckpt file inside one
    input: str = MISSING  # a NIfTI file, a folder (searched recursively), a glob, or a .txt list of paths
    output: str = MISSING  # folder for the outputs (mirroring the input tree) and the logs (created)
    overwrite: bool = False  # false: skip inputs already translated with the same checkpoint and settings
    shard: str = "0/1"  # i/n: this job's disjoint share of the inputs
    device: Device = Device.auto  # auto: a GPU when one is visible
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


def remove_stale_temp(folder: Path, name: str) -> None:
    """Temp folders of ``name`` left by a killed run (only this input's; other shards' stay untouched)."""
    if folder.is_dir():
        pattern = re.compile(rf"\.tmp-{re.escape(name)}-[a-z0-9_]{{8}}")
        for stale in folder.iterdir():
            if stale.is_dir() and pattern.fullmatch(stale.name):
                shutil.rmtree(stale, ignore_errors=True)


def move_in_atomically(name: str, folder: Path, write, finish) -> list[Path]:
    """Run ``write(temp_folder) -> paths`` in a hidden temp folder inside ``folder`` and
    ``finish(temp_folder, final_paths) -> path`` (the sidecar) there, then move the files in, the sidecar last.

    A failure or crash while writing leaves no output of this file (at most a hidden ``.tmp-*`` folder after
    a hard kill, removed by the next run); each move is an atomic rename within one file system. A previous
    sidecar goes first, so a set cut short while moving in counts as not done, whatever settings come next.
    """
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(folder, name)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=folder))
    try:
        written = write(temp)
        final = [folder / path.name for path in written]
        record = finish(temp, final)
        (folder / record.name).unlink(missing_ok=True)
        for path, target in zip(written, final):
            os.replace(path, target)
        os.replace(record, folder / record.name)
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
    bf16: bool  # the networks in bfloat16 autocast (on a GPU)

    def layers(self, mr: Volume) -> list[Layer]:
        """Synthetic CT and its std over samples (model space, on the run's prepared grid) and the segmentation."""
        model_mr, grid, _ = mr_on_prepared_grid(mr, self.preprocess, self.method.card.dims)
        translation = translate_volume(self.method, model_mr, self.inference, self.crop_size, seed=self.seed,
                                       bf16=self.bf16)
        sct = grid.with_array(translation.mean)
        layers = [Layer("_sct", sct, "ct")]
        if translation.std is not None:
            layers.append(Layer("_sct_std", grid.with_array(translation.std), "std"))
        if self.segmenter is not None:
            super_resolved = self.iso and segments_on_iso_grid(self.method)
            layers += segmentation_layers(self.segmenter, sct, mr, iso_grid(mr) if super_resolved else None)
        return layers

    def translate_item(self, item: InputItem, output: Path, finish) -> list[Path]:
        """Translate one input into its place under ``output``; ``finish`` writes its sidecar (see
        :func:`move_in_atomically`)."""
        mr, reference = read_input(item)
        layers = self.layers(mr)
        folder = (output / item.relative).parent
        return move_in_atomically(
            item.name, folder, lambda temp: write_layers(layers, mr, reference, item.name, temp, self.iso), finish)


def translate_or_skip(translator: Translator, item: InputItem, output: Path, provenance: dict[str, Any],
                      overwrite: bool) -> dict[str, Any]:
    """One input's log record: skipped when its outputs exist with the same fingerprint (unless
    ``overwrite``), else translated; a failure is recorded, never raised, so one bad file cannot stop a cohort."""
    started = time.perf_counter()
    record: dict[str, Any] = {"input": item.relative, "source": str(item.source), "series_id": item.series_id}
    try:
        digest = fingerprint(provenance["checkpoint_sha256"], provenance["settings"], source_stamp(item))
        done = None if overwrite else done_outputs(output, item, digest)
        if done is not None:
            record.update(status="skipped", outputs=[str(p) for p in done], error=None)
        else:
            def finish(temp: Path, final: list[Path]) -> Path:
                return write_sidecar(temp / sidecar_path(output, item).name, item, digest, provenance, final)

            outputs = translator.translate_item(item, output, finish)
            record.update(status="ok", outputs=[str(p) for p in outputs], error=None)
    except Exception as error:  # one bad file must not stop a cohort run
        record.update(status="failed", outputs=[], error=one_line(error))
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def one_line(error: Exception) -> str:
    """An error as one line; the file is named beside it, so an OS error needs only its reason."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"{type(error).__name__}: {' '.join(reason.split())}"


def log_stem(shard: str) -> str:
    """``translate_log``, or ``translate_log.shard-i-of-n`` for one of several shards (each has its own logs)."""
    index, count = parse_shard(shard)
    return "translate_log" if count == 1 else f"translate_log.shard-{index}-of-{count}"


def decisive_inference_settings(inference: dict[str, Any], reads: tuple[str, ...]) -> dict[str, Any]:
    """The inference settings that change a method's outputs: those its card says it reads, the number of
    draws (a std map) and the tiling; not the batch size, which changes only the speed."""
    return {k: v for k, v in inference.items() if k in {*reads, "samples", "window", "overlap"}}


def decisive_segmenter_settings(segmenter_cfg: Any) -> dict[str, Any]:
    """The segmenter's settings without those that do not change its labels (device, batch size, progress)."""
    return {k: v for k, v in _plain(segmenter_cfg).items() if k not in RUNTIME_FIELDS}


def refuse_unsuitable(item: InputItem) -> None:
    """A run of one input refuses it in one line naming the file, before the model loads or anything is
    written, when it cannot be translated (not a sagittal grey-scale volume, truncated, blank); a cohort
    run instead logs such a file as failed and goes on. Reads the file once more than needed, for one file."""
    try:
        read_input(item)
    except ValueError as error:
        raise ValueError(f"input={item.source}: {error}") from error


def translate(cfg: DictConfig) -> dict[str, Any]:
    """Translate this shard's inputs of ``cfg`` into ``cfg.output``, skipping those already done; return the
    run's log (also written as translate_log.json; translate_log.jsonl gets a line per file as it goes).

    Checkpoint, device, shard, output and input are checked before any work (a single input is read and
    checked too); with several inputs a failing file is recorded and the others go on.
    """
    run_dir, checkpoint = locate_checkpoint(cfg.ckpt)
    device = resolve_device(cfg.device.value)
    output = Path(cfg.output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output={cfg.output}: exists and is not a folder")
    found = discover_inputs(cfg.input, skip=output)
    items = in_shard(found, cfg.shard)
    if len(found) == 1:
        refuse_unsuitable(found[0])
    output.mkdir(parents=True, exist_ok=True)

    trained = trained_config(run_dir)
    segmenter_cfg = cfg.segmenter if cfg.segmenter is not None else trained.segmenter
    if cfg.device is not Device.auto:
        segmenter_cfg = OmegaConf.merge(segmenter_cfg, {"device": device.type})
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()
    translator = Translator(
        method=load_method(trained.model.name, checkpoint, device),
        preprocess=OmegaConf.to_object(trained.preprocess),
        crop_size=trained.loader.crop_size,
        inference=OmegaConf.to_object(cfg.inference),
        seed=cfg.seed,
        segmenter=build_segmenter(segmenter_cfg, cache_dir, kept_dir(run_dir)) if cfg.segment else None,
        iso=cfg.iso,
        bf16=device.type == "cuda",
    )
    card = translator.method.card
    settings = {
        "model": trained.model.name, "segment": cfg.segment, "iso": cfg.iso,
        "seed": cfg.seed if card.samples else None, "crop_size": translator.crop_size,
        "inference": decisive_inference_settings(_plain(cfg.inference), card.reads),
        "preprocess": _plain(trained.preprocess),
        "segmenter": decisive_segmenter_settings(segmenter_cfg) if cfg.segment else None,
        "precision": "bf16" if translator.bf16 else "fp32",
    }
    provenance = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_digest(checkpoint), "settings": settings}
    run_log = RunLog(output / f"{log_stem(cfg.shard)}.jsonl")
    log: dict[str, Any] = {
        **provenance,
        "run_dir": str(run_dir),
        "input": str(cfg.input),
        "output": str(output),
        "shard": str(cfg.shard),
        "inputs_found": len(found),
        "device": str(device),
        "overwrite": cfg.overwrite,
        "log": str(run_log.path),
        "meta": run_metadata(cfg.seed),
        "files": [],
    }
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    progress = tqdm(items, desc="translate", unit="file", disable=not cfg.progress)
    for item in progress:
        record = translate_or_skip(translator, item, output, provenance, cfg.overwrite)
        run_log.append(record)
        log["files"].append(record)
        counts[record["status"]] += 1
        progress.set_postfix(counts, refresh=False)
        if record["status"] == "ok":
            tqdm.write(f"ok      {item.relative}: {len(record['outputs'])} files")
        elif record["status"] == "failed":
            tqdm.write(f"FAILED  {item.relative} ({item.source}): {record['error']}")
    log["summary"] = {"files": len(items), **counts}
    write_json(log, output / f"{log_stem(cfg.shard)}.json")
    share = f" (shard {cfg.shard} of {len(found)} found)" if len(items) != len(found) else ""
    print(f"mr2ct translate: {counts['ok']} translated, {counts['skipped']} already done, {counts['failed']} failed "
          f"of {len(items)} files{share} into {output}" + (":" if counts["failed"] else ""))
    for record in log["files"]:
        if record["status"] == "failed":
            print(f"  {record['source']}: {record['error']}")
    return log


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True) if OmegaConf.is_config(node) else node


@hydra.main(version_base="1.3", config_path="conf", config_name="translate")
def main(cfg: DictConfig) -> None:
    with refuse_user_errors():
        log = translate(cfg)
    if log["summary"]["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    hydra_entry(main, config_name="translate")
