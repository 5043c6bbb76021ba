"""Launchers: the version-controlled sweep files run their sweep without -m, and the submitit engine (the
optional 'slurm' extra) runs a sweep's jobs as separate processes (submitit_local, the submitit_slurm code path
without a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mr2ct.core.cli import CONF_DIR
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_file_runs_its_sweep_without_dash_m(tmp_path: Path):
    """All 12 jobs of the registration ablation start (each fails on purpose at once, so no training runs)."""
    sweep_dir = tmp_path / "sweep"
    completed = subprocess.run(
        [sys.executable, "-m", "mr2ct.train", "--config-dir", str(ROOT / "multirun_sweeps"),
         "--config-name", "registration_ablation", "fail_on_purpose=true", "logger=none",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    jobs = {(r["summary"]["model"], r["summary"]["registration"]) for r in records}
    assert len(records) == len(jobs) == 12 and all(r["status"] == "failed" for r in records)


def test_submitit_configs_set_only_keys_of_the_plugins_schema():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from omegaconf import OmegaConf

    for name, schema in (("submitit_slurm", SlurmQueueConf), ("submitit_local", LocalQueueConf)):
        ours = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / f"{name}.yaml")
        assert set(ours) <= set(OmegaConf.structured(schema)), f"{name}: keys the plugin does not know"
        assert ours._target_ == schema._target_
    slurm = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / "submitit_slurm.yaml")
    assert {"partition", "gpus_per_node", "timeout_min", "array_parallelism"} <= set(slurm)


@pytest.mark.slow  # about 3 min on 2 cores with a cold cache: two tiny trainings in parallel
def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path, cache_dir: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    completed = subprocess.run(
        [sys.executable, "-m", "mr2ct.train", "-m", "hydra/launcher=submitit_local", "seed=0,1", "logger=none",
         *TINY, f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}
    assert sorted(records) == ["0", "1"] and all(r["status"] == "complete" for r in records.values())
    assert {r["meta"]["seed"] for r in records.values()} == {0, 1}
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran through submitit
