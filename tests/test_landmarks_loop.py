"""The loop of paper Fig. 1 (issue 18): MR landmarks derived from an MR-space segmentation, refused when
implausible, written by ``mr2ct.landmarks`` and derived while preparing data (``registration.landmarks_from``).

References are independent of the code under test: the phantom's exact landmarks (``landmark_noise_mm=0``:
centres of mass on its fine internal grid, before the thick MR slices) and hand-made box segmentations whose
centres are known by construction.
"""

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

from mr2ct.core.cache import COMPLETE_MARKER
from mr2ct.core.config import DataConfig, PhantomConfig, PreprocessConfig, RegistrationConfig
from mr2ct.core.io import Volume
from mr2ct.core.labels import ARCH, BODY, SPINOUS_PROCESS
from mr2ct.core.subjects import Subject, load_subjects, read_landmarks
from mr2ct.data.preprocess import DERIVED_LANDMARKS, REGISTRATION_REPORT, filled_in, prepare_dataset
from mr2ct.data.sources import subject_root
from mr2ct.inference.records import file_digest
from mr2ct.landmarks import derive_root
from mr2ct.phantom import generate_subject
from mr2ct.pipeline.landmarks import RunLandmarks
from mr2ct.registration import read_registration_report
from mr2ct.registration.derive import (
    DERIVATION_VERSION,
    DerivedLandmarks,
    checked_against_ct,
    derive_landmarks,
    landmark_errors_mm,
    write_if_plausible,
)
from mr2ct.report.refinement import refinement_report
from tests.conftest import TINY, compose_config, train_tiny

SLICE_MM = 3.0  # the phantom MR's slice thickness (L-R)


# --- derivation on the phantom's ground truth ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_subject():
    """A phantom subject whose mr_landmarks are its exact centres (no selection noise)."""
    return generate_subject(PhantomConfig(subjects=1, seed=0, landmark_noise_mm=0.0), 0)


def test_landmarks_from_the_ground_truth_mr_segmentation_match_the_exact_landmarks(exact_subject):
    exact = exact_subject.mr_landmarks
    derived = derive_landmarks(exact_subject.mr_seg, exact_subject.mr_subreg)
    assert derived.plausible, derived.problems
    assert set(derived.landmarks) == set(exact)  # the vertebrae; the sacrum in mr_seg is left out
    for vertebra, kinds in exact.items():
        assert derived.quality[vertebra]["largest_component_fraction"] == 1.0  # ground truth: one piece each
        body = derived.landmarks[vertebra]["body"]
        assert np.linalg.norm(body - kinds["body"]) < 0.5
        # the spinous process is a few 3 mm slices wide: within 0.5 mm in the sagittal plane, within half a
        # slice across it (measured: up to 0.64 mm L-R on this subject)
        spinous = derived.landmarks[vertebra]["spinous"] - kinds["spinous"]
        assert np.linalg.norm(spinous[1:]) < 0.5 and abs(spinous[0]) < SLICE_MM / 2

    labels_only = derive_landmarks(exact_subject.mr_seg)
    assert labels_only.plausible, labels_only.problems
    for vertebra, kinds in exact.items():
        for kind, point in kinds.items():  # labels only: the estimates of mr2ct.registration.refine
            assert np.linalg.norm(labels_only.landmarks[vertebra][kind] - point) < 1.5, (vertebra, kind)


# --- plausibility: hand-made segmentations -------------------------------------------------------------------

CENTRES_S = {20: 80.0, 21: 45.0, 22: 10.0, 23: -25.0, 24: -60.0}  # 35 mm per level, ids growing caudally


