"""Bony shapes in a bone's local frame (mm; x to the patient's right, y anterior, z cranial).

A bone is a list of parts in increasing priority: where parts overlap, the later one names the voxel.
Each part is a primitive with an approximate signed distance (negative inside), the VerSe subregion it
belongs to (0 for the sacrum and the ribs, which have none), the marrow it holds and how thick its cortex
is relative to the bone's base thickness. ``clipped`` parts (vertebral bodies) stop short of the mid-disc
planes; the others may cross them and are kept apart from their neighbours by carving (see render.py).

Forms follow the textbook anatomy by level: cervical bodies are small and wide, with short bifid spinous
processes and transverse processes pierced by the vertebral artery; thoracic spinous processes are long and
slope caudally over the level below, the transverse processes point backwards and carry the ribs; lumbar
spinous processes are broad and horizontal. C1 is a ring without a body, C2 carries the dens.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from mr2ct.core import labels
from mr2ct.phantom.tissues import Tissue

JOINT_SPACE_MM = 4.5  # carved joints (facet, atlanto-axial, rib) in the MR pose: more than one 3 mm MR slice,
#                       with room for the CT's small vertebral motion
ARTICULAR_REACH = 0.35  # how far (in body half-heights) articular processes reach past the mid-disc plane
FACET_OVERLAP_MM = 1.5  # facing articular processes overlap this much before carving shapes the joint
NERVE_R_MM = 2.3  # exiting nerve root radius; its fat sheath adds FORAMEN_FAT_MM
FORAMEN_FAT_MM = 2.0
VERTEBRAL_ARTERY_R_MM = 2.0


@dataclass(frozen=True)
class Capsule:
    """Segment a->b thickened by per-axis radii (local frame): processes, pedicles, laminae, ribs."""

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


def capsule(a, b, radii) -> Capsule:
    radii = np.broadcast_to(np.asarray(radii, float), (3,)).copy()
    return Capsule(np.asarray(a, float), np.asarray(b, float), radii)


@dataclass(frozen=True)
class VertebralBody:
    """Elliptic body with a waist, concave endplates and a posterior (kidney) notch.

    ``wedge`` compresses the anterior height (fracture). ``osteophyte`` (top, bottom) grows the rim near an
    endplate outwards (mm), strongest anteriorly. ``open`` (top, bottom) drops the height limit on that side,
    so the mid-disc plane alone bounds it (a fused level).
    """

    rx: float
    ry: float
    hh: float
    wedge: float = 0.0
    waist: float = 0.08
    cup: tuple[float, float] = (1.5, 2.0)
    notch: float = 3.0
    osteophyte: tuple[float, float] = (0.0, 0.0)
    open: tuple[bool, bool] = (False, False)

    def bounds(self) -> np.ndarray:
        grow = max(self.osteophyte)
        reach = [self.hh + (100.0 if o else 0.0) for o in self.open]
        return np.array([[-self.rx - grow, -self.ry - grow, -reach[1]], [self.rx + grow, self.ry + grow, reach[0]]])

    def section(self, x: np.ndarray, y: np.ndarray, scale=1.0) -> np.ndarray:
        """Signed distance to the axial outline (kidney-shaped ellipse), optionally scaled (waist)."""
        rx, ry = self.rx * scale, self.ry * scale
        radial = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
        grad = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2) / np.maximum(radial, 1e-3)
        outline = (radial - 1.0) / np.maximum(grad, 1.0 / np.maximum(rx, ry))
        if self.notch <= 0:
            return outline
        notch_r = 0.7 * self.rx
        centre_y = -self.ry - notch_r + self.notch
        return np.maximum(outline, notch_r - np.sqrt(x * x + (y - centre_y) ** 2))

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        height = np.clip(z / self.hh, -1.0, 1.0)
        waist = 1.0 - self.waist * (1.0 - height * height)
        d_xy = self.section(x, y, waist)
        rim = np.clip(y / self.ry + 0.6, 0.0, 1.0)  # osteophytes grow in front and at the sides
        for o, sign in zip(self.osteophyte, (1.0, -1.0)):
            if o > 0:
                near = np.clip(1.0 - (self.hh - sign * z) / 4.0, 0.0, 1.0)
                d_xy = d_xy - o * near * rim
        radial2 = np.clip((x / self.rx) ** 2 + (y / self.ry) ** 2, 0.0, 1.0)
        half = self.hh * (1.0 - self.wedge * (0.5 + 0.5 * np.clip(y / self.ry, -1.0, 1.0)))
        d_z = -np.inf
        for cup, sign, is_open in zip(self.cup, (1.0, -1.0), self.open):
            if not is_open:
                d_z = np.maximum(d_z, sign * z - (half - cup * (1.0 - radial2)))
        return np.maximum(d_xy, d_z)


Primitive = Capsule | VertebralBody


@dataclass(frozen=True)
class Part:
    """One primitive of a bone with its subregion id, marrow tissue and relative cortical thickness."""

    subregion: int
    primitive: Primitive
    marrow: Tissue = Tissue.POSTERIOR_MARROW
    cortex: float = 1.1
    clipped: bool = False


@dataclass(frozen=True)
class VertebraShape:
    """Sizes of one vertebra (mm, half-sizes unless said) plus its subject-specific variations."""

    vertebra_id: int
    body_rx: float
    body_ry: float
    body_hh: float
    canal_rx: float
    canal_ry: float
    pedicle_r: float
    lamina_r: float
    lamina_hh: float
    spinous_len: float
    spinous_rx: float
    spinous_rz: float
    spinous_slope_deg: float  # below the local posterior axis: the tip lies caudally
    bifid_mm: float  # half distance between the two tips of a bifid spinous process (0: single tip)
    transverse_len: float  # tip distance from the midline
    transverse_r: float
    transverse_back_deg: float  # backward angle of the transverse process (negative: forward)
    facet_turn_deg: float  # 0: facet joints in the coronal plane (thoracic), 90: sagittal
    facet_tilt_deg: float  # forward lean of the articular pillar going up: oblique cervical joints
    wedge: float = 0.0  # fraction of anterior body height lost to a compression fracture
    cortical_mm: float = 1.3
    osteophyte: tuple[float, float] = (0.0, 0.0)
    fused: tuple[bool, bool] = (False, False)  # bony fusion with the vertebra above / below

    @property
    def canal_y(self) -> float:
        """Local y of the canal centre (behind the body)."""
        return -(self.body_ry + self.canal_ry)

    @property
    def lamina_root(self) -> np.ndarray:
        """Where the laminae meet behind the canal: the root of the spinous process."""
        return np.array([0.0, self.canal_y - self.canal_ry - self.lamina_r, 0.0])

    @property
    def is_cervical(self) -> bool:
        return self.vertebra_id <= labels.VERTEBRA_IDS["C7"]


def body_part(s: VertebraShape) -> Part:
    cup, notch = ((0.8, 1.0), 1.0) if s.is_cervical else ((1.5, 2.0), 0.12 * s.body_ry)
    body = VertebralBody(s.body_rx, s.body_ry, s.body_hh, wedge=s.wedge, cup=cup, notch=notch,
                         osteophyte=s.osteophyte, open=s.fused)
    return Part(labels.BODY, body, Tissue.CANCELLOUS, cortex=0.8, clipped=True)


def _around_canal(s: VertebraShape, angle_deg: float, offset: float, side: float) -> np.ndarray:
    """A point on the canal outline pushed outwards by ``offset``; angle 0 = lateral, 90 = dorsal midline."""
    angle = np.deg2rad(angle_deg)
    return np.array([side * (s.canal_rx + offset) * np.cos(angle), s.canal_y - (s.canal_ry + offset) * np.sin(angle),
                     0.0])


def spinous_parts(s: VertebraShape) -> list[Part]:
    """Spinous process along its slope; bifid tips (cervical) or a thickened posterior border (tip bar)."""
    slope = np.deg2rad(s.spinous_slope_deg)
    axis = np.array([0.0, -np.cos(slope), -np.sin(slope)])
    root = s.lamina_root
    tip = root + s.spinous_len * axis
    radii = [s.spinous_rx, s.spinous_rx + 0.5, s.spinous_rz]
    if s.bifid_mm > 0:
        fork = root + 0.55 * s.spinous_len * axis
        prong = [0.8 * s.spinous_rx, 0.8 * s.spinous_rx, 0.8 * s.spinous_rz]
        parts = [Part(labels.SPINOUS_PROCESS, capsule(root, fork, radii), cortex=1.15)]
        parts += [Part(labels.SPINOUS_PROCESS, capsule(fork, tip + [side * s.bifid_mm, 0.0, 0.0], prong), cortex=1.15)
                  for side in (-1.0, 1.0)]
        return parts
    bar = 0.6 * max(s.spinous_rz - 3.0, 0.0)  # broad (lumbar) processes end in a vertical bar
    knob = 1.3 * s.spinous_rx  # ... thickened in the sagittal plane only: same width as the shaft
    return [Part(labels.SPINOUS_PROCESS, capsule(root, tip, radii), cortex=1.15),
            Part(labels.SPINOUS_PROCESS, capsule(tip + [0, knob * 0.5, bar], tip + [0, knob * 0.5, -bar],
                                                 [s.spinous_rx, knob, knob]), cortex=1.15)]


def facet_columns(s: VertebraShape, side: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Axial positions of the superior and inferior articular processes and their radius.

    The inferior process of the vertebra above sits behind (coronal joints) or medially behind (sagittal
    joints) the superior process of the one below, overlapping it by FACET_OVERLAP_MM before carving.
    """
    radius = max(2.6, s.pedicle_r)
    pedicle_end = _around_canal(s, 20.0, s.pedicle_r, side)
    superior = pedicle_end + [side * 0.3 * s.pedicle_r, -0.3 * s.pedicle_r, 0.0]
    turn = np.deg2rad(s.facet_turn_deg)
    step = 2 * radius - FACET_OVERLAP_MM
    inferior = superior + step * np.array([-side * np.sin(turn), -np.cos(turn), 0.0])
    return superior, inferior, radius


