"""Label schemes shared by the phantom, real data, registration, segmentation and Dice.

Vertebra ids follow VerSe: C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24.
Subregion ids follow the VerSe/BIDS spine toolbox: 50 vertebral body, 42 spinous process,
41 arch (pedicles and laminae), 43/44 left/right transverse process, 45..48 articular processes.

Other bones may share a vertebra label map: the sacrum (26, as in VerSe, where 25 is a lumbar L6 and 28 a
T13) and the ribs, 100 + k for the rib pair of thoracic vertebra Tk (101..112; left and right share the id).
They are not vertebrae: they carry no subregion ids, and Dice leaves them out, as the paper does.
"""

from __future__ import annotations

import numpy as np

VERTEBRA_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 6)},
}
VERTEBRA_IDS: dict[str, int] = {name: i for i, name in VERTEBRA_NAMES.items()}
VERTEBRA_LABELS: tuple[int, ...] = tuple(VERTEBRA_NAMES)  # C1..L5 = 1..24

SACRUM = 26
RIB_OFFSET = 100
RIB_LABELS: dict[int, str] = {RIB_OFFSET + k: f"rib {k}" for k in range(1, 13)}  # 101..112
NON_VERTEBRA_LABELS: frozenset[int] = frozenset({SACRUM, *RIB_LABELS})

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


def rib_label(vertebra_id: int) -> int:
    """Label of the rib pair of a thoracic vertebra (VerSe id 8..19 -> 101..112)."""
    if not VERTEBRA_IDS["T1"] <= vertebra_id <= VERTEBRA_IDS["T12"]:
        raise ValueError(f"vertebra {vertebra_id} carries no ribs (thoracic ids are 8..19)")
    return RIB_OFFSET + vertebra_id - VERTEBRA_IDS["T1"] + 1


def vertebra_mask(seg: np.ndarray) -> np.ndarray:
    """True where a label map holds a vertebra C1..L5 (not background, sacrum, ribs or other bones)."""
    seg = np.asarray(seg)
    return (seg >= VERTEBRA_LABELS[0]) & (seg <= VERTEBRA_LABELS[-1])
