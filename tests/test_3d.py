"""The 3D methods: position ramps in training and at inference, whole volumes without seams, sides that are
not multiples of the network's stride, and tiny end-to-end runs of Pix2Pix 3D, DDIM 3D noise and image."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mr2ct.core.config import InferenceConfig, LoaderConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.data.positions import position_ramps
from mr2ct.data.preprocess import FORMAT_VERSION, MANIFEST, record_filenames
from mr2ct.inference.checkpoint import load_method
from mr2ct.methods.registry import method_card
from mr2ct.methods.windows import Windows
from mr2ct.pipeline.run import run_task
from mr2ct.pipeline.stages import build_method
from mr2ct.report.figures import isotropic_views
from mr2ct.tables import run_tables
from mr2ct.train import train
from tests.conftest import TINY, compose_config

# A tiny 3D net (three levels: stride 4) on 4 mm isotropic phantom volumes, 16-voxel patches.
TINY_NET_3D = ["model.net.dim=8", "model.net.dim_mults=[1,2,4]", "model.net.groups=4"]
TINY_3D = [o for o in TINY if not o.startswith(("model.", "model="))] + [
    "inference=ddim_3d", "inference.t=2", "preprocess.spacing_iso_mm=4.0", "loader.patch_size=[16,16,16]",
    "loader.batch_size=2", "logger=none", *TINY_NET_3D]
EXTRA = {"pix2pix_3d": ["model.extra.discriminator.channels=8", "model.extra.discriminator.num_layers_d=2"],
         "ddim_noise_3d": [], "ddim_image_3d": []}


def tiny_method(name: str, *overrides: str):
    torch.manual_seed(0)
    return build_method(compose_config([f"model={name}", *TINY_NET_3D, *EXTRA[name], *overrides])).eval()


def ramps_formula(index: np.ndarray, shape) -> np.ndarray:
    """Independent reference: a voxel's ramps are its volume index over the last index, per axis."""
    return index / (np.asarray(shape, dtype=np.float64) - 1)


def voxel_code(shape) -> np.ndarray:
    """A distinct value in [-0.9, 0.9] for every voxel, so a crop tells where each of its voxels came from."""
    return (-0.9 + 1.8 * np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)


def decode(values: np.ndarray, shape) -> np.ndarray:
    """Volume indices (n, 3) of coded voxel values (the inverse of :func:`voxel_code`)."""
    flat = np.rint((values.astype(np.float64) + 0.9) / 1.8 * np.prod(shape)).astype(int)
    return np.stack(np.unravel_index(flat, shape), axis=-1)


def assert_ramps_of_volume(mr: np.ndarray, ramps: np.ndarray, shape) -> None:
    """``ramps`` (3, *crop) are the crop of the volume's ramps that ``mr`` (*crop, voxel-coded, maybe flipped
    and padded with the background) is: equal to the formula at every data voxel, and continuing with the
    volume's slope (1 / (n - 1) per voxel, either sign) along its own axis, constant along the others, into
    the padding."""
    inside = mr != BACKGROUND
    np.testing.assert_allclose(ramps[:, inside].T, ramps_formula(decode(mr[inside], shape), shape), atol=1e-6)
    for k, n in enumerate(shape):
        for axis in range(3):
            steps = np.diff(ramps[k], axis=axis)
            if axis != k:
                np.testing.assert_allclose(steps, 0.0, atol=1e-6)
            else:
                np.testing.assert_allclose(np.abs(steps), 1.0 / (n - 1), atol=1e-6)
                assert np.all(np.sign(steps) == np.sign(steps.flat[0])), "a ramp is linear across the crop"


# ------------------------------------------------------------------------------------------------ ramps
def test_ramps_are_index_over_last_index_and_crops_continue_them():
    shape = (5, 7, 9)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    full = position_ramps(shape)
    np.testing.assert_allclose(np.moveaxis(full, 0, -1), ramps_formula(index, shape), atol=1e-7)
    assert full.min() == 0.0 and full.max() == 1.0
    start, size = (-2, 3, 4), (4, 6, 8)  # two voxels of padding before axis 0, past the end of axes 1 and 2
    crop = position_ramps(shape, start, size)
    local = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    np.testing.assert_allclose(np.moveaxis(crop, 0, -1), ramps_formula(local + start, shape), atol=1e-7)
    np.testing.assert_array_equal(crop[:, 2:, :4, :5], full[:, :2, 3:, 4:])  # the data part is the crop of full


