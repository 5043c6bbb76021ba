"""CT segmenters (mr2ct.segment): grid handling, vertebra numbering, the command segmenter with a stand-in
program, and a tiny phantom_unet training run that is cached and reloaded with weights_only."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from omegaconf import OmegaConf

from mr2ct.core.cache import find_entry
from mr2ct.core.cli import CONF_DIR
from mr2ct.core.io import Volume
from mr2ct.core.labels import ARCH, BODY, SACRUM, SPINOUS_PROCESS, VERTEBRA_IDS
from mr2ct.segment import (
    TOTALSEGMENTATOR_V2_TO_VERSE,
    PhantomUNetSegmenter,
    Segmentation,
    SegmenterCommandError,
    SegmenterConfig,
    build_segmenter,
    phantom_unet,
)
from mr2ct.segment.base import from_canonical, to_canonical
from mr2ct.segment.numbering import number_vertebrae, seed_numbers
from mr2ct.segment.phantom_unet import (
    augment,
    context_planes,
    gaussian_blur,
    predict_classes,
    subregion_classes,
)

CONF = CONF_DIR / "segmenter"
L5, L4, L3 = VERTEBRA_IDS["L5"], VERTEBRA_IDS["L4"], VERTEBRA_IDS["L3"]


def lps_volume(array_ras: np.ndarray, spacing=(3.0, 1.0, 1.0)) -> Volume:
    """The same physical image stored in LPS voxel order (axes 0 and 1 reversed), as SimpleITK/DICOM keep it."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [(array_ras.shape[0] - 1) * spacing[0], (array_ras.shape[1] - 1) * spacing[1], -10.0]
    return Volume(np.ascontiguousarray(array_ras[::-1, ::-1]), affine)


# --------------------------------------------------------------------------------------------- grids
def test_canonical_round_trip_restores_voxel_order_and_grid():
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    volume = lps_volume(array)
    canonical, back = to_canonical(volume)
    assert np.array_equal(canonical.array, array)  # LPS storage of a RAS array, reversed back
    assert np.all(np.diag(canonical.affine)[:3] > 0)
    assert np.allclose(canonical.index_to_ras([0, 0, 0]), volume.index_to_ras([3, 4, 0]))
    restored = from_canonical(canonical.array, back, volume)
    assert np.array_equal(restored.array, volume.array) and np.array_equal(restored.affine, volume.affine)


@pytest.mark.parametrize("spacing, context, expected_offset", [(3.0, 3.0, 1.0), (1.0, 3.0, 3.0), (2.0, 3.0, 1.5)])
def test_context_planes_sample_the_planes_context_mm_aside(spacing, context, expected_offset):
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 2, 3)).copy()
    planes = context_planes(ramp, spacing, context)
    index = np.arange(8, dtype=np.float32)
    for channel, sign in enumerate((-1, 0, 1)):
        assert np.allclose(planes[:, channel, 0, 0], np.clip(index + sign * expected_offset, 0, 7))
    assert context_planes(ramp, spacing, 0.0).shape == (8, 1, 2, 3)


def test_gaussian_blur_matches_scipy():
    image = np.random.default_rng(1).normal(size=(2, 20, 17)).astype(np.float32)
    ours = gaussian_blur(torch.from_numpy(image)[None], 1.3)[0].numpy()
    reference = np.stack([ndi.gaussian_filter(channel, 1.3, mode="nearest", truncate=3.0) for channel in image])
    assert np.allclose(ours, reference, atol=1e-4)


def test_augment_without_randomness_is_identity():
    cfg = SegmenterConfig(hu_scale=0, hu_offset=0, noise_hu=0, blur_px=0, rotate_deg=0, zoom=0)
    rng = np.random.default_rng(0)
    hu = torch.from_numpy(rng.normal(0, 300, size=(3, 3, 16, 16)).astype(np.float32))
    classes = torch.from_numpy(rng.integers(0, 4, size=(3, 16, 16)))
    hu_out, classes_out = augment(hu, classes, cfg, rng)
    assert torch.allclose(hu_out, hu, atol=1e-2) and torch.equal(classes_out, classes)


