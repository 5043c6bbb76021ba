"""The CT's pose relative to the MR: a random rigid repositioning plus small motion of each vertebra.

Convention: transforms map CT RAS mm -> MR RAS mm (the ground truth a registration should recover).
A point q on vertebra v in the MR sits in the CT at ``inv(G) @ m_v @ q``, where ``G`` is the global
CT->MR transform and ``m_v`` the vertebra's motion about its own centre; hence the vertebra's CT->MR
transform is ``inv(m_v) @ G``. Fused vertebrae move as one block (the upper one's motion); ribs move
with their vertebra and the sacrum with the patient (render.py).
"""

from __future__ import annotations

import numpy as np

from mr2ct.core.subjects import TrueTransform
from mr2ct.phantom.anatomy import Anatomy

MAX_ROTATION_DEG = 10.0
MAX_TRANSLATION_MM = 20.0
MAX_VERTEBRA_ROTATION_DEG = 2.0
MAX_VERTEBRA_TRANSLATION_MM = 1.0


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' rotation about a unit ``axis``."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1 - np.cos(angle_rad)) * cross @ cross


def rigid_about(rotation: np.ndarray, centre: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 of p -> R (p - c) + c + t."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + translation
    return matrix


def euler_rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation about x (left-right), then y (antero-posterior), then z (cranio-caudal)."""
    rx, ry, rz = (rotation_matrix(axis, np.deg2rad(a)) for axis, a in zip(np.eye(3), angles_deg))
    return rz @ ry @ rx


def sample_true_transform(rng: np.random.Generator, anatomy: Anatomy) -> TrueTransform:
    """Draw the global repositioning (about the spine's centre) and each vertebra's motion."""
    centre = np.mean([v.centre for v in anatomy.vertebrae], axis=0)
    angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
    mr_to_ct = rigid_about(euler_rotation(angles), centre, rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, 3))
    global_ct_to_mr = np.linalg.inv(mr_to_ct)
    per_vertebra = {}
    motion = np.eye(4)
    for vertebra in anatomy.vertebrae:
        axis = rng.normal(size=3)
        angle = np.deg2rad(rng.uniform(-MAX_VERTEBRA_ROTATION_DEG, MAX_VERTEBRA_ROTATION_DEG))
        direction = rng.normal(size=3)
        shift = direction / np.linalg.norm(direction) * rng.uniform(0.0, MAX_VERTEBRA_TRANSLATION_MM)
        if not vertebra.shape.fused[0]:
            motion = rigid_about(rotation_matrix(axis, angle), vertebra.centre, shift)
        per_vertebra[vertebra.vertebra_id] = np.linalg.inv(motion) @ global_ct_to_mr
    return TrueTransform(global_ct_to_mr, per_vertebra)

