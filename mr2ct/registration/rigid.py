"""Rigid CT->MR landmark registration (0, 1 or 2 landmarks per vertebra) and resampling onto MR grids.

As in the authors' toolbox, SimpleITK's ``LandmarkBasedTransformInitializer`` fits a
``VersorRigid3DTransform`` with the MR landmarks as *fixed* and the CT landmarks as *moving* points, so
the fitted transform maps MR-space points to CT-space points: exactly what resampling the CT onto the MR
grid needs (for every MR voxel, where to read the CT). SimpleITK works in LPS; this module converts at
its boundary so every matrix and point here is RAS.

Modes: ``none`` keeps the scanner coordinates (identity), ``one_point`` fits the vertebral-body centres
(nearly collinear along the spine, so only the spine's curvature and the landmarks' scatter constrain the
rotation about the cranio-caudal axis: that is the paper's ablation), ``two_point`` adds the
spinous-process centres, which pin that rotation down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from mr2ct.core.config import RegistrationMode
from mr2ct.core.io import RAS_TO_LPS, Volume, from_sitk, ras_to_lps, to_sitk
from mr2ct.core.subjects import Subject
from mr2ct.core.values import AIR_HU
from mr2ct.registration.landmarks import (
    Landmarks,
    integer_labels,
    landmarks_from_labels,
    paired_points,
)

MODE_KINDS: dict[RegistrationMode, tuple[str, ...]] = {
    RegistrationMode.none: (),
    RegistrationMode.one_point: ("body",),
    RegistrationMode.two_point: ("body", "spinous"),
}
MIN_PAIRS = 3
RIGID_TOLERANCE = 1e-6
COLLINEAR_TOLERANCE = 1e-9


class RegistrationError(ValueError):
    """A subject cannot be registered (e.g. too few landmark pairs); the message names the subject."""


def registration_mode(mode: str | RegistrationMode) -> RegistrationMode:
    """Parse a mode name, failing with the valid choices listed."""
    try:
        return RegistrationMode(mode)
    except ValueError:
        raise ValueError(
            f"unknown registration mode {mode!r}; valid: {[m.value for m in RegistrationMode]}"
        ) from None


def rotation_angles_deg(matrix: np.ndarray) -> np.ndarray:
    """Rotation about the L-R, A-P and S-I axes (degrees) of a 3x3 or 4x4 rigid matrix in RAS.

    Extrinsic x-y-z Euler angles (R = Rz @ Ry @ Rx); for small rotations they are the rotation vector's
    components, so each is "the rotation about that axis".
    """
    return Rotation.from_matrix(np.asarray(matrix)[:3, :3]).as_euler("xyz", degrees=True)


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rigid map of MR-space RAS points to CT-space RAS points (SimpleITK's fixed -> moving)."""

    matrix: np.ndarray

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        rotation = matrix[:3, :3] if matrix.shape == (4, 4) else None
        if (
            rotation is None
            or not np.allclose(matrix[3], [0, 0, 0, 1])
            or not np.allclose(rotation @ rotation.T, np.eye(3), atol=RIGID_TOLERANCE)
            or np.linalg.det(rotation) < 0
        ):
            raise ValueError(f"RigidTransform needs a 4x4 rotation + translation matrix, got\n{matrix}")
        object.__setattr__(self, "matrix", matrix)

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(4))

    @property
    def rotation_deg(self) -> np.ndarray:
        """Rotation about the L-R, A-P and S-I axes in degrees (see :func:`rotation_angles_deg`)."""
        return rotation_angles_deg(self.matrix)

    def apply(self, points_mr_ras: np.ndarray) -> np.ndarray:
        """Map MR-space RAS points (..., 3) to CT-space RAS points."""
        points = np.asarray(points_mr_ras, dtype=np.float64)
        return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def inverse(self) -> "RigidTransform":
        """The CT -> MR map, as a RigidTransform (its .apply maps CT points to MR points)."""
        rotation = self.matrix[:3, :3]
        inverse = np.eye(4)
        inverse[:3, :3] = rotation.T
        inverse[:3, 3] = -rotation.T @ self.matrix[:3, 3]
        return RigidTransform(inverse)

    def to_sitk(self) -> sitk.VersorRigid3DTransform:
        """The same map in SimpleITK's LPS physical space (fixed = MR, moving = CT), for sitk.Resample."""
        matrix_lps = RAS_TO_LPS @ self.matrix @ RAS_TO_LPS
        transform = sitk.VersorRigid3DTransform()
        transform.SetMatrix(matrix_lps[:3, :3].ravel().tolist(), RIGID_TOLERANCE)
        transform.SetTranslation(matrix_lps[:3, 3].tolist())
        return transform

    @classmethod
    def from_sitk(cls, transform: sitk.VersorRigid3DTransform | sitk.Euler3DTransform) -> "RigidTransform":
        """A SimpleITK rigid 3D transform (LPS; x -> R (x - c) + c + t) as a RAS matrix."""
        rotation = np.array(transform.GetMatrix()).reshape(3, 3)
        centre = np.array(transform.GetCenter())
        matrix_lps = np.eye(4)
        matrix_lps[:3, :3] = rotation
        matrix_lps[:3, 3] = np.array(transform.GetTranslation()) + centre - rotation @ centre
        return cls(RAS_TO_LPS @ matrix_lps @ RAS_TO_LPS)