def arch_parts(s: VertebraShape, above: float, below: float) -> list[Part]:
    """Pedicles, laminae, articular and transverse processes of both sides (standard levels).

    ``above`` / ``below`` are the local heights of the mid-disc planes, which the articular processes cross.
    """
    parts: list[Part] = []
    pr, lr = s.pedicle_r, s.lamina_r
    for side, transverse, superior_id, inferior_id in (
            (-1.0, labels.TRANSVERSE_LEFT, labels.ARTICULAR_SUPERIOR_LEFT, labels.ARTICULAR_INFERIOR_LEFT),
            (1.0, labels.TRANSVERSE_RIGHT, labels.ARTICULAR_SUPERIOR_RIGHT, labels.ARTICULAR_INFERIOR_RIGHT)):
        pedicle_end = _around_canal(s, 20.0, pr, side)
        lamina_mid = _around_canal(s, 55.0, lr, side)
        superior, inferior, ar = facet_columns(s, side)
        reach = ARTICULAR_REACH * s.body_hh
        lean = np.array([0.0, np.tan(np.deg2rad(s.facet_tilt_deg)), 1.0])  # the pillar leans forwards going up
        parts += [
            Part(transverse, _transverse(s, pedicle_end, side)),
            Part(superior_id, capsule(superior, superior + (above + reach) * lean, ar), cortex=1.2),
            Part(inferior_id, capsule(inferior - 0.1 * s.body_hh * lean, inferior + (below - reach) * lean, ar),
                 cortex=1.2),
            Part(labels.ARCH, capsule([side * min(s.canal_rx + pr, 0.75 * s.body_rx), -0.5 * s.body_ry, 0.0],
                                      pedicle_end, [pr, pr, 1.6 * pr])),
            Part(labels.ARCH, capsule(_around_canal(s, 20.0, lr, side), lamina_mid, [lr, lr, s.lamina_hh])),
            Part(labels.ARCH, capsule(lamina_mid, s.lamina_root, [lr, lr, s.lamina_hh])),
        ]
    return parts


