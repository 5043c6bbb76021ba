"""Registered subjects -> cached training arrays.

Value ranges: :mod:`mr2ct.core.values` (CT ``clip(HU / 1000, -1, 1)``, MR scaled by its robust maximum, the
``mr_robust_max_percentile`` percentile of the native MR); inference computes them the same way.

Grids: 2D keeps the MR slice thickness along axis 0 (left-right) and resamples the sagittal plane (axes 1, 2)
to ``spacing_inplane_mm``; 3D resamples all axes to ``spacing_iso_mm``. Both cover the MR field of view.
MR, CT and labels go onto that grid with one interpolation each (the CT through the registration).

Elastic copies (training subjects only) use ``elasticdeform.deform_grid``, the function behind the
reference code's ``deform_random_grid``: a coarse grid of ``elastic_points`` control points per deformed
axis with N(0, ``elastic_sigma``) voxel displacements drawn from the subject's own seeded generator (not
NumPy's global state), cubic B-spline interpolation of the displacements, cubic resampling of images and
nearest of labels, ``reflect`` borders. In 2D the deformation acts in the sagittal plane (the same field
for every slice, so thick slices do not exchange content); in 3D it acts on all axes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import elasticdeform
import numpy as np
from tqdm.auto import tqdm

from mr2ct.core.cache import cached
from mr2ct.core.config import DataConfig, PreprocessConfig, RegistrationConfig
from mr2ct.core.io import Volume, resample_array
from mr2ct.core.subjects import Subject, load_subjects
from mr2ct.core.values import (
    MODEL_MAX,
    MODEL_MIN,
    ct_to_model,
    mr_robust_max,
    mr_to_model,
)
from mr2ct.data.sources import data_key, plain_config, subject_root
from mr2ct.registration import (
    Landmarks,
    evaluation_reference,
    register,
    registration_report,
    resample_to_grid,
    write_registration_report,
)
from mr2ct.registration.derive import DERIVATION_VERSION, DerivedLandmarks, write_if_plausible

FORMAT_VERSION = 4  # 3: test records carry reference_iso_*; 4: the registration report says which landmarks and their errors
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
REGISTRATION_REPORT = "registration_report.csv"
DERIVED_LANDMARKS = "mr_landmarks"  # the derived MR landmarks of a prepared entry, one JSON per subject


# ---------------------------------------------------------------------------------------------- grids
def regrid(volume: Volume, spacing: Sequence[float]) -> Volume:
    """A zero grid with per-axis ``spacing`` over the same field of view (same first voxel edge, same axes)."""
    old_spacing = volume.spacing
    new_spacing = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(volume.shape) * old_spacing
    shape = np.maximum(np.round(extent / new_spacing).astype(int), 1)
    scale = new_spacing / old_spacing
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * scale
    affine[:3, 3] = volume.index_to_ras(-0.5 + 0.5 * scale)  # first new centre, half a new voxel inside the edge
    return Volume(np.zeros(tuple(shape), dtype=np.float32), affine)


def prepared_grid_2d(mr: Volume, spacing: float) -> Volume:
    """The MR grid with the sagittal plane (axes 1, 2) at ``spacing`` mm and the slice thickness kept."""
    return regrid(mr, (mr.spacing[0], spacing, spacing))


def prepared_grid_3d(mr: Volume, spacing: float) -> Volume:
    """An isotropic grid at ``spacing`` mm covering the MR field of view."""
    return regrid(mr, (spacing, spacing, spacing))


def prepared_grid(mr: Volume, preprocess_cfg: PreprocessConfig, dims: int) -> Volume:
    """The grid the data of a ``dims``-D method live on."""
    if dims == 2:
        return prepared_grid_2d(mr, preprocess_cfg.spacing_inplane_mm)
    if dims == 3:
        return prepared_grid_3d(mr, preprocess_cfg.spacing_iso_mm)
    raise ValueError(f"dims must be 2 or 3, got {dims}")


def resample_onto(volume: Volume, grid: Volume, order: int) -> Volume:
    """``volume`` sampled at the voxel centres of ``grid`` (same physical space; edges extend the border)."""
    return resample_array(volume, grid.affine, grid.shape, order=order)


def mr_on_prepared_grid(mr: Volume, preprocess_cfg: PreprocessConfig, dims: int) -> tuple[np.ndarray, Volume, float]:
    """A native MR volume in model space on its prepared grid: (float32 array, the grid, the robust max).

    The one MR path of training data and of ``mr2ct.translate``, so both see identically prepared MR.
    """
    robust_max = mr_robust_max(mr.array, preprocess_cfg.mr_robust_max_percentile)
    grid = prepared_grid(mr, preprocess_cfg, dims)
    model = mr_to_model(resample_onto(mr, grid, order=1).array, robust_max).astype(np.float32)
    return model, grid, robust_max


# ---------------------------------------------------------------------------------------------- elastic
def elastic_deform(
    arrays: Sequence[np.ndarray],
    orders: Sequence[int],
    sigma: float,
    points: int,
    axes: Sequence[int],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Deform same-shaped arrays jointly with one random coarse-grid field (elasticdeform's algorithm).

    ``orders`` gives each array's interpolation order (3 for images, 0 for labels); dtypes are kept.
    """
    displacement = rng.standard_normal((len(axes), *([points] * len(axes)))) * sigma
    deformed = elasticdeform.deform_grid(
        [np.asarray(a) for a in arrays], displacement, order=list(orders), mode="reflect", axis=tuple(axes)
    )
    return [d.astype(a.dtype, copy=False) for d, a in zip(deformed, arrays)]


