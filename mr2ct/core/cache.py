"""Content-addressed, atomic on-disk cache for expensive deterministic stages.

A stage's output lives in ``<cache_dir>/<kind>/<key>/`` where ``key`` hashes exactly the config that
determines it. The output is built in a temporary sibling folder and renamed into place only when
complete, so a killed run never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

COMPLETE_MARKER = "cache_config.json"
CACHE_ENV = "MR2CT_CACHE"


def default_cache_dir() -> str:
    """The user's cache folder for mr2ct, independent of the working directory: ``$MR2CT_CACHE`` if set,
    else ``$XDG_CACHE_HOME/mr2ct``, else ``~/.cache/mr2ct`` (absolute)."""
    if os.environ.get(CACHE_ENV):
        return str(Path(os.environ[CACHE_ENV]).expanduser().resolve())
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str((Path(base).expanduser() / "mr2ct").resolve())


def config_key(config: Any) -> str:
    """A short stable hash of a JSON-serialisable config (key order does not matter)."""
    payload = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def entry_path(kind: str, config: dict, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / kind / config_key(config)


def find_entry(kind: str, config: dict, cache_dir: str | Path) -> Path | None:
    """The complete entry for ``config`` in ``cache_dir`` if there is one; never builds."""
    entry = entry_path(kind, config, cache_dir)
    return entry if (entry / COMPLETE_MARKER).exists() else None


def cached(kind: str, config: dict, cache_dir: str | Path, build: Callable[[Path], None]) -> Path:
    """Return the cache entry for ``config``, building it with ``build(tmp_dir)`` if it is missing.

    ``build`` writes its files into the folder it is given; the folder becomes the entry only after
    ``build`` returns. If ``build`` raises, nothing is left behind.
    """
    entry = entry_path(kind, config, cache_dir)
    if (entry / COMPLETE_MARKER).exists():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / COMPLETE_MARKER).exists():  # lost a race to a concurrent builder: theirs is as good
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry
