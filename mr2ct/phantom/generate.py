"""Generate phantom subjects in memory and write them in the subject layout (README, "Data layout").

A subject is fully determined by (config, index): its random streams (anatomy, pose, tissue values,
acquisition noise, landmark noise) are spawned from (seed, index, dataset family), where external and
external_corrected share a family so they hold the same images.
"""

from __future__ import annotations

import csv
import io
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mr2ct.core.config import PhantomConfig
from mr2ct.core.io import Volume, atomic_write_text, save_nifti
from mr2ct.core.labels import LANDMARK_KINDS, SPINOUS_PROCESS
from mr2ct.core.subjects import MANIFEST, Landmarks, TrueTransform, write_landmarks
from mr2ct.phantom import contrast
from mr2ct.phantom.anatomy import Anatomy, sample_anatomy
from mr2ct.phantom.pose import sample_true_transform
from mr2ct.phantom.render import Grid, bone_box, render

PRESET_FAMILY = {"t1w": 1, "t2w": 2, "external": 3, "external_corrected": 3}
EXTERNAL_LABEL_MARGIN_MM = 3.0  # MRSpineSeg-like labels reach this far beyond the bone
MR_AXCODES = ("L", "I", "P")  # sagittal acquisition: slices left-right first, rows inferior, columns posterior
CT_AXCODES = ("L", "P", "S")  # DICOM-like axial stack
CT_SPACING_MM = 1.0
ISO_MM = 1.0  # the isotropic ground-truth labels (mr_seg_iso, mr_subreg_iso) are written at this spacing
FOV_MARGIN_MM = {"lateral_mr": 15.0, "lateral_ct": 6.0, "anterior_mr": 30.0, "anterior_ct": 15.0, "posterior_mr": 8.0,
                 "posterior_ct": 10.0, "cranio_caudal": 6.0}
SACRUM_IN_FOV_MM = 5.0  # a lumbar field of view shows the sacrum down to this far below the S1 centre


@dataclass
class PhantomSubject:
    """One generated subject; RAS+ volumes. ``mr_tissue`` and ``anatomy`` are ground truth for tests and previews."""

    name: str
    split: str
    contrast: str
    region: str
    preset: str
    mr: Volume
    ct: Volume
    ct_seg: Volume
    ct_subreg: Volume
    mr_seg: Volume
    mr_subreg: Volume
    oracle_ct: Volume
    mr_landmarks: Landmarks
    ct_landmarks: Landmarks
    true_transform: TrueTransform
    mr_tissue: Volume
    ct_tissue: Volume
    anatomy: Anatomy
    # labels of the thin-slice rendering where it is 1 mm isotropic (3 mm slices split in 3, 1 mm in-plane): the
    # ground truth of super-resolved (3D) segmentations; None for protocols whose thin slices are not isotropic
    mr_seg_iso: Volume | None = None
    mr_subreg_iso: Volume | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _value(option) -> str:
    return str(getattr(option, "value", option))


