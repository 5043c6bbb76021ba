"""Unpaired training data: MR and CT of a pair never come from one subject, and stay seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mr2ct.core.config import LoaderConfig
from mr2ct.data.datamodule import SpineDataModule, UnpairedSampler, training_subjects, unpaired_partners
from mr2ct.data.preprocess import FORMAT_VERSION, MANIFEST, record_filenames
from tests.test_datamodule import SPINE_SLICES, slice_coded_volume, source_of, spine_labels

SUBJECTS = 3
COPIES = 2  # files per subject (the original and one elastic copy), coded alike: the code names the subject


def write_unpaired_prepared(folder: Path) -> Path:
    """A prepared entry with ``SUBJECTS`` training subjects of ``COPIES`` files each and one val subject."""
    names = [f"sub{s}" for s in range(SUBJECTS)]
    files = {"train": [], "val": [], "test": []}
    for split in files:
        (folder / split).mkdir(parents=True)
    for s, name in enumerate(names):
        coded = slice_coded_volume(s)
        for relative in record_filenames("train", name, COPIES):
            np.savez_compressed(folder / relative, mr=coded, ct=coded, seg=spine_labels())
            files["train"].append(relative)
    (val,) = record_filenames("val", "val0", 1)
    np.savez_compressed(folder / val, mr=slice_coded_volume(0), target_ct=slice_coded_volume(0), target_seg=spine_labels())
    files["val"].append(val)
    manifest = {"format_version": FORMAT_VERSION, "dims": 2, "subjects": {"train": names, "val": ["val0"], "test": []},
                "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_unpaired_prepared(tmp_path_factory.mktemp("unpaired"))


def epoch_pairs(module: SpineDataModule) -> list[tuple[int, int]]:
    """(MR source, CT source) of every pair of one epoch, each as 6 * subject + slice."""
    pairs = []
    for batch in module.train_dataloader():
        for mr, ct in zip(batch["mr"], batch["ct"]):
            (mr_source,), (ct_source,) = source_of(mr), source_of(ct)
            pairs.append((mr_source, ct_source))
    return pairs


def test_no_pair_of_an_epoch_shares_a_subject_and_every_sample_is_drawn_once(prepared):
    module = SpineDataModule(prepared, LoaderConfig(crop_size=64, batch_size=4, jitter=0.0), paired=False, seed=3)
    for _ in range(3):
        pairs = epoch_pairs(module)
        assert len(pairs) == SUBJECTS * COPIES * len(SPINE_SLICES)
        assert all(mr // 6 != ct // 6 for mr, ct in pairs)  # different subjects, hence never the same slice
        expected = sorted(6 * s + k for s in range(SUBJECTS) for k in SPINE_SLICES for _ in range(COPIES))
        assert sorted(mr for mr, _ in pairs) == expected  # MR and CT each a permutation of the samples
        assert sorted(ct for _, ct in pairs) == expected
    assert len({ct % 6 for mr, ct in pairs if mr % 6 == SPINE_SLICES[0]}) > 1  # CT slice position drawn apart from MR's


def test_mr_and_ct_are_cropped_and_flipped_independently(prepared):
    module = SpineDataModule(prepared, LoaderConfig(crop_size=64, batch_size=6, jitter=0.0, flip_ap=True), paired=False)
    flips = []
    for batch in module.train_dataloader():
        for mr, ct in zip(batch["mr"][:, 0], batch["ct"][:, 0]):
            directions = [np.sign(np.diff(image[:, 32][image[:, 32] > -1].numpy()))[0] for image in (mr, ct)]
            flips.append(tuple(directions))
    assert len(set(flips)) > 2  # not one shared flip per pair


def test_same_seed_same_unpaired_batches_whatever_the_number_of_workers(prepared):
    def epoch(workers: int, seed: int) -> torch.Tensor:
        cfg = LoaderConfig(crop_size=48, batch_size=4, jitter=0.2, num_workers=workers)
        module = SpineDataModule(prepared, cfg, paired=False, seed=seed)
        return torch.cat([torch.cat([b["mr"], b["ct"]], dim=1) for b in module.train_dataloader()])

    first = epoch(0, seed=7)
    torch.testing.assert_close(epoch(2, seed=7), first, rtol=0, atol=0)
    assert not torch.equal(epoch(0, seed=8), first)


def test_training_subjects_follow_the_manifest(prepared):
    manifest = json.loads((prepared / MANIFEST).read_text())
    assert training_subjects(manifest) == [f"sub{s}" for s in range(SUBJECTS) for _ in range(COPIES)]
    manifest["files"]["train"][0] = "train/stranger__copy0.npz"
    with pytest.raises(ValueError, match="stranger"):
        training_subjects(manifest)


@pytest.mark.parametrize("counts", [(5, 5), (1, 2, 3), (4, 3, 3, 2), (1, 1, 1, 1, 1, 1, 1)])
def test_partners_are_a_permutation_without_a_shared_subject_while_no_subject_holds_most(counts):
    subjects = np.repeat(np.arange(len(counts)), counts)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        mr_order = rng.permutation(len(subjects))
        ct_order = unpaired_partners(subjects, mr_order, rng)
        assert sorted(ct_order) == list(range(len(subjects)))
        assert (subjects[ct_order] != subjects[mr_order]).all()


def test_a_dominant_subject_draws_its_surplus_from_the_others():
    subjects = np.array([0, 0, 0, 0, 1])  # subject 0 holds most samples: no clash-free permutation exists
    rng = np.random.default_rng(0)
    mr_order = rng.permutation(5)
    ct_order = unpaired_partners(subjects, mr_order, rng)
    assert (subjects[ct_order] != subjects[mr_order]).all()
    with pytest.raises(ValueError, match="two subjects"):
        UnpairedSampler([0, 0, 0], seed=0)