def fit_rigid(fixed_points_ras: np.ndarray, moving_points_ras: np.ndarray) -> RigidTransform:
    """Least-squares rigid map of fixed (MR) points onto moving (CT) points with SimpleITK.

    Uses ``LandmarkBasedTransformInitializer(VersorRigid3DTransform(), fixed, moving)`` on LPS points,
    like the authors' code. Needs at least 3 pairs. Nearly collinear points (one_point) go to SimpleITK
    as they are: their small off-line scatter decides the rotation about the line. Exactly collinear
    points leave that rotation undetermined, and SimpleITK then returns an arbitrary one (even a 180
    degree flip); there the twist-free solution is used instead (:func:`fit_along_line`).
    """
    fixed = np.asarray(fixed_points_ras, dtype=np.float64)
    moving = np.asarray(moving_points_ras, dtype=np.float64)
    if fixed.ndim != 2 or fixed.shape[1] != 3 or fixed.shape != moving.shape:
        raise ValueError(f"fit_rigid needs two (N, 3) point arrays of equal shape, got {fixed.shape}, {moving.shape}")
    if len(fixed) < MIN_PAIRS:
        raise ValueError(f"fit_rigid needs at least {MIN_PAIRS} point pairs, got {len(fixed)}")
    if not (np.all(np.isfinite(fixed)) and np.all(np.isfinite(moving))):
        raise ValueError("fit_rigid: landmark coordinates must be finite")
    spread = np.linalg.svd(fixed - fixed.mean(axis=0), compute_uv=False)
    if spread[0] == 0:
        raise ValueError("fit_rigid: all fixed points coincide; no rotation can be fitted")
    if spread[1] <= COLLINEAR_TOLERANCE * spread[0]:
        return fit_along_line(fixed, moving)
    initial = sitk.LandmarkBasedTransformInitializer(
        sitk.VersorRigid3DTransform(),
        ras_to_lps(fixed).ravel().tolist(),
        ras_to_lps(moving).ravel().tolist(),
    )
    return RigidTransform.from_sitk(sitk.VersorRigid3DTransform(initial))


def fit_along_line(fixed: np.ndarray, moving: np.ndarray) -> RigidTransform:
    """Collinear pairs: centroid onto centroid and the fixed line onto the moving line by the shortest
    rotation, adding no twist about the line (nothing measured constrains it)."""
    fixed_centre, moving_centre = fixed.mean(axis=0), moving.mean(axis=0)
    fixed_direction = np.linalg.svd(fixed - fixed_centre)[2][0]
    moving_direction = np.linalg.svd(moving - moving_centre)[2][0]
    if ((fixed - fixed_centre) @ fixed_direction) @ ((moving - moving_centre) @ moving_direction) < 0:
        moving_direction = -moving_direction
    rotation = Rotation.align_vectors(moving_direction[None], fixed_direction[None])[0].as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = moving_centre - rotation @ fixed_centre
    return RigidTransform(matrix)


def ct_landmarks(subject: Subject) -> Landmarks:
    """The CT landmarks the registration uses: centres of mass of the subject's CT subregion labels."""
    return landmarks_from_labels(subject.ct_seg, subject.ct_subreg)


def registration_pairs(
    subject: Subject,
    mode: str | RegistrationMode,
    mr_landmarks: Landmarks | None = None,
    ct_points: Landmarks | None = None,
) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray]:
    """The (MR, CT) landmark pairs a mode fits: keys, MR points (N,3), CT points (N,3), RAS mm."""
    mr = subject.mr_landmarks if mr_landmarks is None else mr_landmarks
    ct = ct_landmarks(subject) if ct_points is None else ct_points
    return paired_points(mr, ct, MODE_KINDS[registration_mode(mode)])


