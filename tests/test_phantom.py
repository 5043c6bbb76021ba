"""The spine phantom: anatomy labels, contrast, pose ground truth, landmarks and determinism."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mr2ct.core.config import PhantomConfig, PhantomPreset, Region
from mr2ct.core.io import lps_to_ras
from mr2ct.core.labels import (
    BODY,
    RIB_LABELS,
    SACRUM,
    SPINOUS_PROCESS,
    SUBREGIONS,
    VERTEBRA_IDS,
    region_ids,
    rib_label,
    vertebra_mask,
)
from mr2ct.metrics import segmentation_dice
from mr2ct.phantom import anatomy, contrast, generate_subject
from mr2ct.phantom.generate import (
    assign_splits,
    landmarks_from_labels,
    reorient,
    thin_slices,
    write_subject,
)
from mr2ct.phantom.pose import MAX_VERTEBRA_ROTATION_DEG, MAX_VERTEBRA_TRANSLATION_MM
from mr2ct.phantom.render import BONE_TISSUES, Grid, LabelMaps, Tissue, render

CONFIG = PhantomConfig(subjects=3, seed=5, landmark_noise_mm=0.0)
REQUIRED_SUBREGIONS = set(SUBREGIONS)  # body, arch, spinous, both transverse and all four articular processes


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(CONFIG, index) for index in range(CONFIG.subjects)]


@pytest.fixture(scope="module")
def fused_subject():
    """A lumbar subject with a block vertebra (two lumbar vertebrae fused)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anatomy, "FUSION_RATE", 1.0)
        return generate_subject(replace(CONFIG, subjects=1), 0)


@pytest.fixture(scope="module")
def thoracic_subject():
    return generate_subject(replace(CONFIG, subjects=1, region=Region.thoracic), 0)


@pytest.fixture(scope="module")
def cervical_subject():
    return generate_subject(replace(CONFIG, subjects=1, region=Region.cervical), 0)


@pytest.fixture(scope="module")
def pathology_subject():
    """A lumbar subject with every disc degenerated and every pathology switched on."""
    with pytest.MonkeyPatch.context() as patch:
        for rate in ("DEGENERATION_RATE", "VACUUM_RATE", "MODIC_RATE", "HAEMANGIOMA_RATE", "ANNULUS_CALCIFICATION_RATE"):
            patch.setattr(anatomy, rate, 1.0)
        return generate_subject(replace(CONFIG, subjects=1), 0)


@pytest.fixture(scope="module")
def t2w_subject():
    return generate_subject(PhantomConfig(subjects=1, seed=5, preset=PhantomPreset.t2w), 0)


