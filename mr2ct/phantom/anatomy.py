"""Procedural spine anatomy: sizes by level, a curved centreline, the bones placed on it, pathology draws and
soft-tissue profiles.

Everything here is in the *anatomy frame*, the MR's RAS world (mm): x left->right, y posterior->anterior,
z inferior->superior. Each bone (vertebra, sacrum, rib pair) has a local frame (vertebrae: origin at the
body centre, local z along the centreline tangent, local y anterior) in which its parts are primitives
(shapes.py). Soft tissues are ellipses in the cross-section perpendicular to the centreline, with
level-dependent sizes and positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mr2ct.core import labels
from mr2ct.core.labels import VERTEBRA_IDS, region_ids
from mr2ct.phantom import shapes
from mr2ct.phantom.shapes import Capsule, Part, VertebralBody, VertebraShape
from mr2ct.phantom.texture import TILE_VOXELS, TextureTiles, sample_tiles
from mr2ct.phantom.tissues import Tissue

# Half-sizes in mm (angles in degrees) at anchor levels, interpolated linearly between anchors, clamped outside.
# Sources: vertebral dimensions after Panjabi et al. (Spine 1991, 1992), spinous slopes and bifid cervical
# processes from standard anatomy atlases (Gray's Anatomy, 42nd ed.).
ANCHOR_IDS = np.array([1, 2, 5, 7, 8, 11, 15, 19, 20, 22, 24], dtype=float)  # C1 C2 C5 C7 T1 T4 T8 T12 L1 L3 L5
ANCHOR_TABLE: dict[str, list[float]] = {
    "body_rx": [8.0, 8.5, 9.0, 10.5, 12.5, 13.5, 15.5, 19.5, 21.0, 23.0, 25.0],  # body half-width
    "body_ry": [7.0, 7.5, 7.5, 8.0, 9.5, 11.0, 13.0, 14.5, 15.5, 16.5, 17.0],  # body half-depth
    "body_hh": [5.0, 9.0, 6.5, 7.0, 8.0, 8.5, 10.0, 12.0, 12.5, 13.0, 13.0],  # body half-height (C1: ring)
    "disc_h": [2.0, 4.0, 5.0, 5.0, 4.0, 4.0, 5.0, 7.0, 9.0, 10.0, 11.0],  # full height of the disc below
    "canal_rx": [13.0, 12.5, 12.5, 11.5, 9.0, 8.0, 8.0, 9.0, 10.5, 11.5, 12.0],
    "canal_ry": [9.0, 8.0, 7.0, 7.0, 7.0, 7.5, 7.5, 8.0, 8.5, 8.5, 8.0],
    "pedicle_r": [3.0, 3.2, 2.6, 3.0, 3.5, 3.5, 3.7, 4.0, 4.5, 4.8, 5.5],
    "lamina_r": [3.0, 3.2, 2.4, 2.6, 2.8, 3.0, 3.0, 3.3, 3.5, 3.6, 3.8],
    "lamina_hh": [4.0, 7.0, 5.0, 5.5, 6.5, 7.5, 8.5, 9.5, 9.5, 9.5, 9.0],
    "spinous_len": [4.0, 22.0, 15.0, 30.0, 32.0, 34.0, 36.0, 26.0, 27.0, 27.0, 22.0],
    "spinous_rx": [3.5, 3.5, 2.4, 3.0, 2.8, 2.6, 2.6, 3.0, 3.0, 3.2, 3.3],  # half-thickness left-right
    "spinous_rz": [4.0, 5.5, 3.2, 4.0, 4.0, 3.8, 4.0, 7.5, 9.0, 10.0, 8.5],  # half-height: broad in the lumbar spine
    "spinous_slope_deg": [0.0, 12.0, 18.0, 22.0, 30.0, 50.0, 60.0, 15.0, 5.0, 0.0, -5.0],
    "bifid_mm": [0.0, 5.5, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # C2..C5 bifid, C6 partly, C7 single
    "transverse_len": [38.0, 26.0, 24.0, 30.0, 36.0, 34.0, 30.0, 24.0, 30.0, 40.0, 42.0],  # tip from the midline
    "transverse_r": [4.0, 3.0, 2.5, 3.2, 4.5, 4.5, 4.0, 3.5, 3.5, 3.5, 4.5],
    "transverse_back_deg": [0.0, -15.0, -20.0, 0.0, 25.0, 35.0, 35.0, 25.0, 5.0, 0.0, 0.0],
    "facet_turn_deg": [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 15.0, 40.0, 50.0, 45.0, 35.0],
    "facet_tilt_deg": [0.0, 35.0, 35.0, 30.0, 20.0, 15.0, 15.0, 5.0, 0.0, 0.0, 0.0],
    "trunk_rx": [50.0, 50.0, 55.0, 62.0, 120.0, 130.0, 140.0, 140.0, 145.0, 150.0, 155.0],  # body outline half-width
    "trunk_ry": [55.0, 55.0, 55.0, 58.0, 80.0, 95.0, 100.0, 100.0, 105.0, 110.0, 110.0],  # ... and half-depth
    "muscle_margin": [8.0, 8.0, 9.0, 10.0, 10.0, 10.0, 11.0, 13.0, 14.0, 14.0, 15.0],  # muscle behind the tip
    # soft tissue around the spine: vessel radii and directions (0 = straight ahead, 90 = to the side),
    # airway, lungs; after standard cross-sectional anatomy (e.g. Moeller & Reif, Pocket Atlas of CT/MRI)
    "aorta_r": [0.0, 0.0, 0.0, 0.0, 0.0, 12.0, 12.5, 12.0, 11.0, 10.0, 0.0],  # bifurcates at L4
    "aorta_angle": [0.0, 0.0, 0.0, 0.0, 45.0, 45.0, 45.0, 30.0, 20.0, 15.0, 15.0],  # to the patient's left
    "ivc_r": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 10.5, 11.0, 11.0],
    "carotid_r": [3.5, 3.5, 3.5, 3.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "jugular_r": [6.0, 6.0, 6.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "airway_r": [9.0, 9.0, 8.0, 8.0, 8.0, 7.5, 0.0, 0.0, 0.0, 0.0, 0.0],  # pharynx, larynx, trachea
    "prevertebral": [4.0, 4.0, 10.0, 12.0, 12.0, 14.0, 14.0, 14.0, 14.0, 14.0, 14.0],  # soft tissue before the airway
    "lung_scale": [0.0, 0.0, 0.0, 0.0, 0.6, 1.0, 1.0, 0.6, 0.0, 0.0, 0.0],
    "flavum_mm": [2.0, 2.0, 2.0, 2.0, 2.5, 2.5, 2.5, 3.0, 3.5, 3.5, 3.5],  # ligamentum flavum thickness
}
SHAPE_FIELDS = ("body_rx", "body_ry", "body_hh", "canal_rx", "canal_ry", "pedicle_r", "lamina_r", "lamina_hh",
                "spinous_len", "spinous_rx", "spinous_rz", "spinous_slope_deg", "bifid_mm", "transverse_len",
                "transverse_r", "transverse_back_deg", "facet_turn_deg", "facet_tilt_deg")
UNSCALED = {"spinous_slope_deg", "transverse_back_deg", "facet_turn_deg", "facet_tilt_deg", "aorta_angle",
            "lung_scale"}
# Sagittal curvature (rad/mm, positive = lordosis, i.e. concave posteriorly); the sacrum curves kyphotically.
CURVATURE = {"cervical": np.deg2rad(0.22), "thoracic": -np.deg2rad(0.13), "lumbar": np.deg2rad(0.22),
             "sacral": -np.deg2rad(0.5)}
SACRUM_POSITION_ID = 25  # the sacrum's first segment takes the place of the level after L5
SACRAL_SEGMENT_STEPS_MM = (24.0, 44.0, 60.0)  # S2..S4 centres below the S1 centre, along the centreline
CORD_END_ID = VERTEBRA_IDS["L1"]  # conus medullaris at L1/L2; the canal below holds only CSF (cauda equina)
PLANE_GAP_MM = 3.0  # clipped parts (bodies) of neighbours stay this far apart across the mid-disc plane
DISC_OVERLAP_MM = 2.5  # each vertebra's half of a disc reaches this far past the mid-disc plane (no cracks)
CENTRELINE_STEP_MM = 0.5
CENTRELINE_MARGIN_MM = 120.0  # centreline extends this far beyond the end vertebrae (soft tissue there)
BODY_WALL_SMOOTHING_MM = 15.0  # Gaussian sigma along the spine of skin, trunk and back-muscle profiles
FAR_PLANE = np.array([0.0, 0.0, -1.0, -1e4])  # a plane no bone reaches (sides without a neighbour)

# Pathology and variant rates: degeneration is common in older patients' lumbar spines; vacuum phenomenon
# in about half of severely degenerated discs (Resnick 1981), Modic changes at degenerated levels
# (Modic 1988), vertebral haemangiomas in about 10 % of spines (Barzin 2004); block vertebrae are rare.
DEGENERATION_RATE = 0.35
SEVERE_DEGENERATION = 0.6
VACUUM_RATE = 0.5
ANNULUS_CALCIFICATION_RATE = 0.3
MODIC_RATE = 0.5
HAEMANGIOMA_RATE = 0.07
FUSION_RATE = 0.12
FRACTURE_RATE = 0.3


@dataclass(frozen=True)
class Disc:
    """One intervertebral disc: degeneration in [0, 1] and what comes with it."""

    degeneration: float
    vacuum_mm: float = 0.0  # thickness of a central gas cleft (0: none)
    calcified: bool = False  # calcified spots in the annulus
    fused: bool = False  # bone bridges the level: no disc is drawn


@dataclass(frozen=True)
class Lesions:
    """Marrow changes inside a vertebral body (local frame)."""

    modic: tuple[int, int] = (0, 0)  # Modic type (0 none, 1 oedema, 2 fatty) below the upper / lower endplate
    modic_depth_mm: float = 0.0
    haemangioma: tuple[tuple[float, float, float], float] | None = None  # (centre, radius)


@dataclass(frozen=True)
class Bone:
    """A rigid bone placed in the anatomy frame.

    ``frame`` maps local coordinates to anatomy mm. ``planes`` holds two rows (n_x, n_y, n_z, d) in local
    coordinates: ``n . p + d`` is the signed distance beyond the mid-disc plane above (row 0) or below (row 1);
    clipped parts stay ``plane_gap`` behind them. ``disc_keys`` name the discs whose halves this bone draws
    (key = id of the vertebra above the disc; 0 = none) inside ``disc_section``. ``carvers`` lists
    (label, subregions): those parts of that bone, grown by the joint space (shapes.JOINT_SPACE_MM), are cut
    out of this one, so facet, atlanto-axial and rib joints keep a joint space. ``pose_id`` is the vertebra
    whose true motion moves the bone (0: the global transform only).
    """

    label: int
    pose_id: int
    frame: np.ndarray
    parts: tuple[Part, ...]
    planes: np.ndarray
    plane_gap: tuple[float, float]
    disc_keys: tuple[int, int]
    disc_section: VertebralBody | None
    carvers: tuple[tuple[int, frozenset[int]], ...]
    cortical_mm: float
    texture_offset: np.ndarray
    shape: VertebraShape | None = None
    half_disc_above: float = 0.0
    half_disc_below: float = 0.0
    lesions: Lesions = field(default_factory=Lesions)
    holes: tuple[Capsule, ...] = ()
    soft_parts: tuple[tuple[Tissue, Capsule], ...] = ()

    @property
    def vertebra_id(self) -> int:
        return self.label

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
    vertebrae: tuple[Bone, ...]
    sacrum: Bone | None
    ribs: tuple[Bone, ...]
    discs: dict[int, Disc]  # disc key (id of the vertebra above it) -> state
    centreline: Centreline
    cord_end_s: float  # arc length of the conus; cord only above it
    texture: TextureTiles
    aortic_calcification: float  # fraction of the aortic wall that is calcified

    @property
    def bones(self) -> tuple[Bone, ...]:
        """Every bone in drawing order: vertebrae cranial to caudal, the sacrum, the ribs."""
        return self.vertebrae + ((self.sacrum,) if self.sacrum else ()) + self.ribs

    def bone(self, label: int) -> Bone:
        for bone in self.bones:
            if bone.label == label:
                return bone
        raise KeyError(f"bone {label} is not part of this {self.region} phantom")

    def vertebra(self, vertebra_id: int) -> Bone:
        if not labels.VERTEBRA_LABELS[0] <= vertebra_id <= labels.VERTEBRA_LABELS[-1]:
            raise KeyError(f"{vertebra_id} is not a vertebra id")
        return self.bone(vertebra_id)


def level_table(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Anchor sizes interpolated to the given vertebra ids."""
    return {name: np.interp(ids, ANCHOR_IDS, values) for name, values in ANCHOR_TABLE.items()}