def register(
    subject: Subject,
    mode: str | RegistrationMode,
    mr_landmarks: Landmarks | None = None,
    ct_points: Landmarks | None = None,
) -> RigidTransform:
    """The MR -> CT rigid transform of one subject for ``mode`` (none | one_point | two_point).

    ``mr_landmarks`` overrides the subject's MR landmarks (iterative refinement, paper Fig. 1);
    ``ct_points`` passes CT landmarks already computed with :func:`ct_landmarks`.
    """
    mode = registration_mode(mode)
    if mode is RegistrationMode.none:
        return RigidTransform.identity()
    keys, mr_points, ct_pts = registration_pairs(subject, mode, mr_landmarks, ct_points)
    if len(keys) < MIN_PAIRS:
        raise RegistrationError(
            f"subject {subject.name}: {mode.value} registration needs at least {MIN_PAIRS} landmark pairs "
            f"shared by MR and CT ({'/'.join(MODE_KINDS[mode])}), found {len(keys)}: {keys}"
        )
    return fit_rigid(mr_points, ct_pts)


def resample_to_grid(
    volume: Volume,
    reference: Volume,
    transform: RigidTransform,
    kind: str = "image",
    default: float | None = None,
) -> Volume:
    """Resample a CT-space volume onto ``reference``'s grid (only its shape and affine are used).

    ``transform`` maps reference-space (MR) points to the volume's (CT) space. ``kind="image"``: cubic
    B-spline, float32, outside -> ``default`` (-1000 HU unless given). ``kind="labels"``: nearest
    neighbour, ids kept exactly in an integer dtype (the input's; int32 for integral floats), outside ->
    ``default`` (0 unless given).
    """
    if kind == "image":
        source = np.asarray(volume.array, dtype=np.float32)
        interpolator, fill = sitk.sitkBSpline, AIR_HU if default is None else default
    elif kind == "labels":
        source = integer_labels(np.asarray(volume.array), "resample_to_grid")
        interpolator, fill = sitk.sitkNearestNeighbor, 0 if default is None else default
    else:
        raise ValueError(f"resample_to_grid: kind must be 'image' or 'labels', got {kind!r}")
    image = to_sitk(Volume(source, volume.affine))
    grid = to_sitk(Volume(np.zeros(reference.shape, dtype=np.uint8), reference.affine))
    resampled = sitk.Resample(image, grid, transform.to_sitk(), interpolator, float(fill), image.GetPixelID())
    return Volume(from_sitk(resampled).array, np.array(reference.affine, dtype=np.float64))


@dataclass(frozen=True, eq=False)
class RegisteredCT:
    """CT intensities (HU) and its labels on an MR grid."""

    ct: Volume
    seg: Volume
    subreg: Volume


def resample_onto_mr(subject: Subject, transform: RigidTransform) -> RegisteredCT:
    """The subject's CT, vertebra labels and subregions resampled onto its MR grid through ``transform``."""
    return RegisteredCT(
        ct=resample_to_grid(subject.ct, subject.mr, transform, "image"),
        seg=resample_to_grid(subject.ct_seg, subject.mr, transform, "labels"),
        subreg=resample_to_grid(subject.ct_subreg, subject.mr, transform, "labels"),
    )


def evaluation_reference(subject: Subject) -> RegisteredCT:
    """The evaluation ground truth in MR space, independent of the training registration mode.

    Phantom (``oracle_ct`` present): the oracle CT with the MR-space labels. Real data: the two_point
    registered CT; labels are the MR-space ground truth (``mr_seg`` / ``mr_subreg``) where present, each
    otherwise the two_point registered CT label volume.
    """
    if subject.oracle_ct is not None and subject.mr_seg is not None and subject.mr_subreg is not None:
        return RegisteredCT(subject.oracle_ct, subject.mr_seg, subject.mr_subreg)
    registered = resample_onto_mr(subject, register(subject, RegistrationMode.two_point))
    return RegisteredCT(
        ct=subject.oracle_ct if subject.oracle_ct is not None else registered.ct,
        seg=subject.mr_seg if subject.mr_seg is not None else registered.seg,
        subreg=subject.mr_subreg if subject.mr_subreg is not None else registered.subreg,
    )