def write_prepared_3d(folder: Path, shape) -> Path:
    """A 3D prepared entry whose MR and CT are voxel-coded, with a spine box in the middle."""
    files, names = {"train": [], "val": [], "test": []}, {"train": [], "val": [], "test": []}
    seg = np.zeros(shape, np.int16)
    seg[3:6, 4:10, 2:9] = 22
    code = voxel_code(shape)
    for split in ("train", "val"):
        (folder / split).mkdir(parents=True)
        name = f"{split}0"
        record = {"mr": code, "affine": np.eye(4)}
        record.update({"ct": code, "seg": seg, "subreg": np.zeros(shape, np.uint8)} if split == "train"
                      else {"target_ct": code, "target_seg": seg})
        (relative,) = record_filenames(split, name, 1)
        np.savez_compressed(folder / relative, **record)
        files[split].append(relative)
        names[split].append(name)
    manifest = {"format_version": FORMAT_VERSION, "dims": 3, "spacing": 2.0, "subjects": names, "files": files,
                "registration_mode": "two_point", "mr_robust_max_percentile": 99.5}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_training_and_validation_patches_carry_the_crop_of_their_volume_ramps(tmp_path):
    shape = (9, 14, 12)
    patch = [6, 8, 16]  # longer than the volume inferior-superior: patches are padded there
    module = SpineDataModule(write_prepared_3d(tmp_path / "p", shape),
                             LoaderConfig(patch_size=patch, batch_size=1, jitter=0.0), dims=3, seed=0)
    module.setup("fit")
    flipped = []
    for _ in range(4):
        for batch in module.train_dataloader():
            mr, ramps = batch["mr"][0, 0].numpy(), batch["position"][0].numpy()
            assert mr.shape == tuple(patch) and ramps.shape == (3, *patch)
            assert (mr == BACKGROUND).any(), "the patch reaches into the padding"
            assert_ramps_of_volume(mr, ramps, shape)
            torch.testing.assert_close(batch["ct"], batch["mr"])
            flipped.append(bool(ramps[1, 0, 1, 0] < ramps[1, 0, 0, 0]))
    assert any(flipped) and not all(flipped), "anterior-posterior flips turn the patch and its ramps together"
    (val,) = list(module.val_dataloader())
    assert_ramps_of_volume(val["mr"][0, 0].numpy(), val["position"][0].numpy(), shape)


def test_inference_windows_see_the_crop_of_the_volume_ramps_in_training_orientation():
    method = tiny_method("ddim_image_3d", "model.net.dim_mults=[1,2]")  # stride 2
    shape = (11, 13, 5)  # inferior-superior shorter than the window: the canvas pads it
    seen = []
    method.ema.module.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().numpy()))
    mr = torch.from_numpy(voxel_code(shape))[None, None]
    with torch.no_grad():
        method.translate(mr, InferenceConfig(t=2, window=[6, 8, 8], overlap=0.25, batch_size=3),
                         torch.Generator().manual_seed(0))
    windows = [window for call in seen for window in call]
    assert len(windows) == 2 * 3 * 2 * 1, "2 steps x (3 x 2 x 1) windows"  # Z: 5 voxels, one window of 6
    for window in windows:  # channels: x_t, MR, three ramps
        assert window.shape == (5, 6, 8, 6)
        assert_ramps_of_volume(window[1], window[2:], shape)
        for k in range(3):  # in training orientation: ramp k rises along array axis k
            assert np.all(np.diff(window[2 + k], axis=k) > 0)


# ------------------------------------------------------------------------------------------------ no seams
class PointwiseDenoiser(nn.Module):
    """A translation-equivariant toy denoiser with no borders: a function of each voxel's [x_t, MR, ramps]."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        mix = 0.5 * x[:, :1] + 0.8 * x[:, 1:2] + 0.3 * x[:, 2:3] - 0.2 * x[:, 3:4] + 0.1 * x[:, 4:5]
        return torch.tanh(mix) * (1 + t.view(-1, 1, 1, 1, 1) / 1000)


def test_one_window_and_eight_overlapping_windows_are_one_trajectory():
    method = tiny_method("ddim_image_3d", "model.net.dim_mults=[1,2]")
    method.ema.module = PointwiseDenoiser()
    calls = []
    method.ema.module.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    mr = torch.rand((1, 1, 12, 14, 10), generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = InferenceConfig(t=3, eta=1.0, batch_size=1, overlap=0.5)
    with torch.no_grad():
        whole = method.translate(mr, replace(settings, window=[12, 14, 10]), torch.Generator().manual_seed(7))
        assert calls == [1] * 3
        calls.clear()
        tiled = method.translate(mr, replace(settings, window=[8, 10, 8]), torch.Generator().manual_seed(7))
    assert len(calls) == 3 * 8, "eight windows per step"
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


class ConvGenerator(nn.Module):
    """A toy convolutional generator on [MR, ramps]: translation equivariant but zero-padded at its borders."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.Tanh(), nn.Conv3d(8, 1, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def steps(out: Tensor, planes) -> float:
    """The largest step along axis 0 onto any of ``planes``: the change from plane p - 1 to p beyond the mean of
    its neighbouring changes (zero for a smooth output, the jump for a seam), inside the volume's faces."""
    x = out[0, 0][:, INNER, INNER]
    change = x[1:] - x[:-1]  # change[p - 1]: from plane p - 1 to plane p
    return max(float((change[p - 1] - 0.5 * (change[p - 2] + change[p])).abs().max()) for p in planes)