def _transverse(s: VertebraShape, pedicle_end: np.ndarray, side: float) -> Capsule:
    """Transverse process from the pedicle: flat and lateral (lumbar), backwards and thick (thoracic),
    forwards and wide around the vertebral artery (cervical)."""
    back = np.deg2rad(s.transverse_back_deg)
    run = s.transverse_len - abs(pedicle_end[0])
    tip = pedicle_end + [side * run, -run * np.tan(back), 0.1 * s.body_hh]
    r = s.transverse_r
    radii = [r, 1.8 * r, r] if s.is_cervical else [r, 0.9 * r, 1.5 * r]
    return capsule(pedicle_end, tip, radii)


def artery_foramina(s: VertebraShape, above: float, below: float) -> list[Capsule]:
    """Foramina transversaria of a cervical vertebra (C1..C6): vertical channels for the vertebral artery."""
    if not s.is_cervical or s.vertebra_id == labels.VERTEBRA_IDS["C7"]:
        return []
    channels = []
    for side in (-1.0, 1.0):
        pedicle_end = _around_canal(s, 20.0, s.pedicle_r, side)
        centre = pedicle_end + [side * (s.transverse_r + 2.5), 0.8 * s.transverse_r, 0.0]
        channels.append(capsule(centre + [0, 0, below], centre + [0, 0, above], VERTEBRAL_ARTERY_R_MM))
    return channels