def box_spine(centres: dict[int, float] = CENTRES_S, spinous_in_front: int | None = None) -> tuple[Volume, Volume]:
    """Vertebrae as boxes on a 1 mm grid (RAS = index - origin): a body at A 0..19, an arch at A -30..-1 and a
    spinous process at A -45..-31 per vertebra, 20 mm tall around its S centre (arch 10 mm);
    ``spinous_in_front`` puts one vertebra's spinous process at A 20..34, in front of its body, instead."""
    origin = np.array([20.0, 60.0, 110.0])
    seg = np.zeros((40, 100, 220), dtype=np.int16)
    subreg = np.zeros_like(seg)

    def box(a_range, s_centre, vertebra, subregion, half_width=10, half_height=10):
        x = slice(20 - half_width, 20 + half_width)
        y = slice(int(a_range[0] + origin[1]), int(a_range[1] + origin[1]))
        z = slice(int(s_centre - half_height + origin[2]), int(s_centre + half_height + origin[2]))
        seg[x, y, z], subreg[x, y, z] = vertebra, subregion

    for vertebra, s_centre in centres.items():
        box((0, 20), s_centre, vertebra, BODY)
        box((-30, 0), s_centre, vertebra, ARCH, half_width=5, half_height=5)  # joins body and spinous process
        box((20, 35) if vertebra == spinous_in_front else (-45, -30), s_centre, vertebra, SPINOUS_PROCESS)
    affine = np.eye(4)
    affine[:3, 3] = -origin
    return Volume(seg, affine), Volume(subreg, affine)


def test_a_plausible_box_spine_is_written_with_its_provenance_and_quality(tmp_path):
    derived = derive_landmarks(*box_spine())
    assert derived.problems == []
    np.testing.assert_allclose(derived.landmarks[22]["body"], [-0.5, 9.5, 9.5])  # box centres (voxel centres)
    np.testing.assert_allclose(derived.landmarks[22]["spinous"], [-0.5, -38.0, 9.5])
    target = tmp_path / "mr_landmarks.json"
    assert write_if_plausible(derived, target, {"derived": True, "checkpoint": "x.ckpt"})
    payload = json.loads(target.read_text())
    assert payload["coordinate_system"] == "RAS" and payload["provenance"]["derived"] is True
    assert payload["provenance"]["quality"]["22"] == {"voxels": 20 * 20 * 20 + 10 * 30 * 10 + 20 * 15 * 20,
                                                      "largest_component_fraction": 1.0, "kept": True,
                                                      "spinous_kept": True}
    assert np.allclose(read_landmarks(target)[22]["body"], derived.landmarks[22]["body"])


def relabelled(volume: Volume, mapping: dict[int, int]) -> Volume:
    array = np.asarray(volume.array)
    out = array.copy()
    for old, new in mapping.items():
        out[array == old] = new
    return volume.with_array(out)


@pytest.mark.parametrize("case, reason", [
    ("two vertebrae", "too few vertebrae: 2"),
    ("ids reversed", "vertebra ids out of order: 21 lies at or above 20"),
    ("a level missing", "body spacing 20-21: 70.0 mm per level"),
    ("spinous in front", "vertebra 22: spinous centre -17.5 mm behind its body"),
])
def test_each_plausibility_check_refuses_a_bad_segmentation_with_its_reason_and_writes_nothing(tmp_path, case, reason):
    seg, subreg = box_spine(spinous_in_front=22 if case == "spinous in front" else None)
    if case == "two vertebrae":
        seg = relabelled(seg, {22: 0, 23: 0, 24: 0})
    elif case == "ids reversed":
        seg = relabelled(seg, {20: 24, 21: 23, 23: 21, 24: 20})
    elif case == "a level missing":  # L2 unlabelled and the ids below shifted up: L1 -> "L2" spans 70 mm
        seg = relabelled(seg, {21: 0, 22: 21, 23: 22, 24: 23})
    derived = derive_landmarks(seg, subreg)
    check = reason.split(":")[0].rsplit(" ", 1)[0] if case == "a level missing" else reason.split(":")[0]
    assert derived.problems and derived.problems[0].startswith(reason), derived.problems
    assert all(problem.startswith(check) for problem in derived.problems), derived.problems  # only this check fires
    target = tmp_path / "mr_landmarks.json"
    assert not write_if_plausible(derived, target, {"derived": True})
    assert list(tmp_path.iterdir()) == []


