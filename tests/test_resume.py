"""Kill and resume: a run killed mid-epoch and resumed with ckpt_path=last ends where a run never stopped
ends, in the same W&B run; a re-run sweep skips the jobs that finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mr2ct.pipeline.run import run_task
from mr2ct.train import train
from tests.conftest import TINY, TINY_DDIM, compose_config

# 2 epochs of 3 batches; last.ckpt every 2 steps, so step 4 is a checkpoint in the middle of epoch 2
TWO_EPOCHS = ["trainer.max_steps=-1", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
              "trainer.check_val_every_n_epoch=1", "trainer.checkpoint_every_n_steps=2", "logger=wandb"]
KILLED_AT_STEP = 5

KILL_SCRIPT = """
import os, signal, sys
import lightning as L
from lightning.pytorch.callbacks import Callback
from mr2ct.pipeline.run import run_task
from mr2ct.train import train
from tests.conftest import compose_config

class KillAtStep(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a node failure

original_init = L.Trainer.__init__
def init_with_kill(self, *args, callbacks=(), **kwargs):
    original_init(self, *args, callbacks=[*callbacks, KillAtStep()], **kwargs)
L.Trainer.__init__ = init_with_kill
run_task(compose_config(sys.argv[1:]), "train", train)
"""


def overrides(cache_dir: Path, run_dir: Path) -> list[str]:
    return [*TINY_DDIM, *TWO_EPOCHS, f"paths.cache_dir={cache_dir}", f"paths.output_dir={run_dir}"]


@pytest.mark.slow  # ~110 s on 2 cores: three tiny trainings (whole, killed, resumed)
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path: Path, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_task(compose_config(overrides(cache_dir, whole)), "train", train)

    script = textwrap.dedent(KILL_SCRIPT).format(step=KILLED_AT_STEP)
    own_wandb_service = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}  # as a real job
    completed = subprocess.run([sys.executable, "-c", script, *overrides(cache_dir, killed)], env=own_wandb_service,
                               capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert completed.returncode == -9, completed.stderr[-3000:]
    assert not (killed / "results.json").exists()
    interrupted = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["global_step"] == 4 and interrupted["epoch"] == 1  # saved mid-epoch

    run_task(compose_config([*overrides(cache_dir, killed), "ckpt_path=last"]), "train", train)
    expected = json.loads((whole / "results.json").read_text())["datasets"]["phantom_t1w"]
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["status"] == "complete"
    assert resumed["datasets"]["phantom_t1w"]["image_quality"] == expected["image_quality"]
    assert resumed["datasets"]["phantom_t1w"]["dice"] == expected["dice"]
    final = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    wandb_ids = {path.name.rsplit("-", 1)[-1] for path in (killed / "wandb").glob("offline-run-*")}
    assert len(list((killed / "wandb").glob("offline-run-*"))) == 2 and len(wandb_ids) == 1  # one run, continued


@pytest.mark.slow  # ~110 s on 2 cores: a 2-job sweep and its re-run
def test_rerun_sweep_skips_finished_jobs(tmp_path: Path, cache_dir: Path):
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "mr2ct.train", "-m", "seed=0,1", "logger=none", *TINY,
               f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep_dir / "1" / "results.json").unlink()  # job 1 as if killed before it finished
    stamps = {job: (sweep_dir / job / "results.json").stat().st_mtime_ns for job in ("0",)}
    again = subprocess.run([*command, "ckpt_path=last"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (sweep_dir / "0" / "results.json").stat().st_mtime_ns == stamps["0"]  # finished: skipped
    assert "already holds a completed run" in (sweep_dir / "0" / "train.log").read_text()
    rerun = json.loads((sweep_dir / "1" / "results.json").read_text())
    assert rerun["status"] == "complete" and rerun["config"]["ckpt_path"] == "last"
