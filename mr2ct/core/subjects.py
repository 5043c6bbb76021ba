"""Subject folders on disk (README, "Data layout") -> validated in-memory subjects in canonical RAS+.

Real data and the phantom share this code path. Every volume is converted to RAS+ voxel order once, here;
later stages never look at the on-disk orientation again (outputs go back through ``Subject.mr_image``).
Validation collects every problem of every subject before raising, so one run reports all bad inputs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from mr2ct.core.io import Volume, atomic_write_text, lps_to_ras, ras_to_lps
from mr2ct.core.labels import LANDMARK_KINDS

Landmarks = dict[int, dict[str, np.ndarray]]

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("subject", "split", "contrast", "region")
SPLITS = ("train", "val", "test")
CONTRASTS = ("t1w", "t2w")
COORDINATE_SYSTEMS = ("RAS", "LPS")
MIN_LANDMARK_PAIRS = 3
REQUIRED_IMAGES = ("mr", "ct", "ct_seg", "ct_subreg")
# mr_seg_iso / mr_subreg_iso: ground-truth labels on a 1 mm isotropic grid over the MR's field of view, where
# super-resolved segmentations of 3D methods are scored (the phantom renders them)
OPTIONAL_IMAGES = ("mr_seg", "mr_subreg", "oracle_ct", "mr_seg_iso", "mr_subreg_iso")
LABEL_IMAGES = ("ct_seg", "ct_subreg", "mr_seg", "mr_subreg", "mr_seg_iso", "mr_subreg_iso")
GRID_OF = {"ct_seg": "ct", "ct_subreg": "ct", "mr_seg": "mr", "mr_subreg": "mr", "oracle_ct": "mr",
           "mr_subreg_iso": "mr_seg_iso"}


class SubjectError(ValueError):
    """One or more subjects are unusable; ``problems`` holds one 'subject X: file Y: problem' line each."""

    def __init__(self, root: Path, problems: list[str]):
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{len(problems)} problem(s) in subject root {root}:\n{listing}")


@dataclass(frozen=True)
class TrueTransform:
    """Exact CT->MR ground truth of a phantom subject, in RAS mm.

    ``global_matrix`` is the patient's rigid repositioning; ``vertebra_matrices[v]`` composes it with
    vertebra v's own small motion, so a point on vertebra v in the CT maps exactly onto the MR.
    """

    global_matrix: np.ndarray
    vertebra_matrices: dict[int, np.ndarray] = field(default_factory=dict)

    def matrix(self, vertebra_id: int | None = None) -> np.ndarray:
        if vertebra_id is None:
            return self.global_matrix
        if vertebra_id not in self.vertebra_matrices:
            raise KeyError(f"no true transform for vertebra {vertebra_id}; have {sorted(self.vertebra_matrices)}")
        return self.vertebra_matrices[vertebra_id]

    def apply(self, points_ct: np.ndarray, vertebra_id: int | None = None) -> np.ndarray:
        """CT RAS points (..., 3) -> MR RAS points, with the global or vertebra ``vertebra_id``'s transform."""
        matrix = self.matrix(vertebra_id)
        return np.asarray(points_ct, dtype=np.float64) @ matrix[:3, :3].T + matrix[:3, 3]

    def to_json(self) -> dict:
        return {
            "maps": "CT RAS mm -> MR RAS mm",
            "global": self.global_matrix.tolist(),
            "vertebrae": {str(v): m.tolist() for v, m in sorted(self.vertebra_matrices.items())},
        }

    @classmethod
    def from_json(cls, payload: dict) -> "TrueTransform":
        def matrix(value) -> np.ndarray:
            array = np.asarray(value, dtype=np.float64)
            if array.shape != (4, 4) or not np.all(np.isfinite(array)):
                raise ValueError(f"expected a finite 4x4 matrix, got {value!r}")
            return array

        if "global" not in payload:
            raise ValueError("missing key 'global'")
        vertebrae = {int(key): matrix(value) for key, value in payload.get("vertebrae", {}).items()}
        return cls(matrix(payload["global"]), vertebrae)