def test_stray_fragments_are_cut_and_reported_in_the_quality_figure():
    seg, subreg = box_spine()
    array = np.asarray(seg.array).copy()
    array[0:2, 0:10, 0:10] = 22  # a stray fragment of "L3" far from it (200 voxels)
    derived = derive_landmarks(seg.with_array(array), subreg)
    assert derived.plausible
    np.testing.assert_allclose(derived.landmarks[22]["body"], [-0.5, 9.5, 9.5])  # the fragment does not pull it
    assert derived.quality[22]["largest_component_fraction"] == pytest.approx(17000 / 17200)


def test_a_partial_vertebra_at_the_edge_is_left_out_and_said_so():
    """A sliver numbered as a vertebra of its own (FOV edge, debris) has centres that are not a whole vertebra's;
    it is left out, and the rest of the spine is still derived."""
    seg, subreg = box_spine()
    array, parts = np.asarray(seg.array).copy(), np.asarray(subreg.array).copy()
    array[15:25, 60:75, 205:215] = 19  # 1500 voxels above L1 (17000): a T12 cut by the field of view
    parts[15:25, 60:75, 205:215] = BODY
    derived = derive_landmarks(seg.with_array(array), subreg.with_array(parts))
    assert derived.plausible and sorted(derived.landmarks) == [20, 21, 22, 23, 24]
    assert derived.quality[19]["kept"] is False and derived.quality[20]["kept"] is True
    halved = np.where((array == 24) & (np.arange(220) < 52), 0, array)  # L5 cut by the FOV: 8 of its 20 mm left
    halved[array == 19] = 0
    assert 24 not in derive_landmarks(seg.with_array(halved), subreg).landmarks


def test_a_spinous_centre_too_close_to_its_body_is_left_out_and_the_body_kept():
    """A spinous process the synthetic CT missed leaves a "spinous" centre on the arch, 10-25 mm behind the body:
    too close for any adult vertebra, so only that landmark goes; the set stays plausible."""
    seg, subreg = box_spine()
    labels, parts = np.asarray(seg.array), np.asarray(subreg.array).copy()
    parts[(labels == 22) & (parts == SPINOUS_PROCESS)] = ARCH
    parts[:, 48:60][(labels[:, 48:60] == 22)] = SPINOUS_PROCESS  # A -12..-1: the front of the arch
    derived = derive_landmarks(seg, subreg.with_array(parts))
    assert derived.plausible, derived.problems
    assert "spinous" not in derived.landmarks[22] and "body" in derived.landmarks[22]
    assert derived.quality[22]["spinous_kept"] is False and derived.quality[21]["spinous_kept"] is True
    assert all("spinous" in derived.landmarks[v] for v in (20, 21, 23, 24))


def test_a_spinous_centre_whose_distance_to_its_body_differs_from_the_ct_is_left_out():
    """A vertebra is rigid: its body-spinous distance (47.5 mm in the box spine) is the CT's. Here the CT says
    47.5 + 2 mm for 21 (within 3 mm: kept), 47.5 - 10 mm for 22 (left out), and lacks 24 (left as it is)."""
    derived = derive_landmarks(*box_spine())
    body_to_spinous = np.array([0.0, -47.5, 0.0])
    ct = {v: {"body": np.array([5.0, 0.0, s]), "spinous": np.array([5.0, 0.0, s]) + body_to_spinous}
          for v, s in CENTRES_S.items() if v != 24}
    ct[21]["spinous"] = ct[21]["body"] + body_to_spinous * (49.5 / 47.5)
    ct[22]["spinous"] = ct[22]["body"] + body_to_spinous * (37.5 / 47.5)
    checked = checked_against_ct(derived, ct)
    assert "spinous" not in checked.landmarks[22] and "body" in checked.landmarks[22]
    assert all("spinous" in checked.landmarks[v] for v in (20, 21, 23, 24))
    assert checked.quality[22]["spinous_ct_difference_mm"] == pytest.approx(10.0)
    assert checked.quality[21]["spinous_ct_difference_mm"] == pytest.approx(-2.0)
    assert checked.quality[22]["spinous_kept"] is False and checked.quality[21]["spinous_kept"] is True
    assert "spinous_ct_difference_mm" not in checked.quality[24] and checked.plausible
    assert "spinous" in derived.landmarks[22]  # the input set is left as it was


