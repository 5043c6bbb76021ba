"""Procedural spine anatomy: sizes by level, a curved centreline, per-vertebra frames and soft-tissue profiles.

Everything here is in the *anatomy frame*, which is the MR's RAS world (mm): x left->right, y posterior->
anterior, z inferior->superior. Each vertebra has a local frame (origin at the body centre, local z along the
centreline tangent, local y anterior) in which its bony parts are simple primitives (see render.py). Soft
tissues are ellipses in the cross-section perpendicular to the centreline, with level-dependent sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mr2ct.core.labels import VERTEBRA_IDS, region_ids

# Half-sizes in mm at anchor levels (VerSe ids), interpolated linearly between anchors and clamped outside.
ANCHOR_IDS = np.array([2, 7, 8, 13, 19, 20, 24], dtype=float)
ANCHOR_TABLE: dict[str, list[float]] = {
    "body_rx": [8.5, 10.5, 12.5, 15.0, 19.5, 21.0, 25.0],  # body half-width (left-right)
    "body_ry": [7.5, 8.0, 9.5, 12.5, 14.5, 15.5, 17.0],  # body half-depth (antero-posterior)
    "body_hh": [6.5, 7.0, 8.0, 10.0, 12.0, 12.5, 13.0],  # body half-height
    "disc_h": [4.5, 5.0, 4.0, 4.5, 7.0, 9.0, 11.0],  # full height of the disc below the vertebra
    "canal_rx": [12.0, 11.5, 9.0, 7.5, 9.0, 10.5, 12.0],
    "canal_ry": [7.5, 7.0, 7.0, 7.5, 8.0, 8.5, 8.0],
    "pedicle_r": [2.8, 3.0, 3.5, 3.5, 4.0, 4.5, 5.0],
    "lamina_r": [2.4, 2.6, 2.8, 3.0, 3.3, 3.5, 3.8],
    "spinous_len": [18.0, 30.0, 32.0, 30.0, 26.0, 26.0, 22.0],
    "spinous_rx": [2.3, 2.5, 2.6, 2.6, 2.8, 3.0, 3.0],  # thin: half-thickness left-right
    "spinous_rz": [3.5, 4.0, 4.5, 6.0, 8.0, 9.0, 8.5],
    "spinous_drop": [3.0, 8.0, 10.0, 14.0, 6.0, 4.0, 3.0],  # how far caudal the tip lies
    "transverse_len": [24.0, 30.0, 34.0, 32.0, 28.0, 34.0, 42.0],  # tip distance from the midline
    "transverse_r": [2.5, 3.0, 4.0, 4.0, 3.5, 3.5, 4.5],
    "trunk_rx": [55.0, 65.0, 120.0, 140.0, 140.0, 145.0, 155.0],  # body outline half-width
    "muscle_margin": [8.0, 10.0, 10.0, 11.0, 13.0, 14.0, 15.0],  # muscle behind the spinous tip
}
# Sagittal curvature (rad/mm, positive = lordosis, i.e. concave posteriorly) for each region's levels.
CURVATURE = {"cervical": np.deg2rad(0.22), "thoracic": -np.deg2rad(0.13), "lumbar": np.deg2rad(0.22)}
CORD_END_ID = VERTEBRA_IDS["L1"]  # conus medullaris at L1/L2; the canal below holds only CSF (cauda equina)
FACET_GAP_MM = 3.0  # bone of neighbouring vertebrae stays at least this far apart in the MR pose
DISC_OVERLAP_MM = 2.5  # each vertebra's half of a disc reaches this far past the mid-disc plane (no cracks)
CENTRELINE_STEP_MM = 0.5
CENTRELINE_MARGIN_MM = 120.0  # centreline extends this far beyond the end vertebrae (soft tissue there)


@dataclass(frozen=True)
class VertebraShape:
    """Size of one vertebra (mm) plus its subject-specific variations."""

    vertebra_id: int
    body_rx: float
    body_ry: float
    body_hh: float
    canal_rx: float
    canal_ry: float
    pedicle_r: float
    lamina_r: float
    spinous_len: float
    spinous_rx: float
    spinous_rz: float
    spinous_drop: float
    transverse_len: float
    transverse_r: float
    wedge: float  # fraction of anterior body height lost to a compression fracture (0 = intact)
    cortical_mm: float

    @property
    def canal_y(self) -> float:
        """Local y of the canal centre (posterior of the body)."""
        return -(self.body_ry + self.canal_ry)

    @property
    def spinous_tip_y(self) -> float:
        return self.canal_y - self.canal_ry - 2.0 * self.lamina_r - self.spinous_len


@dataclass(frozen=True)
class Vertebra:
    """A vertebra placed in the anatomy frame.

    ``frame`` maps local coordinates to anatomy mm. ``planes`` holds two rows (n_x, n_y, n_z, d) in local
    coordinates: ``n . p + d`` is the signed distance beyond the mid-disc plane above (row 0) or below (row 1).
    ``disc_above`` / ``disc_below`` are disc keys (see ``Anatomy.discs``) or 0 where there is no disc.
    """

    shape: VertebraShape
    frame: np.ndarray
    planes: np.ndarray
    half_disc_above: float
    half_disc_below: float
    disc_above: int
    disc_below: int

    @property
    def vertebra_id(self) -> int:
        return self.shape.vertebra_id

    @property
    def centre(self) -> np.ndarray:
        return self.frame[:3, 3]


@dataclass(frozen=True)
class Centreline:
    """The spine's curve sampled every CENTRELINE_STEP_MM of arc length (increasing cranially).

    ``lateral`` and ``anterior`` complete the tangent to a right-handed frame (x, y, z) at each sample.
    ``params`` holds soft-tissue sizes per sample (name -> (M,) array).
    """

    s: np.ndarray
    points: np.ndarray
    tangent: np.ndarray
    lateral: np.ndarray
    anterior: np.ndarray
    params: dict[str, np.ndarray]


@dataclass(frozen=True)
class Anatomy:
    """One subject's spine in the anatomy (MR) frame."""

    region: str
    vertebrae: tuple[Vertebra, ...]
    discs: dict[int, float]  # disc key (id of the vertebra above it) -> degeneration in [0, 1]
    centreline: Centreline
    cord_end_s: float  # arc length of the conus; cord only above it

    def vertebra(self, vertebra_id: int) -> Vertebra:
        for vertebra in self.vertebrae:
            if vertebra.vertebra_id == vertebra_id:
                return vertebra
        raise KeyError(f"vertebra {vertebra_id} is not part of this {self.region} phantom")


