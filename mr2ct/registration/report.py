"""Registration report: landmark error after registration and, for the phantom, the residual rotation.

The landmark error (``tre_mm``) is the mean distance between the CT landmarks mapped into MR space and
the MR landmarks, over every body and spinous-process landmark present in both, including those the mode
did not fit: one_point is judged on the spinous processes it ignored. The residual rotation compares the
estimated transform with the phantom's true global CT->MR transform: the rotation of
(true CT->MR) o (estimated MR->CT), which is the identity when the registration is exact.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mr2ct.core.config import RegistrationMode
from mr2ct.core.io import atomic_write
from mr2ct.core.subjects import Subject
from mr2ct.registration.landmarks import Landmarks, paired_points
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


def median_tre_mm(rows: list[dict]) -> float | None:
    """The median landmark error over the subjects that have one (None if none has)."""
    values = [row["tre_mm"] for row in rows if row.get("tre_mm") is not None]
    return float(np.median(values)) if values else None