def test_derived_landmarks_replace_the_own_ones_landmark_by_landmark():
    own = {20: {"body": np.zeros(3), "spinous": np.ones(3)}, 21: {"body": np.full(3, 2.0), "spinous": np.full(3, 3.0)}}
    derived = {21: {"body": np.full(3, 9.0)}, 22: {"body": np.full(3, 7.0), "spinous": np.full(3, 8.0)}}
    landmarks, added = filled_in(derived, own)
    assert added == 3 and list(landmarks) == [20, 21, 22]
    np.testing.assert_array_equal(landmarks[20]["spinous"], own[20]["spinous"])  # a vertebra the derived set lacks
    np.testing.assert_array_equal(landmarks[21]["body"], derived[21]["body"])  # derived wins where it has one
    np.testing.assert_array_equal(landmarks[21]["spinous"], own[21]["spinous"])  # its gap filled with the own
    assert derived == {21: {"body": derived[21]["body"]}, 22: derived[22]}  # the input set is left as it was


def test_a_fragment_numbered_as_a_vertebra_in_the_middle_is_refused(tmp_path):
    """The field of view cannot cut a vertebra between two others: a small one there is a fragment that took a
    number, and the numbers on one side are off by one."""
    seg, subreg = box_spine()
    array = np.asarray(seg.array).copy()
    array[(array == 22) & ((np.arange(220) < 119) | (np.arange(220) >= 120))] = 0  # 1 of its 20 mm left
    derived = derive_landmarks(seg.with_array(array), subreg)
    assert any(problem.startswith("vertebra 22:") and "fragment" in problem for problem in derived.problems)
    assert not write_if_plausible(derived, tmp_path / "mr_landmarks.json", {"derived": True})
    assert list(tmp_path.iterdir()) == []


# --- a subject root without landmarks: prepared with derived ones --------------------------------------------


class ExactSource:
    """A landmark source whose "segmentation" is the subject's MR-space ground truth (stands in for a perfect
    model), counting its calls."""

    identity = {"run_dir": "/runs/exact", "checkpoint": "/runs/exact/checkpoints/last.ckpt", "checkpoint_sha256": "0" * 64}
    provenance = {"derived": True, "checkpoint": "/runs/exact/checkpoints/last.ckpt"}

    def __init__(self):
        self.derived: list[str] = []

    def derive(self, subject: Subject) -> DerivedLandmarks:
        self.derived.append(subject.name)
        return derive_landmarks(subject.mr_seg, subject.mr_subreg)


@pytest.fixture(scope="module")
def phantom_root(cache_dir) -> Path:
    data = OmegaConf.structured(DataConfig(name="tiny", phantom=PhantomConfig(subjects=4, landmark_noise_mm=3.0)))
    return subject_root(data, cache_dir, progress=False)


def copy_root(source: Path, target: Path, keep_landmarks: tuple[str, ...] = ()) -> Path:
    """A copy of a subject root with mr_landmarks.json removed except for the subjects in ``keep_landmarks``."""
    shutil.copytree(source, target)
    for path in target.glob("*/mr_landmarks.json"):
        if path.parent.name not in keep_landmarks:
            path.unlink()
    return target