def assign_splits(subjects: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Split per subject index: a seeded shuffle, with at least one val and one test subject from 3 subjects on.

    ``test_fraction = 1`` makes a test-only set (the external evaluation sets).
    """
    if test_fraction == 1.0:
        return ["test"] * subjects
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must lie in [0, 1), or test_fraction 1")
    n_test = int(round(subjects * test_fraction))
    n_val = int(round(subjects * val_fraction))
    if subjects >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    while n_test + n_val > max(subjects - 1, 0) and n_test + n_val > 0:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    order = np.random.default_rng([seed, 7919]).permutation(subjects)
    splits = ["train"] * subjects
    for rank, index in enumerate(order):
        splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def subject_name(index: int) -> str:
    return f"sub-{index:03d}"


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def generate_subject(config: PhantomConfig, index: int) -> PhantomSubject:
    """Build subject ``index`` of the dataset ``config`` describes (deterministic, in memory)."""
    preset, region = _value(config.preset), _value(config.region)
    if preset not in contrast.PROTOCOLS:
        raise ValueError(f"unknown phantom preset {preset!r}; valid: {sorted(contrast.PROTOCOLS)}")
    if not 0 <= index < config.subjects:
        raise ValueError(f"subject index {index} outside 0..{config.subjects - 1}")
    if config.seed < 0 or config.landmark_noise_mm < 0:
        raise ValueError(f"seed ({config.seed}) and landmark_noise_mm ({config.landmark_noise_mm}) must be >= 0")
    protocol = contrast.PROTOCOLS[preset]
    # one stream per purpose, so that e.g. richer anatomy does not redraw the pose, the noise or the landmarks
    anatomy_rng, pose_rng, look_rng, rng, landmark_rng = np.random.default_rng(
        [int(config.seed), index, PRESET_FAMILY[preset]]).spawn(5)
    timings: dict[str, float] = {}

    with _timed(timings, "anatomy"):
        anatomy = sample_anatomy(anatomy_rng, region)
        true_transform = sample_true_transform(pose_rng, anatomy)
        ct_look, mr_lut = contrast.sample_ct(look_rng), contrast.sample_mr_lut(look_rng, protocol)
        degeneration = np.zeros(256, np.float32)
        degeneration[list(anatomy.discs)] = [disc.degeneration for disc in anatomy.discs.values()]
        fractured = np.zeros(256, np.float32)
        fractured[[v.vertebra_id for v in anatomy.vertebrae if v.shape.wedge > 0]] = 1.0

    with _timed(timings, "render_mr"):
        mr_grid = mr_grid_for(anatomy, protocol)
        thin_grid = thin_slices(mr_grid, protocol)
        thin = render(anatomy, thin_grid)
    with _timed(timings, "mr_contrast"):
        signal = contrast.mr_signal(thin, mr_lut, degeneration, fractured, protocol)
        mr = Volume(contrast.acquire_mr(signal, protocol, rng), mr_grid.affine)
        on_mr = thin.take(slice(protocol.sub_slices // 2, None, protocol.sub_slices))  # thin slices on MR voxel centres
        oracle = contrast.ct_hounsfield(on_mr, ct_look, fractured, spacing_of(mr_grid), rng)
        mr_landmarks = landmarks_from_labels(thin.bone, thin.subregion, thin_grid.affine)

    with _timed(timings, "render_ct"):
        ct_grid = ct_grid_for(anatomy, true_transform, pose_rng)
        ct_maps = render(anatomy, ct_grid, true_transform.global_matrix, true_transform.vertebra_matrices)
    with _timed(timings, "ct_contrast"):
        ct = Volume(contrast.ct_hounsfield(ct_maps, ct_look, fractured, spacing_of(ct_grid), rng), ct_grid.affine)
        ct_landmarks = landmarks_from_labels(ct_maps.bone, ct_maps.subregion, ct_grid.affine)

    with _timed(timings, "labels"):
        mr_seg, mr_subreg = on_mr.bone, on_mr.subregion
        if preset == "external":
            mr_seg, mr_subreg = dilate_labels([mr_seg, mr_subreg], mr.spacing, EXTERNAL_LABEL_MARGIN_MM)
        if config.landmark_noise_mm > 0:
            mr_landmarks = {v: {kind: point + landmark_rng.normal(0.0, config.landmark_noise_mm, 3)
                                for kind, point in kinds.items()} for v, kinds in mr_landmarks.items()}

    iso = bool(np.allclose(spacing_of(thin_grid), ISO_MM))
    split = assign_splits(config.subjects, config.val_fraction, config.test_fraction, int(config.seed))[index]
    return PhantomSubject(
        name=subject_name(index), split=split, contrast=protocol.contrast, region=region, preset=preset,
        mr=mr, ct=ct, ct_seg=Volume(ct_maps.bone, ct_grid.affine),
        ct_subreg=Volume(ct_maps.subregion, ct_grid.affine), mr_seg=Volume(mr_seg, mr_grid.affine),
        mr_subreg=Volume(mr_subreg, mr_grid.affine), oracle_ct=Volume(oracle, mr_grid.affine),
        mr_landmarks=mr_landmarks, ct_landmarks=ct_landmarks, true_transform=true_transform,
        mr_tissue=Volume(on_mr.tissue, mr_grid.affine), ct_tissue=Volume(ct_maps.tissue, ct_grid.affine),
        anatomy=anatomy, mr_seg_iso=Volume(thin.bone, thin_grid.affine) if iso else None,
        mr_subreg_iso=Volume(thin.subregion, thin_grid.affine) if iso else None, timings=timings,
    )


def _anatomy_extent(anatomy: Anatomy, anterior: float, posterior: float, lateral: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (anatomy frame) box around the spine: each vertebra's body with its half discs, out to the
    transverse-process tips and back over its whole spinous process (so landmarks are never cut), plus margins
    front, back, sideways and cranio-caudally; below L5 the top of the sacrum (articular tips, sacral alae and
    ribs may be cut, as in a real field of view)."""
    points = []
    margin = FOV_MARGIN_MM["cranio_caudal"]
    for bone in anatomy.vertebrae:
        s = bone.shape
        spinous = np.stack([part.primitive.bounds() for part in bone.parts if part.subregion == SPINOUS_PROCESS])
        low = [-s.transverse_len - lateral, spinous[:, 0, 1].min() - posterior,
               min(-s.body_hh - bone.half_disc_below, spinous[:, 0, 2].min()) - margin]
        high = [s.transverse_len + lateral, s.body_ry + anterior,
                max(s.body_hh + bone.half_disc_above, spinous[:, 1, 2].max()) + margin]
        points.append(_box_corners(bone.frame, low, high))
    if anatomy.sacrum is not None:
        low, high = bone_box(anatomy.sacrum)
        points.append(_box_corners(anatomy.sacrum.frame, [0.0, low[1] - posterior, -SACRUM_IN_FOV_MM - margin],
                                   [0.0, high[1] + anterior, 0.0]))
    points = np.concatenate(points)
    return points.min(axis=0), points.max(axis=0)


def _box_corners(frame: np.ndarray, low, high) -> np.ndarray:
    """The 8 corners of a local box in the anatomy frame."""
    local = np.array([[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    return (local @ frame.T)[:, :3]


def spacing_of(grid: Grid) -> np.ndarray:
    """Voxel size (mm) along each grid axis."""
    return np.linalg.norm(grid.affine[:3, :3], axis=0)


def mr_grid_for(anatomy: Anatomy, protocol: contrast.MrProtocol) -> Grid:
    """Sagittal MR grid in the anatomy frame: thick left-right slices, reaching past the skin into air."""
    low, high = _anatomy_extent(anatomy, FOV_MARGIN_MM["anterior_mr"], 0.0, FOV_MARGIN_MM["lateral_mr"])
    cl = anatomy.centreline
    in_range = (cl.points[:, 2] >= low[2]) & (cl.points[:, 2] <= high[2])
    skin = cl.points[in_range] + cl.params["skin_w"][in_range, None] * cl.anterior[in_range]
    low[1] = min(low[1], float(skin[:, 1].min()) - FOV_MARGIN_MM["posterior_mr"])
    spacing = np.array([protocol.slice_mm, protocol.inplane_mm, protocol.inplane_mm])
    return _axis_aligned_grid(low, high, spacing)


def thin_slices(grid: Grid, protocol: contrast.MrProtocol) -> Grid:
    """The MR grid with every slice split into ``sub_slices`` thin ones that tile the slice thickness."""
    n = protocol.sub_slices
    affine = grid.affine.copy()
    affine[:3, 0] /= n
    affine[:3, 3] -= affine[:3, 0] * (n - 1) / 2.0
    return Grid((grid.shape[0] * n, grid.shape[1], grid.shape[2]), affine)


def ct_grid_for(anatomy: Anatomy, true_transform: TrueTransform, rng: np.random.Generator) -> Grid:
    """1 mm CT grid, axis-aligned in the CT's own world, covering the spine in the CT's pose."""
    low, high = _anatomy_extent(anatomy, FOV_MARGIN_MM["anterior_ct"], FOV_MARGIN_MM["posterior_ct"],
                                FOV_MARGIN_MM["lateral_ct"])
    corners = np.array([[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    in_ct = (corners @ np.linalg.inv(true_transform.global_matrix).T)[:, :3]
    offset = rng.uniform(0.0, CT_SPACING_MM, 3)  # subjects' grids do not share voxel phases
    return _axis_aligned_grid(in_ct.min(axis=0) - offset, in_ct.max(axis=0), np.full(3, CT_SPACING_MM))


def _axis_aligned_grid(low: np.ndarray, high: np.ndarray, spacing: np.ndarray) -> Grid:
    shape = tuple(int(n) for n in np.ceil((high - low) / spacing).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = low
    return Grid(shape, affine)


def landmarks_from_labels(vertebra: np.ndarray, subregion: np.ndarray, affine: np.ndarray) -> Landmarks:
    """Centre of mass (RAS mm) of each vertebra's body and spinous-process voxels."""
    landmarks: Landmarks = {}
    for kind, subregion_id in LANDMARK_KINDS.items():
        index = np.nonzero(subregion == subregion_id)
        ids = vertebra[index].astype(np.intp)
        counts = np.bincount(ids, minlength=256)
        for v in np.nonzero(counts[1:])[0] + 1:
            mask = ids == v
            centre = np.array([axis[mask].mean() for axis in index])
            landmarks.setdefault(int(v), {})[kind] = centre @ affine[:3, :3].T + affine[:3, 3]
    return landmarks


def dilate_labels(label_maps: list[np.ndarray], spacing: np.ndarray, margin_mm: float) -> list[np.ndarray]:
    """Grow labels into the background by ``margin_mm`` (nearest label wins), like over-generous manual labels."""
    distance, nearest = ndimage.distance_transform_edt(label_maps[0] == 0, sampling=spacing, return_indices=True)
    grow = (distance > 0) & (distance <= margin_mm)
    grown = []
    for labels in label_maps:
        out = labels.copy()
        out[grow] = labels[tuple(axis[grow] for axis in nearest)]
        grown.append(out)
    return grown


# ---------------------------------------------------------------------------------------------- writing


def reorient(volume: Volume, axcodes: tuple[str, str, str]) -> Volume:
    """The same voxels and physical space with the array axes in ``axcodes`` order (from RAS+)."""
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                                nib.orientations.axcodes2ornt(axcodes))
    array = nib.orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.array.shape)
    return Volume(np.ascontiguousarray(array), affine)


def write_subject(subject: PhantomSubject, folder: Path, preview: bool = False) -> Path:
    """Write every file of one subject (each atomically): MR-grid files sagittal, CT-grid files axial."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, axcodes in (("mr", MR_AXCODES), ("mr_seg", MR_AXCODES), ("mr_subreg", MR_AXCODES),
                          ("oracle_ct", MR_AXCODES), ("ct", CT_AXCODES), ("ct_seg", CT_AXCODES),
                          ("ct_subreg", CT_AXCODES), ("mr_seg_iso", MR_AXCODES), ("mr_subreg_iso", MR_AXCODES)):
        if getattr(subject, name) is not None:
            save_nifti(reorient(getattr(subject, name), axcodes), folder / f"{name}.nii.gz")
    write_landmarks(subject.mr_landmarks, folder / "mr_landmarks.json", coordinate_system="LPS")
    write_landmarks(subject.ct_landmarks, folder / "ct_landmarks.json", coordinate_system="RAS")
    atomic_write_text(json.dumps(subject.true_transform.to_json(), indent=1), folder / "true_transform.json")
    if preview:
        from mr2ct.phantom.preview import (
            write_preview,  # matplotlib only when previews are asked for
        )

        write_preview(subject, folder / "preview.png")
    return folder


def write_manifest(rows: list[dict[str, str]], out_dir: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["subject", "split", "contrast", "region", "preset"])
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(buffer.getvalue(), out_dir / MANIFEST)


def generate_dataset(config: PhantomConfig, out_dir: Path, preview: bool = False, progress: bool = True) -> Path:
    """Write ``config.subjects`` subjects and manifest.csv into ``out_dir`` (the manifest last)."""
    if config.subjects < 1:
        raise ValueError(f"subjects must be at least 1, got {config.subjects}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in tqdm(range(config.subjects), desc=f"phantom {_value(config.preset)}/{_value(config.region)}",
                      unit="subject", disable=not progress):
        subject = generate_subject(config, index)
        write_subject(subject, out_dir / subject.name, preview=preview)
        rows.append({"subject": subject.name, "split": subject.split, "contrast": subject.contrast,
                     "region": subject.region, "preset": subject.preset})
    write_manifest(rows, out_dir)
    return out_dir
