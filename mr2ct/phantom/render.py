"""Evaluate the anatomy on a voxel grid: tissue classes, bone labels, subregion ids, disc keys and texture.

A grid is a shape plus an affine (voxel index -> world RAS mm). The anatomy is posed on the grid by maps
from grid-world mm to anatomy mm: one for the soft tissue (and the sacrum) and one per vertebra (identity
for the MR, the true CT->MR transforms for the CT); ribs move with their vertebra. Soft tissue is a stack
of ellipses in the cross-section perpendicular to the centreline, each evaluated only inside the grid box
it can reach. Bones are parts with approximate signed distances (shapes.py) evaluated in the bone's local
frame, each only inside its own box: clipped parts stop short of the mid-disc planes, holes are cut out,
and the parts of a neighbour (grown by the joint space) are carved away, all in the MR pose, so every bone
keeps one rigid shape in both poses. Texture fields are looked up at local coordinates too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from mr2ct.core import labels
from mr2ct.phantom import texture
from mr2ct.phantom.anatomy import (
    CENTRELINE_STEP_MM,
    DISC_OVERLAP_MM,
    Anatomy,
    Bone,
    Centreline,
)
from mr2ct.phantom.shapes import JOINT_SPACE_MM, Part
from mr2ct.phantom.tissues import BONE_TISSUES, IS_BONE, Tissue

__all__ = ["BONE_TISSUES", "IS_BONE", "Grid", "LabelMaps", "Tissue", "render"]

SOFT_CHUNK_VOXELS = 1 << 16  # voxels per tube-coordinate chunk (keeps temporaries in cache)
DISC_BULGE_MM = 2.5  # a fully degenerated disc bulges this far beyond the body outline
NUCLEUS_FRACTION = 0.55  # nucleus pulposus half-axes relative to the body's
CORTEX_VARIATION = 0.4  # cortical thickness varies by up to this fraction along a bone
MARROW_SCALE = 0.4  # marrow field magnification: fatty islands of ~6 mm
CORTEX_SCALE = 0.12  # cortex-thickness field magnification: varies over ~2 cm
CALCIFICATION_SPOTS = 1.6  # annulus calcifications where the marrow field exceeds this many SDs
MODIC_TISSUE = {1: Tissue.MODIC_OEDEMA, 2: Tissue.MODIC_FATTY}


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray  # voxel index -> world RAS mm


@dataclass
class LabelMaps:
    """Per voxel: tissue class, bone label (vertebra id, sacrum or rib), subregion id and disc key (uint8,
    0 = none), plus the trabecular and marrow texture values of marrow voxels (float32, 0 elsewhere)."""

    tissue: np.ndarray
    bone: np.ndarray
    subregion: np.ndarray
    disc: np.ndarray
    trabecular: np.ndarray
    marrow: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> "LabelMaps":
        return cls(*(np.zeros(shape, np.uint8) for _ in range(4)), *(np.zeros(shape, np.float32) for _ in range(2)))

    def take(self, index) -> "LabelMaps":
        """The maps at ``index`` (e.g. a slice), as contiguous arrays."""
        return LabelMaps(*(np.ascontiguousarray(getattr(self, f.name)[index]) for f in fields(self)))


def render(anatomy: Anatomy, grid: Grid, soft_map: np.ndarray | None = None,
           vertebra_maps: dict[int, np.ndarray] | None = None) -> LabelMaps:
    """Label maps of the anatomy posed on ``grid`` (maps default to identity: the MR pose)."""
    soft_map = np.eye(4) if soft_map is None else soft_map
    maps = LabelMaps.empty(grid.shape)
    render_soft_tissue(anatomy, grid, soft_map, maps.tissue)
    for bone in anatomy.bones:
        to_anatomy = soft_map if vertebra_maps is None or not bone.pose_id else vertebra_maps[bone.pose_id]
        render_bone(anatomy, bone, grid, to_anatomy, maps)
    return maps


# ------------------------------------------------------------------------------------------------ soft tissue
@dataclass(frozen=True)
class Layer:
    """A soft-tissue tube: ellipse (centre u, centre w, radius u, radius w; param names, None = 0) in the
    cross-section; ``mirrored`` draws it on both sides; ``within`` limits what it may replace."""

    tissue: Tissue
    u: str | None
    w: str
    ru: str
    rw: str
    mirrored: bool = False
    within: tuple[Tissue, ...] | None = None


T = Tissue
AORTA = Layer(T.VESSEL, "aorta_u", "aorta_w", "aorta_r", "aorta_r")
SOFT_LAYERS = (  # in drawing order: later layers replace earlier ones
    Layer(T.FAT, None, "trunk_w", "trunk_rx", "trunk_ry"),
    Layer(T.SOFT, None, "trunk_w", "inner_rx", "inner_ry"),
    Layer(T.LUNG, "lung_u", "lung_w", "lung_ru", "lung_rw", mirrored=True, within=(T.SOFT,)),
    Layer(T.MUSCLE, None, "muscle_w", "muscle_rx", "muscle_ry", within=(T.SOFT, T.LUNG)),
    Layer(T.MUSCLE, "psoas_u", "zero", "psoas_r", "psoas_r", mirrored=True),
    AORTA,
    Layer(T.VESSEL, "ivc_u", "ivc_w", "ivc_r", "ivc_r"),
    Layer(T.VESSEL, "carotid_u", "carotid_w", "carotid_r", "carotid_r", mirrored=True),
    Layer(T.VESSEL, "jugular_u", "jugular_w", "jugular_r", "jugular_r", mirrored=True),
    Layer(T.AIR, None, "airway_w", "airway_r", "airway_r"),
    Layer(T.LIGAMENT, None, "canal_w", "flavum_rx", "flavum_ry"),
    Layer(T.EPIDURAL_FAT, None, "canal_w", "canal_rx", "canal_ry"),
    Layer(T.CSF, None, "sac_w", "sac_rx", "sac_ry"),
    Layer(T.CORD, None, "sac_w", "cord_rx", "cord_ry"),
)
REPLACEABLE = {layer: np.isin(np.arange(256), layer.within) for layer in SOFT_LAYERS if layer.within is not None}
AORTIC_WALL_MM = 1.5


def render_soft_tissue(anatomy: Anatomy, grid: Grid, soft_map: np.ndarray, tissue: np.ndarray) -> None:
    """Air, fat, soft tissue, lungs, muscles, vessels, airway, ligamentum flavum, epidural fat, CSF and cord.

    Chunk by chunk of grid planes (temporaries stay in cache): tube coordinates, then every layer that
    reaches the chunk, inside its own box only.
    """
    cl = anatomy.centreline
    index_to_anatomy = soft_map @ grid.affine
    columns = _layer_columns(cl)
    boxes = [(layer, side, box) for layer in SOFT_LAYERS for side in ((-1.0, 1.0) if layer.mirrored else (1.0,))
             if (box := _tube_box(cl, layer, side, index_to_anatomy, grid.shape)) is not None]
    for chunk, (u, w, sample) in _tube_chunks(cl, grid, index_to_anatomy):
        out = tissue[chunk]
        for layer, side, box in boxes:
            if box[0].stop <= chunk.start or box[0].start >= chunk.stop:
                continue
            local = (slice(max(box[0].start - chunk.start, 0), box[0].stop - chunk.start), *box[1:])
            k = sample[local]
            du = u[local] if layer.u is None else u[local] - np.float32(side) * columns[layer.u][k]
            dw = w[local] - columns[layer.w][k]
            du = du * columns["1/" + layer.ru][k]
            dw *= columns["1/" + layer.rw][k]
            inside = du * du + dw * dw <= 1.0
            if layer.within is not None:
                inside &= REPLACEABLE[layer][out[local]]
            out[local][inside] = layer.tissue
            if layer is AORTA and anatomy.aortic_calcification > 0:
                _calcify_aorta(anatomy.aortic_calcification, columns, u[local], w[local], k, out[local])


def _layer_columns(cl: Centreline) -> dict[str, np.ndarray]:
    """Soft-tissue parameters per sample (float32), with ``1/name`` holding inverse radii (1e6 for 0 mm)."""
    columns = {name: np.ascontiguousarray(values, np.float32) for name, values in cl.params.items()}
    columns.update({"1/" + name: np.where(values > 0, 1.0 / np.maximum(values, 1e-6), 1e6).astype(np.float32)
                    for name, values in cl.params.items()})
    columns["s"] = cl.s.astype(np.float32)
    return columns


def _tube_chunks(cl: Centreline, grid: Grid, index_to_anatomy: np.ndarray):
    """Yield (plane slice, (u lateral, w anterior, sample)) per chunk of grid planes: the offsets in the
    cross-section through the nearest centreline sample, found by height, then corrected by one step
    along the tangent."""
    columns = _frame_columns(cl)
    last = len(cl.s) - 1
    m = index_to_anatomy.astype(np.float32)
    j = np.arange(grid.shape[1], dtype=np.float32)[None, :, None]
    k = np.arange(grid.shape[2], dtype=np.float32)[None, None, :]
    step = max(1, SOFT_CHUNK_VOXELS // (grid.shape[1] * grid.shape[2]))
    for start in range(0, grid.shape[0], step):
        i = np.arange(start, min(start + step, grid.shape[0]), dtype=np.float32)[:, None, None]
        x, y, z = (row[0] * i + row[1] * j + row[2] * k + row[3] for row in m[:3])
        near = np.interp(np.broadcast_to(z, (len(i), *grid.shape[1:])), columns["z"], columns["index"])
        near = near.astype(np.intp)
        along = _project(columns, "t", near, x, y, z)
        near += np.rint(along * np.float32(1.0 / CENTRELINE_STEP_MM)).astype(np.intp)
        np.clip(near, 0, last, out=near)
        yield slice(start, start + len(i)), (_project(columns, "l", near, x, y, z),
                                             _project(columns, "a", near, x, y, z), near)


def _project(columns: dict[str, np.ndarray], axis: str, sample: np.ndarray, x, y, z) -> np.ndarray:
    """Coordinate of points along a frame axis of their samples, relative to the sample points."""
    out = x * columns[axis + "x"][sample]
    out += y * columns[axis + "y"][sample]
    out += z * columns[axis + "z"][sample]
    out += columns[axis + "0"][sample]
    return out


def _frame_columns(cl: Centreline) -> dict[str, np.ndarray]:
    """Per-sample float32 columns: each frame axis (tangent t, lateral l, anterior a) and its offset, so
    that ``p . axis + offset`` is the coordinate of p along that axis relative to the sample point."""
    columns = {"z": cl.points[:, 2].astype(np.float32), "index": np.arange(len(cl.s), dtype=np.float32) + 0.5}
    for name, axis in (("t", cl.tangent), ("l", cl.lateral), ("a", cl.anterior)):
        for column, letter in enumerate("xyz"):
            columns[name + letter] = np.ascontiguousarray(axis[:, column], dtype=np.float32)
        columns[name + "0"] = (-(cl.points * axis).sum(axis=1)).astype(np.float32)
    return columns


def _tube_box(cl: Centreline, layer: Layer, side: float, index_to_anatomy: np.ndarray, shape) -> tuple | None:
    """Grid index slices covering every point a layer can reach (None when it is empty or off the grid)."""
    p = cl.params
    radius = np.maximum(p[layer.ru], p[layer.rw])
    present = radius > 0
    if not present.any():
        return None
    cu = 0.0 if layer.u is None else side * p[layer.u][present, None]
    centres = cl.points[present] + cu * cl.lateral[present] + p[layer.w][present, None] * cl.anterior[present]
    reach = radius[present, None] + 2.0 * CENTRELINE_STEP_MM
    return _index_box(index_to_anatomy, np.stack([(centres - reach).min(axis=0), (centres + reach).max(axis=0)]),
                      shape)


def _calcify_aorta(amount: float, columns: dict[str, np.ndarray], u: np.ndarray, w: np.ndarray,
                   sample: np.ndarray, tissue: np.ndarray) -> None:
    """Calcified plaques: spots covering about ``amount`` of the aortic wall (CT sees them; in MR they
    vanish in the flow void)."""
    du, dw = u - columns["aorta_u"][sample], w - columns["aorta_w"][sample]
    radius = columns["aorta_r"][sample]
    radial2 = du * du + dw * dw
    wall = np.nonzero((radial2 <= radius * radius) & (radial2 > (radius - AORTIC_WALL_MM) ** 2) & (radius > 0))
    angle = np.arctan2(dw[wall], du[wall])
    s = columns["s"][sample[wall]]
    spots = np.sin(2.0 * angle + 0.9) * np.sin(0.35 * s + 1.3 * angle) > 1.0 - 2.0 * amount
    tissue[tuple(axis[spots] for axis in wall)] = Tissue.CALCIFICATION


# ------------------------------------------------------------------------------------------------------ bones
class _BoxCoordinates:
    """Local coordinates of the voxels of a box, computed per sub-box on demand (float32)."""

    def __init__(self, index_to_local: np.ndarray, box: tuple[slice, ...]):
        self.m = index_to_local.astype(np.float32)
        self.origin = np.array([sl.start for sl in box])
        self.shape = tuple(sl.stop - sl.start for sl in box)

    def at(self, sub: tuple[slice, ...], transform: np.ndarray | None = None):
        """Local coordinates (x, y, z arrays) over a box-relative sub-box, optionally mapped by ``transform``."""
        m = self.m if transform is None else (transform.astype(np.float32) @ self.m)
        ijk = [np.arange(o + sl.start, o + sl.stop, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
               for axis, (o, sl) in enumerate(zip(self.origin, sub))]
        return tuple(row[0] * ijk[0] + row[1] * ijk[1] + row[2] * ijk[2] + row[3] for row in m[:3])

    def points(self, index: tuple[np.ndarray, ...]):
        """Local coordinates of voxels given by box-relative index arrays."""
        ijk = [(axis + o).astype(np.float32) for axis, o in zip(index, self.origin)]
        return tuple(row[0] * ijk[0] + row[1] * ijk[1] + row[2] * ijk[2] + row[3] for row in self.m[:3])

    def sub_box(self, index_to_part: np.ndarray, local_box: np.ndarray) -> tuple[slice, ...] | None:
        """Box-relative slices covering a box given in the coordinates ``index_to_part`` maps to."""
        found = _index_box(index_to_part, local_box, tuple(int(o + n) for o, n in zip(self.origin, self.shape)))
        if found is None:
            return None
        sub = tuple(slice(max(s.start - o, 0), s.stop - o) for s, o in zip(found, self.origin))
        return None if any(s.stop <= s.start for s in sub) else sub


def render_bone(anatomy: Anatomy, bone: Bone, grid: Grid, to_anatomy: np.ndarray, maps: LabelMaps) -> None:
    """Write one bone, its soft parts (nerve roots, vertebral arteries) and its disc halves into ``maps``."""
    index_to_local = np.linalg.inv(bone.frame) @ to_anatomy @ grid.affine
    local_box = bone_box(bone)
    box = _index_box(index_to_local, local_box, grid.shape)
    if box is None:
        return
    coords = _BoxCoordinates(index_to_local, box)
    view = LabelMaps(*(getattr(maps, f.name)[box] for f in fields(maps)))
    distance, owner, cut = _bone_distance(anatomy, bone, coords, index_to_local, local_box)
    solid = (distance <= 0) & (cut <= 0)
    _draw_soft_parts(bone, coords, index_to_local, view)
    if bone.disc_section is not None:
        _draw_discs(anatomy, bone, coords, index_to_local, solid, view)
    _draw_bone_tissue(anatomy, bone, coords, distance, owner, solid, view)


def _bone_distance(anatomy: Anatomy, bone: Bone, coords: _BoxCoordinates, index_to_local: np.ndarray,
                   local_box: np.ndarray):
    """Signed distance to the bone's surface over its box (parts, plane clips, holes, carving), the owning
    part (index + 1) per voxel, and the cut at fused planes (bone only where it is <= 0)."""
    distance = np.full(coords.shape, np.inf, np.float32)
    owner = np.zeros(coords.shape, np.uint8)
    for index, part in enumerate(bone.parts, start=1):
        sub = coords.sub_box(index_to_local, np.clip(part.primitive.bounds(), local_box[0], local_box[1]))
        if sub is None:
            continue
        x, y, z = coords.at(sub)
        d = part.primitive.sdf(x, y, z)
        if part.clipped:
            d = np.maximum(d, _plane_clip(bone, x, y, z, fused=False))
        np.minimum(distance[sub], d, out=distance[sub])
        owner[sub][d <= 0] = index
    for hole in bone.holes:
        sub = coords.sub_box(index_to_local, hole.bounds())
        if sub is not None:
            np.maximum(distance[sub], -hole.sdf(*coords.at(sub)), out=distance[sub])
    for label, subregions in bone.carvers:
        _carve(anatomy.bone(label), subregions, bone, coords, index_to_local, distance)
    cut = np.float32(-np.inf)
    if bone.shape is not None and any(bone.shape.fused):
        cut = _plane_clip(bone, *coords.at(tuple(slice(0, n) for n in coords.shape)), fused=True)
    return distance, owner, cut


def _plane_clip(bone: Bone, x, y, z, fused: bool):
    """Distance past the mid-disc planes plus their gaps: over non-fused planes (shape), or over fused ones
    only (where two fused vertebrae's labels meet)."""
    clip = None
    for plane, gap, is_fused in zip(bone.planes, bone.plane_gap, bone.shape.fused if bone.shape else (False, False)):
        if is_fused != fused:
            continue
        beyond = plane[0] * x + plane[1] * y + plane[2] * z + np.float32(plane[3] + gap)
        clip = beyond if clip is None else np.maximum(clip, beyond)
    return np.float32(-np.inf) if clip is None else clip


def _carve(carver: Bone, subregions: frozenset[int], bone: Bone, coords: _BoxCoordinates,
           index_to_local: np.ndarray, distance: np.ndarray) -> None:
    """Cut the carver's parts of the given subregions, grown by JOINT_SPACE_MM, out of ``distance`` (MR pose)."""
    to_carver = (np.linalg.inv(carver.frame) @ bone.frame).astype(np.float32)
    index_to_carver = to_carver @ index_to_local
    for part in carver.parts:
        if part.subregion not in subregions:
            continue
        sub = coords.sub_box(index_to_carver, _grown(part.primitive.bounds(), JOINT_SPACE_MM))
        if sub is None:
            continue
        d = part.primitive.sdf(*coords.at(sub, to_carver))
        np.maximum(distance[sub], np.float32(JOINT_SPACE_MM) - d, out=distance[sub])


def _draw_soft_parts(bone: Bone, coords: _BoxCoordinates, index_to_local: np.ndarray, view: LabelMaps) -> None:
    """Nerve roots in their foraminal fat and vertebral arteries, only over soft tissue."""
    replaceable = {Tissue.EPIDURAL_FAT: (Tissue.SOFT, Tissue.MUSCLE, Tissue.FAT, Tissue.LIGAMENT),
                   Tissue.NERVE: (Tissue.SOFT, Tissue.MUSCLE, Tissue.FAT, Tissue.LIGAMENT, Tissue.EPIDURAL_FAT,
                                  Tissue.CSF),
                   Tissue.VESSEL: (Tissue.SOFT, Tissue.MUSCLE, Tissue.FAT, Tissue.EPIDURAL_FAT)}
    for tissue, primitive in bone.soft_parts:
        sub = coords.sub_box(index_to_local, primitive.bounds())
        if sub is None:
            continue
        inside = primitive.sdf(*coords.at(sub)) <= 0
        inside &= np.isin(view.tissue[sub], replaceable[tissue]) & (view.disc[sub] == 0)
        view.tissue[sub][inside] = tissue


def _draw_discs(anatomy: Anatomy, bone: Bone, coords: _BoxCoordinates, index_to_local: np.ndarray,
                solid: np.ndarray, view: LabelMaps) -> None:
    """This bone's disc halves: inside the (bulging) body outline and up to DISC_OVERLAP_MM past each
    mid-disc plane, never over bone; nucleus, annulus, a gas cleft (vacuum) and annulus calcifications."""
    section = bone.disc_section
    sub = coords.sub_box(index_to_local, _between_planes(bone, [_grown(section.bounds(), DISC_BULGE_MM)]))
    if sub is None:
        return
    x, y, z = coords.at(sub)
    above = z > 0
    beyond = np.where(above, *(p[0] * x + p[1] * y + p[2] * z + np.float32(p[3]) for p in bone.planes))
    degeneration = np.zeros(256, np.float32)
    for key, disc in anatomy.discs.items():
        degeneration[key] = disc.degeneration
    key = np.where(above, *bone.disc_keys).astype(np.uint8)
    tissue_view, disc_view = view.tissue[sub], view.disc[sub]
    in_disc = (key > 0) & (section.section(x, y) <= DISC_BULGE_MM * degeneration[key]) & (beyond <= DISC_OVERLAP_MM)
    in_disc &= ~solid[sub] & ~IS_BONE[tissue_view]
    nx = x / np.float32(NUCLEUS_FRACTION * section.rx)
    ny = (y + np.float32(0.1 * section.ry)) / np.float32(NUCLEUS_FRACTION * section.ry)
    radial2 = nx * nx + ny * ny
    tissue = np.where(radial2 <= 1.0, Tissue.NUCLEUS, Tissue.ANNULUS).astype(np.uint8)
    for disc_key in set(bone.disc_keys) - {0}:
        disc = anatomy.discs[disc_key]
        mine = in_disc & (key == disc_key)
        if disc.vacuum_mm > 0:  # a lens-shaped cleft across the mid-disc plane, thickest in the centre
            tissue[mine & (np.abs(beyond) <= 0.5 * disc.vacuum_mm * (1.0 - radial2 / 1.6))] = Tissue.GAS
        if disc.calcified:
            ring = np.nonzero(mine & (tissue == Tissue.ANNULUS))
            points = (x[ring], y[ring], z[ring])
            spots = texture.sample(anatomy.texture.marrow, *points, bone.texture_offset + 7.0) > CALCIFICATION_SPOTS
            tissue[tuple(axis[spots] for axis in ring)] = Tissue.CALCIFICATION
    tissue_view[in_disc] = tissue[in_disc]
    disc_view[in_disc] = key[in_disc]


def _draw_bone_tissue(anatomy: Anatomy, bone: Bone, coords: _BoxCoordinates, distance: np.ndarray,
                      owner: np.ndarray, solid: np.ndarray, view: LabelMaps) -> None:
    """Cortex (thickness varying along the bone) or marrow with texture and lesions, plus labels."""
    index = np.nonzero(solid)
    if not len(index[0]):
        return
    parts: tuple[Part, ...] = bone.parts
    owners = owner[index]
    depth = -distance[index]
    tissue = np.array([0] + [part.marrow for part in parts], np.uint8)[owners]
    subregion = np.array([0] + [part.subregion for part in parts], np.uint8)[owners]
    base = bone.cortical_mm * np.array([0.0] + [part.cortex for part in parts], np.float32)[owners]
    tiles, offset = anatomy.texture, bone.texture_offset
    shallow = np.nonzero(depth < base * (1.0 + CORTEX_VARIATION))  # deeper voxels are marrow anyway
    points = coords.points(tuple(axis[shallow] for axis in index))
    variation = np.clip(texture.sample(tiles.marrow, *points, offset + 23.0, CORTEX_SCALE), -1.0, 1.0)
    cortical = depth[shallow] < base[shallow] * (1.0 + CORTEX_VARIATION * variation)
    tissue[shallow[0][cortical]] = Tissue.CORTICAL
    marrow = np.nonzero(tissue != Tissue.CORTICAL)[0]
    x, y, z = coords.points(tuple(axis[marrow] for axis in index))
    tissue[marrow] = _lesions(bone, x, y, z, tissue[marrow], subregion[marrow])
    view.tissue[index] = tissue
    view.bone[index] = bone.label
    view.subregion[index] = subregion
    view.disc[index] = 0
    in_marrow = tuple(axis[marrow] for axis in index)
    view.trabecular[in_marrow] = texture.sample(tiles.trabecular, x, y, z, offset)
    view.marrow[in_marrow] = texture.sample(tiles.marrow, x, y, z, offset, MARROW_SCALE)


def _lesions(bone: Bone, x, y, z, tissue: np.ndarray, subregion: np.ndarray) -> np.ndarray:
    """Marrow tissue with Modic bands under the endplates and a haemangioma, in the body's marrow only."""
    lesions, shape = bone.lesions, bone.shape
    if shape is None:
        return tissue
    body_marrow = (tissue == Tissue.CANCELLOUS) & (subregion == labels.BODY)
    for modic, sign in zip(lesions.modic, (1.0, -1.0)):
        if modic:
            tissue[body_marrow & (sign * z > shape.body_hh - lesions.modic_depth_mm)] = MODIC_TISSUE[modic]
    if lesions.haemangioma is not None:
        (cx, cy, cz), radius = lesions.haemangioma
        tissue[body_marrow & ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius * radius)] = Tissue.HAEMANGIOMA
    return tissue