def nerve_roots(s: VertebraShape) -> list[tuple[Tissue, Capsule]]:
    """The exiting nerve roots below the pedicles, each in its sheath of foraminal fat (fat first)."""
    roots = []
    for side in (-1.0, 1.0):
        start = np.array([side * 0.75 * s.canal_rx, s.canal_y + 0.2 * s.canal_ry, -0.45 * s.body_hh])
        end = start + [side * (0.25 * s.canal_rx + s.pedicle_r + 14.0), 0.4 * s.canal_ry, -8.0]
        roots.append((Tissue.EPIDURAL_FAT, capsule(start, end, NERVE_R_MM + FORAMEN_FAT_MM)))
        roots.append((Tissue.NERVE, capsule(start, end, NERVE_R_MM)))
    return roots


def vertebra_parts(s: VertebraShape, above: float, below: float) -> list[Part]:
    """All parts of a vertebra in increasing priority (C1 and C2 have their own forms)."""
    if s.vertebra_id == labels.VERTEBRA_IDS["C1"]:
        return atlas_parts(s)
    parts = spinous_parts(s) + arch_parts(s, above, below)
    parts.append(body_part(s))
    if s.vertebra_id == labels.VERTEBRA_IDS["C2"]:
        parts += dens_parts(s, above)
    # the arch outranks the processes that grow out of it, except the spinous process, which names the
    # whole junction of the laminae (its label is then the same in every sagittal slice it spans); the
    # body outranks everything
    priority = {labels.TRANSVERSE_LEFT: 1, labels.TRANSVERSE_RIGHT: 1,
                labels.ARTICULAR_SUPERIOR_LEFT: 2, labels.ARTICULAR_SUPERIOR_RIGHT: 2,
                labels.ARTICULAR_INFERIOR_LEFT: 2, labels.ARTICULAR_INFERIOR_RIGHT: 2, labels.ARCH: 3,
                labels.SPINOUS_PROCESS: 4, labels.BODY: 5}
    return sorted(parts, key=lambda part: priority[part.subregion])