def test_without_landmarks_the_root_is_refused_unless_the_caller_derives_them(phantom_root, tmp_path):
    root = copy_root(phantom_root, tmp_path / "root")
    with pytest.raises(ValueError, match="mr_landmarks.json: missing"):
        load_subjects(root)
    assert all(subject.mr_landmarks == {} for subject in load_subjects(root, require_mr_landmarks=False))


@pytest.mark.parametrize("override", [False, True])
def test_prepare_derives_missing_landmarks_keyed_by_the_source_and_clicked_ones_win_unless_overridden(
        phantom_root, tmp_path, override):
    clicked = sorted(p.parent.name for p in phantom_root.glob("*/mr_landmarks.json"))[0]
    root = copy_root(phantom_root, tmp_path / "root", keep_landmarks=(clicked,))
    source = ExactSource()
    data = OmegaConf.structured(DataConfig(name="cohort", kind="nifti", root=str(root)))
    registration = OmegaConf.structured(RegistrationConfig(landmarks_from="/runs/exact", override_landmarks=override))
    entry = prepare_dataset(data, registration, PreprocessConfig(elastic_copies=0, spacing_inplane_mm=3.0), 2,
                            tmp_path / "cache", progress=False, landmark_source=source)

    key = json.loads((entry / COMPLETE_MARKER).read_text())
    assert key["registration"] == {"mode": "two_point", "landmarks_from": ExactSource.identity,
                                   "override_landmarks": override, "derivation": DERIVATION_VERSION}
    rows = {row["subject"]: row for row in read_registration_report(entry / REGISTRATION_REPORT)}
    expected_derived = sorted(rows) if override else sorted(set(rows) - {clicked})
    assert sorted(source.derived) == expected_derived
    assert rows[clicked]["landmarks"].startswith("derived" if override else "file")
    for name in expected_derived:
        assert rows[name]["landmarks"].startswith("derived")
        derived = read_landmarks(entry / DERIVED_LANDMARKS / f"{name}.json")
        # the used landmarks are the ground truth's centres: well under the 3 mm click noise of the file
        assert rows[name]["landmark_error_mm"] < 0.5
        assert set(derived) >= {20, 21, 22, 23, 24}
    if not override:  # the clicked (noisy) landmarks were used as they are
        assert rows[clicked]["landmark_error_mm"] > 2.0
    # a second preparation with the same source is the cached entry: nothing is derived again
    again = prepare_dataset(data, registration, PreprocessConfig(elastic_copies=0, spacing_inplane_mm=3.0), 2,
                            tmp_path / "cache", progress=False, landmark_source=source)
    assert again == entry and len(source.derived) == len(expected_derived)


# --- with a real smoke run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("smoke") / "run", cache_dir, [*TINY, "data.test_sets=[]"])


def exact_derive(self: RunLandmarks, subject: Subject) -> DerivedLandmarks:
    """A perfect model's result: the subject's ground-truth MR segmentation (a 2-step smoke model segments
    nothing usable, so the tests that need landmarks to succeed replace only this step)."""
    return derive_landmarks(subject.mr_seg, subject.mr_subreg)


def landmarks_cfg(run: Path, root: Path, *overrides: str):
    return compose_config([f"ckpt={run}", f"root={root}", "progress=false", *overrides], config_name="landmarks")


@pytest.fixture
def stand_in_run(tmp_path) -> Path:
    """A run dir with the smoke config and a checkpoint file that is never loaded (``derive`` is replaced),
    so the command's bookkeeping is tested without training."""
    run = tmp_path / "stand_in_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights that the replaced derive never reads")
    cfg = compose_config([*TINY, "logger=none", f"paths.cache_dir={tmp_path}", f"paths.output_dir={run}"])
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run