def sample_anatomy(rng: np.random.Generator, region: str) -> Anatomy:
    """Draw a subject's spine: sizes, discs and their degeneration, curvature, scoliosis, fractures, fusion,
    marrow lesions, the sacrum and the ribs where the region has them, and the bone texture."""
    ids = np.array(region_ids(region))
    # one neighbour on each side, so every vertebra has discs and planes above and below
    all_ids = np.arange(max(ids[0] - 1, 1), min(ids[-1] + 1, SACRUM_POSITION_ID) + 1)
    n = len(all_ids)
    table = level_table(all_ids)
    scale = rng.uniform(0.92, 1.08)
    jitter = rng.normal(1.0, 0.03, size=n)
    size = {name: values if name in UNSCALED else values * scale * jitter for name, values in table.items()}
    discs, disc_h = _sample_discs(rng, all_ids, ids, size["disc_h"])
    wedge = np.zeros(n)
    if rng.random() < FRACTURE_RATE:
        wedge[rng.integers(0, n)] = rng.uniform(0.2, 0.45)
    cortical = rng.uniform(1.2, 1.6)

    # arc length of each vertebra centre, caudal to cranial (ids decrease cranially)
    centres_s = np.zeros(n)
    for below in range(n - 1, 0, -1):
        above = below - 1
        centres_s[above] = centres_s[below] + size["body_hh"][below] + disc_h[above] + size["body_hh"][above]
    fat_mm = rng.uniform(5.0, 20.0)
    centreline = _sample_centreline(rng, all_ids, centres_s, size, fat_mm)

    shapes_by_id = {}
    for i, v in enumerate(all_ids):
        key_above, key_below = int(all_ids[i - 1]) if i > 0 else 0, int(v)
        degeneration = [discs[k].degeneration if k in discs else 0.0 for k in (key_above, key_below)]
        shapes_by_id[int(v)] = VertebraShape(
            int(v), *(float(size[name][i]) for name in SHAPE_FIELDS), wedge=float(wedge[i]),
            cortical_mm=float(cortical), osteophyte=tuple(_osteophyte_mm(rng, d) for d in degeneration),
            fused=(key_above in discs and discs[key_above].fused, key_below in discs and discs[key_below].fused))
    vertebrae = []
    for i, v in enumerate(all_ids):
        if v not in ids:
            continue
        s_top = centres_s[i] + size["body_hh"][i] + (disc_h[i - 1] / 2 if i > 0 else 3.0)
        s_bottom = centres_s[i] - size["body_hh"][i] - disc_h[i] / 2
        vertebrae.append(_place_vertebra(rng, centreline, shapes_by_id[int(v)], centres_s[i], s_top, s_bottom,
                                         discs, first=v == ids[0]))
    sacrum = None
    if all_ids[-1] == SACRUM_POSITION_ID:
        s1 = centres_s[-1]
        sacrum = _place_sacrum(rng, centreline, shapes_by_id[VERTEBRA_IDS["L5"]], s1,
                               s1 + size["body_hh"][-1] + disc_h[-2] / 2, cortical)
    ribs = tuple(_place_ribs(rng, vertebra, ids) for vertebra in vertebrae
                 if VERTEBRA_IDS["T1"] <= vertebra.label <= VERTEBRA_IDS["T12"])
    conus = CORD_END_ID + 0.5
    cord_end = np.interp(conus, all_ids, centres_s) if all_ids[-1] >= conus else -np.inf
    centreline.params["cord_rx"][centreline.s < cord_end] = 0.0  # below the conus: cauda equina in CSF
    return Anatomy(region, tuple(vertebrae), sacrum, ribs, discs, centreline, float(cord_end), sample_tiles(rng),
                   aortic_calcification=float(rng.uniform(0.0, 0.25) if rng.random() < 0.5 else 0.0))