DENS_LENGTH_MM = 15.0
DENS_RADIUS_MM = 5.0


def dens_parts(s: VertebraShape, above: float) -> list[Part]:
    """The dens (odontoid) of C2, rising from the body through the ring of C1; not clipped by the plane."""
    base = np.array([0.0, 0.05 * s.body_ry, s.body_hh - 3.0])
    tip = np.array([0.0, -0.05 * s.body_ry, s.body_hh + DENS_LENGTH_MM])
    return [Part(labels.BODY, capsule(base, tip, [DENS_RADIUS_MM, DENS_RADIUS_MM + 0.5, 4.0]), Tissue.CANCELLOUS,
                 cortex=1.0)]


def atlas_parts(s: VertebraShape) -> list[Part]:
    """C1: anterior arch (labelled body, so C1 keeps a body landmark), lateral masses (superior and inferior
    articular halves), posterior arch, a small posterior tubercle (spinous) and long transverse processes."""
    arch_y = DENS_RADIUS_MM + JOINT_SPACE_MM + 3.0
    mass_x, mass_y = DENS_RADIUS_MM + JOINT_SPACE_MM + 5.5, 0.0
    ring = s.canal_rx + s.lamina_r
    tubercle = np.array([0.0, s.canal_y - s.canal_ry - s.lamina_r, 0.0])
    parts = [Part(labels.SPINOUS_PROCESS, capsule(tubercle, tubercle + [0, -3.0, 0], [4.0, 3.5, 5.0]), cortex=1.15)]
    for side, transverse, superior_id, inferior_id in (
            (-1.0, labels.TRANSVERSE_LEFT, labels.ARTICULAR_SUPERIOR_LEFT, labels.ARTICULAR_INFERIOR_LEFT),
            (1.0, labels.TRANSVERSE_RIGHT, labels.ARTICULAR_SUPERIOR_RIGHT, labels.ARTICULAR_INFERIOR_RIGHT)):
        mass = np.array([side * mass_x, mass_y, 0.0])
        back_of_mass = mass + [side * 1.0, -7.0, 0.0]
        arch_side = np.array([side * ring * np.cos(np.deg2rad(50)), s.canal_y - (s.canal_ry + s.lamina_r) * np.sin(
            np.deg2rad(50)), 0.0])
        parts += [
            Part(transverse, capsule(mass + [side * 5.0, -2.0, 0.0], [side * s.transverse_len, -3.0, 0.0],
                                     [s.transverse_r, 1.6 * s.transverse_r, s.transverse_r])),
            Part(labels.ARCH, capsule(back_of_mass, arch_side, [s.lamina_r, s.lamina_r, 4.0])),
            Part(labels.ARCH, capsule(arch_side, tubercle, [s.lamina_r, s.lamina_r, 4.0])),
            Part(labels.BODY, capsule(mass + [-side * 3.0, 7.0, 0.0], [side * 4.5, arch_y, 0.0], [2.5, 2.5, 5.0]),
                 Tissue.CANCELLOUS, cortex=1.1),
            Part(superior_id, capsule(mass + [0, 0, 1.5], mass + [0, -2.0, 3.5], [5.5, 7.5, 3.0]), cortex=1.2),
            Part(inferior_id, capsule(mass + [0, 0, -1.5], mass + [0, -1.0, -3.5], [5.5, 7.5, 3.0]), cortex=1.2),
        ]
    parts.append(Part(labels.BODY, capsule([-4.5, arch_y, 0.0], [4.5, arch_y, 0.0], [3.0, 3.0, 5.5]),
                      Tissue.CANCELLOUS, cortex=1.1))
    return parts


