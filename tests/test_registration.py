"""Landmark registration: landmarks, rigid fits, resampling, the report, refinement, evaluation reference.

Synthetic spines are ellipsoids per vertebra (body, arch, spinous process) rendered analytically on
voxel grids: the CT is the MR anatomy moved by a known rigid transform, so every expected answer is known
independently of the code under test.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from mr2ct.core.config import PhantomConfig
from mr2ct.core.io import Volume, ras_to_lps, to_sitk
from mr2ct.core.labels import ARCH, BODY, SPINOUS_PROCESS
from mr2ct.core.subjects import Subject, TrueTransform, load_subjects
from mr2ct.phantom import generate_dataset, generate_subject, pose
from mr2ct.registration import (
    REPORT_COLUMNS,
    RegistrationError,
    RigidTransform,
    evaluation_reference,
    fit_rigid,
    landmarks_from_labels,
    landmarks_from_segmentation,
    refine_registration,
    register,
    registration_pairs,
    registration_report,
    registration_report_row,
    resample_onto_mr,
    resample_to_grid,
    write_registration_report,
)

VERTEBRAE = (20, 21, 22, 23, 24)
SPACING_SI_MM = 35.0
# (subregion, offset from the vertebra centre in RAS mm, radii in mm); later parts overwrite earlier ones
PARTS = (
    (BODY, (0.0, 0.0, 0.0), (15.0, 12.0, 10.0)),
    (ARCH, (0.0, -22.0, 0.0), (10.0, 8.0, 5.0)),
    (SPINOUS_PROCESS, (0.0, -38.0, 0.0), (3.5, 10.0, 6.0)),
)


def rigid(euler_deg, translation) -> RigidTransform:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix()
    matrix[:3, 3] = translation
    return RigidTransform(matrix)


def vertebra_centres(vertebrae=VERTEBRAE, lordosis_mm: float = 0.0) -> dict[int, np.ndarray]:
    """Centres along S-I; ``lordosis_mm`` bows the middle forward (anterior) in the sagittal plane."""
    z = SPACING_SI_MM * np.arange(len(vertebrae))
    bow = lordosis_mm * (1 - ((z - z.mean()) / max(z.max() - z.mean(), 1.0)) ** 2)
    return {v: np.array([0.0, b, zz]) for v, b, zz in zip(vertebrae, bow, z)}


def analytic_landmarks(centres) -> dict[int, dict[str, np.ndarray]]:
    return {v: {"body": c.copy(), "spinous": c + np.array(PARTS[2][1])} for v, c in centres.items()}


def render(points_ras: np.ndarray, centres) -> tuple[np.ndarray, np.ndarray]:
    """Vertebra ids and subregion ids at MR-space points (..., 3)."""
    seg = np.zeros(points_ras.shape[:-1], dtype=np.int16)
    subreg = np.zeros(points_ras.shape[:-1], dtype=np.uint8)
    for vertebra, centre in centres.items():
        for subregion, offset, radii in PARTS:
            inside = (((points_ras - centre - offset) / radii) ** 2).sum(-1) <= 1.0
            seg[inside], subreg[inside] = vertebra, subregion
    return seg, subreg


def grid_points(shape, affine) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def covering_affine(centre_ras, shape, spacing, rotation=np.eye(3)) -> np.ndarray:
    """An affine whose grid of ``shape`` is centred on ``centre_ras``."""
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = centre_ras - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


def make_subject(name, mr_to_ct: RigidTransform, vertebrae=VERTEBRAE, lordosis_mm=0.0, with_truth=True):
    """A spine whose CT is the MR anatomy moved by ``mr_to_ct``; CT in HU (bone 700, soft tissue 40)."""
    centres = vertebra_centres(vertebrae, lordosis_mm)
    middle = np.mean(list(centres.values()), axis=0) + np.array([0.0, -15.0, 0.0])
    extent_si = SPACING_SI_MM * len(vertebrae) + 30
    ct_shape = (48, 84, int(extent_si / 1.25))
    ct_affine = covering_affine(mr_to_ct.apply(middle), ct_shape, (1.25, 1.25, 1.25))
    ct_seg, ct_subreg = render(mr_to_ct.inverse().apply(grid_points(ct_shape, ct_affine)), centres)
    mr_shape = (14, 80, int(extent_si))
    tilt = Rotation.from_euler("x", 5, degrees=True).as_matrix()  # an oblique MR grid
    mr_affine = covering_affine(middle, mr_shape, (3.0, 1.0, 1.0), tilt)
    mr_seg, mr_subreg = render(grid_points(mr_shape, mr_affine), centres)
    truth = TrueTransform(global_matrix=mr_to_ct.inverse().matrix) if with_truth else None
    mr = Volume(np.where(mr_seg > 0, 300.0, 100.0).astype(np.float32), mr_affine)
    return Subject(
        name=name,
        split="train",
        contrast="t1w",
        region="lumbar",
        folder=Path("/nonexistent") / name,
        mr_image=nib.Nifti1Image(mr.array, mr_affine),
        mr=mr,
        ct=Volume(np.where(ct_seg > 0, 700, 40).astype(np.int16), ct_affine),
        ct_seg=Volume(ct_seg, ct_affine),
        ct_subreg=Volume(ct_subreg, ct_affine),
        mr_landmarks=analytic_landmarks(centres),
        mr_seg=Volume(mr_seg, mr_affine),
        mr_subreg=Volume(mr_subreg, mr_affine),
        true_transform=truth,
    )


def rotation_error_deg(estimate: RigidTransform, truth: RigidTransform) -> float:
    residual = truth.inverse().matrix @ estimate.matrix
    return float(np.degrees(Rotation.from_matrix(residual[:3, :3]).magnitude()))


TRUE_MOTION = rigid((4.0, -3.0, 12.0), (8.0, -5.0, 12.0))


@pytest.fixture(scope="module")
def subject() -> Subject:
    return make_subject("spine-a", TRUE_MOTION, lordosis_mm=6.0)


# --- landmarks -------------------------------------------------------------------------------------------


def test_landmarks_from_labels_equal_hand_computed_centres_of_mass_in_ras_and_sitk_lps():
    rotation = Rotation.from_euler("zx", [30, -10], degrees=True).as_matrix() @ np.diag([-1.0, 1.0, -1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.3, 2.5])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    seg = np.zeros((6, 7, 5), dtype=np.int16)
    subreg = np.zeros_like(seg, dtype=np.uint8)
    body_voxels = [(1, 1, 1), (1, 2, 1), (2, 2, 3)]
    spinous_voxels = [(4, 5, 0), (5, 6, 4)]
    for voxel in body_voxels:
        seg[voxel], subreg[voxel] = 21, BODY
    for voxel in spinous_voxels:
        seg[voxel], subreg[voxel] = 21, SPINOUS_PROCESS
    seg[0, 0, 0], subreg[0, 0, 0] = 21, ARCH  # other subregions are ignored
    seg[3, 3, 2], subreg[3, 3, 2] = 22, BODY  # a vertebra with a body only
    seg_volume, subreg_volume = Volume(seg, affine), Volume(subreg, affine)

    landmarks = landmarks_from_labels(seg_volume, subreg_volume)

    assert set(landmarks) == {21, 22} and set(landmarks[22]) == {"body"}
    hand_body = np.mean(body_voxels, axis=0)  # (4/3, 5/3, 5/3)
    np.testing.assert_allclose(landmarks[21]["body"], affine[:3, :3] @ hand_body + affine[:3, 3], atol=1e-9)
    image = to_sitk(seg_volume)
    for kind, voxels in (("body", body_voxels), ("spinous", spinous_voxels)):
        sitk_lps = image.TransformContinuousIndexToPhysicalPoint(np.mean(voxels, axis=0).tolist())
        np.testing.assert_allclose(ras_to_lps(landmarks[21][kind]), sitk_lps, atol=1e-9)
    shape_stats = sitk.LabelShapeStatisticsImageFilter()
    shape_stats.Execute(to_sitk(Volume((seg * (subreg == BODY)).astype(np.uint8), affine)))
    np.testing.assert_allclose(ras_to_lps(landmarks[22]["body"]), shape_stats.GetCentroid(22), atol=1e-9)
    assert landmarks_from_labels(seg_volume, subreg_volume, kinds=("spinous",)).keys() == {21}


def test_landmarks_from_labels_rejects_mismatched_grids_and_fractional_labels():
    seg = Volume(np.ones((3, 3, 3), dtype=np.int16), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    with pytest.raises(ValueError, match="do not share a grid"):
        landmarks_from_labels(seg, Volume(np.full((3, 3, 3), BODY, np.uint8), shifted))
    with pytest.raises(ValueError, match="non-integer"):
        landmarks_from_labels(seg, Volume(np.full((3, 3, 3), 50.5), np.eye(4)))


def test_ct_landmarks_of_a_moved_spine_are_the_moved_analytic_centres(subject):
    landmarks = landmarks_from_labels(subject.ct_seg, subject.ct_subreg)
    assert set(landmarks) == set(VERTEBRAE)
    for vertebra, kinds in subject.mr_landmarks.items():
        for kind, point in kinds.items():
            assert np.linalg.norm(landmarks[vertebra][kind] - TRUE_MOTION.apply(point)) < 0.3


# --- rigid transforms and fits -----------------------------------------------------------------------------


def test_rigid_transform_apply_inverse_and_sitk_agree():
    transform = rigid((10.0, -20.0, 35.0), (5.0, 6.0, -7.0))
    points = np.random.default_rng(0).normal(0, 50, (20, 3))
    np.testing.assert_allclose(transform.inverse().apply(transform.apply(points)), points, atol=1e-9)
    sitk_transform = transform.to_sitk()
    via_sitk = np.array([sitk_transform.TransformPoint(p.tolist()) for p in ras_to_lps(points)])
    np.testing.assert_allclose(ras_to_lps(via_sitk), transform.apply(points), atol=1e-9)
    np.testing.assert_allclose(RigidTransform.from_sitk(sitk_transform).matrix, transform.matrix, atol=1e-12)
    np.testing.assert_allclose(transform.rotation_deg, [10.0, -20.0, 35.0], atol=1e-9)
    with pytest.raises(ValueError, match="rotation"):
        RigidTransform(np.diag([2.0, 1.0, 1.0, 1.0]))


def test_fit_rigid_recovers_random_transforms_exactly_from_point_sets():
    rng = np.random.default_rng(1)
    for _ in range(5):
        truth = rigid(rng.uniform(-25, 25, 3), rng.uniform(-30, 30, 3))
        mr_points = rng.normal(0, 40, (8, 3))
        estimate = fit_rigid(mr_points, truth.apply(mr_points))
        np.testing.assert_allclose(estimate.matrix, truth.matrix, atol=1e-8)
    with pytest.raises(ValueError, match="at least 3"):
        fit_rigid(mr_points[:2], mr_points[:2])


def test_two_point_registration_recovers_known_motion_from_label_volumes(subject):
    estimate = register(subject, "two_point")
    assert rotation_error_deg(estimate, TRUE_MOTION) < 0.5
    mr_points = np.array([p for kinds in subject.mr_landmarks.values() for p in kinds.values()])
    errors = np.linalg.norm(estimate.apply(mr_points) - TRUE_MOTION.apply(mr_points), axis=1)
    assert errors.max() < 0.5
    np.testing.assert_allclose(register(subject, "none").matrix, np.eye(4))


def test_one_point_leaves_the_axial_rotation_of_a_straight_spine():
    truth = rigid((2.0, -3.0, 15.0), (4.0, 2.0, -6.0))
    subject = make_subject("straight", truth, lordosis_mm=0.0)
    exact_ct = {v: {k: truth.apply(p) for k, p in kinds.items()} for v, kinds in subject.mr_landmarks.items()}

    one_point = register(subject, "one_point", ct_points=exact_ct)
    two_point = register(subject, "two_point", ct_points=exact_ct)

    residual_si = RigidTransform(truth.inverse().matrix @ one_point.matrix).rotation_deg[2]
    assert abs(abs(residual_si) - 15.0) < 1.0  # the axial rotation is left in place
    assert rotation_error_deg(two_point, truth) < 1e-6
    bodies = np.array([kinds["body"] for kinds in subject.mr_landmarks.values()])
    np.testing.assert_allclose(one_point.apply(bodies), truth.apply(bodies), atol=1e-6)  # bodies do align


def test_too_few_pairs_is_a_registration_error_naming_the_subject():
    subject = make_subject("two-vertebrae-07", TRUE_MOTION, vertebrae=(20, 21))
    with pytest.raises(RegistrationError, match="two-vertebrae-07.*at least 3.*found 2"):
        register(subject, "one_point")
    assert rotation_error_deg(register(subject, "two_point"), TRUE_MOTION) < 1.0  # 4 pairs suffice
    with pytest.raises(ValueError, match="valid: \\['none', 'one_point', 'two_point'\\]"):
        register(subject, "three_point")


# --- resampling --------------------------------------------------------------------------------------------


def test_known_translation_shifts_an_image_and_labels_by_exactly_that_many_voxels():
    affine = np.array([[-2.0, 0, 0, 50], [0, 1.5, 0, -20], [0, 0, -1.0, 10], [0, 0, 0, 1]])  # not RAS-ordered
    rng = np.random.default_rng(2)
    hu = Volume(rng.uniform(-900, 2000, (10, 12, 9)).astype(np.float32), affine)
    labels = Volume(rng.integers(0, 30, (10, 12, 9)).astype(np.int16), affine)
    shift = np.array([2, -1, 3])
    translation = np.eye(4)
    translation[:3, 3] = affine[:3, :3] @ shift  # MR point x reads the CT at x + t

    for volume, kind, fill in ((hu, "image", -1000.0), (labels, "labels", 0)):
        moved = resample_to_grid(volume, volume, RigidTransform(translation), kind)
        expected = np.full(volume.shape, fill, dtype=np.float64)
        expected[:-2, 1:, :-3] = volume.array[2:, :-1, 3:]
        np.testing.assert_allclose(moved.array, expected, atol=1e-2)
        np.testing.assert_array_equal(moved.affine, affine)
    assert moved.array.dtype == np.int16


def test_resampled_labels_keep_their_ids(subject):
    registered = resample_onto_mr(subject, register(subject, "two_point"))
    for moved, original in ((registered.seg, subject.ct_seg), (registered.subreg, subject.ct_subreg)):
        assert np.issubdtype(moved.array.dtype, np.integer)
        assert set(np.unique(moved.array)) == set(np.unique(original.array))
        assert moved.shape == subject.mr.shape
    float_labels = Volume(subject.ct_seg.array.astype(np.float64), subject.ct_seg.affine)
    moved = resample_to_grid(float_labels, subject.mr, rigid((0, 0, 20), (1, 2, 3)), "labels")
    assert moved.array.dtype == np.int32 and set(np.unique(moved.array)) <= set(VERTEBRAE) | {0}
    with pytest.raises(ValueError, match="'image' or 'labels'"):
        resample_to_grid(subject.ct, subject.mr, RigidTransform.identity(), "mask")


def test_two_point_registered_labels_overlay_the_mr_labels(subject):
    registered = resample_onto_mr(subject, register(subject, "two_point"))
    unregistered = resample_onto_mr(subject, register(subject, "none"))

    def dice(a, b):
        return 2 * np.sum((a > 0) & (b > 0)) / (np.sum(a > 0) + np.sum(b > 0))

    assert dice(registered.seg.array, subject.mr_seg.array) > 0.85
    assert dice(unregistered.seg.array, subject.mr_seg.array) < 0.5
    bone = registered.seg.array > 0
    assert np.median(registered.ct.array[bone]) == pytest.approx(700, abs=20)


# --- report ------------------------------------------------------------------------------------------------


def test_report_has_one_row_per_subject_with_tre_and_residual_rotation(subject, tmp_path):
    other = make_subject("spine-b", rigid((-3.0, 2.0, -9.0), (-6.0, 4.0, 3.0)), lordosis_mm=4.0, with_truth=False)
    rows = registration_report([subject, other], "two_point")
    assert [row["subject"] for row in rows] == ["spine-a", "spine-b"]
    assert all(row["tre_mm"] < 0.5 and row["n_pairs_fitted"] == 10 for row in rows)
    assert max(abs(rows[0][f"residual_rot_{axis}_deg"]) for axis in ("lr", "ap", "si")) < 0.5
    assert rows[1]["residual_rot_si_deg"] is None

    none_rows = registration_report([subject], "none")
    assert none_rows[0]["n_pairs_fitted"] == 0 and none_rows[0]["tre_mm"] > 10
    np.testing.assert_allclose(
        [none_rows[0][f"residual_rot_{axis}_deg"] for axis in ("lr", "ap", "si")],
        rigid((4.0, -3.0, 12.0), (0, 0, 0)).inverse().rotation_deg,
        atol=1e-9,
    )
    path = write_registration_report(rows + none_rows, tmp_path / "prepared" / "registration_report.csv")
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert tuple(read[0]) == REPORT_COLUMNS and len(read) == 3
    assert float(read[0]["tre_mm"]) == pytest.approx(rows[0]["tre_mm"]) and read[1]["residual_rot_si_deg"] == ""


def test_tre_counts_the_landmarks_a_mode_did_not_fit():
    truth = rigid((0.0, 0.0, 15.0), (0.0, 0.0, 0.0))
    subject = make_subject("straight", truth)
    exact_ct = {v: {k: truth.apply(p) for k, p in kinds.items()} for v, kinds in subject.mr_landmarks.items()}
    transform = register(subject, "one_point", ct_points=exact_ct)
    row = registration_report_row(subject, "one_point", transform=transform, ct_points=exact_ct)
    spinous_miss = 2 * 38.0 * np.sin(np.radians(15.0) / 2)  # chord of a 15 degree turn at 38 mm
    assert row["tre_body_mm"] < 1e-6 and row["n_pairs_fitted"] == 5
    assert row["tre_spinous_mm"] == pytest.approx(spinous_miss, rel=0.05)
    assert row["tre_mm"] == pytest.approx(spinous_miss / 2, rel=0.05)


# --- refinement and evaluation reference -----------------------------------------------------------------


def test_landmarks_from_segmentation_without_subregions_follow_the_documented_rule():
    affine = np.eye(4)  # A coordinate = index along axis 1
    seg = np.zeros((12, 50, 8), dtype=np.int16)
    seg[1:11, 30:50, 1:7] = 20  # body: front 20 of 50 AP voxels
    seg[4:8, 15:30, 2:6] = 20  # arch
    seg[6:9, 0:15, 2:6] = 20  # spinous process: back 15 voxels
    landmarks = landmarks_from_segmentation(Volume(seg, affine))
    # depth = (49 - a) / 49: body <= 0.4 -> a >= 29.4; spinous >= 0.7 -> a <= 14.7
    np.testing.assert_allclose(landmarks[20]["body"], [5.5, 39.5, 3.5])
    np.testing.assert_allclose(landmarks[20]["spinous"], [7.0, 7.0, 3.5])


def test_refinement_from_an_mr_space_segmentation_recovers_the_motion(subject):
    with_subregions = landmarks_from_segmentation(subject.mr_seg, subject.mr_subreg)
    for vertebra, kinds in subject.mr_landmarks.items():
        for kind, point in kinds.items():
            assert np.linalg.norm(with_subregions[vertebra][kind] - point) < 0.5
    refined = refine_registration(subject, "two_point", subject.mr_seg, subject.mr_subreg)
    assert rotation_error_deg(refined, TRUE_MOTION) < 0.5
    estimated = refine_registration(subject, "two_point", subject.mr_seg)
    assert rotation_error_deg(estimated, TRUE_MOTION) < 1.5


def test_evaluation_reference_is_the_oracle_for_the_phantom_and_two_point_otherwise(subject):
    oracle = subject.ct.with_array(subject.ct.array)  # any Volume stands in for the oracle here
    phantom_like = replace(subject, oracle_ct=oracle)
    reference = evaluation_reference(phantom_like)
    assert reference.ct is oracle and reference.seg is subject.mr_seg and reference.subreg is subject.mr_subreg

    real_like = replace(subject, mr_subreg=None)
    reference = evaluation_reference(real_like)
    expected = resample_onto_mr(subject, register(subject, "two_point"))
    np.testing.assert_array_equal(reference.ct.array, expected.ct.array)
    assert reference.seg is subject.mr_seg
    np.testing.assert_array_equal(reference.subreg.array, expected.subreg.array)


# --- on the phantom ----------------------------------------------------------------------------------------


def kabsch(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Independent least-squares rigid fit (SVD), fixed -> moving, as a 4x4 matrix."""
    fixed_centre, moving_centre = fixed.mean(axis=0), moving.mean(axis=0)
    u, _, vt = np.linalg.svd((moving - moving_centre).T @ (fixed - fixed_centre))
    rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, moving_centre - rotation @ fixed_centre
    return matrix