def test_subregion_classes():
    seg = np.array([0, 20, 20, 20, 21, 0])
    subreg = np.array([50, BODY, SPINOUS_PROCESS, ARCH, 45, 0])
    assert subregion_classes(seg, subreg, spinous_class=True).tolist() == [0, 1, 3, 2, 2, 0]
    assert subregion_classes(seg, subreg, spinous_class=False).tolist() == [0, 1, 2, 2, 2, 0]
    seg[5] = SACRUM  # the sacrum: its own class (the last), or background
    assert subregion_classes(seg, subreg, spinous_class=True, sacrum=4).tolist() == [0, 1, 3, 2, 2, 4]
    assert subregion_classes(seg, subreg, spinous_class=True).tolist() == [0, 1, 3, 2, 2, 0]


# ----------------------------------------------------------------------------------------- numbering
def three_vertebrae() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Body/bone masks of three stacked vertebrae (z up), each body with an arch joined by a pedicle.

    Returns the masks and, per name, the expected vertebra index (0 bottom .. 2 top, -1 background).
    """
    shape = (8, 30, 40)
    body, bone = np.zeros(shape, bool), np.zeros(shape, bool)
    expected = np.full(shape, -1)
    for k, z0 in enumerate((3, 15, 27)):
        body[2:6, 15:25, z0:z0 + 8] = True  # anterior body
        bone[2:6, 12:15, z0 + 2:z0 + 6] = True  # pedicle
        bone[2:6, 3:12, z0 + 1:z0 + 7] = True  # arch and spinous process, posterior
        expected[2:6, 15:25, z0:z0 + 8] = k
        expected[2:6, 3:12, z0 + 1:z0 + 7] = k
        expected[2:6, 12:15, z0 + 2:z0 + 6] = k
    bone[3:5, 0:2, 16:20] = True  # detached spinous tip behind the middle vertebra's arch
    expected[3:5, 0:2, 16:20] = 1
    body[3, 20, 12] = True  # one-voxel body debris in the bottom disc: no seed, joins the nearest vertebra
    bone |= body
    return body, bone, {"expected": expected}


def test_number_vertebrae_on_hand_made_map():
    body, bone, maps = three_vertebrae()
    affine = np.diag([3.0, 1.0, 1.0, 1.0])
    labels = number_vertebrae(body, bone, affine, "lumbar", "caudal", min_body_mm3=20.0)
    expected = np.where(maps["expected"] >= 0, np.array([L5, L4, L3])[maps["expected"]], 0)
    debris = (3, 20, 12)
    assert labels[debris] in (L5, L4)
    labels[debris] = expected[debris] = 0
    assert np.array_equal(labels, expected)
    assert labels.dtype == np.int16


def test_number_vertebrae_follows_physical_height_and_anchor():
    body, bone, maps = three_vertebrae()
    flipped = np.diag([3.0, 1.0, -1.0, 1.0])  # voxel z runs superior -> inferior: index 0 is the top
    labels = number_vertebrae(body, bone, flipped, "lumbar", "caudal", min_body_mm3=20.0)
    assert labels[4, 20, 30] == L5 and labels[4, 20, 5] == L3
    cranial = number_vertebrae(body, bone, np.diag([3.0, 1.0, 1.0, 1.0]), "thoracic", "cranial", 20.0)
    assert cranial[4, 20, 30] == VERTEBRA_IDS["T1"] and cranial[4, 20, 5] == VERTEBRA_IDS["T3"]


def test_fused_bodies_are_split_at_the_narrow_disc():
    shape = (6, 20, 60)
    body = np.zeros(shape, bool)
    for z0 in (2, 15, 28, 41):
        body[1:5, 5:15, z0:z0 + 10] = True
    body[2:4, 8:11, 38:41] = True  # a degenerated disc predicted as bone fuses L2 and L3
    labels = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0)
    assert [labels[2, 10, z] for z in (6, 19, 32, 45)] == [L5, L4, L3, VERTEBRA_IDS["L2"]]
    assert labels[2, 9, 39] in (L3, VERTEBRA_IDS["L2"])
    assert set(np.unique(labels)) == {0, L5, L4, L3, VERTEBRA_IDS["L2"]}
    merged = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0, split_ratio=10.0)
    assert merged[2, 10, 32] == merged[2, 10, 45]  # without the split the fused pair is one vertebra


def lumbar_bodies(fused: tuple[int, ...] = ()) -> np.ndarray:
    """Five 27 mm lumbar bodies with 9 mm discs on a 1 mm grid (z up); the discs listed in ``fused`` are bone."""
    body = np.zeros((6, 20, 190), bool)
    for k in range(5):
        body[1:5, 5:15, 5 + 36 * k:32 + 36 * k] = True
    for disc in fused:  # disc k lies between body k and k+1: a thinner bridge, as a blurred synthetic CT gives
        body[2:4, 8:12, 32 + 36 * disc:41 + 36 * disc] = True
    return body


@pytest.mark.parametrize("fused", [(0, 1, 2), (0, 2, 3), (0, 1, 2, 3)])
def test_fused_majority_is_split_against_the_regions_body_height(fused):
    """When fused blocks are most of the seeds (or there are fewer than three), their median says nothing about a
    body's height; the lumbar cap does, and a block of n bodies is cut into n."""
    body = lumbar_bodies(fused)
    labels = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0)
    centres = [18 + 36 * k for k in range(5)]
    assert [labels[2, 10, z] for z in centres] == [L5, L4, L3, VERTEBRA_IDS["L2"], VERTEBRA_IDS["L1"]]