def _sample_discs(rng: np.random.Generator, all_ids: np.ndarray, ids: np.ndarray, nominal_h: np.ndarray):
    """Disc states keyed by the vertebra above, and the disc heights (mm) after degeneration and fusion."""
    n = len(all_ids)
    degeneration = np.where(rng.random(n) < DEGENERATION_RATE, rng.uniform(0.4, 1.0, n), rng.uniform(0.0, 0.15, n))
    disc_h = nominal_h * rng.uniform(0.85, 1.15, n) * (1.0 - 0.4 * degeneration)
    fusable = [i for i in range(n - 1) if all_ids[i] in ids and all_ids[i + 1] in ids and all_ids[i] > 1]
    fused_at = rng.choice(fusable) if fusable and rng.random() < FUSION_RATE else -1
    discs = {}
    for i, key in enumerate(all_ids[:-1] if all_ids[-1] == SACRUM_POSITION_ID else all_ids):
        if key == VERTEBRA_IDS["C1"]:
            continue  # C1/C2 is a joint, not a disc
        severe = degeneration[i] > SEVERE_DEGENERATION
        vacuum = rng.uniform(2.5, 4.0) if severe and rng.random() < VACUUM_RATE else 0.0
        if vacuum > 0.6 * disc_h[i]:
            vacuum = 0.0  # no room for a cleft in a thin (cervical) disc
        calcified = bool(degeneration[i] > 0.5 and rng.random() < ANNULUS_CALCIFICATION_RATE)
        discs[int(key)] = Disc(float(degeneration[i]), float(vacuum), calcified, fused=i == fused_at)
        if i == fused_at:
            disc_h[i] *= 0.5
    return discs, disc_h