@pytest.fixture(scope="module")
def phantom_subject():
    return generate_subject(PhantomConfig(subjects=1, landmark_noise_mm=0.0), 0)


@pytest.fixture(scope="module")
def rigid_phantom_subject():
    """A phantom subject whose vertebrae do not move against each other: one rigid transform is exact."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pose, "MAX_VERTEBRA_ROTATION_DEG", 0.0)
        patch.setattr(pose, "MAX_VERTEBRA_TRANSLATION_MM", 0.0)
        return generate_subject(PhantomConfig(subjects=1, seed=3, landmark_noise_mm=0.0), 0)


def test_two_point_recovers_the_true_transform_of_a_rigid_phantom(rigid_phantom_subject):
    subject = rigid_phantom_subject
    for matrix in subject.true_transform.vertebra_matrices.values():
        np.testing.assert_allclose(matrix, subject.true_transform.global_matrix, atol=1e-12)
    truth = RigidTransform(subject.true_transform.global_matrix).inverse()  # MR -> CT
    estimate = register(subject, "two_point")
    assert rotation_error_deg(estimate, truth) < 0.5
    mr_points = np.array([p for kinds in subject.mr_landmarks.values() for p in kinds.values()])
    assert np.linalg.norm(estimate.apply(mr_points) - truth.apply(mr_points), axis=1).max() < 0.5
    row = registration_report_row(subject, "two_point", transform=estimate)
    assert row["tre_mm"] < 0.5 and max(abs(row[f"residual_rot_{a}_deg"]) for a in ("lr", "ap", "si")) < 0.5


def test_phantom_registration_is_the_least_squares_fit_and_orders_the_modes(phantom_subject):
    subject = phantom_subject
    keys, mr_points, ct_points = registration_pairs(subject, "two_point")
    assert len(keys) == 2 * len(subject.mr_landmarks)
    np.testing.assert_allclose(register(subject, "two_point").matrix, kabsch(mr_points, ct_points), atol=1e-6)
    rows = {mode: registration_report_row(subject, mode) for mode in ("none", "one_point", "two_point")}
    assert rows["two_point"]["tre_mm"] < rows["one_point"]["tre_mm"] < rows["none"]["tre_mm"]
    assert max(abs(rows["two_point"][f"residual_rot_{a}_deg"]) for a in ("lr", "ap", "si")) < 1.5


@pytest.mark.slow
def test_median_landmark_error_orders_the_modes_on_a_12_subject_lumbar_phantom(tmp_path):
    subjects = load_subjects(generate_dataset(PhantomConfig(subjects=12), tmp_path / "phantom", progress=False))
    medians = {
        mode: float(np.median([row["tre_mm"] for row in registration_report(subjects, mode)]))
        for mode in ("none", "one_point", "two_point")
    }
    print("median tre_mm:", medians)
    assert medians["two_point"] < medians["one_point"] < medians["none"]


def test_default_landmark_noise_leaves_one_landmark_the_axial_rotation(tmp_path):
    """With realistic selection noise (the default), body centres alone leave a rotation about the
    cranio-caudal axis that the spinous processes remove: the paper's case for two landmarks."""
    assert PhantomConfig().landmark_noise_mm == pytest.approx(1.5)
    subjects = load_subjects(generate_dataset(PhantomConfig(subjects=6), tmp_path / "phantom", progress=False))
    rotation = {
        mode: float(np.median([abs(row["residual_rot_si_deg"]) for row in registration_report(subjects, mode)]))
        for mode in ("one_point", "two_point")
    }
    assert rotation["one_point"] > 2.5 * rotation["two_point"] and rotation["one_point"] > 2.0
