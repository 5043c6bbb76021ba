"""Evaluate the anatomy on a voxel grid: tissue classes, vertebra ids, subregion ids and disc keys.

A grid is a shape plus an affine (voxel index -> world RAS mm). The anatomy is posed on the grid by maps
from grid-world mm to anatomy mm: one for the soft tissue and one per vertebra (identity for the MR,
the true CT->MR transforms for the CT). Bony parts are approximate signed-distance primitives
(elliptic cylinder, ellipsoidal capsules) evaluated in each vertebra's local frame, each only inside its
own bounding box; soft tissue is a set of ellipses in the cross-section perpendicular to the centreline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from mr2ct.core import labels
from mr2ct.phantom.anatomy import (
    CENTRELINE_STEP_MM,
    DISC_OVERLAP_MM,
    FACET_GAP_MM,
    Anatomy,
    Centreline,
    Vertebra,
    VertebraShape,
)

SOFT_CHUNK = 8  # grid planes per soft-tissue chunk (keeps temporaries in cache)


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    SOFT = 2
    MUSCLE = 3
    EPIDURAL_FAT = 4
    CSF = 5
    CORD = 6
    ANNULUS = 7
    NUCLEUS = 8
    CORTICAL = 9
    CANCELLOUS = 10
    POSTERIOR_MARROW = 11


BONE_TISSUES = (Tissue.CORTICAL, Tissue.CANCELLOUS, Tissue.POSTERIOR_MARROW)
IS_BONE = np.isin(np.arange(256), BONE_TISSUES)


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray  # voxel index -> world RAS mm


@dataclass
class LabelMaps:
    """Per-voxel tissue class, VerSe vertebra id, subregion id and disc key (0 = none), all uint8."""

    tissue: np.ndarray
    vertebra: np.ndarray
    subregion: np.ndarray
    disc: np.ndarray


@dataclass(frozen=True)
class Capsule:
    """Segment a->b thickened by per-axis radii (local frame): pedicles, laminae, processes."""

    a: np.ndarray
    b: np.ndarray
    radii: np.ndarray

    def bounds(self) -> np.ndarray:
        return np.stack([np.minimum(self.a, self.b) - self.radii, np.maximum(self.a, self.b) + self.radii])

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm): exact on a sphere, first-order for ellipsoidal sections."""
        r = self.radii
        ab = (self.b - self.a) / r
        qx, qy, qz = (x - self.a[0]) / r[0], (y - self.a[1]) / r[1], (z - self.a[2]) / r[2]
        h = np.clip((qx * ab[0] + qy * ab[1] + qz * ab[2]) / max(ab @ ab, 1e-9), 0.0, 1.0)
        ex, ey, ez = qx - h * ab[0], qy - h * ab[1], qz - h * ab[2]
        e = np.sqrt(ex * ex + ey * ey + ez * ez)
        grad = np.sqrt((ex / r[0]) ** 2 + (ey / r[1]) ** 2 + (ez / r[2]) ** 2) / np.maximum(e, 1e-3)
        return (e - 1.0) / np.maximum(grad, 1.0 / r.max())