def _osteophyte_mm(rng: np.random.Generator, degeneration: float) -> float:
    """Rim osteophytes next to a degenerated disc grow with its degeneration (0 below 0.4)."""
    return float(max(degeneration - 0.4, 0.0) * rng.uniform(2.0, 6.0))


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
    if vertebra_id <= VERTEBRA_IDS["T12"]:
        return "thoracic"
    return "lumbar" if vertebra_id <= VERTEBRA_IDS["L5"] else "sacral"


def _beside_body(size: dict[str, np.ndarray], radius: np.ndarray, angle_deg: np.ndarray, gap: float):
    """(u, w) of a tube of ``radius`` touching the body outline at ``angle_deg`` (0 ahead, 90 to the right)
    with ``gap`` mm of tissue in between."""
    angle = np.deg2rad(angle_deg)
    reach = 1.0 / np.sqrt((np.sin(angle) / size["body_rx"]) ** 2 + (np.cos(angle) / size["body_ry"]) ** 2)
    distance = reach + radius + gap
    return distance * np.sin(angle), distance * np.cos(angle)


def _soft_params(s: np.ndarray, centres_s: np.ndarray, size: dict[str, np.ndarray],
                 fat_mm: float) -> dict[str, np.ndarray]:
    """Soft-tissue cross-section sizes and positions (mm, in the perpendicular plane) along the centreline.

    The body wall (skin, trunk, back muscles) is smoothed along the spine: it does not follow the
    level-to-level steps of the spinous processes.
    """
    by_s = np.argsort(centres_s)

    def along(values: np.ndarray, smooth_mm: float = 0.0) -> np.ndarray:
        sampled = np.interp(s, centres_s[by_s], np.broadcast_to(values, centres_s.shape)[by_s])
        if smooth_mm > 0:
            sampled = ndimage.gaussian_filter1d(sampled, smooth_mm / CENTRELINE_STEP_MM, mode="nearest")
        return sampled.astype(np.float32)

    canal_w = -(size["body_ry"] + size["canal_ry"])
    tip_w = (canal_w - size["canal_ry"] - size["lamina_r"]
             - size["spinous_len"] * np.cos(np.deg2rad(size["spinous_slope_deg"])) - size["spinous_rx"])
    muscle_back = tip_w - size["muscle_margin"]
    muscle_front = canal_w + 0.3 * size["canal_ry"]
    psoas_r = np.clip((size["body_rx"] - 17.0) * 2.2, 0.0, None)  # psoas only beside large (lumbar) bodies
    aorta_u, aorta_w = _beside_body(size, size["aorta_r"], -size["aorta_angle"], 2.0)
    ivc_u, ivc_w = _beside_body(size, size["ivc_r"], np.full_like(canal_w, 35.0), 3.0)
    carotid_u, carotid_w = _beside_body(size, size["carotid_r"], np.full_like(canal_w, 60.0), 12.0)
    jugular_u, jugular_w = _beside_body(size, size["jugular_r"], np.full_like(canal_w, 75.0), 16.0)
    lung_ru, lung_rw = 45.0 * size["lung_scale"], 70.0 * size["lung_scale"]
    return {
        "canal_w": along(canal_w),
        "canal_rx": along(size["canal_rx"]),
        "canal_ry": along(size["canal_ry"]),
        "flavum_rx": along(size["canal_rx"] + size["flavum_mm"]),
        "flavum_ry": along(size["canal_ry"] + size["flavum_mm"]),
        "sac_rx": along(0.8 * size["canal_rx"]),
        "sac_ry": along(0.7 * size["canal_ry"]),
        "sac_w": along(canal_w + 0.25 * size["canal_ry"]),
        "cord_rx": along(np.clip(0.45 * size["canal_rx"], 3.0, 5.5)),
        "cord_ry": along(np.clip(0.45 * size["canal_ry"], 2.5, 4.0)),
        "muscle_w": along((muscle_back + muscle_front) / 2, BODY_WALL_SMOOTHING_MM),
        "muscle_ry": along((muscle_front - muscle_back) / 2, BODY_WALL_SMOOTHING_MM),
        "muscle_rx": along(size["transverse_len"] + 12.0),
        "psoas_u": along(size["body_rx"] + 0.6 * psoas_r),
        "psoas_r": along(psoas_r),
        "aorta_u": along(aorta_u), "aorta_w": along(aorta_w), "aorta_r": along(size["aorta_r"]),
        "ivc_u": along(ivc_u), "ivc_w": along(ivc_w), "ivc_r": along(size["ivc_r"]),
        "carotid_u": along(carotid_u), "carotid_w": along(carotid_w), "carotid_r": along(size["carotid_r"]),
        "jugular_u": along(jugular_u), "jugular_w": along(jugular_w), "jugular_r": along(size["jugular_r"]),
        "airway_w": along(size["body_ry"] + size["prevertebral"] + size["airway_r"]),
        "airway_r": along(size["airway_r"]),
        "lung_u": along(size["body_rx"] + 5.0 + lung_ru), "lung_w": along(canal_w - size["canal_ry"] + lung_rw),
        "lung_ru": along(lung_ru), "lung_rw": along(lung_rw),
        "skin_w": along(muscle_back - fat_mm, BODY_WALL_SMOOTHING_MM),  # posterior skin
        "zero": along(np.zeros_like(canal_w)),
        "trunk_w": along(muscle_back - fat_mm + size["trunk_ry"], BODY_WALL_SMOOTHING_MM),
        "trunk_rx": along(size["trunk_rx"], BODY_WALL_SMOOTHING_MM),
        "trunk_ry": along(size["trunk_ry"], BODY_WALL_SMOOTHING_MM),
        "inner_rx": along(size["trunk_rx"] - fat_mm, BODY_WALL_SMOOTHING_MM),
        "inner_ry": along(size["trunk_ry"] - fat_mm, BODY_WALL_SMOOTHING_MM),
    }


