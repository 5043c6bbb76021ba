"""Label schemes shared by the phantom, real data, registration, segmentation and Dice.

Vertebra ids follow VerSe: C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24.
Subregion ids follow the VerSe/BIDS spine toolbox: 50 vertebral body, 42 spinous process,
41 arch (pedicles and laminae), 43/44 left/right transverse process, 45..48 articular processes.
"""

from __future__ import annotations

VERTEBRA_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 6)},
}
VERTEBRA_IDS: dict[str, int] = {name: i for i, name in VERTEBRA_NAMES.items()}

REGIONS: dict[str, tuple[int, int]] = {
    "cervical": (VERTEBRA_IDS["C1"], VERTEBRA_IDS["C7"]),
    "thoracic": (VERTEBRA_IDS["T1"], VERTEBRA_IDS["T12"]),
    "lumbar": (VERTEBRA_IDS["L1"], VERTEBRA_IDS["L5"]),
    "whole": (VERTEBRA_IDS["C1"], VERTEBRA_IDS["L5"]),
}

BODY = 50
SPINOUS_PROCESS = 42
ARCH = 41
TRANSVERSE_LEFT = 43
TRANSVERSE_RIGHT = 44
ARTICULAR_SUPERIOR_LEFT = 45
ARTICULAR_SUPERIOR_RIGHT = 46
ARTICULAR_INFERIOR_LEFT = 47
ARTICULAR_INFERIOR_RIGHT = 48
SUBREGIONS: dict[int, str] = {
    BODY: "vertebral body",
    SPINOUS_PROCESS: "spinous process",
    ARCH: "arch (pedicles and laminae)",
    TRANSVERSE_LEFT: "transverse process left",
    TRANSVERSE_RIGHT: "transverse process right",
    ARTICULAR_SUPERIOR_LEFT: "superior articular process left",
    ARTICULAR_SUPERIOR_RIGHT: "superior articular process right",
    ARTICULAR_INFERIOR_LEFT: "inferior articular process left",
    ARTICULAR_INFERIOR_RIGHT: "inferior articular process right",
}
POSTERIOR_SUBREGIONS: frozenset[int] = frozenset(SUBREGIONS) - {BODY}

LANDMARK_KINDS: dict[str, int] = {"body": BODY, "spinous": SPINOUS_PROCESS}


def region_ids(region: str) -> list[int]:
    """The VerSe ids of a named region ('cervical', 'thoracic', 'lumbar', 'whole')."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; valid: {sorted(REGIONS)}")
    first, last = REGIONS[region]
    return list(range(first, last + 1))