@dataclass(frozen=True)
class Body:
    """Vertebral body: elliptic cylinder, optionally wedge-compressed anteriorly (fracture)."""

    rx: float
    ry: float
    hh: float
    wedge: float

    def bounds(self) -> np.ndarray:
        return np.array([[-self.rx, -self.ry, -self.hh], [self.rx, self.ry, self.hh]])

    def radial(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.sqrt((x / self.rx) ** 2 + (y / self.ry) ** 2)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        radial = self.radial(x, y)
        grad = np.sqrt((x / self.rx**2) ** 2 + (y / self.ry**2) ** 2) / np.maximum(radial, 1e-3)
        d_radial = (radial - 1.0) / np.maximum(grad, 1.0 / max(self.rx, self.ry))
        half_height = self.hh * (1.0 - self.wedge * (0.5 + 0.5 * np.clip(y / self.ry, -1.0, 1.0)))
        return np.maximum(d_radial, np.abs(z) - half_height)


def vertebra_parts(vertebra: Vertebra) -> list[tuple[int, Capsule | Body]]:
    """(subregion id, primitive) in increasing priority: where parts overlap the later one names the voxel."""
    s: VertebraShape = vertebra.shape
    cy, crx, cry, pr, lr = s.canal_y, s.canal_rx, s.canal_ry, s.pedicle_r, s.lamina_r

    def around_canal(angle_deg: float, offset: float, side: float) -> np.ndarray:
        """A point on the canal outline pushed outwards by ``offset``; angle 0 = lateral, 90 = dorsal midline."""
        angle = np.deg2rad(angle_deg)
        return np.array([side * (crx + offset) * np.cos(angle), cy - (cry + offset) * np.sin(angle), 0.0])

    def capsule(a, b, radii) -> Capsule:
        return Capsule(np.asarray(a, float), np.asarray(b, float), np.asarray(radii, float))

    articular_r = max(2.2, 0.7 * pr)
    top, bottom = s.body_hh + vertebra.half_disc_above, -(s.body_hh + vertebra.half_disc_below)
    lamina_root = np.array([0.0, cy - cry - lr, 0.0])
    parts: list[tuple[int, Capsule | Body]] = [
        (labels.SPINOUS_PROCESS, capsule(lamina_root, [0.0, s.spinous_tip_y + s.spinous_rx, -s.spinous_drop],
                                         [s.spinous_rx, s.spinous_rx, s.spinous_rz])),
    ]
    for side, transverse, superior, inferior in ((-1.0, labels.TRANSVERSE_LEFT, labels.ARTICULAR_SUPERIOR_LEFT,
                                                  labels.ARTICULAR_INFERIOR_LEFT),
                                                 (1.0, labels.TRANSVERSE_RIGHT, labels.ARTICULAR_SUPERIOR_RIGHT,
                                                  labels.ARTICULAR_INFERIOR_RIGHT)):
        pedicle_end = around_canal(20.0, pr, side)
        lamina_mid = around_canal(55.0, lr, side)
        parts += [
            (transverse, capsule(pedicle_end, [side * s.transverse_len, cy - 0.3 * cry, 0.0],
                                 [s.transverse_r, s.transverse_r, 1.3 * s.transverse_r])),
            (superior, capsule(pedicle_end + [side * 0.5 * pr, 0.0, 0.0],
                               pedicle_end + [side * 1.5 * pr / 2, -1.0, top], [articular_r] * 3)),
            (inferior, capsule(lamina_mid + [0.0, -0.5 * lr, 0.0], lamina_mid + [0.0, -1.0 * lr, bottom],
                               [articular_r] * 3)),
            (labels.ARCH, capsule([side * min(crx + pr, 0.75 * s.body_rx), -0.5 * s.body_ry, 0.0], pedicle_end,
                                  [pr, pr, 1.5 * pr])),
            (labels.ARCH, capsule(around_canal(20.0, lr, side), lamina_mid, [lr, lr, 0.75 * s.body_hh])),
            (labels.ARCH, capsule(lamina_mid, lamina_root, [lr, lr, 0.75 * s.body_hh])),
        ]
    parts.append((labels.BODY, Body(s.body_rx, s.body_ry, s.body_hh, s.wedge)))
    # arch outranks the processes that grow out of it; the body outranks everything
    priority = {labels.SPINOUS_PROCESS: 0, labels.TRANSVERSE_LEFT: 1, labels.TRANSVERSE_RIGHT: 1,
                labels.ARTICULAR_SUPERIOR_LEFT: 2, labels.ARTICULAR_SUPERIOR_RIGHT: 2,
                labels.ARTICULAR_INFERIOR_LEFT: 2, labels.ARTICULAR_INFERIOR_RIGHT: 2, labels.ARCH: 3,
                labels.BODY: 4}
    return sorted(parts, key=lambda part: priority[part[0]])


def render(anatomy: Anatomy, grid: Grid, soft_map: np.ndarray | None = None,
           vertebra_maps: dict[int, np.ndarray] | None = None) -> LabelMaps:
    """Label maps of the anatomy posed on ``grid`` (maps default to identity: the MR pose)."""
    soft_map = np.eye(4) if soft_map is None else soft_map
    maps = LabelMaps(*(np.zeros(grid.shape, np.uint8) for _ in range(4)))
    render_soft_tissue(anatomy, grid, soft_map, maps.tissue)
    for vertebra in anatomy.vertebrae:
        to_anatomy = np.eye(4) if vertebra_maps is None else vertebra_maps[vertebra.vertebra_id]
        render_vertebra(vertebra, grid, to_anatomy, maps)
    return maps


def render_soft_tissue(anatomy: Anatomy, grid: Grid, soft_map: np.ndarray, tissue: np.ndarray) -> None:
    """Air, subcutaneous fat, visceral soft tissue, muscles, epidural fat, CSF and cord, chunk by chunk."""
    index_to_anatomy = (soft_map @ grid.affine).astype(np.float32)
    j = np.arange(grid.shape[1], dtype=np.float32)[None, :, None]
    k = np.arange(grid.shape[2], dtype=np.float32)[None, None, :]
    for start in range(0, grid.shape[0], SOFT_CHUNK):
        i = np.arange(start, min(start + SOFT_CHUNK, grid.shape[0]), dtype=np.float32)[:, None, None]
        points = [m[0] * i + m[1] * j + m[2] * k + m[3] for m in index_to_anatomy[:3]]
        tissue[start:start + len(i)] = _soft_classes(anatomy, *points)


def _soft_classes(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Soft-tissue classes of a chunk of points; structures that cannot reach the chunk are skipped."""
    cl = anatomy.centreline
    u, w, sample = tube_coordinates(cl, x, y, z)
    names = list(cl.params) + ["s"]
    table = np.stack([*cl.params.values(), cl.s.astype(np.float32)], axis=1)[sample]  # one row gather
    p = {name: table[..., column] for column, name in enumerate(names)}
    out = np.full(x.shape, Tissue.AIR, np.uint8)
    nearest_u = float(np.abs(u).min())

    def reaches(half_width: str, centre: str | None = None) -> bool:
        reach = cl.params[half_width].max() + (0.0 if centre is None else cl.params[centre].max())
        return nearest_u <= reach

    def inside(cu, cw, ru, rw):
        return ((u - cu) / ru) ** 2 + ((w - cw) / rw) ** 2 <= 1.0

    trunk_centre = p["skin_w"] + p["trunk_ry"]
    out[inside(0.0, trunk_centre, p["trunk_rx"], p["trunk_ry"])] = Tissue.FAT
    inner = inside(0.0, trunk_centre, p["trunk_rx"] - p["fat_mm"], p["trunk_ry"] - p["fat_mm"])
    out[inner] = Tissue.SOFT
    if reaches("muscle_rx"):
        out[inner & inside(0.0, p["muscle_w"], p["muscle_rx"], p["muscle_ry"])] = Tissue.MUSCLE
    if reaches("psoas_r", "psoas_u") and cl.params["psoas_r"].max() > 0:
        psoas_r = np.maximum(p["psoas_r"], 1e-3)
        out[inside(p["psoas_u"], 0.0, psoas_r, psoas_r) | inside(-p["psoas_u"], 0.0, psoas_r, psoas_r)] = Tissue.MUSCLE
    if reaches("canal_rx"):
        out[inside(0.0, p["canal_w"], p["canal_rx"], p["canal_ry"])] = Tissue.EPIDURAL_FAT
        sac_w = p["canal_w"] + p["sac_shift"]
        out[inside(0.0, sac_w, p["sac_rx"], p["sac_ry"])] = Tissue.CSF
        out[(p["s"] >= anatomy.cord_end_s) & inside(0.0, sac_w, p["cord_rx"], p["cord_ry"])] = Tissue.CORD
    return out


def tube_coordinates(cl: Centreline, x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """(u lateral, w anterior) offsets in the cross-section through the nearest centreline sample, and its index.

    The sample is first found by height, then corrected by one step along the tangent.
    """
    last = len(cl.s) - 1
    sample = np.clip(np.rint((np.interp(z, cl.points[:, 2], cl.s) - cl.s[0]) / CENTRELINE_STEP_MM), 0, last)
    sample = sample.astype(np.intp)
    frames = np.concatenate([cl.points, cl.tangent, cl.lateral, cl.anterior], axis=1).astype(np.float32)
    row = frames[sample]
    dx, dy, dz = x - row[..., 0], y - row[..., 1], z - row[..., 2]
    along = dx * row[..., 3] + dy * row[..., 4] + dz * row[..., 5]
    sample = np.clip(sample + np.rint(along / CENTRELINE_STEP_MM).astype(np.intp), 0, last)
    row = frames[sample]
    dx, dy, dz = x - row[..., 0], y - row[..., 1], z - row[..., 2]
    u = dx * row[..., 6] + dy * row[..., 7] + dz * row[..., 8]
    w = dx * row[..., 9] + dy * row[..., 10] + dz * row[..., 11]
    return u, w, sample


def render_vertebra(vertebra: Vertebra, grid: Grid, to_anatomy: np.ndarray, maps: LabelMaps) -> None:
    """Write one vertebra's bone and its halves of the adjacent discs into ``maps`` (bone wins over discs)."""
    index_to_local = np.linalg.inv(vertebra.frame) @ to_anatomy @ grid.affine
    parts = vertebra_parts(vertebra)
    body: Body = parts[-1][1]
    local_box = _vertebra_box(vertebra, parts)
    box = _index_box(index_to_local, local_box, grid.shape)
    if box is None:
        return
    origin = np.array([sl.start for sl in box])
    shape = tuple(sl.stop - sl.start for sl in box)
    m = index_to_local.astype(np.float32)
    ijk = [np.arange(o, o + n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
           for axis, (o, n) in enumerate(zip(origin, shape))]
    x, y, z = (row[0] * ijk[0] + row[1] * ijk[1] + row[2] * ijk[2] + row[3] for row in m[:3])

    distance = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.uint8)
    for subregion, part in parts:
        sub = _index_box(index_to_local, np.clip(part.bounds(), local_box[0], local_box[1]), grid.shape)
        if sub is None:
            continue
        sub = tuple(slice(max(s.start, o) - o, min(s.stop, o + n) - o) for s, o, n in zip(sub, origin, shape))
        if any(s.stop <= s.start for s in sub):
            continue
        d = part.sdf(x[sub], y[sub], z[sub])
        np.minimum(distance[sub], d, out=distance[sub])
        owner[sub][d <= 0] = subregion
    planes = vertebra.planes.astype(np.float32)
    beyond = np.maximum(*(p[0] * x + p[1] * y + p[2] * z + p[3] for p in planes))
    bone_distance = np.maximum(distance, beyond + FACET_GAP_MM / 2)
    bone = bone_distance <= 0

    tissue, vertebra_ids, subregions, discs = (a[box] for a in (maps.tissue, maps.vertebra, maps.subregion, maps.disc))
    in_disc = ((body.radial(x, y) <= 1.0) & (beyond <= DISC_OVERLAP_MM) & ~bone & ~IS_BONE[tissue])
    disc_key = np.where(z > 0, vertebra.disc_above, vertebra.disc_below).astype(np.uint8)
    in_disc &= disc_key > 0
    nucleus = ((x / (0.55 * body.rx)) ** 2 + ((y + 0.1 * body.ry) / (0.55 * body.ry)) ** 2) <= 1.0
    tissue[in_disc] = np.where(nucleus, Tissue.NUCLEUS, Tissue.ANNULUS)[in_disc]
    discs[in_disc] = disc_key[in_disc]

    marrow = np.where(owner == labels.BODY, Tissue.CANCELLOUS, Tissue.POSTERIOR_MARROW)
    cortical = bone_distance > -vertebra.shape.cortical_mm
    tissue[bone] = np.where(cortical, Tissue.CORTICAL, marrow)[bone]
    vertebra_ids[bone] = vertebra.vertebra_id
    subregions[bone] = owner[bone]
    discs[bone] = 0


def _vertebra_box(vertebra: Vertebra, parts) -> np.ndarray:
    """Local (min, max) corners covering every part and both disc halves, limited by the mid-disc planes."""
    bounds = np.stack([part.bounds() for _, part in parts])
    low, high = bounds[:, 0].min(axis=0), bounds[:, 1].max(axis=0)
    corners = np.array([[cx, cy] for cx in (low[0], high[0]) for cy in (low[1], high[1])])
    z_limits = []
    for plane in vertebra.planes:  # z where n.p + d = DISC_OVERLAP_MM, at the box's xy corners
        z_limits.append((DISC_OVERLAP_MM - plane[3] - corners @ plane[:2]) / plane[2])
    low[2], high[2] = np.min(z_limits[1]), np.max(z_limits[0])
    return np.stack([low, high])


def _index_box(index_to_local: np.ndarray, local_box: np.ndarray, shape) -> tuple[slice, ...] | None:
    """Grid index slices covering a local axis-aligned box, clipped to the grid; None when outside."""
    corners = np.array([[a, b, c] for a in local_box[:, 0] for b in local_box[:, 1] for c in local_box[:, 2]])
    local_to_index = np.linalg.inv(index_to_local)
    index = corners @ local_to_index[:3, :3].T + local_to_index[:3, 3]
    low = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, shape)
    if np.any(high <= low):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))
