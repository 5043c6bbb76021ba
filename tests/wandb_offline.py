"""Read offline W&B runs back as the real public API's ``Run`` objects, for tests without network.

``wandb.Api()`` cannot read an offline run (it only talks to a server), and wandb 0.31 no longer ships a
Python reader of its run files (``wandb sync`` is in the Go core). So this reads the offline run's own
transaction log (``run-<id>.wandb``: LevelDB log framing, each record a ``wandb_internal_pb2.Record``,
wandb's own protobuf) and builds a real ``wandb.apis.public.Run`` from what a server would return for it:
config, summary, state, job type, group, name and tags. What is real: the records wandb wrote, the
``Run`` class with its config handling and its ``HTTPSummary`` (nested values come back as
``SummarySubDict``, as from the server), and the table files wandb wrote. What is not: the server itself,
the state (``finished``/``failed`` from the exit record, as the server derives it) and ``Run.file``,
which reads the offline run's ``files/`` folder instead of downloading.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any, Iterator

from wandb.apis.public import Run
from wandb.proto import wandb_internal_pb2

HEADER = b":W&B"
HEADER_SIZE = 7  # ident, magic, version
BLOCK_SIZE = 32768
RECORD_HEADER_SIZE = 7  # crc32, length, chunk type
FULL, LAST = 1, 4


def records(log_file: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of a ``.wandb`` file, in order."""
    data = log_file.read_bytes()
    if data[:4] != HEADER:
        raise ValueError(f"{log_file} is not a W&B run log")
    position, pending = HEADER_SIZE, b""
    while position + RECORD_HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < RECORD_HEADER_SIZE:
            position += left_in_block
            continue
        _, length, chunk_type = struct.unpack("<IHB", data[position:position + RECORD_HEADER_SIZE])
        if length == 0 and chunk_type == 0:
            break
        position += RECORD_HEADER_SIZE
        pending += data[position:position + length]
        position += length
        if chunk_type in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


class OfflineRun(Run):
    """A public-API ``Run`` of an offline run folder; ``file`` copies from the folder's ``files/``."""

    def __init__(self, folder: Path):
        attrs: dict[str, Any] = {"config": {}, "summaryMetrics": {}, "state": "running"}
        project = None
        for record in records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                project, run_id = run.project, run.run_id
                attrs.update(displayName=run.display_name, group=run.run_group, jobType=run.job_type,
                             tags=list(run.tags))
                for item in run.config.update:
                    attrs["config"][item.key] = {"value": json.loads(item.value_json)}
            elif kind == "config":
                for item in record.config.update:
                    attrs["config"][item.key] = {"value": json.loads(item.value_json)}
            elif kind == "summary":
                for item in record.summary.update:
                    _set(attrs["summaryMetrics"], [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
            elif kind == "exit":
                attrs["state"] = "finished" if record.exit.exit_code == 0 else "failed"
        attrs["config"].pop("_wandb", None)
        self.folder = folder
        super().__init__(None, "offline", project, run_id, attrs=attrs, include_sweeps=False, lazy=False)

    def file(self, name: str) -> Any:
        source = self.folder / "files" / name

        class LocalFile:
            def download(self, root: str, replace: bool = False) -> Path:
                target = Path(root) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                return Path(shutil.copy(source, target))

        return LocalFile()


class OfflineApi:
    """``wandb.Api().runs(path, filters)`` over the offline runs under ``root`` (group filter only)."""

    def __init__(self, root: Path):
        self.runs_found = [OfflineRun(log.parent) for log in sorted(Path(root).rglob("offline-run-*/run-*.wandb"))]
        self.calls: list[tuple[str, dict]] = []

    def runs(self, path: str, filters: dict) -> list[OfflineRun]:
        self.calls.append((path, filters))
        return [run for run in self.runs_found if "group" not in filters or run.group == filters["group"]]
