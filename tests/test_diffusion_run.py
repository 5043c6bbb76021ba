"""Conditional diffusion end to end: a tiny ddim_image run, then inference sweeps from its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mr2ct.core.config import InferenceConfig
from mr2ct.evaluate import evaluate_checkpoint, evaluation_config
from mr2ct.inference.checkpoint import locate_checkpoint
from mr2ct.inference.volume import translate_volume
from mr2ct.methods.diffusion import DDIMImage
from mr2ct.pipeline.run import run_task
from tests.conftest import TINY_DDIM, compose_config, train_tiny


@pytest.fixture(scope="module")
def ddim_run(tmp_path_factory, cache_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("ddim") / "run", cache_dir, TINY_DDIM)


def evaluate(run: Path, out: Path, cache_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(
        [f"ckpt={run}", "logger=none", f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", *overrides],
        config_name="evaluate",
    )
    train_run, checkpoint = locate_checkpoint(cfg.ckpt)
    merged = evaluation_config(cfg, train_run)
    merged.ckpt_path = str(checkpoint)
    run_task(merged, "evaluate", evaluate_checkpoint)
    return json.loads((out / "results.json").read_text())


def test_ddim_image_run_completes_with_finite_metrics(ddim_run: Path):
    results = json.loads((ddim_run / "results.json").read_text())
    assert results["status"] == "complete" and results["summary"]["model"] == "ddim_image"
    for block in results["datasets"].values():
        assert all(np.isfinite(v) for v in block["image_quality"]["aggregates"].values())


def test_inference_sweep_over_t_from_one_checkpoint(ddim_run: Path, tmp_path: Path, cache_dir: Path):
    checkpoint = ddim_run / "checkpoints" / "last.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "mr2ct.evaluate", "-m", f"ckpt={ddim_run}", "inference.t=2,3", "logger=none",
        f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=t${inference.t}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}
    assert set(results) == {"t2", "t3"}
    for name, result in results.items():
        assert result["status"] == "complete" and result["job_type"] == "evaluate"
        assert result["summary"]["inference.t"] == int(name[1:])
        assert result["checkpoint"] == str(checkpoint.resolve())
    assert results["t2"]["datasets"] != results["t3"]["datasets"]
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing retrained or rewritten


def test_stochastic_sampling_is_seeded(ddim_run: Path):
    method = DDIMImage.load_from_checkpoint(ddim_run / "checkpoints" / "last.ckpt", weights_only=True)
    mr = np.linspace(-1, 1, 3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16)
    settings = InferenceConfig(t=3, eta=1.0)
    first, second, other = (translate_volume(method, mr, settings, crop_size=16, seed=s).mean for s in (3, 3, 4))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other).max() > 1e-4


def test_samples_give_an_uncertainty_map(ddim_run: Path, tmp_path: Path, cache_dir: Path):
    evaluate(ddim_run, tmp_path / "k", cache_dir, "inference.t=2", "inference.samples=2")
    std_maps = sorted((tmp_path / "k" / "predictions" / "phantom_t1w").glob("*_sct_std.nii.gz"))
    assert std_maps
    for std_map in std_maps:
        std = np.asarray(nib.load(str(std_map)).dataobj)
        mr = nib.load(str(std_map).replace("_sct_std.nii.gz", "_sct.nii.gz"))
        assert std.shape == mr.shape and std.min() >= 0 and std.max() > 0


def test_evaluate_iso_true_writes_and_scores_isotropic_outputs(ddim_run: Path, tmp_path: Path, cache_dir: Path):
    trained = json.loads((ddim_run / "results.json").read_text())
    assert "dice_iso" not in trained["datasets"]["phantom_t1w"]  # trained without iso
    results = evaluate(ddim_run, tmp_path / "iso", cache_dir, "inference.t=2", "iso=true")
    aggregates = results["datasets"]["phantom_t1w"]["dice_iso"]["aggregates"]
    assert all(0.0 <= value <= 1.0 for value in aggregates.values())
    predictions = tmp_path / "iso" / "predictions" / "phantom_t1w"
    assert sorted(predictions.glob("*_sct_seg_iso.nii.gz")) and sorted(predictions.glob("*_sct_iso.nii.gz"))
    scored = Path(results["prepared_dataset"])  # where the report finds the test records: the run's kept copy
    assert scored.name == Path(trained["prepared_dataset"]).name and sorted((scored / "test").glob("*.npz"))


def test_evaluate_scores_only_the_chosen_test_sets(ddim_run: Path, tmp_path: Path, cache_dir: Path):
    trained = json.loads((ddim_run / "results.json").read_text())
    assert list(trained["datasets"]) == ["phantom_t1w"]  # the T2w-like external sets: another contrast, not scored
    results = evaluate(ddim_run, tmp_path / "chosen", cache_dir, "test_sets=[phantom_external_corrected]")
    assert list(results["datasets"]) == ["phantom_t1w", "phantom_external_corrected"]
    corrected = results["datasets"]["phantom_external_corrected"]
    assert corrected["other_contrast"] and corrected["contrasts"] == ["t2w"]  # scored when named, and marked
    assert not results["datasets"]["phantom_t1w"]["other_contrast"]


def test_evaluate_rejects_an_unknown_test_set(ddim_run: Path, tmp_path: Path):
    cfg = compose_config([f"ckpt={ddim_run}", "test_sets=[phantom_externall]"], config_name="evaluate")
    with pytest.raises(ValueError, match=r"phantom_externall.*valid: \['phantom_external', 'phantom_external_corrected'\]"):
        evaluation_config(cfg, ddim_run)
