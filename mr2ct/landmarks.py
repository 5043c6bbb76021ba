"""``python -m mr2ct.landmarks ckpt=RUN root=SUBJECT_ROOT``: MR landmarks derived by a trained run (paper Fig. 1).

For each subject of the root (those without ``mr_landmarks.json``; all with ``overwrite=true``) the run
translates the MR, its kept segmenter segments the synthetic CT on the MR grid, and the body and
spinous-process centres are written to ``<subject>/mr_landmarks.json`` (RAS mm) with their provenance, unless
they fail the plausibility checks of :mod:`mr2ct.registration.derive`; then the subject is reported with the
reason and nothing is written. See ``--help`` for the whole contract.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig
from tqdm.auto import tqdm

from mr2ct.core.cache import default_cache_dir
from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.runinfo import run_metadata, write_json
from mr2ct.core.subjects import load_subjects
from mr2ct.inference.checkpoint import Device
from mr2ct.pipeline.landmarks import RunLandmarks
from mr2ct.registration.derive import write_if_plausible

LANDMARKS_FILE = "mr_landmarks.json"


@dataclass
class LandmarksConfig:
    """mr2ct.landmarks: a trained run derives the MR landmarks of a subject root; see the module docstring."""

    defaults: list[Any] = field(default_factory=list)
    ckpt: str = MISSING  # a train run dir, or a .ckpt file inside one
    root: str = MISSING  # a subject root (manifest.csv + subject folders)
    overwrite: bool = False  # false: skip subjects that have mr_landmarks.json
    device: Device = Device.auto
    seed: int = 0
    cache_dir: Optional[str] = None  # None: the user's cache; only for a segmenter the run did not keep
    log: Optional[str] = None  # JSON file for the per-subject outcome and the counts
    progress: bool = True


ConfigStore.instance().store(name="landmarks_schema", node=LandmarksConfig)


def derive_root(cfg: DictConfig) -> dict[str, Any]:
    """Derive and write the landmarks of ``cfg.root``'s subjects; return the log (counts and per-subject
    records: status ok | skipped | failed, the reason of a failure, the quality of a success)."""
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"root={cfg.root}: not a folder (a subject root: manifest.csv + subject folders)")
    source = RunLandmarks(cfg.ckpt, cfg.cache_dir or default_cache_dir(), device=cfg.device.value, seed=cfg.seed)
    subjects = load_subjects(root, require_mr_landmarks=False)
    records = []
    for subject in tqdm(subjects, desc="landmarks", unit="subject", disable=not cfg.progress):
        target = subject.folder / LANDMARKS_FILE
        record: dict[str, Any] = {"subject": subject.name, "path": str(target)}
        if target.exists() and not cfg.overwrite:
            records.append({**record, "status": "skipped", "reason": f"has {LANDMARKS_FILE} (overwrite=true redoes it)"})
            continue
        try:
            derived = source.derive(subject)
        except (ValueError, RuntimeError, OSError) as error:  # one subject must not stop the others
            records.append({**record, "status": "failed", "reason": f"{type(error).__name__}: {error}"})
            tqdm.write(f"FAILED  {subject.name}: {records[-1]['reason']}")
            continue
        if write_if_plausible(derived, target, source.provenance):
            records.append({**record, "status": "ok", "vertebrae": sorted(derived.landmarks),
                            "quality": {str(v): q for v, q in sorted(derived.quality.items())}})
            tqdm.write(f"ok      {subject.name}: {len(derived.landmarks)} vertebrae -> {target}")
        else:
            records.append({**record, "status": "failed", "reason": "; ".join(derived.problems)})
            tqdm.write(f"FAILED  {subject.name}: {records[-1]['reason']}")
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "skipped", "failed")}
    log = {**source.provenance, "root": str(root), "overwrite": cfg.overwrite, "counts": counts,
           "subjects": records, "meta": run_metadata(cfg.seed)}
    if cfg.log is not None:
        write_json(log, Path(cfg.log).expanduser())
    attempted = counts["ok"] + counts["failed"]
    print(f"mr2ct landmarks: {counts['ok']} of {attempted} succeeded, {counts['skipped']} skipped "
          f"(already had {LANDMARKS_FILE}), in {root}" + (":" if counts["failed"] else ""))
    for record in records:
        if record["status"] == "failed":
            print(f"  {record['subject']}: {record['reason']}")
    return log


@hydra.main(version_base="1.3", config_path="conf", config_name="landmarks")
def main(cfg: DictConfig) -> None:
    with refuse_user_errors():
        log = derive_root(cfg)
    if log["counts"]["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    hydra_entry(main, config_name="landmarks")
