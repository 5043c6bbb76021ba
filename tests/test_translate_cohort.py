"""mr2ct.translate over a cohort: recursive discovery of subject-layout and BIDS trees with outputs mirroring
them, resuming a killed run, re-translating when the checkpoint or settings change, shards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mr2ct.inference.checkpoint import resolve_device
from mr2ct.inference.inputs import discover_inputs, in_shard, parse_shard
from mr2ct.translate import translate
from tests.conftest import TINY, compose_config, train_tiny


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny Pix2Pix run (one network pass per volume: the cheapest translation)."""
    return train_tiny(tmp_path_factory.mktemp("train") / "run", cache_dir, [*TINY, "data.test_sets=[]"])


@pytest.fixture(scope="module")
def small_mr(tiny_run: Path, tmp_path_factory) -> Path:
    """Eight mid-sagittal slices of a test subject's MR (its on-disk header kept): a cheap real input."""
    prepared = Path(json.loads((tiny_run / "results.json").read_text())["prepared_dataset"])
    manifest = json.loads((prepared / "manifest.json").read_text())
    subject = Path(manifest["subject_root"]) / manifest["subjects"]["test"][0]
    path = tmp_path_factory.mktemp("small") / "mr.nii.gz"
    nib.save(nib.load(str(subject / "mr.nii.gz")).slicer[15:23], str(path))
    return path


def place(source: Path, *targets: Path) -> None:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def run_translate(tiny_run: Path, source: Path | str, output: Path, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt={tiny_run}", f"input={source}", f"output={output}", "segment=false",
                          "progress=false", *overrides], config_name="translate")
    return translate(cfg)


def log_lines(output: Path, name: str = "translate_log.jsonl") -> list[dict]:
    return [json.loads(line) for line in (output / name).read_text().splitlines()]


def statuses(log: dict) -> dict[str, str]:
    return {record["input"]: record["status"] for record in log["files"]}


# --------------------------------------------------------------------------------------------- discovery
def test_subject_layout_tree_is_found_recursively_and_outputs_mirror_it(tiny_run, small_mr, tmp_path):
    root = tmp_path / "data"
    (root / "manifest.csv").parent.mkdir(parents=True)
    (root / "manifest.csv").write_text("subject,split\n")
    for site, subject in (("site_a", "sub-000"), ("site_b", "sub-001")):
        folder = root / site / subject
        place(small_mr, folder / "mr.nii.gz", folder / "ct.nii.gz", folder / "mr_seg.nii.gz", folder / "ct_seg.nii.gz")
    expected = ["site_a/sub-000/mr", "site_b/sub-001/mr"]
    assert [item.relative for item in discover_inputs(root)] == expected
    assert [item.relative for item in discover_inputs(f"{root}/**/mr.nii.gz")] == expected

    output = tmp_path / "sct"
    log = run_translate(tiny_run, root, output)
    assert statuses(log) == {name: "ok" for name in expected}
    reference = nib.load(str(small_mr))
    for name in expected:
        sct = nib.load(str(output / f"{name}_sct.nii.gz"))
        assert sct.shape == reference.shape and np.allclose(sct.affine, reference.affine, atol=1e-4)
        assert json.loads((output / f"{name}_translate.json").read_text())["source"] == str(root / f"{name}.nii.gz")
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.nii.gz")) == [
        f"{name}_sct.nii.gz" for name in expected]


def test_bids_tree_gives_its_anatomical_images_and_outputs_mirror_it(tiny_run, small_mr, tmp_path):
    root = tmp_path / "bids"
    anatomical = [root / "sub-01/anat/sub-01_T1w.nii.gz", root / "sub-01/anat/sub-01_T2w.nii.gz",
                  root / "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii"]
    others = [root / "sub-01/dwi/sub-01_dwi.nii.gz", root / "sub-01/anat/sub-01_label-spine_mask.nii.gz",
              root / "derivatives/mr2ct/sub-01/anat/sub-01_T2w.nii.gz"]
    place(small_mr, *anatomical[:2], *others)
    anatomical[2].parent.mkdir(parents=True)
    nib.save(nib.load(str(small_mr)), str(anatomical[2]))
    assert [item.relative for item in discover_inputs(root)] == [
        "sub-01/anat/sub-01_T1w", "sub-01/anat/sub-01_T2w", "sub-02/ses-1/anat/sub-02_ses-1_T2w"]

    output = root / "derivatives" / "sct"  # inside the input tree: never taken as input on a re-run
    log = run_translate(tiny_run, f"{root}/sub-*/anat/*_T2w.nii.gz", output)
    assert statuses(log) == {"sub-01/anat/sub-01_T2w": "ok"}
    assert (output / "sub-01/anat/sub-01_T2w_sct.nii.gz").is_file()
    assert [item.relative for item in discover_inputs(root, skip=output)] == [
        "sub-01/anat/sub-01_T1w", "sub-01/anat/sub-01_T2w", "sub-02/ses-1/anat/sub-02_ses-1_T2w"]