def _planes(centreline: Centreline, frame: np.ndarray, s_top: float, s_bottom: float | None) -> np.ndarray:
    """Mid-disc planes (local rows n, d) at arc lengths ``s_top`` and ``s_bottom`` (None: no plane below)."""
    to_local = np.linalg.inv(frame)
    planes = np.tile(FAR_PLANE, (2, 1))
    for row, (s_plane, sign) in enumerate(((s_top, 1.0), (s_bottom, -1.0))):
        if s_plane is None:
            continue
        k = _sample_index(centreline, s_plane)
        normal_local = to_local[:3, :3] @ (sign * centreline.tangent[k])
        point_local = to_local[:3, :3] @ centreline.points[k] + to_local[:3, 3]
        planes[row, :3] = normal_local
        planes[row, 3] = -normal_local @ point_local
    return planes


def _texture_offset(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, TILE_VOXELS, 3)


def _place_vertebra(rng: np.random.Generator, centreline: Centreline, shape: VertebraShape, s_centre: float,
                    s_top: float, s_bottom: float, discs: dict[int, Disc], first: bool) -> Bone:
    """A vertebra at the centreline sample nearest ``s_centre`` with its mid-disc planes, carvers and lesions."""
    frame = _frame_at(centreline, s_centre)
    v = shape.vertebra_id
    above, below = s_top - s_centre, s_bottom - s_centre
    key_above = v - 1 if (v - 1) in discs and not discs[v - 1].fused else 0
    key_below = v if v in discs and not discs[v].fused else 0
    carvers = ()
    if not first:
        subregions = labels.POSTERIOR_SUBREGIONS | ({labels.BODY} if v == VERTEBRA_IDS["C2"] else set())
        carvers = ((v - 1, frozenset(subregions)),)
    gaps = tuple(0.0 if fused else PLANE_GAP_MM / 2 for fused in shape.fused)
    holes = tuple(shapes.artery_foramina(shape, above, below))
    soft = tuple((Tissue.VESSEL, hole) for hole in holes)
    if v != VERTEBRA_IDS["C1"]:
        soft += tuple(shapes.nerve_roots(shape))
    section = shapes.body_part(shape).primitive if v != VERTEBRA_IDS["C1"] else None
    return Bone(v, v, frame, tuple(shapes.vertebra_parts(shape, above, below)),
                _planes(centreline, frame, s_top, s_bottom), gaps, (key_above, key_below), section, carvers,
                shape.cortical_mm, _texture_offset(rng), shape=shape, half_disc_above=above - shape.body_hh,
                half_disc_below=-below - shape.body_hh, lesions=_sample_lesions(rng, shape, discs),
                holes=holes, soft_parts=soft)


