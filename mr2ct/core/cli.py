"""Command-line front door shared by the Hydra entry points: user errors in one line, misspelt keys get the
valid keys listed.

Hydra already lists the available options of a config group (``model=pix2pixx``) and OmegaConf lists an
enum's valid values; for a misspelt key (``inference.etaa=1``) Hydra only says the key is unknown. When
an entry point fails before its task starts, :func:`explain_unknown_keys` names the valid keys instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mr2ct.core.config import register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def config_groups_help(*groups: str) -> str:
    """``group: option, ...`` lines of the config groups an entry point accepts, for its ``--help`` page
    (``${mr2ct.config_groups:inference,segmenter}`` in its config): the options are the group's files."""
    return "\n".join(f"  {group}: {', '.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}"
                     for group in groups)


OmegaConf.register_new_resolver("mr2ct.config_groups", config_groups_help, replace=True)


def unknown_key_messages(overrides: list[str], config_name: str = "config") -> list[str]:
    """For each ``key=value`` override whose key the composed config lacks, a line listing valid keys."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        groups = [o for o in parsed if "." not in o.key_or_group and not o.is_add() and not o.is_delete()]
        choices = [f"{o.key_or_group}={_first_value(o)}" for o in groups if not o.key_or_group.startswith("hydra")]
        try:
            cfg = compose(config_name=config_name, overrides=choices)
        except Exception:  # a misspelt group option: Hydra's own message already lists the options
            return []
    messages = []
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra") or "." not in key:
            continue
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            parent = _deepest_existing_parent(cfg, key)
            node = OmegaConf.select(cfg, parent) if parent else cfg
            valid = sorted(node.keys()) if OmegaConf.is_dict(node) else []
            messages.append(f"unknown config key '{key}'; valid keys under '{parent or '<root>'}': {', '.join(map(str, valid))}")
    return messages


TRACEBACK_ENV = "HYDRA_FULL_ERROR"
TRACEBACK_REQUESTED = "MR2CT_USER_HYDRA_FULL_ERROR"  # what the user set, before hydra_entry sets HYDRA_FULL_ERROR


def wants_traceback() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(TRACEBACK_REQUESTED, os.environ.get(TRACEBACK_ENV, "0")) == "1"


# What a user can cause: a bad config value or key, a missing, unreadable or malformed file, a wrong checkpoint.
USER_ERRORS = (HydraException, OmegaConfBaseException, ValueError, OSError)


def hydra_entry(main: Callable[[], object], config_name: str = "config") -> None:
    """Run a ``@hydra.main`` function; a user error ends in one line naming the key or file and the problem,
    exit code 1 and no traceback (``HYDRA_FULL_ERROR=1`` shows it); misspelt keys get the valid keys listed."""
    show_traceback = wants_traceback()
    os.environ[TRACEBACK_ENV] = "1"  # Hydra re-raises instead of printing a traceback itself
    os.environ[TRACEBACK_REQUESTED] = "1" if show_traceback else "0"
    try:
        main()
    except Refused as refused:
        print(f"error: {refused.message}", file=sys.stderr)
        sys.exit(1)
    except USER_ERRORS as error:  # raised while Hydra composes the config, before the task starts
        if show_traceback:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        try:
            lines = unknown_key_messages([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")], config_name)
        except Exception:  # the explanation must never hide the error itself
            lines = []
        for line in lines:
            print(line, file=sys.stderr)
        sys.exit(1)


class Refused(SystemExit):
    """A user error inside a task, on its way to :func:`hydra_entry` (a SystemExit passes Hydra's job runner
    without its "Error executing job" report)."""

    def __init__(self, message: str):
        super().__init__(1)
        self.message = message


@contextmanager
def refuse_user_errors() -> Iterator[None]:
    """Wrap an entry point's task: a user error becomes one line (see :func:`hydra_entry`)."""
    try:
        yield
    except USER_ERRORS as error:
        if wants_traceback():
            raise
        discard_bare_run_dir()
        raise Refused(one_line(error)) from error


def discard_bare_run_dir() -> None:
    """Remove the job's run dir when it holds only what Hydra wrote at start (``.hydra/`` and the job log): a
    refused run leaves nothing that looks like a run. A dir with anything else (a failed train's results.json,
    a checkpoint) is a record and stays."""
    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    if run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= hydra_files:
        shutil.rmtree(run_dir)


def one_line(error: BaseException) -> str:
    """The message of ``error`` (and of the error it was raised from) on one line."""
    cause = error.__cause__ if isinstance(error, HydraException) and error.__cause__ is not None else None
    message = str(error).split("\nConfig search path:")[0]  # Hydra's list of search paths says nothing to a user
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip()) or type(error).__name__
    return text + (f" ({one_line(cause)})" if cause is not None and str(cause) not in text else "")


class _Missing:
    pass


_MISSING = _Missing()


def _first_value(override) -> str:
    value = override.value()
    if override.is_sweep_override():
        value = next(iter(override.sweep_string_iterator()))
    return str(value)


def _deepest_existing_parent(cfg: DictConfig, key: str) -> str:
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        if OmegaConf.select(cfg, parent, default=_MISSING) is not _MISSING:
            return parent
    return ""