@dataclass
class Subject:
    """One subject in canonical RAS+; optional fields are ground truth only the phantom (or a test set) has."""

    name: str
    split: str
    contrast: str
    region: str
    folder: Path
    mr: Volume
    ct: Volume
    ct_seg: Volume
    ct_subreg: Volume
    mr_landmarks: Landmarks  # empty when loaded without mr_landmarks.json (``require_mr_landmarks=False``)
    mr_image: nib.Nifti1Image
    ct_landmarks: Landmarks | None = None
    mr_seg: Volume | None = None
    mr_subreg: Volume | None = None
    oracle_ct: Volume | None = None
    mr_seg_iso: Volume | None = None
    mr_subreg_iso: Volume | None = None
    true_transform: TrueTransform | None = None
    preset: str = ""


# ------------------------------------------------------------------------------------------- landmarks


def read_landmarks(path: str | Path) -> Landmarks:
    """Read a landmarks JSON (RAS or LPS, mm) as RAS points; raises ValueError naming the problem."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read landmarks JSON: {error}") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("vertebrae"), dict):
        raise ValueError("expected an object with a 'vertebrae' mapping")
    system = str(payload.get("coordinate_system", "")).upper()
    if system not in COORDINATE_SYSTEMS:
        raise ValueError(f"coordinate_system {payload.get('coordinate_system')!r} is not one of {COORDINATE_SYSTEMS}")
    if payload.get("units", "mm") != "mm":
        raise ValueError(f"units {payload.get('units')!r}: only 'mm' is supported")
    landmarks: Landmarks = {}
    for key, kinds in payload["vertebrae"].items():
        try:
            vertebra = int(key)
        except ValueError:
            raise ValueError(f"vertebra key {key!r} is not an integer label id") from None
        if not isinstance(kinds, dict) or not kinds:
            raise ValueError(f"vertebra {key}: expected a mapping of landmark kinds to points")
        landmarks[vertebra] = {}
        for kind, point in kinds.items():
            if kind not in LANDMARK_KINDS:
                raise ValueError(f"vertebra {key}: unknown landmark kind {kind!r}; valid: {sorted(LANDMARK_KINDS)}")
            array = np.asarray(point, dtype=np.float64)
            if array.shape != (3,) or not np.all(np.isfinite(array)):
                raise ValueError(f"vertebra {key} {kind}: expected 3 finite numbers, got {point!r}")
            landmarks[vertebra][kind] = lps_to_ras(array) if system == "LPS" else array
    return landmarks


def write_landmarks(
    landmarks: Landmarks, path: str | Path, coordinate_system: str = "RAS", provenance: dict | None = None
) -> Path:
    """Write RAS landmarks as JSON in ``coordinate_system`` (RAS or LPS), atomically.

    ``provenance`` (JSON-serialisable; e.g. how derived landmarks were made) is stored under its own key,
    which :func:`read_landmarks` ignores, so a derived file reads like a clicked one.
    """
    system = coordinate_system.upper()
    if system not in COORDINATE_SYSTEMS:
        raise ValueError(f"coordinate_system {coordinate_system!r} is not one of {COORDINATE_SYSTEMS}")
    convert = ras_to_lps if system == "LPS" else np.asarray
    payload = {
        "coordinate_system": system,
        "units": "mm",
        **({"provenance": provenance} if provenance is not None else {}),
        "vertebrae": {
            str(v): {kind: [float(c) for c in convert(point)] for kind, point in kinds.items()}
            for v, kinds in sorted(landmarks.items())
        },
    }
    return atomic_write_text(json.dumps(payload, indent=1), Path(path))


# ---------------------------------------------------------------------------------------------- loading


def read_manifest(root: Path) -> list[dict[str, str]]:
    """The manifest rows; raises SubjectError for a missing or malformed manifest."""
    path = root / MANIFEST
    if not path.is_file():
        raise SubjectError(root, [f"{MANIFEST}: missing"])
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MANIFEST_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise SubjectError(root, [f"{MANIFEST}: missing column(s) {missing}; found {reader.fieldnames}"])
        rows = [{key: (value or "").strip() for key, value in row.items() if key} for row in reader]
    problems = [f"{MANIFEST}: row {i + 2}: empty subject name" for i, row in enumerate(rows) if not row["subject"]]
    names = [row["subject"] for row in rows]
    problems += [f"{MANIFEST}: subject {n} listed more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise SubjectError(root, problems)
    return rows


def load_subjects(
    root: str | Path, splits: Iterable[str] | None = None, require_mr_landmarks: bool = True
) -> list[Subject]:
    """Load and validate every subject of ``root`` (optionally only the given splits), in manifest order.

    ``require_mr_landmarks=False`` accepts subjects without ``mr_landmarks.json`` (their ``mr_landmarks`` is
    empty), for callers that derive them (``mr2ct.landmarks``, ``registration.landmarks_from``); training
    with clicked landmarks keeps the strict default. Raises one SubjectError listing every problem of every
    subject; nothing partial is returned.
    """
    root = Path(root)
    wanted = None if splits is None else set(splits)
    if wanted is not None and not wanted <= set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(wanted - set(SPLITS))}; valid: {list(SPLITS)}")
    rows = read_manifest(root)
    subjects, problems = [], []
    for row in rows:
        if wanted is not None and row["split"] not in wanted and row["split"] in SPLITS:
            continue
        subject, subject_problems = _load_subject(root, row, require_mr_landmarks)
        problems += [f"subject {row['subject']}: {problem}" for problem in subject_problems]
        if subject is not None and wanted is not None and subject.split not in wanted:
            continue
        if subject is not None:
            subjects.append(subject)
    if problems:
        raise SubjectError(root, problems)
    return subjects


def _load_subject(root: Path, row: dict[str, str], require_mr_landmarks: bool = True) -> tuple[Subject | None, list[str]]:
    """One subject and its problems ('file: problem'); the subject is None when any problem was found."""
    folder = root / row["subject"]
    problems: list[str] = []
    if row["split"] not in SPLITS:
        problems.append(f"{MANIFEST}: unknown split {row['split']!r}; valid: {list(SPLITS)}")
    if row["contrast"] not in CONTRASTS:
        problems.append(f"{MANIFEST}: unknown contrast {row['contrast']!r}; valid: {list(CONTRASTS)}")
    if not folder.is_dir():
        return None, problems + [f"{folder}: subject folder missing"]

    volumes: dict[str, Volume] = {}
    images: dict[str, nib.Nifti1Image] = {}
    for name in REQUIRED_IMAGES + OPTIONAL_IMAGES:
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            if name in REQUIRED_IMAGES:
                problems.append(f"{path.name}: missing")
            continue
        try:
            volumes[name], images[name] = _read_volume(path, labels=name in LABEL_IMAGES)
        except ValueError as error:
            problems.append(f"{path.name}: {error}")
    grid_problems = _grid_problems(volumes)
    problems += grid_problems
    problems += [f"{name}.nii.gz: segmentation is empty (no label > 0)"
                 for name in LABEL_IMAGES if name in volumes and not np.any(volumes[name].array > 0)]

    landmarks: dict[str, Landmarks] = {}
    for name, required in (("mr_landmarks", require_mr_landmarks), ("ct_landmarks", False)):
        path = folder / f"{name}.json"
        if not path.exists():
            if required:
                problems.append(f"{path.name}: missing")
            continue
        try:
            landmarks[name] = read_landmarks(path)
        except ValueError as error:
            problems.append(f"{path.name}: {error}")
    if "mr_landmarks" in landmarks and "ct_seg" in volumes and "ct_subreg" in volumes and not grid_problems:
        problems += _landmark_problems(landmarks["mr_landmarks"], landmarks.get("ct_landmarks"),
                                       volumes["ct_seg"], volumes["ct_subreg"])

    true_transform = None
    transform_path = folder / "true_transform.json"
    if transform_path.exists():
        try:
            true_transform = TrueTransform.from_json(json.loads(transform_path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            problems.append(f"{transform_path.name}: {error}")

    if problems:
        return None, problems
    return Subject(
        name=row["subject"], split=row["split"], contrast=row["contrast"], region=row["region"], folder=folder,
        mr=volumes["mr"], ct=volumes["ct"], ct_seg=volumes["ct_seg"], ct_subreg=volumes["ct_subreg"],
        mr_landmarks=landmarks.get("mr_landmarks", {}), mr_image=images["mr"], ct_landmarks=landmarks.get("ct_landmarks"),
        mr_seg=volumes.get("mr_seg"), mr_subreg=volumes.get("mr_subreg"), oracle_ct=volumes.get("oracle_ct"),
        mr_seg_iso=volumes.get("mr_seg_iso"), mr_subreg_iso=volumes.get("mr_subreg_iso"),
        true_transform=true_transform, preset=row.get("preset", ""),
    ), []


def _read_volume(path: Path, labels: bool) -> tuple[Volume, nib.Nifti1Image]:
    """A canonical RAS+ volume (labels as int16, images as float32) or ValueError naming the problem."""
    try:
        image = nib.load(str(path))
        if len(image.shape) != 3:
            raise ValueError(f"expected a 3D image, got shape {image.shape}")
        canonical = nib.as_closest_canonical(image)
        data = np.asanyarray(canonical.dataobj)
    except ValueError:
        raise
    except Exception as error:  # nibabel raises many types for corrupt files; report them all alike
        raise ValueError(f"unreadable image ({type(error).__name__}: {error})") from error
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{int(np.size(data) - np.isfinite(data).sum())} NaN/Inf voxels")
    if labels:
        if not np.array_equal(data, np.round(data)):
            raise ValueError("label image holds non-integer values")
        array = data.astype(np.int16)
    else:
        array = data.astype(np.float32)
    return Volume(array, canonical.affine.copy()), image


def _grid_problems(volumes: dict[str, Volume]) -> list[str]:
    """Label and oracle volumes must share the grid of the image they belong to."""
    problems = []
    for name, reference in GRID_OF.items():
        if name in volumes and reference in volumes:
            volume, grid = volumes[name], volumes[reference]
            if volume.shape != grid.shape or not np.allclose(volume.affine, grid.affine, atol=1e-3):
                problems.append(f"{name}.nii.gz: grid {volume.shape} does not match {reference}.nii.gz {grid.shape} "
                                f"(shape or affine differ)")
    return problems


def _landmark_problems(mr: Landmarks, ct: Landmarks | None, ct_seg: Volume, ct_subreg: Volume) -> list[str]:
    """Landmark ids must exist in the CT labels (and CT landmarks), with at least 3 usable pairs."""
    problems = []
    in_ct = np.unique(ct_seg.array[ct_seg.array > 0])
    missing = sorted(set(mr) - set(int(v) for v in in_ct))
    if missing:
        problems.append(f"mr_landmarks.json: vertebra id(s) {missing} missing in ct_seg.nii.gz")
    if ct is not None:
        missing_ct = sorted(set(mr) - set(ct))
        if missing_ct:
            problems.append(f"mr_landmarks.json: vertebra id(s) {missing_ct} missing in ct_landmarks.json")
    bone = ct_seg.array > 0
    codes = np.unique(ct_seg.array[bone].astype(np.int64) * 1000 + ct_subreg.array[bone])
    pairs_in_ct = {(int(code) // 1000, int(code) % 1000) for code in codes}
    usable = sum((v, LANDMARK_KINDS[kind]) in pairs_in_ct for v, kinds in mr.items() for kind in kinds)
    if usable < MIN_LANDMARK_PAIRS:
        problems.append(f"mr_landmarks.json: only {usable} landmark pair(s) shared with the CT labels; "
                        f"registration needs at least {MIN_LANDMARK_PAIRS}")
    return problems