def _sample_lesions(rng: np.random.Generator, shape: VertebraShape, discs: dict[int, Disc]) -> Lesions:
    """Modic changes next to severely degenerated discs and the occasional haemangioma."""
    v = shape.vertebra_id
    modic = []
    for key in (v - 1, v):
        disc = discs.get(key)
        severe = disc is not None and not disc.fused and disc.degeneration > SEVERE_DEGENERATION
        modic.append(int(rng.choice([1, 2], p=[0.4, 0.6])) if severe and rng.random() < MODIC_RATE else 0)
    haemangioma = None
    if v != VERTEBRA_IDS["C1"] and rng.random() < HAEMANGIOMA_RATE:
        centre = rng.uniform(-0.45, 0.45, 3) * [shape.body_rx, shape.body_ry, shape.body_hh]
        haemangioma = (tuple(float(c) for c in centre), float(rng.uniform(0.25, 0.45) * shape.body_ry))
    return Lesions(tuple(modic), float(rng.uniform(4.0, 9.0)), haemangioma)


def _place_sacrum(rng: np.random.Generator, centreline: Centreline, l5: VertebraShape, s_centre: float,
                  s_top: float, cortical: float) -> Bone:
    """The sacrum on the centreline below L5: its segments follow the (kyphotic) curve there."""
    frame = _frame_at(centreline, s_centre)
    to_local = np.linalg.inv(frame)
    segments = np.array([to_local[:3, :3] @ centreline.points[_sample_index(centreline, s_centre - step)]
                         + to_local[:3, 3] for step in SACRAL_SEGMENT_STEPS_MM])
    parts = shapes.sacrum_parts(l5, segments)
    section = parts[0].primitive
    return Bone(labels.SACRUM, 0, frame, tuple(parts), _planes(centreline, frame, s_top, None),
                (PLANE_GAP_MM / 2, 0.0), (VERTEBRA_IDS["L5"], 0), section,
                ((VERTEBRA_IDS["L5"], labels.POSTERIOR_SUBREGIONS),), cortical, _texture_offset(rng))


