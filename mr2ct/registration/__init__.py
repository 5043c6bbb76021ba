"""Landmark-based rigid CT->MR registration (0/1/2 landmarks per vertebra), its report, and refinement."""

from mr2ct.registration.landmarks import Landmarks, landmarks_from_labels, paired_points
from mr2ct.registration.refine import landmarks_from_segmentation, refine_registration
from mr2ct.registration.report import (
    REPORT_COLUMNS,
    median_of,
    median_tre_mm,
    read_registration_report,
    registration_report,
    registration_report_row,
    write_registration_report,
)
from mr2ct.registration.rigid import (
    RegisteredCT,
    RegistrationError,
    RigidTransform,
    ct_landmarks,
    evaluation_reference,
    fit_rigid,
    register,
    registration_pairs,
    resample_onto_mr,
    resample_to_grid,
    rotation_angles_deg,
)

__all__ = [
    "Landmarks",
    "REPORT_COLUMNS",
    "RegisteredCT",
    "RegistrationError",
    "RigidTransform",
    "ct_landmarks",
    "evaluation_reference",
    "fit_rigid",
    "landmarks_from_labels",
    "landmarks_from_segmentation",
    "paired_points",
    "refine_registration",
    "register",
    "registration_pairs",
    "registration_report",
    "registration_report_row",
    "resample_onto_mr",
    "resample_to_grid",
    "rotation_angles_deg",
    "median_of",
    "median_tre_mm",
    "read_registration_report",
    "write_registration_report",
]
