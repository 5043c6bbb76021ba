"""Devices: trainer=auto takes a GPU when present (bf16) and the CPU otherwise; GPU configurations stop at start
on a machine without one; DDP over 2 CPU processes (gloo) writes one run record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mr2ct.train import trainer_settings
from tests.conftest import compose_config


def test_auto_is_the_default_and_picks_precision_by_device(monkeypatch):
    cfg = compose_config([])
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.precision == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_settings(cfg)["precision"] == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer_settings(cfg)["precision"] == "bf16-mixed"
    assert trainer_settings(compose_config(["trainer=cpu"]))["precision"] == "32-true"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_paper_experiment_without_gpu_stops_at_start_in_one_line(tmp_path: Path):
    run_dir = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "mr2ct.train", "experiment=paper_pix2pix", "logger=none", f"hydra.run.dir={run_dir}",
         f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: trainer.accelerator=gpu")
    assert "experiment=paper_pix2pix" in lines[0] and "trainer=auto" in lines[0]
    assert not run_dir.exists() and not (tmp_path / "cache").exists()  # nothing prepared, no run dir left


@pytest.mark.parametrize("model", ["ddim_image", "syndiff"])
def test_ema_copy_holds_no_trainable_parameters(model: str):
    from mr2ct.pipeline.stages import build_method

    method = build_method(compose_config([f"model={model}"]))
    assert all(not p.requires_grad for p in method.ema.parameters())
    trained = {id(p) for group in _optimisers(method) for g in group.param_groups for p in g["params"]}
    assert trained and trained.isdisjoint(id(p) for p in method.ema.parameters())
    before = [p.clone() for p in method.ema.parameters()]
    source = method.net if model == "ddim_image" else method.diffusive["ct"]
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    method.ema.update_parameters(source)  # still an average of the trained network
    assert any(not torch.equal(a, b) for a, b in zip(before, method.ema.parameters()))


def _optimisers(method) -> list[torch.optim.Optimizer]:
    method.trainer = type("StubTrainer", (), {"max_epochs": 1})()
    configured = method.configure_optimizers()
    optimisers = configured[0] if isinstance(configured, tuple) else configured
    return optimisers if isinstance(optimisers, list) else [optimisers]


@pytest.mark.slow  # ~100 s on 2 cores with a cold cache: two processes of a tiny training, then evaluation
def test_two_process_cpu_ddp_writes_one_record_and_one_wandb_run(tmp_path: Path, cache_dir: Path):
    """trainer=ddp on 2 CPU processes (gloo): both train, rank 0 alone writes results.json and the W&B run."""
    from tests.conftest import TINY_DDIM

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mr2ct.train", *TINY_DDIM, "trainer=ddp", "trainer.accelerator=cpu",
               "trainer.devices=2", "trainer.precision=32-true", "trainer.max_steps=2", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "logger=wandb",
               f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                               env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    worker_log = (run_dir / "train_ddp_process_1.log").read_text()  # the second rank ran, in the same run dir
    assert "scoring" in (run_dir / "train.log").read_text() and "scoring" not in worker_log  # evaluated once
    assert [p.name for p in tmp_path.rglob("results.json")] == ["results.json"]
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["config"]["trainer"]["devices"] == 2
    assert results["datasets"]["phantom_t1w"]["image_quality"]["per_slice"]["psnr"]