INNER = slice(3, 21)  # near the faces, MONAI's importance map floors the 3D weight product at 1e-3, which lets
# windows whose own borders lie there mix in; the check stays inside


def test_blended_windows_leave_no_step_at_their_borders_where_a_hard_seam_does():
    method = tiny_method("pix2pix_3d", "model.net.dim_mults=[1,2]")
    method.generator = ConvGenerator().eval()
    grid = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")
    mr = (0.5 * torch.sin(grid[0] / 4) * torch.cos(grid[1] / 5) + 0.2 * torch.sin(grid[2] / 6))[None, None]
    settings = InferenceConfig(window=12, overlap=0.5, batch_size=4)
    with torch.no_grad():
        whole = method.translate(mr, InferenceConfig(window=24))
        tiled = method.translate(mr, settings)
        # the reference code's split: two parts translated apart and put side by side
        cond = method.condition_canvas(mr, Windows(24))
        hard = torch.cat([method.generator(cond[:, :, :12]), method.generator(cond[:, :, 12:])], dim=2)
    origins = method.windows(settings, mr).origins((24, 24, 24))
    borders = sorted({edge for origin in origins for edge in (origin[0], origin[0] + 12)} - {0, 24})
    assert borders == [6, 12, 18]
    own = steps(whole, range(2, 23))  # the one-window output's own largest step: its features, no borders
    assert steps(tiled, borders) <= own
    assert steps(hard, [12]) > 10 * steps(tiled, borders), "the check sees a hard seam"
    inner = (slice(None), slice(None), INNER, INNER, INNER)
    assert float((tiled - whole)[inner].abs().max()) < 0.1 * float((hard - whole)[inner].abs().max())


# ------------------------------------------------------------------------------------------------ runs
def run_3d(tmp_path_factory, cache_dir, name: str, *overrides: str) -> Path:
    run_dir = tmp_path_factory.mktemp(name) / "run"
    cfg = compose_config([*TINY_3D, f"model={name}", *EXTRA[name], f"paths.cache_dir={cache_dir}",
                          f"paths.output_dir={run_dir}", *overrides])
    run_task(cfg, "train", train)
    return run_dir


@pytest.fixture(scope="module", params=[("pix2pix_3d", False), ("ddim_noise_3d", False), ("ddim_image_3d", True)],
                ids=["pix2pix_3d", "ddim_noise_3d", "ddim_image_3d-iso"])
def tiny_run(request, tmp_path_factory, cache_dir) -> tuple[str, bool, Path]:
    name, iso = request.param
    return name, iso, run_3d(tmp_path_factory, cache_dir, name, f"iso={str(iso).lower()}")


def test_tiny_3d_run_writes_results_and_native_grid_niftis_on_the_mr_header(tiny_run):
    name, iso, run_dir = tiny_run
    results = json.loads((run_dir / "results.json").read_text())
    card = method_card(name)
    assert results["status"] == "complete" and results["card"] == card.summary() and card.dims == 3
    assert results["summary"]["method"] == card.label and results["summary"]["dims"] == 3
    prepared = Path(results["prepared_dataset"])
    assert json.loads((prepared / MANIFEST).read_text())["spacing"] == 4.0
    block = results["datasets"]["phantom_t1w"]
    assert all(np.isfinite(v) for v in block["image_quality"]["aggregates"].values())
    assert 0.0 <= block["dice"]["aggregates"]["volume"] <= 1.0
    outputs = sorted((run_dir / "predictions" / "phantom_t1w").glob("*_sct.nii.gz"))
    assert outputs
    for output in outputs:
        subject = output.name.removesuffix("_sct.nii.gz")
        mr = nib.load(str(np.load(prepared / "test" / f"{subject}.npz")["mr_path"]))
        for suffix in ("_sct", "_sct_seg"):
            image = nib.load(str(output).replace("_sct.nii.gz", f"{suffix}.nii.gz"))
            assert image.shape == mr.shape
            np.testing.assert_allclose(image.affine, mr.affine, atol=1e-5)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert ("dice_iso" in block) == iso