def test_plain_folders_globs_and_lists_name_inputs_by_their_relative_path(tmp_path):
    for name in ("a.nii.gz", "scans/b.nii", "scans/deep/c.nii.gz", ".hidden/d.nii.gz", "out/a_sct.nii.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [i.relative for i in discover_inputs(tmp_path, skip=tmp_path / "out")] == ["a", "scans/b", "scans/deep/c"]
    assert [i.relative for i in discover_inputs(f"{tmp_path}/scans/**/*.nii*")] == ["b", "deep/c"]

    listing = tmp_path / "scans" / "cohort.txt"
    listing.write_text(f"# two scans and one missing\nb.nii\n{tmp_path}/scans/deep/c.nii.gz\n\ndeep/missing.nii.gz\n")
    items = discover_inputs(listing)
    assert [(i.relative, i.source.exists()) for i in items] == [("b", True), ("deep/c", True), ("deep/missing", False)]
    (tmp_path / "table.csv").write_text("")
    with pytest.raises(ValueError, match="not a NIfTI file .* or a list"):
        discover_inputs(tmp_path / "table.csv")


def test_a_missing_listed_file_fails_alone_and_is_named(tiny_run, small_mr, tmp_path):
    place(small_mr, tmp_path / "scans" / "a.nii.gz")
    listing = tmp_path / "scans" / "cohort.txt"
    listing.write_text("a.nii.gz\nmissing.nii.gz\n")
    log = run_translate(tiny_run, listing, tmp_path / "out")
    assert statuses(log) == {"a": "ok", "missing": "failed"}
    failed = next(r for r in log["files"] if r["status"] == "failed")
    assert failed["error"] == "FileNotFoundError: No such file or directory" and failed["source"] == str(tmp_path / "scans" / "missing.nii.gz")


# --------------------------------------------------------------------------------------------- resume
KILL_ON_SECOND_WRITE = textwrap.dedent("""
    # mr2ct.translate that dies (SIGKILL: no cleanup, no finally) halfway through writing its second file
    import os, signal, sys
    import mr2ct.translate as entry

    original, calls = entry.write_layers, []

    def write_then_die(layers, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            original(layers[:1], *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(layers, *args, **kwargs)

    entry.write_layers = write_then_die
    entry.hydra_entry(entry.main, config_name="translate")
""")


def test_a_killed_run_resumed_translates_only_the_rest_and_its_log_lists_all(tiny_run, small_mr, tmp_path):
    inputs, output = tmp_path / "inputs", tmp_path / "out"
    place(small_mr, *(inputs / f"{name}.nii.gz" for name in "abc"))
    killer = tmp_path / "kill_on_second_write.py"
    killer.write_text(KILL_ON_SECOND_WRITE)
    arguments = [f"ckpt={tiny_run}", f"input={inputs}", f"output={output}", "segment=false", "progress=false"]

    killed = subprocess.run([sys.executable, str(killer), *arguments], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert [(r["input"], r["status"]) for r in log_lines(output)] == [("a", "ok")]
    assert sorted(p.name for p in output.iterdir() if not p.name.startswith(".")) == [
        "a_sct.nii.gz", "a_translate.json", "translate_log.jsonl"]
    assert [p.name.startswith(".tmp-b-") for p in output.iterdir() if p.name.startswith(".")] == [True]
    first = (output / "a_sct.nii.gz").stat().st_mtime_ns

    resumed = subprocess.run([sys.executable, "-m", "mr2ct.translate", *arguments], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 translated, 1 already done, 0 failed of 3 files" in resumed.stdout
    assert [(r["input"], r["status"]) for r in log_lines(output)] == [
        ("a", "ok"), ("a", "skipped"), ("b", "ok"), ("c", "ok")]
    assert (output / "a_sct.nii.gz").stat().st_mtime_ns == first
    assert not [p for p in output.iterdir() if p.name.startswith(".")]
    summary = json.loads((output / "translate_log.json").read_text())["summary"]
    assert summary == {"files": 3, "ok": 2, "skipped": 1, "failed": 0}


def test_changed_settings_checkpoint_or_input_translate_again(tiny_run, small_mr, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    source, output = tmp_path / "in" / "mr.nii.gz", tmp_path / "out"
    place(small_mr, source)

    def status(*overrides: str, ckpt: Path = run) -> str:
        return statuses(run_translate(ckpt, source, output, *overrides))["mr"]

    assert status() == "ok"
    assert status() == "skipped"
    assert status("inference.batch_size=3", "inference.t=7") == "skipped"  # speed only; Pix2Pix reads no t
    assert status("inference.overlap=0.5") == "ok"  # other windows, other output
    assert status("inference.overlap=0.5") == "skipped"
    assert status("inference.overlap=0.5", "overwrite=true") == "ok"

    checkpoint = run / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    weights = state["state_dict"]
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 0.01  # as a resumed training overwrites last.ckpt in place
    torch.save(state, checkpoint)
    assert status("inference.overlap=0.5") == "ok"
    assert status("inference.overlap=0.5") == "skipped"

    nib.save(nib.load(str(small_mr)).slicer[1:], str(source))  # a new scan under the same name
    assert status("inference.overlap=0.5") == "ok"
    assert nib.load(str(output / "mr_sct.nii.gz")).shape == nib.load(str(source)).shape


def test_a_set_cut_short_while_moving_in_is_not_done_for_any_settings(tmp_path, monkeypatch):
    """Re-translation (other settings) killed between two renames: the old sidecar must not vouch for the mix."""
    import mr2ct.translate as entry

    (tmp_path / "mr_sct.nii.gz").write_text("old")
    (tmp_path / "mr_seg.nii.gz").write_text("old")
    (tmp_path / "mr_translate.json").write_text('{"fingerprint": "old settings"}')

    def write(temp: Path) -> list[Path]:
        for name in ("mr_sct.nii.gz", "mr_seg.nii.gz"):
            (temp / name).write_text("new")
        return [temp / "mr_sct.nii.gz", temp / "mr_seg.nii.gz"]

    def finish(temp: Path, final: list[Path]) -> Path:
        (temp / "mr_translate.json").write_text('{"fingerprint": "new settings"}')
        return temp / "mr_translate.json"

    renames, replace = [], entry.os.replace

    def replace_then_die(source, target):
        if renames:
            raise KeyboardInterrupt  # the job is killed after the first rename
        renames.append(target)
        replace(source, target)

    monkeypatch.setattr(entry.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        entry.move_in_atomically("mr", tmp_path, write, finish)
    assert (tmp_path / "mr_sct.nii.gz").read_text() == "new" and (tmp_path / "mr_seg.nii.gz").read_text() == "old"
    assert not (tmp_path / "mr_translate.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------- shards
def test_shards_partition_the_inputs(tiny_run, small_mr, tmp_path):
    names = [f"sub-{k:03d}/mr" for k in range(40)]
    for name in names:
        (tmp_path / "ids" / name).parent.mkdir(parents=True)
        (tmp_path / "ids" / f"{name}.nii.gz").write_bytes(b"")
    items = discover_inputs(tmp_path / "ids")
    for count in (2, 3):
        shares = [[item.relative for item in in_shard(items, f"{index}/{count}")] for index in range(count)]
        assert sorted(sum(shares, [])) == names and all(shares)  # disjoint, complete, none empty
        assert shares == [[item.relative for item in in_shard(items[::-1], f"{i}/{count}")][::-1] for i in range(count)]
    for bad in ("2/2", "1/0", "a/b", "1"):
        with pytest.raises(ValueError, match=f"shard={bad}: expected i/n"):
            parse_shard(bad)

    inputs, output = tmp_path / "inputs", tmp_path / "out"
    place(small_mr, *(inputs / f"{name}.nii.gz" for name in "abc"))
    logs = [run_translate(tiny_run, inputs, output, f"shard={index}/2") for index in range(2)]
    done = [set(statuses(log)) for log in logs]
    assert done[0] | done[1] == {"a", "b", "c"} and not done[0] & done[1]
    assert all(set(statuses(log).values()) == {"ok"} for log in logs if log["files"])
    for index, log in enumerate(logs):
        assert {r["input"] for r in log_lines(output, f"translate_log.shard-{index}-of-2.jsonl")} == done[index]
    assert sorted(p.name for p in output.glob("*_sct.nii.gz")) == ["a_sct.nii.gz", "b_sct.nii.gz", "c_sct.nii.gz"]


# --------------------------------------------------------------------------------------------- command line
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_up_front():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="device=cuda: no CUDA GPU"):
        resolve_device("cuda")