def _place_ribs(rng: np.random.Generator, vertebra: Bone, ids: np.ndarray) -> Bone:
    """The rib pair of a thoracic vertebra; it moves with its vertebra and keeps joint spaces to the
    bodies it meets (its own and the one above) and to its transverse processes."""
    v = vertebra.label
    carvers = [(v, frozenset({labels.BODY, labels.TRANSVERSE_LEFT, labels.TRANSVERSE_RIGHT}))]
    if v - 1 in ids:
        carvers.append((v - 1, frozenset({labels.BODY})))
    return Bone(labels.rib_label(v), v, vertebra.frame, tuple(shapes.rib_parts(vertebra.shape)),
                np.tile(FAR_PLANE, (2, 1)), (0.0, 0.0), (0, 0), None, tuple(carvers), vertebra.cortical_mm,
                _texture_offset(rng))


def _sample_index(centreline: Centreline, s_value: float) -> int:
    return int(np.clip(np.round((s_value - centreline.s[0]) / CENTRELINE_STEP_MM), 0, len(centreline.s) - 1))


def _frame_at(centreline: Centreline, s_value: float) -> np.ndarray:
    k = _sample_index(centreline, s_value)
    frame = np.eye(4)
    frame[:3, 0], frame[:3, 1], frame[:3, 2] = centreline.lateral[k], centreline.anterior[k], centreline.tangent[k]
    frame[:3, 3] = centreline.points[k]
    return frame