def _grown(bounds: np.ndarray, margin: float) -> np.ndarray:
    return bounds + np.array([[-margin], [margin]])


def _between_planes(bone: Bone, boxes: list[np.ndarray]) -> np.ndarray:
    """The union of local boxes with its height limited to DISC_OVERLAP_MM past the mid-disc planes."""
    stack = np.stack(boxes)
    low, high = stack[:, 0].min(axis=0), stack[:, 1].max(axis=0)
    corners = np.array([[cx, cy] for cx in (low[0], high[0]) for cy in (low[1], high[1])])
    limits = [(DISC_OVERLAP_MM - plane[3] - corners @ plane[:2]) / plane[2] for plane in bone.planes]
    low[2], high[2] = max(low[2], np.min(limits[1])), min(high[2], np.max(limits[0]))
    return np.stack([low, high])


def bone_box(bone: Bone) -> np.ndarray:
    """Local (min, max) corners covering every part, soft part and disc half; clipped parts and discs are
    limited by the mid-disc planes."""
    boxes = [part.primitive.bounds() for part in bone.parts if not part.clipped]
    boxes += [primitive.bounds() for _, primitive in bone.soft_parts]
    clipped = [part.primitive.bounds() for part in bone.parts if part.clipped]
    if bone.disc_section is not None:
        clipped.append(_grown(bone.disc_section.bounds(), DISC_BULGE_MM))
    if clipped:
        boxes.append(_between_planes(bone, clipped))
    stack = np.stack(boxes)
    return np.stack([stack[:, 0].min(axis=0), stack[:, 1].max(axis=0)])


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