def level_table(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Anchor sizes interpolated to the given vertebra ids."""
    return {name: np.interp(ids, ANCHOR_IDS, values) for name, values in ANCHOR_TABLE.items()}


def sample_anatomy(rng: np.random.Generator, region: str) -> Anatomy:
    """Draw a subject's spine: sizes, disc heights and degeneration, curvature, scoliosis, fractures."""
    ids = np.array(region_ids(region))
    # one virtual neighbour on each side, so every vertebra has discs and planes above and below
    all_ids = np.arange(max(ids[0] - 1, 1), min(ids[-1] + 1, 25) + 1)
    table = level_table(all_ids)
    scale = rng.uniform(0.92, 1.08)
    jitter = rng.normal(1.0, 0.03, size=len(all_ids))
    size = {name: values * scale * jitter for name, values in table.items()}
    n = len(all_ids)
    degeneration = np.where(rng.random(n) < 0.35, rng.uniform(0.4, 1.0, n), rng.uniform(0.0, 0.15, n))
    disc_h = size["disc_h"] * rng.uniform(0.85, 1.15, len(all_ids)) * (1.0 - 0.4 * degeneration)
    wedge = np.zeros(len(all_ids))
    if rng.random() < 0.3:
        wedge[rng.integers(0, len(all_ids))] = rng.uniform(0.2, 0.45)
    cortical = rng.uniform(1.2, 1.6)

    # arc length of each vertebra centre, caudal to cranial (ids decrease cranially)
    order = np.arange(len(all_ids))[::-1]
    centres_s = np.zeros(len(all_ids))
    for previous, current in zip(order[:-1], order[1:]):
        centres_s[current] = (centres_s[previous] + size["body_hh"][previous] + disc_h[current]
                              + size["body_hh"][current])
    fat_mm = rng.uniform(5.0, 20.0)
    centreline = _sample_centreline(rng, all_ids, centres_s, size, fat_mm)

    shapes = [
        VertebraShape(int(v), *(float(size[name][i]) for name in (
            "body_rx", "body_ry", "body_hh", "canal_rx", "canal_ry", "pedicle_r", "lamina_r", "spinous_len",
            "spinous_rx", "spinous_rz", "spinous_drop", "transverse_len", "transverse_r")),
            wedge=float(wedge[i]), cortical_mm=float(cortical))
        for i, v in enumerate(all_ids)
    ]
    vertebrae = []
    for i, shape in enumerate(shapes):
        if shape.vertebra_id not in ids:
            continue
        above = i - 1 if i > 0 else None  # cranial neighbour (smaller id)
        below = i + 1 if i + 1 < len(shapes) else None
        s_top = centres_s[i] + shape.body_hh + (disc_h[above] / 2 if above is not None else 3.0)
        s_bottom = centres_s[i] - shape.body_hh - (disc_h[i] / 2 if below is not None else 3.0)
        vertebrae.append(_place_vertebra(centreline, shape, centres_s[i], s_top, s_bottom,
                                         disc_above=int(all_ids[above]) if above is not None else 0,
                                         disc_below=int(shape.vertebra_id) if below is not None else 0))
    discs = {int(all_ids[i]): float(degeneration[i]) for i in range(len(all_ids))}
    conus = CORD_END_ID + 0.5
    cord_end = np.interp(conus, all_ids, centres_s) if all_ids[-1] >= conus else -np.inf
    return Anatomy(region, tuple(vertebrae), discs, centreline, float(cord_end))


def _sample_centreline(rng: np.random.Generator, ids: np.ndarray, centres_s: np.ndarray,
                       size: dict[str, np.ndarray], fat_mm: float) -> Centreline:
    """Integrate the tangent of a curve with level-wise sagittal curvature and a mild lateral (scoliotic) sway."""
    s_lo, s_hi = centres_s.min() - CENTRELINE_MARGIN_MM, centres_s.max() + CENTRELINE_MARGIN_MM
    s = np.arange(s_lo, s_hi + CENTRELINE_STEP_MM, CENTRELINE_STEP_MM)
    by_s = np.argsort(centres_s)
    level_at_s = np.interp(s, centres_s[by_s], ids[by_s].astype(float))
    region_gain = {name: rng.uniform(0.5, 1.2) for name in CURVATURE}
    kappa = np.array([CURVATURE[name] * region_gain[name] for name in map(_region_of, np.rint(level_at_s).astype(int))])
    sagittal = np.cumsum(kappa) * CENTRELINE_STEP_MM * -1.0  # lordosis: anterior tilt decreases cranially
    middle = np.argmin(np.abs(s - centres_s.mean()))
    sagittal += -sagittal[middle] + np.deg2rad(rng.uniform(-5.0, 5.0))
    length = centres_s.max() - centres_s.min() + 1.0
    sway_amplitude = rng.uniform(0.0, 6.0)
    sway = sway_amplitude * np.sin(np.pi * rng.choice([1.0, 1.5]) * (s - s_lo) / length + rng.uniform(0, 2 * np.pi))
    lateral_slope = np.gradient(sway, CENTRELINE_STEP_MM)
    tangent = np.stack([lateral_slope, np.sin(sagittal), np.cos(sagittal)], axis=1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    points = np.cumsum(tangent, axis=0) * CENTRELINE_STEP_MM
    points -= points[middle]
    lateral = np.array([1.0, 0.0, 0.0]) - tangent[:, :1] * tangent
    lateral /= np.linalg.norm(lateral, axis=1, keepdims=True)
    anterior = np.cross(tangent, lateral)
    return Centreline(s, points, tangent, lateral, anterior, _soft_params(s, centres_s, size, fat_mm))


def _region_of(vertebra_id: int) -> str:
    """The named region a vertebra belongs to (for its curvature)."""
    if vertebra_id <= VERTEBRA_IDS["C7"]:
        return "cervical"
    return "thoracic" if vertebra_id <= VERTEBRA_IDS["T12"] else "lumbar"


def _soft_params(s: np.ndarray, centres_s: np.ndarray, size: dict[str, np.ndarray],
                 fat_mm: float) -> dict[str, np.ndarray]:
    """Soft-tissue cross-section sizes (mm, in the perpendicular plane) along the centreline."""
    by_s = np.argsort(centres_s)

    def along(values: np.ndarray) -> np.ndarray:
        return np.interp(s, centres_s[by_s], values[by_s]).astype(np.float32)

    canal_w = -(size["body_ry"] + size["canal_ry"])
    tip_w = canal_w - size["canal_ry"] - 2 * size["lamina_r"] - size["spinous_len"]
    muscle_back = tip_w - size["muscle_margin"]
    muscle_front = canal_w + 0.3 * size["canal_ry"]
    psoas_r = np.clip((size["body_rx"] - 17.0) * 1.8, 0.0, None)  # psoas only beside large (lumbar) bodies
    return {
        "canal_w": along(canal_w),
        "canal_rx": along(size["canal_rx"]),
        "canal_ry": along(size["canal_ry"]),
        "sac_rx": along(0.8 * size["canal_rx"]),
        "sac_ry": along(0.7 * size["canal_ry"]),
        "sac_shift": along(0.25 * size["canal_ry"]),
        "cord_rx": along(np.clip(0.45 * size["canal_rx"], 3.0, 5.5)),
        "cord_ry": along(np.clip(0.45 * size["canal_ry"], 2.5, 4.0)),
        "muscle_w": along((muscle_back + muscle_front) / 2),
        "muscle_ry": along((muscle_front - muscle_back) / 2),
        "muscle_rx": along(size["transverse_len"] + 12.0),
        "psoas_u": along(size["body_rx"] + 0.6 * psoas_r),
        "psoas_r": along(psoas_r),
        "skin_w": along(muscle_back - fat_mm),  # posterior skin
        "fat_mm": along(np.full_like(canal_w, fat_mm)),
        "trunk_rx": along(size["trunk_rx"]),
        "trunk_ry": along(0.75 * size["trunk_rx"]),
    }


def _place_vertebra(centreline: Centreline, shape: VertebraShape, s_centre: float, s_top: float, s_bottom: float,
                    disc_above: int, disc_below: int) -> Vertebra:
    """Local frame at the centreline sample nearest ``s_centre`` and the mid-disc planes above and below."""
    frame = _frame_at(centreline, s_centre)
    to_local = np.linalg.inv(frame)
    planes = np.zeros((2, 4))
    for row, (s_plane, sign) in enumerate(((s_top, 1.0), (s_bottom, -1.0))):
        k = _sample_index(centreline, s_plane)
        normal_local = to_local[:3, :3] @ (sign * centreline.tangent[k])
        point_local = to_local[:3, :3] @ centreline.points[k] + to_local[:3, 3]
        planes[row, :3] = normal_local
        planes[row, 3] = -normal_local @ point_local
    return Vertebra(shape, frame, planes, half_disc_above=s_top - s_centre - shape.body_hh,
                    half_disc_below=s_centre - s_bottom - shape.body_hh,
                    disc_above=disc_above, disc_below=disc_below)


def _sample_index(centreline: Centreline, s_value: float) -> int:
    return int(np.clip(np.round((s_value - centreline.s[0]) / CENTRELINE_STEP_MM), 0, len(centreline.s) - 1))


def _frame_at(centreline: Centreline, s_value: float) -> np.ndarray:
    k = _sample_index(centreline, s_value)
    frame = np.eye(4)
    frame[:3, 0], frame[:3, 1], frame[:3, 2] = centreline.lateral[k], centreline.anterior[k], centreline.tangent[k]
    frame[:3, 3] = centreline.points[k]
    return frame
