"""SpineDataModule on hand-built prepared datasets whose values identify their source slice and position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mr2ct.core.config import LoaderConfig
from mr2ct.core.labels import SACRUM, VERTEBRA_IDS, rib_label
from mr2ct.data.datamodule import SpineDataModule, crop, jitter_mr, spine_box, spine_slices, window
from mr2ct.data.preprocess import FORMAT_VERSION, MANIFEST, record_filenames

SHAPE = (6, 80, 50)  # (LR slices, AP, SI): AP larger and SI smaller than the 64 crop
SPINE_SLICES = (1, 2, 4)  # slices 0, 3, 5 hold fewer than 10 spine pixels


def slice_coded_volume(volume_id: int, shape=SHAPE) -> np.ndarray:
    """Values that encode the volume, the slice and the AP position of every voxel (see :func:`source_of`)."""
    x, y, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (-0.9 + 0.24 * volume_id + 0.04 * x + 0.0004 * y).astype(np.float32)


def source_of(image: torch.Tensor) -> set[int]:
    """The (6 * volume + slice) codes of the non-padded pixels of a jitter-free 2D crop."""
    values = image[image > -1].double().numpy()
    return set(np.floor((values + 0.9) / 0.04 + 1e-6).astype(int).tolist())


def spine_labels(shape=SHAPE) -> np.ndarray:
    seg = np.zeros(shape, dtype=np.int16)
    for s in SPINE_SLICES:
        seg[s, 30:40, 20:30] = 20 + s
    seg[3, 30:33, 20:23] = 22  # 9 pixels: below the threshold
    return seg


def write_prepared(folder: Path, dims: int = 2, shape=SHAPE, n_train: int = 2, n_val: int = 1) -> Path:
    """A prepared entry in the format prepare_dataset writes, with MR == CT in the training target."""
    files = {"train": [], "val": [], "test": []}
    names = {"train": [], "val": [], "test": []}
    for split, count in (("train", n_train), ("val", n_val), ("test", 1)):
        (folder / split).mkdir(parents=True)
        for v in range(count):
            name = f"{split}{v}"
            coded = slice_coded_volume(v, shape)
            record = {"mr": coded, "ct": coded, "seg": spine_labels(shape), "subreg": np.zeros(shape, np.uint8),
                      "affine": np.eye(4)}
            if split != "train":
                record = {"mr": coded, "affine": np.eye(4), "reference_mr": coded[::2], "reference_ct": -coded[::2],
                          "reference_seg": spine_labels(shape)[::2], "reference_subreg": np.zeros(shape, np.uint8)[::2],
                          "reference_affine": np.diag([3.0, 1.0, 1.0, 1.0]), "mr_robust_max": np.float64(1.0),
                          "contrast": np.str_("t1w"), "mr_path": np.str_(f"/data/{name}/mr.nii.gz")}
            if split == "val":
                record.update(target_ct=coded, target_seg=spine_labels(shape))
            (relative,) = record_filenames(split, name, 1)
            np.savez_compressed(folder / relative, **record)
            files[split].append(relative)
            names[split].append(name)
    manifest = {"format_version": FORMAT_VERSION, "dims": dims, "spacing": 1.0, "subjects": names, "files": files,
                "registration_mode": "two_point", "mr_robust_max_percentile": 99.5}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared2d"))


def batches(module: SpineDataModule, kind: str = "train") -> list[dict[str, torch.Tensor]]:
    loader = module.train_dataloader() if kind == "train" else module.val_dataloader()
    return list(loader)


def test_window_and_crop_pad_with_minus_one():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = crop(image, start=[-1, 2], size=[4, 3])
    expected = np.pad(image, ((1, 1), (0, 3)), constant_values=-1)[0:4, 2:5]
    np.testing.assert_array_equal(out, expected)
    assert window((3, 4), (-1, 2), (4, 3)) == ((slice(0, 3), slice(2, 4)), (slice(1, 4), slice(0, 2)))


def test_jitter_is_torchvision_brightness_then_contrast():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    mr = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    brightness, contrast = rng_b.uniform(0.8, 1.2), rng_b.uniform(0.8, 1.2)
    x = np.clip((mr + 1) / 2 * brightness, 0, 1)
    expected = np.clip(x.mean() + contrast * (x - x.mean()), 0, 1) * 2 - 1
    np.testing.assert_allclose(jitter_mr(mr, 0.2, rng_a), expected, atol=1e-6)
    assert jitter_mr(mr, 0.0, rng_a) is mr


def test_index_keeps_slices_with_enough_spine_pixels():
    np.testing.assert_array_equal(spine_slices(spine_labels(), 10), SPINE_SLICES)
    np.testing.assert_array_equal(spine_slices(spine_labels(), 9), sorted(SPINE_SLICES + (3,)))


def test_ribs_and_sacrum_are_not_spine():
    seg = spine_labels()
    seg[0, 10:30, 10:30] = rib_label(VERTEBRA_IDS["T12"])  # 400 rib pixels
    seg[5, 10:30, 10:30] = SACRUM
    np.testing.assert_array_equal(spine_slices(seg, 10), SPINE_SLICES)
    low, high = spine_box(seg)
    assert low.tolist() == [1, 30, 20] and high.tolist() == [4, 39, 29]


def test_train_batches_are_paired_crops_in_range(prepared):
    cfg = LoaderConfig(crop_size=64, batch_size=4, jitter=0.0, flip_ap=True)
    module = SpineDataModule(prepared, cfg, seed=1)
    module.setup("fit")
    assert len(module.train_set) == 2 * len(SPINE_SLICES)
    flips = 0
    for batch in batches(module):
        assert batch["mr"].shape[1:] == (1, 64, 64) and batch["mr"].dtype == torch.float32
        torch.testing.assert_close(batch["mr"], batch["ct"])  # MR == CT stored: same crop, same flip
        assert batch["mr"].min() >= -1 and batch["mr"].max() <= 1
        for image in batch["mr"][:, 0]:
            column = image[:, 32]
            data = column[column > -1]
            assert len(data) == 64  # AP is 80 > 64: the crop is full along AP
            steps = np.sign(np.diff(data.numpy()))
            assert abs(steps.sum()) == len(steps)  # monotone along AP: a flip reverses it, nothing else changes it
            flips += steps[0] < 0
    assert 0 < flips < len(module.train_set)


def test_flip_off_keeps_anterior_direction(prepared):
    module = SpineDataModule(prepared, LoaderConfig(crop_size=64, batch_size=6, jitter=0.0, flip_ap=False))
    for batch in batches(module):
        column = batch["mr"][:, 0, :, 32]
        assert (column[:, 1:] > column[:, :-1]).all()


def test_same_seed_same_batches_and_epochs_differ(prepared):
    cfg = LoaderConfig(crop_size=48, batch_size=3, jitter=0.2)

    def two_epochs(seed):
        module = SpineDataModule(prepared, cfg, seed=seed)
        loader = module.train_dataloader()
        return [torch.cat([b["mr"] for b in loader]) for _ in range(2)]

    first, again, other = two_epochs(5), two_epochs(5), two_epochs(6)
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    torch.testing.assert_close(first[1], again[1], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], other[0])


def test_val_batches_are_stored_centre_crops_without_jitter(prepared):
    cfg = LoaderConfig(crop_size=64, batch_size=2, jitter=0.5, flip_ap=True)
    module = SpineDataModule(prepared, cfg)
    epochs = [torch.cat([b["mr"] for b in batches(module, "val")]) for _ in range(2)]
    torch.testing.assert_close(epochs[0], epochs[1], rtol=0, atol=0)
    with np.load(prepared / "val/val0.npz") as stored:
        mr = stored["mr"]
    # AP 80 -> centre rows 8..72; SI 50 -> 7 padded columns on each side.
    expected = np.stack([np.pad(mr[s], ((0, 0), (7, 7)), constant_values=-1)[8:72] for s in SPINE_SLICES])
    np.testing.assert_array_equal(epochs[0][:, 0].numpy(), expected)
    ct = torch.cat([b["ct"] for b in batches(module, "val")])
    torch.testing.assert_close(ct, epochs[0])  # the val target (registered with the chosen mode) == MR here


def test_unpaired_batches_draw_ct_from_other_slices(prepared):
    cfg = LoaderConfig(crop_size=64, batch_size=6, jitter=0.0, flip_ap=False)
    module = SpineDataModule(prepared, cfg, paired=False, seed=2)
    pairs = []
    for _ in range(3):
        for batch in batches(module):
            pairs += [(source_of(mr), source_of(ct)) for mr, ct in zip(batch["mr"], batch["ct"])]
    assert all(len(mr) == 1 and len(ct) == 1 for mr, ct in pairs)  # each crop comes from one slice
    assert all(mr != ct for mr, ct in pairs)
    assert len({min(ct) for _, ct in pairs}) > 1  # and the CT source varies


def test_paired_batches_come_from_one_slice(prepared):
    module = SpineDataModule(prepared, LoaderConfig(crop_size=64, batch_size=6, jitter=0.0), seed=2)
    expected = {6 * v + s for v in range(2) for s in SPINE_SLICES}
    seen = {min(source_of(mr)) for batch in batches(module) for mr in batch["mr"]}
    assert seen == expected  # every indexed slice once per epoch, none of the sparse ones


def test_test_volumes_return_the_stored_reference(prepared):
    module = SpineDataModule(prepared, LoaderConfig(jitter=0.5))
    (volume,) = module.test_volumes("test")
    with np.load(prepared / "test/test0.npz") as stored:
        np.testing.assert_array_equal(volume.reference.ct, stored["reference_ct"])
        np.testing.assert_array_equal(volume.mr, stored["mr"])
    assert volume.name == "test0" and volume.contrast == "t1w" and volume.mr.shape == SHAPE
    assert volume.reference.shape == volume.reference.seg.shape == (SHAPE[0] // 2, *SHAPE[1:])  # its own grid
    assert volume.mr_path == "/data/test0/mr.nii.gz"
    np.testing.assert_array_equal(volume.reference.affine, np.diag([3.0, 1.0, 1.0, 1.0]))
    (val_volume,) = module.test_volumes("val")
    np.testing.assert_array_equal(val_volume.reference.ct, -slice_coded_volume(0)[::2])  # the reference, not the target
    with pytest.raises(ValueError, match="split"):
        module.test_volumes("train")


def test_dims_mismatch_and_missing_manifest_are_clear(prepared, tmp_path):
    with pytest.raises(ValueError, match="2D"):
        SpineDataModule(prepared, LoaderConfig(), dims=3)
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        SpineDataModule(tmp_path, LoaderConfig())


def test_3d_patches_are_paired_and_cover_the_spine(tmp_path):
    shape = (40, 70, 30)
    folder = write_prepared(tmp_path / "p3", dims=3, shape=shape)
    module = SpineDataModule(folder, LoaderConfig(crop_size=24, batch_size=2, jitter=0.0), dims=3, seed=0)
    module.setup("fit")
    for batch in batches(module):
        assert batch["mr"].shape[1:] == (1, 24, 24, 24)
        torch.testing.assert_close(batch["mr"], batch["ct"])
    (val,) = batches(module, "val")
    assert val["mr"].shape == (1, 1, 24, 24, 24)
    seg = spine_labels(shape)
    low, high = np.argwhere(seg > 0).min(0), np.argwhere(seg > 0).max(0)
    start = np.clip((low + high) // 2 - 12, 0, np.array(shape) - 24)
    expected = slice_coded_volume(0, shape)[tuple(slice(s, s + 24) for s in start)]
    np.testing.assert_array_equal(val["mr"][0, 0].numpy(), expected)


def test_3d_epoch_draws_patches_per_volume_each_its_own(tmp_path):
    folder = write_prepared(tmp_path / "p3", dims=3, shape=(40, 70, 30))
    single = SpineDataModule(folder, LoaderConfig(crop_size=24, batch_size=1, jitter=0.0), dims=3, seed=0)
    module = SpineDataModule(folder, LoaderConfig(crop_size=24, batch_size=1, jitter=0.0, patches_per_volume=3),
                             dims=3, seed=0)
    single.setup("fit")
    module.setup("fit")
    assert len(module.train_set) == 3 * len(single.train_set)
    patches = [batch["mr"] for batch in batches(module)]
    assert len(patches) == len(module.train_set)
    distinct = {tuple(patch.flatten()[::97].tolist()) for patch in patches}
    assert len(distinct) > len(single.train_set)  # repeated volumes give other patches, not copies
    with pytest.raises(ValueError, match="patches_per_volume"):
        LoaderConfig(patches_per_volume=0)
