"""What a ``mr2ct.translate`` run has done, kept so that a killed or repeated run does only the rest.

Each translated input gets a provenance sidecar ``<name>_translate.json`` beside its outputs, moved in last
with them: it names the outputs and the fingerprint of what made them (the checkpoint's bytes, the settings,
the input file's size and modification time). An input whose sidecar matches the current fingerprint and
whose outputs all exist is done. The sidecar travels with the outputs, so this holds for every shard of a
cohort and for an output tree that was moved.

The run log is a JSON-lines file written as the run goes (one line per input, flushed to disk), so a killed
job still leaves a record of what it did; runs append to it, so it lists every input of every attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from mr2ct.core.runinfo import write_json
from mr2ct.inference.inputs import InputItem

SIDECAR_SUFFIX = "_translate.json"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: a checkpoint overwritten in place (a resumed training) counts as changed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_stamp(item: InputItem) -> list[list[Any]]:
    """Name, size and modification time of each file the input is read from: a replaced MR counts as new."""
    return [[path.name, stat.st_size, stat.st_mtime_ns]
            for path in item.source_files() for stat in [path.stat()]]


def fingerprint(checkpoint_sha256: str, settings: dict[str, Any], stamp: list[list[Any]]) -> str:
    """One digest of everything that decides an input's outputs."""
    content = {"checkpoint_sha256": checkpoint_sha256, "settings": settings, "source": stamp}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def sidecar_path(output: Path, item: InputItem) -> Path:
    return output / f"{item.relative}{SIDECAR_SUFFIX}"


def write_sidecar(path: Path, item: InputItem, digest: str, provenance: dict[str, Any], outputs: list[Path]) -> Path:
    """The sidecar of one input (outputs named relative to its folder, so the tree can move)."""
    return write_json({"source": str(item.source), "series_id": item.series_id, "fingerprint": digest,
                       **provenance, "outputs": [p.name for p in outputs]}, path)


def done_outputs(output: Path, item: InputItem, digest: str) -> list[Path] | None:
    """The outputs of ``item`` when a previous run made them with the same fingerprint and all still exist."""
    sidecar = sidecar_path(output, item)
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("fingerprint") != digest:
        return None
    paths = [sidecar.parent / name for name in recorded.get("outputs", [])]
    return paths if paths and all(p.is_file() for p in paths) else None


class RunLog:
    """A JSON-lines log appended one line per input and flushed to disk at once."""

    def __init__(self, path: Path):
        self.path = path
        self.run = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(path, "a") as handle:  # every run leaves a log, even with no file to do
            if handle.tell() and not path.read_bytes().endswith(b"\n"):
                handle.write("\n")  # a line cut short by a kill stays on its own line

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"run": self.run, **record}, default=str)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