def test_s1_fused_with_l5_goes_to_the_sacrum_after_the_split():
    """S1 predicted as a body and fused with L5 into one block: the block is split, and the piece centred below
    the sacrum's top is sacrum, so the lowest vertebra is still L5 (not S1 named L5)."""
    body = lumbar_bodies(fused=(0,))  # the lowest body plays S1, fused with the one above
    labels = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0, sacrum_top=31.0)
    assert [labels[2, 10, 18 + 36 * k] for k in range(5)] == [SACRUM, L5, L4, L3, VERTEBRA_IDS["L2"]]
    unaware = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0)
    assert unaware[2, 10, 18] == L5  # without the sacrum's top every number is one off


def test_pieces_of_one_body_at_the_same_level_are_one_vertebra():
    body = lumbar_bodies()
    body[3, :, :] = False  # each body in a left and a right piece, as a thin sagittal prediction can leave it
    body[1:3, 5:15, 10:20] = False  # and the left piece of L5 shorter than the right one
    labels = number_vertebrae(body, body, np.eye(4), "lumbar", "caudal", min_body_mm3=10.0)
    for k, vertebra in enumerate([L5, L4, L3, VERTEBRA_IDS["L2"], VERTEBRA_IDS["L1"]]):
        level = labels[:, :, 5 + 36 * k:32 + 36 * k]
        assert set(np.unique(level[level > 0])) == {vertebra}


def test_seed_numbers_continue_past_the_region_and_clip():
    heights = np.array([10.0, 50.0, 30.0, -20.0, 70.0, 90.0])  # six lumbar bodies, unordered
    assert seed_numbers(heights, "lumbar", "caudal").tolist() == [23, 21, 22, 24, 20, 19]  # T12..L5
    assert seed_numbers(np.array([0.0, 10.0, 20.0]), "cervical", "cranial").tolist() == [3, 2, 1]
    assert seed_numbers(np.arange(9.0), "lumbar", "cranial").max() == VERTEBRA_IDS["L5"]
    with pytest.raises(ValueError, match="anchor"):
        seed_numbers(heights, "lumbar", "middle")


def test_number_vertebrae_without_bodies_gives_anchor_id():
    bone = np.zeros((4, 4, 4), bool)
    bone[1:3, 1:3, 1:3] = True
    labels = number_vertebrae(np.zeros_like(bone), bone, np.eye(4), "lumbar", "caudal")
    assert set(np.unique(labels)) == {0, L5}