def test_iso_run_writes_the_super_resolved_segmentation_on_the_ground_truth_grid(tiny_run):
    _, iso, run_dir = tiny_run
    if not iso:
        pytest.skip("iso outputs: the ddim_image_3d run")
    results = json.loads((run_dir / "results.json").read_text())
    prepared = Path(results["prepared_dataset"])
    aggregates = results["datasets"]["phantom_t1w"]["dice_iso"]["aggregates"]
    assert all(0.0 <= value <= 1.0 for value in aggregates.values()) and "posterior_volume" in aggregates
    for output in sorted((run_dir / "predictions" / "phantom_t1w").glob("*_sct_iso.nii.gz")):
        subject = output.name.removesuffix("_sct_iso.nii.gz")
        record = np.load(prepared / "test" / f"{subject}.npz")
        truth_shape, truth_affine = record["reference_iso_seg"].shape, record["reference_iso_affine"]
        np.testing.assert_allclose(nib.affines.voxel_sizes(truth_affine), 1.0, atol=1e-6)
        for suffix in ("_sct_iso", "_sct_seg_iso"):
            image = nib.load(str(output).replace("_sct_iso.nii.gz", f"{suffix}.nii.gz"))
            assert image.shape == truth_shape
            np.testing.assert_allclose(image.affine, truth_affine, atol=1e-5)


def test_report_shows_the_super_resolved_segmentation_next_to_the_native_one(tiny_run, tmp_path):
    _, iso, run_dir = tiny_run
    if not iso:
        pytest.skip("iso outputs: the ddim_image_3d run")
    out = tmp_path / "report"
    report = run_tables(compose_config([f"runs={run_dir}", f"out_dir={out}", "figure_subjects=2"], config_name="tables"))
    figure = out / "figures" / "isotropic_phantom_t1w.png"
    assert figure in report.figures and figure.stat().st_size > 10_000
    assert f"src='figures/{figure.name}'" in (out / "index.html").read_text()
    iso_dice = json.loads((run_dir / "results.json").read_text())["datasets"]["phantom_t1w"]["dice_iso"]["aggregates"]
    rows = list(csv.DictReader(io.StringIO((out / "table_isotropic_dice.csv").read_text())))
    assert len(rows) == 1 and rows[0]["runs"] == "1"
    for key in ("volume", "vertebra", "posterior_volume", "posterior_vertebra"):
        assert float(rows[0][f"phantom_t1w/{key}"]) == pytest.approx(iso_dice[key], rel=1e-12)


def test_isotropic_views_cut_the_middle_vertebra_and_the_spine_centre():
    truth = np.zeros((6, 8, 30), np.int16)
    truth[2:4, 2:6, 0:10], truth[2:4, 2:6, 10:20], truth[2:4, 2:6, 20:30] = 5, 6, 7  # middle vertebra 6: S 10..19
    labels = np.arange(truth.size).reshape(truth.shape)
    coronal, axial = isotropic_views(labels, truth)
    np.testing.assert_array_equal(coronal, np.rot90(labels[:, 4, :]))  # A centre of 2..5: 3.5 -> 4
    np.testing.assert_array_equal(axial, np.rot90(labels[:, :, 14]))  # S centre of 10..19: 14.5 -> 14
    assert coronal.shape == (30, 6) and axial.shape == (8, 6)  # superior / anterior up, left-right across


def test_a_3d_checkpoint_translates_sides_that_are_not_multiples_of_its_stride(tiny_run):
    name, _, run_dir = tiny_run
    method = load_method(name, run_dir / "checkpoints" / "last.ckpt").eval()
    assert method.stride == 4
    shape, padded = (13, 22, 19), (16, 24, 20)
    mr = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    with torch.no_grad():
        out = method.translate(torch.from_numpy(mr)[None, None], InferenceConfig(t=2), torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, *shape) and torch.isfinite(out).all()
    if name != "pix2pix_3d":
        return
    # Independent reference: pad centred with the background to the stride, ramps over the volume's indices,
    # one generator pass, the centre cut out.
    before = [(p - s) // 2 for s, p in zip(shape, padded)]
    canvas = np.pad(mr, [(b, p - s - b) for s, p, b in zip(shape, padded, before)], constant_values=BACKGROUND)
    index = np.stack(np.meshgrid(*[np.arange(p) - b for p, b in zip(padded, before)], indexing="ij"), axis=0)
    ramps = index / (np.asarray(shape) - 1)[:, None, None, None]
    cond = torch.from_numpy(np.concatenate([canvas[None], ramps]).astype(np.float32))[None]
    with torch.no_grad():
        expected = method.generator(cond)[(..., *[slice(b, b + s) for b, s in zip(before, shape)])]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