def rib_parts(s: VertebraShape) -> list[Part]:
    """The proximal ribs of a thoracic vertebra (head at the upper body corner, neck to the transverse
    process, then the shaft running out, back and down before turning forwards); no subregions."""
    parts = []
    back = np.deg2rad(s.transverse_back_deg)
    for side in (-1.0, 1.0):
        head = np.array([side * 0.92 * s.body_rx, -0.62 * s.body_ry, 0.8 * s.body_hh])
        pedicle_end = _around_canal(s, 20.0, s.pedicle_r, side)
        run = s.transverse_len - abs(pedicle_end[0])
        tp_tip = pedicle_end + [side * run, -run * np.tan(back), 0.1 * s.body_hh]
        tubercle = tp_tip + [-side * 1.0, 1.5 * s.transverse_r + 3.5, -1.0]
        angle = tubercle + [side * 28.0, -6.0, -9.0]
        turn = angle + [side * 30.0, 18.0, -10.0]
        parts += [
            Part(0, capsule(head, tubercle, [3.6, 3.6, 4.2]), cortex=1.0),
            Part(0, capsule(head, head, 4.8), cortex=1.0),
            Part(0, capsule(tubercle, angle, [3.0, 3.4, 6.0]), cortex=1.1),
            Part(0, capsule(angle, turn, [3.0, 3.0, 6.0]), cortex=1.1),
        ]
    return parts


def sacrum_parts(l5: VertebraShape, segments: np.ndarray) -> list[Part]:
    """Sacrum in the frame of its first segment: the S1 body (clipped at the L5/S1 disc), the fused body
    column through ``segments`` (S2.. centres, local), alae and lateral masses, superior articular
    processes that meet L5, and the dorsal wall with the median crest; no subregions."""
    rx, ry, hh = 0.95 * l5.body_rx, 0.92 * l5.body_ry, l5.body_hh
    s1 = VertebralBody(rx, ry, hh, cup=(1.5, 0.0), notch=0.1 * ry, open=(False, True))
    parts = [Part(0, s1, Tissue.CANCELLOUS, cortex=0.8, clipped=True)]
    column = np.vstack([[0.0, 0.0, -0.5 * hh], segments])
    scale = np.linspace(0.8, 0.4, len(segments))
    for (a, b), k in zip(pairwise(column), scale, strict=True):
        parts.append(Part(0, capsule(a, b, [k * rx, k * ry, 6.0]), Tissue.CANCELLOUS, cortex=0.9))
    canal_y, cry = l5.canal_y, l5.canal_ry
    crest = [np.array([0.0, canal_y - cry - l5.lamina_r, -0.2 * hh])]
    crest += [p + [0.0, canal_y * (0.75 - 0.12 * i) - cry * 0.6, 0.0] for i, p in enumerate(segments)]
    for a, b in pairwise(crest):
        parts.append(Part(0, capsule(a, b, [3.0, 3.5, 4.0])))
    for side in (-1.0, 1.0):
        superior, _, ar = facet_columns(l5, side)
        ala_root = np.array([side * 0.5 * rx, -0.35 * ry, 0.0])
        ala_tip = np.array([side * (rx + 20.0), -0.55 * ry, -0.2 * hh])
        lateral = segments[min(1, len(segments) - 1)] + [side * (0.55 * rx + 8.0), -0.5 * ry, 0.0]
        parts += [
            Part(0, capsule(ala_root, ala_tip, [9.0, 11.0, 10.0]), Tissue.CANCELLOUS, cortex=0.9),
            Part(0, capsule(ala_tip + [-side * 6.0, -2.0, -4.0], lateral, [8.0, 9.0, 9.0]), Tissue.CANCELLOUS,
                 cortex=0.9),
            Part(0, capsule(superior + [0, 0, -0.2 * hh], superior + [0, 0, ARTICULAR_REACH * l5.body_hh + 2.0], ar),
                 cortex=1.2),
            Part(0, capsule(superior + [0, 0, -0.2 * hh], crest[0] + [side * 5.0, 0.0, 0.0], [3.0, 3.0, 7.0])),
        ]
    return parts