def deformed_copy(
    record: dict[str, np.ndarray], preprocess_cfg: PreprocessConfig, dims: int, rng: np.random.Generator
) -> dict:
    """One elastic copy of a training record: MR, CT, seg and subreg deformed by the same field."""
    axes = (1, 2) if dims == 2 else (0, 1, 2)
    mr, ct, seg, subreg = elastic_deform(
        [record["mr"], record["ct"], record["seg"], record["subreg"]],
        orders=[3, 3, 0, 0],
        sigma=preprocess_cfg.elastic_sigma,
        points=preprocess_cfg.elastic_points,
        axes=axes,
        rng=rng,
    )
    # Cubic interpolation overshoots at edges; model space is bounded.
    bounded = (MODEL_MIN, MODEL_MAX)
    return {**record, "mr": mr.clip(*bounded), "ct": ct.clip(*bounded), "seg": seg, "subreg": subreg}


# ---------------------------------------------------------------------------------------------- subjects
def prepare_subject(
    subject: Any, registration_mode: str, preprocess_cfg: PreprocessConfig, dims: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """One subject as model-space arrays on its prepared grid.

    Train: the registered pair (mode ``registration_mode``) plus ``elastic_copies`` deformed copies.
    Val/test: one undeformed record: the model input ``mr`` on the prepared grid and the evaluation
    reference ``reference_*`` (MR, CT, labels; independent of the registration mode) on the evaluation grid,
    the subject's native MR grid, where every method is scored and its outputs are written. Val also
    carries the mode's registered ``target_ct/target_seg`` on the prepared grid, the training target. Where the
    subject has isotropic ground-truth labels (``mr_seg_iso``), ``reference_iso_*`` holds them and their grid,
    where super-resolved segmentations are scored (``iso=true``).
    """
    try:
        mr, grid, robust_max = mr_on_prepared_grid(subject.mr, preprocess_cfg, dims)
    except ValueError as error:
        raise ValueError(f"subject {subject.name}: mr.nii.gz: {error}") from error
    base = {"mr": mr, "affine": grid.affine}

    if subject.split != "test":
        transform = register(subject, registration_mode)
        target = {
            "ct": ct_to_model(resample_to_grid(subject.ct, grid, transform, kind="image").array).astype(np.float32),
            "seg": resample_to_grid(subject.ct_seg, grid, transform, kind="labels").array.astype(np.int16),
            "subreg": resample_to_grid(subject.ct_subreg, grid, transform, kind="labels").array.astype(np.uint8),
        }
    if subject.split == "train":
        record = {**base, **target}
        copies = preprocess_cfg.elastic_copies
        return [record] + [deformed_copy(record, preprocess_cfg, dims, rng) for _ in range(copies)]

    reference = evaluation_reference(subject)
    record = {
        **base,
        "reference_mr": mr_to_model(subject.mr.array, robust_max).astype(np.float32),
        "reference_ct": ct_to_model(reference.ct.array).astype(np.float32),
        "reference_seg": reference.seg.array.astype(np.int16),
        "reference_subreg": reference.subreg.array.astype(np.uint8),
        "reference_affine": subject.mr.affine,
        "mr_robust_max": np.float64(robust_max),
        "contrast": np.str_(subject.contrast),
        "mr_path": np.str_(str((Path(subject.folder) / "mr.nii.gz").resolve())),
    }
    if subject.mr_seg_iso is not None and subject.mr_subreg_iso is not None:
        record.update(reference_iso_seg=subject.mr_seg_iso.array.astype(np.int16),
                      reference_iso_subreg=subject.mr_subreg_iso.array.astype(np.uint8),
                      reference_iso_affine=subject.mr_seg_iso.affine)
    if subject.split == "val":
        record.update(target_ct=target["ct"], target_seg=target["seg"])
    return [record]


def subject_rng(seed: int, name: str) -> np.random.Generator:
    """A subject's own random stream: independent of the order and number of other subjects."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def record_filenames(split: str, name: str, count: int) -> list[str]:
    """Relative paths of a subject's files inside the prepared entry."""
    if split == "train":
        return [f"train/{name}__copy{k}.npz" for k in range(count)]
    return [f"{split}/{name}.npz"]


# ---------------------------------------------------------------------------------------------- dataset
class LandmarkSource(Protocol):
    """Where derived MR landmarks come from (``registration.landmarks_from``; mr2ct.pipeline.landmarks)."""

    @property
    def identity(self) -> dict:
        """What identifies the model that derives (part of the prepared cache key)."""

    def derive(self, subject: Subject) -> DerivedLandmarks:
        """The subject's MR landmarks derived from its MR alone, with their quality and plausibility."""

    @property
    def provenance(self) -> dict:
        """What a derived landmarks file records about how it was made."""


def registration_key(registration_cfg: RegistrationConfig, landmark_source: LandmarkSource | None) -> dict:
    """The registration part of the cache key: the mode and, with ``landmarks_from``, the deriving run's
    identity (resolved run dir, checkpoint path and the checkpoint's sha256, so a retrained run is a new entry)
    whether derived landmarks override the subjects' own, and the version of the derivation rules. Without it the
    key is the mode alone, as before."""
    registration = plain_config(registration_cfg)
    if registration.get("landmarks_from") is None:
        return {"mode": registration["mode"]}
    if landmark_source is None:
        raise ValueError(f"registration.landmarks_from={registration['landmarks_from']}: no landmark source was "
                         f"given to prepare the data with (a bug in the caller)")
    return {"mode": registration["mode"], "landmarks_from": landmark_source.identity,
            "override_landmarks": bool(registration.get("override_landmarks", False)),
            "derivation": DERIVATION_VERSION}


def prepared_key(
    data_cfg: DataConfig, registration_cfg: RegistrationConfig, preprocess_cfg: PreprocessConfig, dims: int,
    landmark_source: LandmarkSource | None = None,
) -> dict:
    """Exactly what determines a prepared dataset (the cache key)."""
    return {
        "format_version": FORMAT_VERSION,
        "dims": dims,
        "data": data_key(data_cfg),
        "registration": registration_key(registration_cfg, landmark_source),
        "preprocess": plain_config(preprocess_cfg),
    }


def filled_in(derived: Landmarks, own: Landmarks) -> tuple[Landmarks, int]:
    """``derived`` with each of the subject's ``own`` landmarks it lacks added; and how many were added."""
    landmarks = {v: dict(kinds) for v, kinds in derived.items()}
    added = 0
    for vertebra, kinds in own.items():
        for kind, point in kinds.items():
            if kind not in landmarks.setdefault(vertebra, {}):
                landmarks[vertebra][kind] = point
                added += 1
    return dict(sorted(landmarks.items())), added


def with_derived_landmarks(
    subjects: list[Subject], source: LandmarkSource, override: bool, folder: Path, progress: bool
) -> tuple[list[Subject], dict[str, str]]:
    """Subjects whose MR landmarks come from ``source`` where they have none (all with ``override``), each
    derived set written to ``folder/<subject>.json`` with its provenance; and per subject which landmarks it
    uses (``file`` or ``derived``).

    A derived set that fails the plausibility checks is not used: the subject keeps its own landmarks, and
    a subject with none makes the whole preparation fail, naming every such subject and the reason. A derived
    set that overrides the subject's own replaces them landmark by landmark: where it has none (a spinous centre
    left out, a vertebra cut by the field of view), the subject's own stays (:func:`filled_in`).
    """
    folder.mkdir()
    used, sources, failures = [], {}, []
    for subject in tqdm(subjects, desc="deriving MR landmarks", unit="subject", disable=not progress):
        if subject.mr_landmarks and not override:
            used.append(subject)
            sources[subject.name] = "file"
            continue
        derived = source.derive(subject)
        if write_if_plausible(derived, folder / f"{subject.name}.json", source.provenance):
            landmarks, kept = filled_in(derived.landmarks, subject.mr_landmarks)
            used.append(replace(subject, mr_landmarks=landmarks))
            sources[subject.name] = f"derived ({kept} own kept)" if kept else "derived"
        elif subject.mr_landmarks:
            used.append(subject)
            sources[subject.name] = "file (derived implausible: " + "; ".join(derived.problems) + ")"
        else:
            failures.append(f"subject {subject.name}: " + "; ".join(derived.problems))
    if failures:
        raise ValueError(f"registration.landmarks_from: derived MR landmarks of {len(failures)} subject(s) without "
                         f"mr_landmarks.json are implausible: " + " | ".join(failures))
    return used, sources


def prepare_dataset(
    data_cfg: DataConfig,
    registration_cfg: RegistrationConfig,
    preprocess_cfg: PreprocessConfig,
    dims: int,
    cache_dir: str | Path,
    progress: bool = True,
    landmark_source: LandmarkSource | None = None,
) -> Path:
    """Register, resample, normalise and augment every subject once for a ``dims``-D method; return the
    cached entry's folder.

    With ``registration.landmarks_from`` the MR landmarks subjects lack (all, with ``override_landmarks``)
    are derived by ``landmark_source`` first and kept in the entry (``mr_landmarks/<subject>.json``); the
    registration report says per subject which landmarks it used. A second call with the same configs
    returns the existing entry without work. A subject that fails raises with its message and leaves no entry.
    """
    key = prepared_key(data_cfg, registration_cfg, preprocess_cfg, dims, landmark_source)
    seed = preprocess_cfg.seed
    mode = key["registration"]["mode"]
    deriving = "landmarks_from" in key["registration"]

    def build(folder: Path) -> None:
        root = subject_root(data_cfg, cache_dir, progress=progress)
        subjects = load_subjects(root, require_mr_landmarks=not deriving)
        sources = {subject.name: "file" for subject in subjects}
        if deriving:
            subjects, sources = with_derived_landmarks(subjects, landmark_source, key["registration"]["override_landmarks"],
                                                       folder / DERIVED_LANDMARKS, progress)
        names: dict[str, list[str]] = {split: [] for split in SPLITS}
        files: dict[str, list[str]] = {split: [] for split in SPLITS}
        for split in SPLITS:
            (folder / split).mkdir()
        for subject in tqdm(subjects, desc="preparing subjects", unit="subject", disable=not progress):
            records = prepare_subject(subject, mode, preprocess_cfg, dims, subject_rng(seed, subject.name))
            paths = record_filenames(subject.split, subject.name, len(records))
            for record, relative in zip(records, paths):
                np.savez_compressed(folder / relative, **record)
            names[subject.split].append(subject.name)
            files[subject.split].extend(paths)
        rows = [{**row, "landmarks": sources[row["subject"]]} for row in registration_report(subjects, mode)]
        write_registration_report(rows, folder / REGISTRATION_REPORT)
        manifest = {
            "format_version": FORMAT_VERSION,
            "dims": dims,
            "spacing": preprocess_cfg.spacing_inplane_mm if dims == 2 else preprocess_cfg.spacing_iso_mm,
            "registration_mode": mode,
            "landmarks_from": key["registration"].get("landmarks_from"),
            "mr_robust_max_percentile": preprocess_cfg.mr_robust_max_percentile,
            "min_spine_pixels": preprocess_cfg.min_spine_pixels,
            "elastic_copies": preprocess_cfg.elastic_copies,
            "seed": seed,
            "subject_root": str(Path(root).resolve()),
            "subjects": names,
            "contrasts": sorted({subject.contrast for subject in subjects}),
            "files": files,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))

    return cached("prepared", key, cache_dir, build)


def load_manifest(prepared_dir: str | Path) -> dict:
    """The manifest of a prepared entry, with a clear error when the folder is not one."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{prepared_dir} is not a prepared dataset (no {MANIFEST}); run mr2ct.prepare")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {manifest.get('format_version')}, this code reads {FORMAT_VERSION}")
    return manifest