# ------------------------------------------------------------------------- phantom_unet: inference geometry
class ThresholdNet(torch.nn.Module):
    """Stands in for the UNet: body where the centre plane is > 500 HU, posterior where 200..500 HU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, x.shape[1] // 2]
        body, posterior = (centre > 0.5).float(), ((centre > 0.2) & (centre <= 0.5)).float()
        return torch.stack([1 - body - posterior, body, posterior, torch.zeros_like(body)], dim=1) * 10


def blob_ct(shape=(9, 53, 61)) -> tuple[np.ndarray, np.ndarray]:
    """A CT (HU, RAS order) with a 1000 HU block and a 300 HU block, and its threshold class map."""
    hu = np.full(shape, -50.0, dtype=np.float32)
    hu[2:7, 30:45, 10:25] = 1000.0
    hu[3:6, 8:20, 35:55] = 300.0
    return hu, np.where(hu > 500, 1, np.where(hu > 200, 2, 0)).astype(np.uint8)


def test_predict_classes_returns_the_input_grid_at_any_spacing():
    hu, expected = blob_ct()
    cfg = SegmenterConfig(channels=[4, 8, 8], spacing_mm=2.0, context_mm=0.0, inference_batch_size=4)
    classes = predict_classes(ThresholdNet(), Volume(hu, np.diag([3.0, 1.3, 0.9, 1.0])), cfg)
    assert classes.shape == hu.shape
    interior = np.zeros(hu.shape, bool)
    interior[:, 2:-2, 2:-2] = True
    edges = ndi.binary_dilation(ndi.morphological_gradient(expected, size=3) > 0, iterations=2)
    assert np.array_equal(classes[interior & ~edges], expected[interior & ~edges])
    assert (classes == expected).mean() > 0.97


def test_segment_keeps_the_input_grid_and_voxel_order():
    hu, expected = blob_ct()
    volume = lps_volume(hu)
    cfg = SegmenterConfig(channels=[4, 8, 8], spacing_mm=1.0, context_mm=0.0, min_body_mm3=10.0)
    segmentation = PhantomUNetSegmenter(ThresholdNet(), cfg).segment(volume)
    assert isinstance(segmentation, Segmentation)
    for result in (segmentation.labels, segmentation.subregions):
        assert result.shape == volume.shape and np.array_equal(result.affine, volume.affine)
    labels_ras = segmentation.labels.array[::-1, ::-1]
    subregions_ras = segmentation.subregions.array[::-1, ::-1]
    assert np.array_equal(labels_ras > 0, expected > 0)
    assert set(np.unique(labels_ras)) == {0, L5} and segmentation.labels.array.dtype == np.int16
    assert np.array_equal(subregions_ras, np.array([0, BODY, ARCH, SPINOUS_PROCESS])[expected])


def test_sacrum_class_is_labelled_sacrum_and_not_numbered(monkeypatch):
    """Below the lowest body lies the sacrum: as its own class it gets the sacrum's label, no subregion, and
    the caudal anchor still names the lowest body L5 (S1 taken for a body would shift every number by one)."""
    body, bone, maps = three_vertebrae()
    cfg = SegmenterConfig(channels=[4, 8, 8], spacing_mm=1.0, context_mm=0.0, min_body_mm3=20.0)
    classes = np.where(body, 1, np.where(bone, 2, 0)).astype(np.uint8)
    classes[2:6, 15:25, 0:2] = phantom_unet.sacrum_class(cfg)
    classes[2:6, 10:15, 0:2] = 1  # a sacral segment predicted as a body, below the sacrum's top: sacrum too
    monkeypatch.setattr(phantom_unet, "predict_classes", lambda net, volume, cfg: classes)
    volume = Volume(np.zeros(classes.shape, np.float32), np.diag([3.0, 1.0, 1.0, 1.0]))
    segmentation = PhantomUNetSegmenter(ThresholdNet(), cfg).segment(volume)
    labels, subregions = segmentation.labels.array, segmentation.subregions.array
    assert np.all(labels[2:6, 10:25, 0:2] == SACRUM) and np.all(subregions[2:6, 10:25, 0:2] == 0)
    assert np.all(labels[2:6, 15:25, 3:11] == L5) and np.all(labels[2:6, 15:25, 15:23] == L4)
    assert set(np.unique(labels)) == {0, L3, L4, L5, SACRUM}


# ------------------------------------------------------------------------------------ command segmenter
FAKE_PROGRAM = '''#!{python}
"""Stand-in CT segmenter: bone > 200 HU; foreign ids (27 lower half, 31 upper half, 5 for soft tissue)."""
import sys
import nibabel as nib
import numpy as np

mode, source, target = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "fail":
    sys.stderr.write("fake_seg: model weights are corrupt\\n")
    sys.exit(3)
if mode == "silent":
    sys.exit(0)
image = nib.load(source)
hu = np.asanyarray(image.dataobj)
upper = np.arange(hu.shape[2])[None, None, :] >= hu.shape[2] // 2
labels = np.where(hu > 200, np.where(upper, 31, 27), np.where(hu > -100, 5, 0)).astype(np.int16)
if mode == "subregions":
    labels = np.where(hu > 500, 50, np.where(hu > 200, 41, 0)).astype(np.int16)
if mode == "wrong_grid":
    labels = labels[:-1]
out = nib.Nifti1Image(labels, image.affine)
if mode == "canonical":
    out = nib.as_closest_canonical(out)
nib.save(out, target)
'''


@pytest.fixture
def fake_program(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "fake_seg"
    program.write_text(FAKE_PROGRAM.format(python=sys.executable))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return "fake_seg"


def command_config(command: str, **kwargs) -> dict:
    return {"kind": "command", "command": command, "label_map": {27: L5, 31: VERTEBRA_IDS["L1"]}, **kwargs}


def test_command_segmenter_maps_ids_and_keeps_geometry(fake_program, tmp_path):
    hu, _ = blob_ct()
    hu[4, 40, 50] = 800.0  # bone in the upper half
    volume = lps_volume(hu)
    segmenter = build_segmenter(command_config(
        "fake_seg canonical {input} {output}", subregion_command="fake_seg subregions {input} {output}"), tmp_path)
    result = segmenter.segment(volume)
    stored = volume.array
    upper = np.arange(stored.shape[2])[None, None, :] >= stored.shape[2] // 2
    expected = np.where(stored > 200, np.where(upper, VERTEBRA_IDS["L1"], L5), 0)  # soft tissue id 5 unmapped
    assert np.array_equal(result.labels.array, expected) and result.labels.array.dtype == np.int16
    assert np.array_equal(result.labels.affine, volume.affine)
    assert np.array_equal(result.subregions.array, np.where(stored > 500, 50, np.where(stored > 200, 41, 0)))


def test_command_segmenter_checks_before_work(tmp_path, fake_program):
    with pytest.raises(SegmenterCommandError, match="'no_such_segmenter' not found on PATH"):
        build_segmenter(command_config("no_such_segmenter {input} {output}"), tmp_path)
    with pytest.raises(SegmenterCommandError, match="weights.pth"):
        build_segmenter(command_config("fake_seg plain {input} {output}",
                                       required_paths=[str(tmp_path / "weights.pth")]), tmp_path)
    with pytest.raises(SegmenterCommandError, match="placeholder"):
        build_segmenter(command_config("fake_seg plain {input}"), tmp_path)


@pytest.mark.parametrize("mode, message", [("fail", "model weights are corrupt"), ("silent", "wrote no output"),
                                           ("wrong_grid", "differs from the input grid")])
def test_command_segmenter_reports_failures(fake_program, tmp_path, mode, message):
    hu, _ = blob_ct()
    segmenter = build_segmenter(command_config(f"fake_seg {mode} {{input}} {{output}}"), tmp_path)
    with pytest.raises(SegmenterCommandError, match=message):
        segmenter.segment(Volume(hu, np.eye(4)))


def test_totalsegmentator_table():
    known = {27: "L5", 31: "L1", 32: "T12", 43: "T1", 44: "C7", 50: "C1"}  # TotalSegmentator v2 class map
    assert {k: TOTALSEGMENTATOR_V2_TO_VERSE[k] for k in known} == {k: VERTEBRA_IDS[v] for k, v in known.items()}
    assert len(TOTALSEGMENTATOR_V2_TO_VERSE) == 24
    command = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SegmenterConfig),
                                                  OmegaConf.load(CONF / "command.yaml")))
    assert command.kind == "command" and dict(command.label_map) == TOTALSEGMENTATOR_V2_TO_VERSE
    default = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SegmenterConfig),
                                                  OmegaConf.load(CONF / "phantom_unet.yaml")))
    assert default == SegmenterConfig()  # the YAML spells out the schema defaults


def test_unknown_kind_and_keys_fail(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        build_segmenter({"kind": "magic"}, tmp_path)
    with pytest.raises(Exception, match="chanels"):
        build_segmenter({"chanels": [4]}, tmp_path)


# ------------------------------------------------------------------------------ phantom_unet: cached training
TINY = dict(subjects=3, steps=3, batch_size=2, crop_size=32, channels=[4, 8], spacing_mm=4.0, progress=False,
            inference_batch_size=64)


def test_phantom_unet_trains_once_caches_and_segments(tmp_path, monkeypatch):
    segmenter = build_segmenter(SegmenterConfig(**TINY), tmp_path)
    entry = segmenter.entry
    assert entry.parent == tmp_path / "segmenter"
    state = torch.load(entry / "weights.pt", weights_only=True)
    assert set(state) == set(phantom_unet.build_network(SegmenterConfig(**TINY)).state_dict())
    heldout = json.loads((entry / "heldout.json").read_text())
    assert {"bone", "body", "posterior", "per_vertebra", "vertebra_id"} <= set(heldout["mean"])
    assert heldout["per_subject"] and all(0 <= v <= 1 for v in heldout["mean"].values())
    assert not set(heldout["per_subject"]) & set(heldout["training_subjects"])

    def no_training(*args, **kwargs):
        raise AssertionError("a cached segmenter was trained again")

    monkeypatch.setattr(phantom_unet, "train_network", no_training)
    again = build_segmenter(SegmenterConfig(**{**TINY, "device": "cpu", "inference_batch_size": 7}), tmp_path)
    assert again.entry == entry  # runtime-only fields do not change the cache key

    from mr2ct.core.subjects import load_subjects

    subject = load_subjects(next((tmp_path / "phantom").iterdir()), splits=["test"])[0]
    result = again.segment(subject.oracle_ct)
    for volume in (result.labels, result.subregions):
        assert volume.shape == subject.oracle_ct.shape
        assert np.allclose(volume.affine, subject.oracle_ct.affine)
    assert result.labels.array.dtype == np.int16
    assert set(np.unique(result.labels.array)) <= {0, SACRUM} | set(range(1, 25))
    assert set(np.unique(result.subregions.array)) <= {0, BODY, ARCH, SPINOUS_PROCESS}


@pytest.mark.slow
def test_default_phantom_unet_reaches_its_heldout_dice(tmp_path):
    """The default settings (about a minute of training on 2 CPU cores) segment unseen phantom CTs well."""
    heldout = build_segmenter(SegmenterConfig(progress=False), tmp_path).heldout
    assert heldout["mean"]["bone"] > 0.9 and heldout["mean"]["body"] > 0.9 and heldout["mean"]["posterior"] > 0.85
    assert heldout["mean"]["vertebra_id"] > 0.8 and heldout["native_ct"]["mean"]["bone"] > 0.85


def test_split_of_a_seed_few_voxels_tall_does_not_fail():
    """A poor prediction can leave bodies one voxel tall; a two-voxel seed is then 'tall' and must still split."""
    from mr2ct.segment.numbering import split_tall_seeds

    seeds = np.zeros((3, 3, 12), dtype=int)
    seeds[1, 1, 0:1], seeds[1, 1, 3:4], seeds[1, 1, 6:8] = 1, 2, 3
    split, count = split_tall_seeds(seeds, 3, np.eye(4), split_ratio=1.6, body_height_mm=27.0)
    assert count == 4
    assert sorted(np.unique(split[1, 1, 6:8])) == [3, 4]


# ------------------------------------------------------------------------------ phantom_unet: the shipped entry
def test_default_segmenter_ships_with_the_package_and_loads_without_training(tmp_path, monkeypatch):
    cfg = phantom_unet.default_settings()
    shipped = find_entry(phantom_unet.CACHE_KIND, phantom_unet.cache_key(cfg), phantom_unet.SHIPPED_DIR)
    assert shipped is not None, "the shipped segmenter is stale: run `make segmenter-weights` and commit it"
    heldout = json.loads((shipped / "heldout.json").read_text())
    assert heldout["mean"]["bone"] > 0.9 and heldout["mean"]["posterior"] > 0.85

    def no_training(*args, **kwargs):
        raise AssertionError("the default segmenter was trained although it ships with the package")

    monkeypatch.setattr(phantom_unet, "train_network", no_training)
    segmenter = build_segmenter(cfg, tmp_path)
    assert segmenter.entry == shipped
    assert not any(tmp_path.iterdir())  # no phantom generated, nothing cached
    kept = phantom_unet.keep(cfg, tmp_path / "cache", tmp_path / "kept")  # a run keeps a copy of it
    assert (kept / "weights.pt").read_bytes() == (shipped / "weights.pt").read_bytes()


def test_segmenter_cache_key_follows_the_phantom_version(monkeypatch):
    import mr2ct.phantom

    key = phantom_unet.cache_key(SegmenterConfig(**TINY))
    monkeypatch.setattr(mr2ct.phantom, "PHANTOM_VERSION", mr2ct.phantom.PHANTOM_VERSION + 1)
    assert phantom_unet.cache_key(SegmenterConfig(**TINY)) != key