def test_landmarks_command_skips_subjects_with_landmarks_unless_overwrite(stand_in_run, phantom_root, tmp_path,
                                                                           monkeypatch, capsys):
    clicked = sorted(p.parent.name for p in phantom_root.glob("*/mr_landmarks.json"))[0]
    root = copy_root(phantom_root, tmp_path / "root", keep_landmarks=(clicked,))
    before = (root / clicked / "mr_landmarks.json").read_bytes()
    monkeypatch.setattr(RunLandmarks, "derive", exact_derive)

    log = derive_root(landmarks_cfg(stand_in_run, root, f"log={tmp_path / 'pass1.json'}"))
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert log["counts"] == {"ok": len(names) - 1, "skipped": 1, "failed": 0}
    assert (root / clicked / "mr_landmarks.json").read_bytes() == before  # the clicked file is untouched
    assert f"{len(names) - 1} of {len(names) - 1} succeeded, 1 skipped" in capsys.readouterr().out
    for name in set(names) - {clicked}:
        payload = json.loads((root / name / "mr_landmarks.json").read_text())
        provenance = payload["provenance"]
        assert payload["coordinate_system"] == "RAS" and provenance["derived"] is True
        assert provenance["checkpoint_sha256"] == file_digest(stand_in_run / "checkpoints" / "last.ckpt")
        assert provenance["segmenter"]["kind"] == "phantom_unet" and set(provenance["quality"]) >= {"20", "24"}
    assert json.loads((tmp_path / "pass1.json").read_text())["counts"]["ok"] == len(names) - 1

    again = derive_root(landmarks_cfg(stand_in_run, root))
    assert again["counts"] == {"ok": 0, "skipped": len(names), "failed": 0}
    forced = derive_root(landmarks_cfg(stand_in_run, root, "overwrite=true"))
    assert forced["counts"] == {"ok": len(names), "skipped": 0, "failed": 0}
    assert json.loads((root / clicked / "mr_landmarks.json").read_text())["provenance"]["derived"] is True
    # the noisy clicks were replaced by the ground truth's centres
    errors = landmark_errors_mm(read_landmarks(root / clicked / "mr_landmarks.json"), read_landmarks(phantom_root / clicked / "mr_landmarks.json"))
    assert np.median(errors) > 2.0


