"""A run dir is self-contained and independent of the working directory: a copy translates and evaluates from
another folder with an empty cache, without generating a phantom, preparing data or training the segmenter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from mr2ct.pipeline.run import make_paths_absolute, run_task
from mr2ct.train import train
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("portable") / "run"
    run_task(compose_config([*TINY, "logger=none", f"paths.cache_dir={cache_dir}", f"paths.output_dir={run_dir}"]),
             "train", train)
    return run_dir


def test_default_cache_is_the_users_cache_folder(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MR2CT_CACHE", str(tmp_path / "mine"))
    assert compose_config().paths.cache_dir == str(tmp_path / "mine")
    monkeypatch.delenv("MR2CT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compose_config().paths.cache_dir == str(tmp_path / "xdg" / "mr2ct")


def test_relative_paths_are_recorded_absolute(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["data=nifti", "data.root=subjects", "paths.cache_dir=c", "paths.output_dir=runs/a",
                          "ckpt_path=runs/a/last.ckpt", "+data.test_sets=[{name: ext, kind: nifti, root: ext}]"])
    make_paths_absolute(cfg)
    assert cfg.paths.cache_dir == str(tmp_path / "c") and cfg.paths.output_dir == str(tmp_path / "runs" / "a")
    assert cfg.ckpt_path == str(tmp_path / "runs" / "a" / "last.ckpt") and cfg.paths.root_dir == str(tmp_path)
    assert cfg.data.root == str(tmp_path / "subjects") and cfg.data.test_sets[-1].root == str(tmp_path / "ext")


def test_run_keeps_its_test_data_and_segmenter_with_paths_inside_the_run(tiny_run: Path):
    recorded = OmegaConf.load(tiny_run / "config_resolved.yaml")
    assert all(Path(recorded.paths[key]).is_absolute() for key in ("cache_dir", "output_dir", "root_dir"))
    kept = tiny_run / "kept"
    assert [p.name for p in kept.glob("segmenter/*/weights.pt")] == ["weights.pt"]
    records = list(kept.glob("test_data/*/test/*.npz"))
    assert records and not list(kept.glob("test_data/*/train/*"))
    for record in records:
        with np.load(record) as stored:
            mr_path = Path(str(stored["mr_path"]))
        assert not mr_path.is_absolute() and (record.parent.parent / mr_path).is_file()


def test_copied_run_translates_and_evaluates_from_elsewhere_with_an_empty_cache(tiny_run: Path, tmp_path: Path):
    copy = tmp_path / "other_machine" / "run"
    shutil.copytree(tiny_run, copy)
    workdir, empty_cache = tmp_path / "workdir", tmp_path / "empty_cache"
    workdir.mkdir()
    env = {**os.environ, "MR2CT_CACHE": str(empty_cache), "OMP_NUM_THREADS": "1"}
    mr = next(copy.glob("kept/test_data/*/mr/*.nii.gz"))

    translate = [sys.executable, "-m", "mr2ct.translate", f"ckpt={copy}", f"input={mr}", "output=sct", "progress=false"]
    completed = subprocess.run(translate, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert list((workdir / "sct").rglob("*_sct.nii.gz")) and list((workdir / "sct").rglob("*_seg.nii.gz"))

    evaluate = [sys.executable, "-m", "mr2ct.evaluate", f"ckpt={copy}", "logger=none", "inference.t=2",
                "hydra.run.dir=evaluation"]
    completed = subprocess.run(evaluate, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((workdir / "evaluation" / "results.json").read_text())
    trained = json.loads((tiny_run / "results.json").read_text())
    assert results["source_run"] == str(copy) and set(results["datasets"]) == set(trained["datasets"])
    for name, block in trained["datasets"].items():  # Pix2Pix is deterministic: the same numbers as training
        assert results["datasets"][name]["image_quality"] == block["image_quality"]
        assert results["datasets"][name]["dice"] == block["dice"]

    assert not empty_cache.exists() or not any(empty_cache.iterdir())  # no phantom, no preparation, no segmenter
    assert sorted(p.name for p in workdir.iterdir()) == ["evaluation", "sct"]


def test_report_of_a_copied_run_from_elsewhere_has_its_figures_and_names_any_it_cannot_make(tiny_run: Path, tmp_path: Path):
    """The figures come from the test data the run keeps, not from the cache path it recorded (which a copy on
    another machine, or a run made when that path was relative, does not have); a figure that cannot be made
    is named with what it lacked."""
    copy = tmp_path / "other_machine" / "run"
    shutil.copytree(tiny_run, copy)
    results = json.loads((copy / "results.json").read_text())
    results["prepared_dataset"] = str(tmp_path / "gone" / Path(results["prepared_dataset"]).name)
    (copy / "results.json").write_text(json.dumps(results))
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def tables(out: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mr2ct.tables", f"runs={copy}", f"out_dir={out}", "figure_subjects=1"]
        return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)

    completed = tables("report")
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = sorted(p.name for p in (workdir / "report" / "figures").glob("*.png"))
    assert figures == ["segmentation_phantom_t1w.png", "translation_phantom_t1w.png"], completed.stdout
    assert "figure not made" not in completed.stdout

    shutil.rmtree(copy / "kept" / "test_data")
    completed = tables("report_without_test_data")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not (workdir / "report_without_test_data" / "figures").exists()
    assert "figure not made: translation_phantom_t1w.png: test data not found" in completed.stdout
    assert str(copy / "kept" / "test_data") in completed.stdout
