"""End to end: tiny real runs of mr2ct.train (and evaluate) composed from the real configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mr2ct.evaluate import evaluate_checkpoint, evaluation_config
from mr2ct.inference.checkpoint import locate_checkpoint
from mr2ct.methods.pix2pix import Pix2Pix
from mr2ct.pipeline.run import run_task
from mr2ct.train import train
from tests.conftest import TINY, compose_config


def run_train(tmp_path: Path, cache_dir: Path, *overrides: str, name: str = "run") -> Path:
    run_dir = tmp_path / name
    cfg = compose_config([*TINY, f"paths.cache_dir={cache_dir}", f"paths.output_dir={run_dir}", *overrides])
    run_task(cfg, "train", train)
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir) -> Path:
    return run_train(tmp_path_factory.mktemp("train"), cache_dir, "logger=wandb")


def test_train_writes_a_complete_reproducible_record(tiny_run: Path):
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["status"] == "complete" and results["job_type"] == "train"
    assert results["summary"]["model"] == "pix2pix" and results["summary"]["registration"] == "two_point"
    assert results["card"] == Pix2Pix.card.summary() and results["summary"]["method"] == "Pix2Pix UNet"
    assert results["summary"]["dims"] == 2 and results["summary"]["paired"] is True
    block = results["datasets"]["phantom_t1w"]
    per_slice = block["image_quality"]["per_slice"]
    assert len(per_slice["psnr"]) == len(per_slice["subject"]) > 0
    for metric in ("l1", "mse", "psnr", "ssim", "vifp"):
        assert np.isfinite(per_slice[metric]).all()
        assert block["image_quality"]["aggregates"][metric] == pytest.approx(np.mean(per_slice[metric]))
        assert np.isfinite(block["baseline_mean_ct"]["aggregates"][metric])
    training = results["training"]  # trainer=smoke stops at 2 optimiser steps: one batch, as pix2pix makes 2 per batch
    assert training["batches"] == 1 and torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert training["seconds"] > 0 and training["batches_per_second"] == pytest.approx(1 / training["seconds"], rel=0.01)
    registration = results["registration"]
    assert len(registration["per_subject"]) == 4 and registration["median_tre_mm"] < 5.0
    meta = json.loads((tiny_run / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["packages"]["torch"] and "commit" in meta["git"]
    assert (tiny_run / "config_resolved.yaml").is_file()
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert set(results["datasets"]) == {"phantom_t1w"}  # the external sets are T2w-like: another contrast
    for dataset, block in results["datasets"].items():
        assert list((tiny_run / "figures" / dataset).glob("*.png"))
        for section in ("dice", "reference_ct_dice"):
            aggregates = block[section]["aggregates"]
            assert set(aggregates) == {"volume", "vertebra", "posterior_volume", "posterior_vertebra"}
            assert all(0.0 <= value <= 1.0 for value in aggregates.values())
            assert aggregates["volume"] == pytest.approx(np.mean(block[section]["per_volume"]["volume"]))


def test_synthetic_ct_lies_on_the_mr_header(tiny_run: Path):
    results = json.loads((tiny_run / "results.json").read_text())
    prepared = Path(results["prepared_dataset"])
    manifest = json.loads((prepared / "manifest.json").read_text())
    outputs = sorted((tiny_run / "predictions" / "phantom_t1w").glob("*_sct.nii.gz"))
    assert len(outputs) == len(manifest["subjects"]["test"]) > 0
    for output in outputs:
        subject = output.name.removesuffix("_sct.nii.gz")
        test = np.load(prepared / "test" / f"{subject}.npz")
        mr = nib.load(str(test["mr_path"]))
        sct = nib.load(str(output))
        assert sct.shape == mr.shape
        np.testing.assert_allclose(sct.affine, mr.affine, atol=1e-5)
        hu = np.asarray(sct.dataobj)
        assert np.isfinite(hu).all() and -1001 <= hu.min() and hu.max() <= 1001
        labels = nib.load(str(output).replace("_sct.nii.gz", "_sct_seg.nii.gz"))
        assert labels.shape == mr.shape and np.allclose(labels.affine, mr.affine, atol=1e-5)


def test_offline_wandb_run_is_written_and_closed(tiny_run: Path):
    offline_runs = list((tiny_run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb"))


def test_same_seed_same_numbers(tmp_path: Path, cache_dir: Path, tiny_run: Path):
    again = run_train(tmp_path, cache_dir, "logger=none")
    first = json.loads((tiny_run / "results.json").read_text())["datasets"]["phantom_t1w"]["image_quality"]
    second = json.loads((again / "results.json").read_text())["datasets"]["phantom_t1w"]["image_quality"]
    assert first["per_slice"] == second["per_slice"]


def test_resume_from_checkpoint_continues_training(tmp_path: Path, cache_dir: Path, tiny_run: Path):
    resumed = run_train(
        tmp_path, cache_dir, "logger=none", "trainer.max_steps=-1", "trainer.max_epochs=2",
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
    )
    first = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    second = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] > 0 and second["global_step"] > first["global_step"]
    trained = json.loads((resumed / "results.json").read_text())["training"]["batches"]  # its own batches only
    assert 2 * trained == second["global_step"] - first["global_step"]  # pix2pix: 2 optimiser steps per batch


def test_evaluate_reuses_the_checkpoint_without_training(tmp_path: Path, tiny_run: Path):
    cfg = compose_config(
        [f"ckpt={tiny_run}", "logger=none", f"paths.output_dir={tmp_path / 'eval'}", "inference.t=2"],
        config_name="evaluate",
    )
    train_run, checkpoint = locate_checkpoint(cfg.ckpt)
    merged = evaluation_config(cfg, train_run)
    merged.ckpt_path = str(checkpoint)
    run_task(merged, "evaluate", evaluate_checkpoint)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    trained = json.loads((tiny_run / "results.json").read_text())
    assert results["job_type"] == "evaluate" and results["source_run"] == str(tiny_run.resolve())
    assert results["summary"]["model"] == "pix2pix"
    # Pix2Pix is deterministic at inference: same checkpoint, same numbers.
    for name, block in trained["datasets"].items():
        assert results["datasets"][name]["image_quality"] == block["image_quality"]
        assert results["datasets"][name]["dice"] == block["dice"]


def test_multirun_records_a_failed_job_and_finishes_the_others(tmp_path: Path, cache_dir: Path):
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "mr2ct.train", "-m", "fail_on_purpose=false,true", "logger=none", *TINY,
        f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job${hydra.job.num}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep_dir.glob("job*/results.json")}
    assert statuses == {"job0": "complete", "job1": "failed"}
    failed = json.loads((sweep_dir / "job1" / "results.json").read_text())
    assert "fail_on_purpose" in failed["error"]
    # each job dir keeps its own log: the summary of the finished job, the traceback of the failed one
    assert "mr2ct run finished" in (sweep_dir / "job0" / "train.log").read_text()
    assert "fail_on_purpose=true" in (sweep_dir / "job1" / "train.log").read_text()