def kabsch(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Least-squares rigid 4x4 mapping ``moving`` points onto ``fixed`` (Kabsch/Umeyama without scale)."""
    mc, fc = moving.mean(axis=0), fixed.mean(axis=0)
    u, _, vt = np.linalg.svd((moving - mc).T @ (fixed - fc))
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    rotation = vt.T @ correction @ u.T
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, fc - rotation @ mc
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def test_every_vertebra_has_its_id_and_subregions_in_ct_and_mr(subjects):
    for subject in subjects:
        for seg, subreg in ((subject.ct_seg, subject.ct_subreg), (subject.mr_seg, subject.mr_subreg)):
            assert set(np.unique(seg.array)) - {0} == set(region_ids("lumbar")) | {SACRUM}
            for vertebra in region_ids("lumbar"):
                present = set(np.unique(subreg.array[seg.array == vertebra]))
                assert REQUIRED_SUBREGIONS <= present, (subject.name, vertebra, present)
            # subregions label exactly the vertebra voxels (the sacrum has none)
            assert np.array_equal(vertebra_mask(seg.array), subreg.array > 0)


def test_neighbouring_vertebrae_never_touch_unless_fused(subjects, fused_subject):
    for subject in (*subjects, fused_subject):
        fused = [v for v, disc in subject.anatomy.discs.items() if disc.fused]
        for seg in (subject.ct_seg.array, subject.mr_seg.array):
            for vertebra in region_ids("lumbar")[:-1]:
                grown = ndimage.binary_dilation(seg == vertebra, np.ones((3, 3, 3), bool))
                assert np.any(grown & (seg == vertebra + 1)) == (vertebra in fused), (subject.name, vertebra)
    assert any(disc.fused for disc in fused_subject.anatomy.discs.values())


def test_ct_landmarks_are_ct_label_centres_of_mass(subjects):
    for subject in subjects:
        seg, subreg = subject.ct_seg.array, subject.ct_subreg.array
        for vertebra, kinds in subject.ct_landmarks.items():
            for kind, subregion in (("body", BODY), ("spinous", SPINOUS_PROCESS)):
                index = np.argwhere((seg == vertebra) & (subreg == subregion)).mean(axis=0)
                assert np.linalg.norm(subject.ct.index_to_ras(index) - kinds[kind]) < 0.5


def test_mr_landmarks_are_mr_label_centres_of_mass(subjects):
    """Against the MR-grid labels (in-plane) and a finer independent rendering around L3 (all axes)."""
    subject = subjects[0]
    on_mr_grid = landmarks_from_labels(subject.mr_seg.array, subject.mr_subreg.array, subject.mr_seg.affine)
    for vertebra, kinds in subject.mr_landmarks.items():
        for kind, point in kinds.items():
            assert np.all(np.abs(on_mr_grid[vertebra][kind] - point)[1:] < 0.5)
    l3 = subject.anatomy.vertebra(22)
    first = int(subject.mr.ras_to_index(l3.centre)[2]) - 40  # 80 mm around L3 cover all of it
    crop = subject.mr.affine.copy()
    crop[:3, 3] = subject.mr.index_to_ras([0, 0, first])
    fine_grid = thin_slices(Grid((subject.mr.shape[0], subject.mr.shape[1], 80), crop), replace(contrast.T1W, sub_slices=7))
    fine = render(subject.anatomy, fine_grid)
    on_fine_grid = landmarks_from_labels(np.where(fine.bone == 22, 22, 0), fine.subregion, fine_grid.affine)
    for kind, point in subject.mr_landmarks[22].items():
        assert np.linalg.norm(on_fine_grid[22][kind] - point) < 0.5


def test_ct_tissue_values_are_realistic(subjects):
    for subject in subjects:
        hu, tissue = subject.ct.array.astype(float), subject.ct_tissue.array
        assert np.median(hu[tissue == Tissue.CORTICAL]) > 700
        assert np.median(hu[tissue == Tissue.FAT]) < -50
        assert np.median(hu[tissue == Tissue.EPIDURAL_FAT]) < -50
        assert 150 <= np.median(hu[tissue == Tissue.CANCELLOUS]) <= 320
        assert -5 <= np.median(hu[tissue == Tissue.CSF]) <= 25
        assert 30 <= np.median(hu[tissue == Tissue.MUSCLE]) <= 70
        assert np.median(hu[tissue == Tissue.AIR]) < -950


def _quartiles(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    assert mask.sum() > 50
    return np.percentile(image[mask], [25, 75])


def test_t1w_posterior_marrow_overlaps_epidural_fat_and_cortex_is_dark(subjects):
    for subject in subjects:
        mr, tissue = subject.mr.array.astype(float), subject.mr_tissue.array
        marrow = _quartiles(mr, tissue == Tissue.POSTERIOR_MARROW)
        fat = _quartiles(mr, tissue == Tissue.EPIDURAL_FAT)
        assert marrow[0] <= fat[1] and fat[0] <= marrow[1], (marrow, fat)
        assert np.median(mr[tissue == Tissue.CORTICAL]) < 0.6 * np.median(mr[tissue == Tissue.EPIDURAL_FAT])


def test_t2w_fat_and_water_are_close_in_mr_but_far_apart_in_ct(t2w_subject):
    mr, tissue = t2w_subject.mr.array.astype(float), t2w_subject.mr_tissue.array
    fat, csf = np.median(mr[tissue == Tissue.FAT]), np.median(mr[tissue == Tissue.CSF])
    assert abs(fat - csf) < 0.15 * max(fat, csf), (fat, csf)
    oracle = t2w_subject.oracle_ct.array.astype(float)
    assert np.median(oracle[tissue == Tissue.CSF]) - np.median(oracle[tissue == Tissue.FAT]) > 80


def test_true_transform_maps_ct_landmarks_onto_mr_landmarks(subjects):
    for subject in subjects:
        truth = subject.true_transform
        for vertebra, kinds in subject.mr_landmarks.items():
            centre = subject.anatomy.vertebra(vertebra).centre
            for kind, mr_point in kinds.items():
                ct_point = subject.ct_landmarks[vertebra][kind]
                assert np.linalg.norm(truth.apply(ct_point, vertebra) - mr_point) < 0.6
                radius = np.linalg.norm(mr_point - centre)
                bound = MAX_VERTEBRA_TRANSLATION_MM + np.deg2rad(MAX_VERTEBRA_ROTATION_DEG) * radius + 0.6
                assert np.linalg.norm(truth.apply(ct_point) - mr_point) < bound
        # the CT really is moved: without the transform landmarks are far off
        offsets = [np.linalg.norm(subject.ct_landmarks[v]["body"] - subject.mr_landmarks[v]["body"])
                   for v in subject.mr_landmarks]
        assert max(offsets) > 2.0


def test_oracle_labels_are_the_ct_labels_moved_by_the_true_transform(subjects):
    subject = subjects[1]
    truth, seg = subject.true_transform, subject.mr_seg.array
    for vertebra in region_ids("lumbar"):
        mr_points = subject.mr_seg.index_to_ras(np.argwhere(seg == vertebra))
        ct_points = apply(np.linalg.inv(truth.matrix(vertebra)), mr_points)
        ct_index = np.rint(subject.ct_seg.ras_to_index(ct_points)).astype(int)
        labels_there = subject.ct_seg.array[tuple(ct_index.T)]
        assert np.mean(labels_there == vertebra) > 0.9


def test_nibabel_and_simpleitk_agree_on_landmark_positions(subjects, tmp_path):
    subject = subjects[0]
    write_subject(subject, tmp_path)
    for name, landmarks in (("ct", subject.ct_landmarks), ("mr", subject.mr_landmarks)):
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_seg.nii.gz")))  # (k, j, i)
        subreg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_subreg.nii.gz")))
        image = sitk.ReadImage(str(tmp_path / f"{name}_seg.nii.gz"))
        for vertebra in region_ids("lumbar"):
            index = np.argwhere((seg == vertebra) & (subreg == BODY)).mean(axis=0)[::-1]
            lps = image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in index))
            nib_com = getattr(subject, f"{name}_seg")
            nib_index = np.argwhere((nib_com.array == vertebra) & (getattr(subject, f"{name}_subreg").array == BODY))
            assert np.allclose(lps_to_ras(np.array(lps)), nib_com.index_to_ras(nib_index.mean(axis=0)), atol=1e-3)
            if name == "ct":
                assert np.allclose(lps_to_ras(np.array(lps)), landmarks[vertebra]["body"], atol=1e-3)


def test_two_landmark_fit_fixes_the_axial_rotation_one_landmark_fit_misses(subjects):
    axial_deg = [abs(np.rad2deg(np.arctan2(s.true_transform.global_matrix[1, 0], s.true_transform.global_matrix[0, 0])))
                 for s in subjects]
    subject = subjects[int(np.argmax(axial_deg))]
    assert max(axial_deg) > 4.0
    ids = sorted(subject.mr_landmarks)

    def points(landmarks, kinds):
        return np.array([landmarks[v][k] for v in ids for k in kinds])

    every_mr, every_ct = points(subject.mr_landmarks, ("body", "spinous")), points(subject.ct_landmarks, ("body", "spinous"))
    one = kabsch(points(subject.ct_landmarks, ("body",)), points(subject.mr_landmarks, ("body",)))
    two = kabsch(every_ct, every_mr)
    error_one = np.linalg.norm(apply(one, every_ct) - every_mr, axis=1).mean()
    error_two = np.linalg.norm(apply(two, every_ct) - every_mr, axis=1).mean()
    assert error_two < 2.0
    assert error_two < 0.5 * error_one, (error_one, error_two)


def test_same_seed_gives_identical_arrays(subjects):
    again = generate_subject(CONFIG, 0)
    for name in ("mr", "ct", "ct_seg", "ct_subreg", "mr_seg", "mr_subreg", "oracle_ct"):
        assert np.array_equal(getattr(again, name).array, getattr(subjects[0], name).array), name
        assert np.array_equal(getattr(again, name).affine, getattr(subjects[0], name).affine), name
    for key in again.true_transform.vertebra_matrices:
        assert np.array_equal(again.true_transform.matrix(key), subjects[0].true_transform.matrix(key))
    assert subjects[0].mr.shape != subjects[1].mr.shape or not np.array_equal(subjects[0].mr.array, subjects[1].mr.array)


def test_external_and_corrected_share_images_but_external_labels_exceed_the_bone():
    external = generate_subject(PhantomConfig(subjects=1, seed=2, preset=PhantomPreset.external), 0)
    corrected = generate_subject(PhantomConfig(subjects=1, seed=2, preset=PhantomPreset.external_corrected), 0)
    assert np.array_equal(external.mr.array, corrected.mr.array)
    assert np.array_equal(external.ct.array, corrected.ct.array)
    assert not np.allclose(external.mr.spacing, [contrast.T1W.slice_mm, contrast.T1W.inplane_mm, contrast.T1W.inplane_mm])
    bone = np.isin(corrected.mr_tissue.array, BONE_TISSUES)
    assert np.array_equal(corrected.mr_seg.array > 0, bone)
    assert (external.mr_seg.array > 0).sum() > 1.2 * (corrected.mr_seg.array > 0).sum()
    assert np.all(external.mr_seg.array[bone] == corrected.mr_seg.array[bone])


def test_landmark_noise_moves_only_mr_landmarks(subjects):
    exact = subjects[0]
    noisy = generate_subject(replace(CONFIG, landmark_noise_mm=2.0), 0)
    shifts = [np.linalg.norm(noisy.mr_landmarks[v][k] - exact.mr_landmarks[v][k]) for v in exact.mr_landmarks
              for k in ("body", "spinous")]
    assert 0.5 < np.mean(shifts) < 6.0
    assert np.array_equal(noisy.mr.array, exact.mr.array)
    for v in exact.ct_landmarks:
        assert np.array_equal(noisy.ct_landmarks[v]["body"], exact.ct_landmarks[v]["body"])


def test_thick_slices_average_thin_ones_and_background_noise_is_rician():
    protocol = replace(contrast.T1W, bias=0.0, noise=0.0, kspace_fraction=1.0)
    thin = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5).repeat(2, axis=0) * 10
    thin[1::3] += 30.0  # the sub-slices of one slice differ
    thick = contrast.acquire_mr(thin, protocol, np.random.default_rng(0))
    assert np.array_equal(thick, np.rint(thin.reshape(2, 3, 4, 5).mean(axis=1)).astype(np.int16))
    noisy = replace(contrast.T1W, bias=0.0)
    background = contrast.acquire_mr(np.zeros((30, 60, 60), np.float32), noisy, np.random.default_rng(0))
    sigma = noisy.noise * max(noisy.intensities.values())
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)


def test_splits_have_val_and_test_subjects_and_are_deterministic():
    for n in (3, 5, 12, 40):
        splits = assign_splits(n, 0.17, 0.17, seed=0)
        assert splits.count("val") >= 1 and splits.count("test") >= 1 and splits.count("train") >= 1
        assert splits == assign_splits(n, 0.17, 0.17, seed=0)
    assert assign_splits(12, 0.17, 0.17, seed=0).count("test") == 2
    assert assign_splits(1, 0.17, 0.17, seed=0) == ["train"]


def test_files_are_written_in_acquisition_orientations(subjects, tmp_path):
    write_subject(subjects[2], tmp_path)
    mr, ct = nib.load(tmp_path / "mr.nii.gz"), nib.load(tmp_path / "ct.nii.gz")
    assert nib.aff2axcodes(mr.affine) == ("L", "I", "P") and nib.aff2axcodes(ct.affine) == ("L", "P", "S")
    for image, volume in ((mr, subjects[2].mr), (ct, subjects[2].ct)):
        canonical = nib.as_closest_canonical(image)
        assert np.array_equal(np.asanyarray(canonical.dataobj), volume.array)
        assert np.allclose(canonical.affine, volume.affine)
    ct_ras = subjects[2].ct
    flipped = reorient(ct_ras, ("L", "P", "S"))  # voxel 0 is now the right-anterior-inferior corner
    corner = [ct_ras.shape[0] - 1, ct_ras.shape[1] - 1, 0]
    assert flipped.array[0, 0, 0] == ct_ras.array[tuple(corner)]
    assert np.allclose(flipped.index_to_ras([0, 0, 0]), ct_ras.index_to_ras(corner))


def test_command_line_writes_the_subject_layout_with_previews(tmp_path):
    out_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "mr2ct.phantom", f"out_dir={out_dir}", "subjects=1", "seed=3", "preset=t2w",
         "region=cervical", "preview=true", "progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out_dir / "manifest.csv").read_text().splitlines() == ["subject,split,contrast,region,preset",
                                                                    "sub-000,train,t2w,cervical,t2w"]
    expected = {"mr.nii.gz", "ct.nii.gz", "ct_seg.nii.gz", "ct_subreg.nii.gz", "mr_landmarks.json",
                "ct_landmarks.json", "mr_seg.nii.gz", "mr_subreg.nii.gz", "oracle_ct.nii.gz", "true_transform.json",
                "preview.png", "mr_seg_iso.nii.gz", "mr_subreg_iso.nii.gz"}  # iso: T2w thin slices are 1 mm
    assert {p.name for p in (out_dir / "sub-000").iterdir()} == expected
    assert (out_dir / "sub-000" / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    typo = subprocess.run([sys.executable, "-m", "mr2ct.phantom", f"out_dir={out_dir}", "subjets=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert typo.returncode != 0 and "subjets" in typo.stderr


def test_degenerated_nucleus_darkens_towards_the_annulus_in_t2w_only_partly_in_t1w():
    maps = LabelMaps(tissue=np.array([Tissue.NUCLEUS, Tissue.NUCLEUS, Tissue.ANNULUS, Tissue.CANCELLOUS], np.uint8),
                     bone=np.array([0, 0, 0, 7], np.uint8), subregion=np.array([0, 0, 0, BODY], np.uint8),
                     disc=np.array([3, 4, 3, 0], np.uint8), trabecular=np.zeros(4, np.float32),
                     marrow=np.zeros(4, np.float32))
    degeneration = np.zeros(256, np.float32)
    degeneration[4] = 1.0
    fractured = np.zeros(256, np.float32)
    fractured[7] = 1.0
    for protocol in (contrast.T1W, contrast.T2W):
        lut = contrast.tissue_lut(protocol.intensities)
        signal = contrast.mr_signal(maps, lut, degeneration, fractured, protocol)
        healthy, annulus = protocol.intensities[Tissue.NUCLEUS], protocol.intensities[Tissue.ANNULUS]
        weight = protocol.degeneration_darkening
        assert signal[0] == pytest.approx(healthy)
        assert signal[1] == pytest.approx((1 - weight) * healthy + weight * 0.8 * annulus)
        assert signal[3] == pytest.approx(protocol.intensities[Tissue.CANCELLOUS] * protocol.fracture_marrow)
    assert contrast.T2W.degeneration_darkening == 1.0 and contrast.T1W.degeneration_darkening < 0.5


# --- what makes the phantom as hard as real spines -----------------------------------------------------------


def _eroded(mask: np.ndarray, iterations: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=iterations)


def test_cancellous_bone_is_textured_in_ct_and_mr_marrow_follows_the_texture_only_partly(subjects):
    """CT: trabecular HU SD per vertebral body well above the noise, in the range clinical CT shows.
    MR: the marrow signal correlates with the CT texture only partly (bone displaces some marrow, but marrow
    varies on its own and holds fatty islands), so CT texture cannot be read off the MR voxel by voxel."""
    for subject in subjects:
        hu, tissue = subject.ct.array.astype(float), subject.ct_tissue.array
        noise = hu[_eroded(tissue == Tissue.AIR, 3)].std()
        for vertebra in region_ids("lumbar"):
            sd = hu[_eroded((tissue == Tissue.CANCELLOUS) & (subject.ct_seg.array == vertebra), 2)].std()
            assert 30.0 <= sd <= 120.0 and sd > 1.5 * noise, (subject.name, vertebra, sd, noise)
        marrow = _eroded(subject.mr_tissue.array == Tissue.CANCELLOUS, 1)
        r_images = np.corrcoef(subject.mr.array[marrow], subject.oracle_ct.array[marrow])[0, 1]
        assert abs(r_images) < 0.7, (subject.name, r_images)
    # noise-free values on the same thin-slice voxels around L3
    subject = subjects[0]
    crop = subject.mr.affine.copy()
    crop[:3, 3] = subject.mr.index_to_ras([0, 0, int(subject.mr.ras_to_index(subject.anatomy.vertebra(22).centre)[2]) - 30])
    maps = render(subject.anatomy, thin_slices(Grid((subject.mr.shape[0], subject.mr.shape[1], 60), crop), contrast.T1W))
    cancellous = maps.tissue == Tissue.CANCELLOUS
    rng = np.random.default_rng(0)
    no_disease = np.zeros(256, np.float32)
    ct = contrast.ct_values(maps, contrast.sample_ct(rng), no_disease)[cancellous]
    for protocol in (contrast.T1W, contrast.T2W):
        mr = contrast.mr_signal(maps, contrast.sample_mr_lut(rng, protocol), no_disease, no_disease, protocol)[cancellous]
        r = np.corrcoef(ct, mr)[0, 1]
        assert -0.7 < r < -0.15, (protocol.contrast, r)


def _local_points(subject, vertebra: int, subregion: int) -> np.ndarray:
    """Voxels of one subregion of a vertebra in the CT labels (1 mm), in the vertebra's local frame
    (x to the patient's right, y anterior, z cranial), through the true transform."""
    index = np.argwhere((subject.ct_seg.array == vertebra) & (subject.ct_subreg.array == subregion))
    in_mr = apply(subject.true_transform.matrix(vertebra), subject.ct.index_to_ras(index))
    return apply(np.linalg.inv(subject.anatomy.vertebra(vertebra).frame), in_mr)


def _spinous_slope_deg(subject, vertebra: int) -> float:
    """Angle of the spinous process's main axis below the local posterior direction (caudal slope > 0)."""
    points = _local_points(subject, vertebra, SPINOUS_PROCESS)[:, 1:]
    _, vectors = np.linalg.eigh(np.cov(points.T))
    axis = vectors[:, -1] if vectors[0, -1] < 0 else -vectors[:, -1]  # pointing backwards
    return float(np.rad2deg(np.arctan2(-axis[1], -axis[0])))


def _tip_split(subject, vertebra: int) -> tuple[float, float, float]:
    """Fractions of the last 5 mm of a spinous process near the midline (|x| < 1.5 mm), left and right of it."""
    points = _local_points(subject, vertebra, SPINOUS_PROCESS)
    tip = points[points[:, 1] < points[:, 1].min() + 5.0, 0]
    return float(np.mean(np.abs(tip) < 1.5)), float(np.mean(tip < -2.5)), float(np.mean(tip > 2.5))


def test_spinous_processes_are_shaped_by_level(subjects, thoracic_subject, cervical_subject):
    """Measured on the CT labels: mid-thoracic processes slope caudally, lumbar ones are horizontal;
    C2-C5 end in two tips (bifid), C7 in one."""
    for name in ("T4", "T5", "T6", "T7", "T8", "T9"):
        assert _spinous_slope_deg(thoracic_subject, VERTEBRA_IDS[name]) > 40.0, name
    for name in ("L2", "L3", "L4"):
        assert abs(_spinous_slope_deg(subjects[0], VERTEBRA_IDS[name])) < 15.0, name
    for name in ("C2", "C3", "C4", "C5"):
        midline, left, right = _tip_split(cervical_subject, VERTEBRA_IDS[name])
        assert midline < 0.15 and left > 0.3 and right > 0.3, (name, midline, left, right)
    midline, left, right = _tip_split(cervical_subject, VERTEBRA_IDS["C7"])
    assert midline > 0.4 and min(left, right) < 0.15, (midline, left, right)


def test_ribs_and_sacrum_have_their_own_labels_where_the_region_has_them_and_dice_leaves_them_out(
        subjects, thoracic_subject, cervical_subject):
    expected = ((thoracic_subject, {rib_label(v) for v in region_ids("thoracic")}), (subjects[0], {SACRUM}),
                (cervical_subject, set()))
    for subject, others in expected:
        for seg, subreg in ((subject.ct_seg.array, subject.ct_subreg.array), (subject.mr_seg.array, subject.mr_subreg.array)):
            assert set(np.unique(seg)) - {0} - set(region_ids(subject.region)) == others, subject.region
            assert not np.any(subreg[~vertebra_mask(seg)])  # no subregions outside the vertebrae
        if others:
            true, true_sub = subject.mr_seg.array, subject.mr_subreg.array
            vertebrae_only = np.where(vertebra_mask(true), true, 0)
            for pred, truth in ((vertebrae_only, true), (true, vertebrae_only)):
                score = segmentation_dice(pred, truth, true_sub, true_sub)
                assert score.volume == 1.0 and score.posterior_volume == 1.0
                assert set(score.per_vertebra.values()) == {1.0} and set(score.per_vertebra) == set(region_ids(subject.region))
    assert not set(RIB_LABELS) & set(np.unique(subjects[0].ct_seg.array))


def test_vacuum_discs_are_gas_in_ct_with_no_signal_of_their_own_in_mr(pathology_subject):
    subject = pathology_subject
    assert any(disc.vacuum_mm > 0 for disc in subject.anatomy.discs.values())
    gas_ct = subject.ct_tissue.array == Tissue.GAS
    assert gas_ct.sum() > 100 and np.median(subject.ct.array[gas_ct]) < -500
    gas = subject.mr_tissue.array == Tissue.GAS
    assert gas.sum() > 50 and np.median(subject.oracle_ct.array[gas]) < -500
    mr = subject.mr.array.astype(float)
    nucleus = ndimage.binary_dilation(gas, iterations=4) & (subject.mr_tissue.array == Tissue.NUCLEUS)
    gas_signal, disc_signal = np.median(mr[gas]), np.median(mr[nucleus])
    assert abs(gas_signal - disc_signal) < 0.1 * disc_signal, (gas_signal, disc_signal)
    noise = contrast.T1W.noise * max(contrast.T1W.intensities.values())
    assert gas_signal > 5 * noise  # no signal void either


def test_modic_changes_and_haemangiomas_are_marked_in_mr_and_subtle_in_ct(pathology_subject):
    subject = pathology_subject
    mr, oracle, tissue = subject.mr.array.astype(float), subject.oracle_ct.array.astype(float), subject.mr_tissue.array
    cancellous = tissue == Tissue.CANCELLOUS
    for lesion in (Tissue.MODIC_OEDEMA, Tissue.MODIC_FATTY, Tissue.HAEMANGIOMA):
        inside = _eroded(tissue == lesion, 1)
        assert inside.sum() > 50, lesion
        assert abs(np.median(mr[inside]) / np.median(mr[cancellous]) - 1.0) > 0.25, lesion
        assert abs(np.median(oracle[inside]) - np.median(oracle[cancellous])) < 0.75 * oracle[cancellous].std(), lesion


def test_ct_noise_is_spatially_correlated(subjects):
    for subject in subjects:
        hu, air = subject.ct.array.astype(float), _eroded(subject.ct_tissue.array == Tissue.AIR, 3)
        assert contrast.CT_NOISE_HU[0] * 0.8 < hu[air].std() < contrast.CT_NOISE_HU[1] * 1.2
        for axis in range(3):
            a, b = np.moveaxis(hu, axis, 0), np.moveaxis(air, axis, 0)
            both = b[:-1] & b[1:]
            assert np.corrcoef(a[:-1][both], a[1:][both])[0, 1] > 0.3, (subject.name, axis)


def test_mr_rings_next_to_sharp_edges_along_the_phase_direction_only():
    protocol = replace(contrast.T1W, bias=0.0, noise=0.0)
    step = np.zeros((3, 64, 64), np.float32)
    step[:, 20:44, :] = 1000.0  # edges across axis 1 (anterior-posterior, the phase direction)
    across = contrast.acquire_mr(step, protocol, np.random.default_rng(0))
    assert across.max() > 1040 and across[0, 10, 0] > 0  # overshoot inside, ripple outside
    along = contrast.acquire_mr(np.swapaxes(step, 1, 2).copy(), protocol, np.random.default_rng(0))
    assert along.max() <= 1001 and along[0, 0, 10] == 0
