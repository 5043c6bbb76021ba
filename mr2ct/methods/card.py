"""A method's card: what the rest of the suite needs to know about a method, declared once on its class.

Tables, evaluation, translation and the logs read the card instead of guessing from config keys: the label
in the paper's tables, paired or unpaired training data, 2D or 3D, which inference settings change its
output, how it covers an input larger than its window, and the typed schemas of its own settings
(``model.net``, ``model.loss``, ``model.extra``), checked when the method is built, before any data is
prepared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Mapping, NamedTuple, get_type_hints

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

SAMPLING_SETTINGS = ("sampler", "t", "eta", "w", "samples")
"""The inference settings that change a sampling method's output (``inference.<name>``)."""


@dataclass
class NoSettings:
    """The schema of a settings group a method does not have: any key in it is an error."""


@dataclass(frozen=True)
class Tiling:
    """How a method covers an input larger than its window, unless ``inference.window/overlap`` say otherwise."""

    window: int | None = None  # window side in voxels; None: the training crop (loader.crop_size)
    overlap: float = 0.25  # fraction of the window shared by neighbouring windows


class Settings(NamedTuple):
    net: Any
    loss: Any
    extra: Any


class SettingsError(ValueError):
    """A method's settings do not fit its schema (unknown key, wrong type or value out of range)."""


@dataclass(frozen=True)
class MethodCard:
    """What a method is. ``name`` is its config option (``model=<name>``); ``reads`` lists the inference
    settings (from :data:`SAMPLING_SETTINGS`) that change its output; the schemas type its own settings."""

    name: str
    label: str
    paired: bool
    dims: int
    reads: tuple[str, ...] = ()
    tiling: Tiling = field(default_factory=Tiling)
    net: type = NoSettings
    loss: type = NoSettings
    extra: type = NoSettings

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"method card {self.name}: dims must be 2 or 3, got {self.dims}")
        unknown = sorted(set(self.reads) - set(SAMPLING_SETTINGS))
        if unknown:
            raise ValueError(f"method card {self.name}: reads unknown inference settings {unknown}; valid: {SAMPLING_SETTINGS}")

    @property
    def samples(self) -> bool:
        """Whether the method draws samples (its output depends on the sampler settings and the seed)."""
        return bool(self.reads)

    def summary(self) -> dict[str, Any]:
        """The card as plain data, for results.json, the W&B config and the tables."""
        return {"name": self.name, "label": self.label, "paired": self.paired, "dims": self.dims,
                "reads": list(self.reads), "tiling": asdict(self.tiling)}

    def parse(self, model: Mapping[str, Any]) -> Settings:
        """``model.net``, ``model.loss`` and ``model.extra`` as instances of the card's schemas."""
        return Settings(*(parse_settings(schema, model.get(group) or {}, f"model.{group}")
                          for group, schema in (("net", self.net), ("loss", self.loss), ("extra", self.extra))))


def parse_settings(schema: type, values: Mapping[str, Any], where: str) -> Any:
    """``values`` as an instance of the (non-frozen) dataclass ``schema``: unknown keys (listing the valid ones), wrong
    types (OmegaConf's structured-config check) and out-of-range values (the schema's ``__post_init__``)
    raise :class:`SettingsError` naming the key."""
    check_keys(schema, values, where)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), dict(values)))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(getattr(error, "msg", error)).splitlines()[0]
        raise SettingsError(f"{where}{'.' + key if key else ''}: {message}") from None
    except ValueError as error:
        raise SettingsError(f"{where}: {error}") from None


def check_keys(schema: type, values: Mapping[str, Any], where: str) -> None:
    """Unknown keys of ``values`` (and of nested settings groups) fail with the valid keys listed."""
    names = [f.name for f in fields(schema)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    hints = get_type_hints(schema)
    for name, value in values.items():
        if is_dataclass(hints[name]) and isinstance(value, Mapping):
            check_keys(hints[name], value, f"{where}.{name}")