@pytest.mark.parametrize("argument, message", [
    ("root={tmp}/nowhere", "error: root={tmp}/nowhere: not a folder"),
    ("ckpt={tmp}/nowhere", "error: ckpt={tmp}/nowhere: no checkpoint at {tmp}/nowhere"),
])
def test_landmarks_command_refuses_a_bad_root_or_checkpoint_in_one_line(stand_in_run, tmp_path, argument, message):
    command = [sys.executable, "-m", "mr2ct.landmarks", f"ckpt={stand_in_run}", f"root={tmp_path}",
               argument.format(tmp=tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 1 and completed.stderr.count("\n") == 1, completed.stderr
    assert completed.stderr.startswith(message.format(tmp=tmp_path)), completed.stderr


@pytest.mark.slow
def test_landmarks_command_with_the_smoke_model_itself_writes_only_plausible_sets(smoke_run, phantom_root, tmp_path):
    """The real path (translate, segment, derive) end to end: each subject is written with its provenance or
    reported failed with a reason and left without a file."""
    root = copy_root(phantom_root, tmp_path / "root")
    log = derive_root(landmarks_cfg(smoke_run, root, "device=cpu"))
    assert log["counts"]["ok"] + log["counts"]["failed"] == len(log["subjects"]) and log["counts"]["skipped"] == 0
    for record in log["subjects"]:
        written = (root / record["subject"] / "mr_landmarks.json").exists()
        assert written == (record["status"] == "ok")
        assert record["status"] == "ok" or record["reason"]


@pytest.mark.slow
def test_a_root_without_mr_landmarks_trains_with_landmarks_from_a_smoke_run(smoke_run, phantom_root, tmp_path,
                                                                            cache_dir, monkeypatch):
    root = copy_root(phantom_root, tmp_path / "root")
    source = tmp_path / "source_run"  # a copy, deleted after training: evaluation must not need it
    shutil.copytree(smoke_run, source)
    monkeypatch.setattr(RunLandmarks, "derive", exact_derive)
    overrides = [o for o in TINY if not o.startswith(("data.", "data="))]
    run = train_tiny(tmp_path / "run", cache_dir, [*overrides, "data=nifti", f"data.root={root}",
                                                   f"registration.landmarks_from={source}"])
    results = json.loads((run / "results.json").read_text())
    identity = {"run_dir": str(source.resolve()), "checkpoint": str((source / "checkpoints" / "last.ckpt").resolve()),
                "checkpoint_sha256": file_digest(source / "checkpoints" / "last.ckpt")}
    prepared = Path(results["prepared_dataset"])
    key = json.loads((prepared / COMPLETE_MARKER).read_text())
    assert key["registration"] == {"mode": "two_point", "landmarks_from": identity, "override_landmarks": False,
                                   "derivation": DERIVATION_VERSION}
    registration = results["registration"]
    assert registration["landmarks_from"] == identity
    assert registration["derived_landmarks"] == len(registration["per_subject"]) > 0
    assert registration["median_landmark_error_mm"] < 0.5  # ground-truth centres, not 3 mm clicks
    assert sorted(p.stem for p in (prepared / DERIVED_LANDMARKS).glob("*.json")) == sorted(
        row["subject"] for row in registration["per_subject"])

    shutil.rmtree(source)  # the run keeps what keyed its test data: it evaluates without the deriving run
    evaluate = [sys.executable, "-m", "mr2ct.evaluate", f"ckpt={run}", "logger=none", "inference.t=2",
                f"hydra.run.dir={tmp_path / 'evaluation'}"]
    completed = subprocess.run(evaluate, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    evaluated = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    assert evaluated["datasets"]["nifti"]["dice"] == results["datasets"]["nifti"]["dice"]  # Pix2Pix: deterministic


# --- the loop's report --------------------------------------------------------------------------------------------


def test_refinement_report_reads_rounds_and_bootstrap_passes(tmp_path):
    for k, (landmark, true, dice) in enumerate([(4.8, 2.2, 0.40), (1.1, 0.9, 0.55)]):
        run = tmp_path / f"round{k}"
        run.mkdir()
        registration = {"median_landmark_error_mm": landmark, "median_true_error_mm": true, "median_tre_mm": 3.0,
                        "landmarks_from": {"run_dir": str(tmp_path / "round0")} if k else None,
                        "derived_landmarks": 5 * k}
        (run / "results.json").write_text(json.dumps({
            "summary": {"data": "phantom_t1w"}, "registration": registration,
            "datasets": {"phantom_t1w": {"dice": {"aggregates": {"posterior_volume": dice}}}}}))
    (tmp_path / "pass1.json").write_text(json.dumps({"run_dir": "t2w", "counts": {"ok": 13, "failed": 3, "skipped": 0}}))
    text, rows = refinement_report([str(tmp_path / "round0"), str(tmp_path / "round1")], [str(tmp_path / "pass1.json")])
    assert [(r["round"], r["landmarks_from"], r["derived"], r["median_landmark_error_mm"], r["posterior_dice"])
            for r in rows["rounds"]] == [(0, "files", 0, 4.8, 0.40), (1, "round0", 5, 1.1, 0.55)]
    assert rows["passes"] == [{"pass": 1, "checkpoint": "t2w", "ok": 13, "failed": 3, "skipped": 0}]
    assert "| 1 | round0 | 5 | 1.100 | 0.900 | 3.000 | 0.550 |" in text and "| 1 | t2w | 13 | 3 | 0 |" in text
    with pytest.raises(ValueError, match="runs=.*round9"):
        refinement_report([str(tmp_path / "round9")], [])
