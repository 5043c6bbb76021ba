"""Registration report: landmark error after registration and, for the phantom, the errors against the truth.

The landmark error (``tre_mm``) is the mean distance between the CT landmarks mapped into MR space and
the MR landmarks, over every body and spinous-process landmark present in both, including those the mode
did not fit: one_point is judged on the spinous processes it ignored. The residual rotation compares the
estimated transform with the phantom's true global CT->MR transform: the rotation of
(true CT->MR) o (estimated MR->CT), which is the identity when the registration is exact.

Where the subject has exact ground truth, two errors do not depend on the (noisy or derived) MR landmarks:
``landmark_error_mm``, the mean distance of the MR landmarks the registration used from the exact ones
(centres of mass of ``mr_seg``/``mr_subreg``), and ``true_error_mm``, the mean distance between where the
estimated and the true transform (each vertebra's own, with its small motion) put the CT landmarks in MR space.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mr2ct.core.config import RegistrationMode
from mr2ct.core.io import atomic_write
from mr2ct.core.subjects import Subject
from mr2ct.registration.landmarks import Landmarks, landmarks_from_labels, paired_points
from mr2ct.registration.rigid import (
    MODE_KINDS,
    RigidTransform,
    ct_landmarks,
    register,
    registration_mode,
    rotation_angles_deg,
)

REPORT_COLUMNS = (
    "subject",
    "mode",
    "n_pairs_fitted",
    "tre_mm",
    "tre_body_mm",
    "tre_spinous_mm",
    "residual_rot_lr_deg",
    "residual_rot_ap_deg",
    "residual_rot_si_deg",
    "landmark_error_mm",
    "true_error_mm",
)


def landmark_distances(transform: RigidTransform, mr: Landmarks, ct: Landmarks, kind: str) -> np.ndarray:
    """Distances (mm) between CT landmarks of one kind mapped into MR space and the MR landmarks."""
    _, mr_points, ct_points = paired_points(mr, ct, (kind,))
    return np.linalg.norm(transform.inverse().apply(ct_points) - mr_points, axis=1)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def true_ct_to_mr(subject: Subject) -> np.ndarray | None:
    """The subject's true global CT->MR RAS matrix (phantom), or None for real data."""
    truth = subject.true_transform
    return None if truth is None else np.asarray(truth.global_matrix, dtype=np.float64)


def landmark_error_mm(subject: Subject) -> float | None:
    """Mean distance (mm) of the subject's MR landmarks from the exact centres of its MR-space ground truth."""
    if subject.mr_seg is None or subject.mr_subreg is None:
        return None
    _, used, exact = paired_points(subject.mr_landmarks, landmarks_from_labels(subject.mr_seg, subject.mr_subreg),
                                   ("body", "spinous"))
    return _mean_or_none(np.linalg.norm(used - exact, axis=1))


def true_error_mm(subject: Subject, transform: RigidTransform, ct: Landmarks) -> float | None:
    """Mean distance (mm) between the estimated and the true MR position of each CT landmark (phantom)."""
    truth = subject.true_transform
    if truth is None:
        return None
    estimated_to_mr = transform.inverse()
    distances = [np.linalg.norm(estimated_to_mr.apply(point) - truth.apply(point, v if v in truth.vertebra_matrices else None))
                 for v, kinds in ct.items() for point in kinds.values()]
    return _mean_or_none(np.asarray(distances))


def registration_report_row(
    subject: Subject,
    mode: str | RegistrationMode,
    transform: RigidTransform | None = None,
    ct_points: Landmarks | None = None,
) -> dict:
    """One report row; registers the subject unless its ``transform`` is given."""
    mode = registration_mode(mode)
    ct = ct_landmarks(subject) if ct_points is None else ct_points
    if transform is None:
        transform = register(subject, mode, ct_points=ct)
    fitted = paired_points(subject.mr_landmarks, ct, MODE_KINDS[mode])[0]
    body = landmark_distances(transform, subject.mr_landmarks, ct, "body")
    spinous = landmark_distances(transform, subject.mr_landmarks, ct, "spinous")
    row = {
        "subject": subject.name,
        "mode": mode.value,
        "n_pairs_fitted": len(fitted),
        "tre_mm": _mean_or_none(np.concatenate([body, spinous])),
        "tre_body_mm": _mean_or_none(body),
        "tre_spinous_mm": _mean_or_none(spinous),
        "residual_rot_lr_deg": None,
        "residual_rot_ap_deg": None,
        "residual_rot_si_deg": None,
        "landmark_error_mm": landmark_error_mm(subject),
        "true_error_mm": true_error_mm(subject, transform, ct),
    }
    truth = true_ct_to_mr(subject)
    if truth is not None:
        residual = rotation_angles_deg(truth @ transform.matrix)
        row["residual_rot_lr_deg"], row["residual_rot_ap_deg"], row["residual_rot_si_deg"] = map(float, residual)
    return row


def registration_report(subjects: Iterable[Subject], mode: str | RegistrationMode) -> list[dict]:
    """One row per subject (columns :data:`REPORT_COLUMNS`; None where a value does not apply)."""
    return [registration_report_row(subject, mode) for subject in subjects]


def write_registration_report(rows: list[dict], path: str | Path) -> Path:
    """Write report rows as CSV (empty cell for None), atomically (temp file, then rename)."""
    extra = [key for row in rows for key in row if key not in REPORT_COLUMNS]
    columns = list(REPORT_COLUMNS) + list(dict.fromkeys(extra))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)

    return atomic_write(path, write)


def read_registration_report(path: str | Path) -> list[dict]:
    """The rows of a written report, numbers as floats and empty cells as None."""
    def value(cell: str):
        if cell == "":
            return None
        try:
            return float(cell)
        except ValueError:
            return cell

    with open(path, newline="") as handle:
        return [{key: value(cell) for key, cell in row.items()} for row in csv.DictReader(handle)]


def median_of(rows: list[dict], column: str) -> float | None:
    """The median of a report column over the subjects that have a value (None if none has)."""
    values = [row[column] for row in rows if row.get(column) is not None]
    return float(np.median(values)) if values else None


def median_tre_mm(rows: list[dict]) -> float | None:
    """The median landmark error over the subjects that have one (None if none has)."""
    return median_of(rows, "tre_mm")
