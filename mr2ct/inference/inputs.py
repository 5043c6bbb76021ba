"""The MR volumes a ``mr2ct.translate`` run works on: found from one ``input=`` spec, named by their path
relative to a root (so outputs mirror the input tree and names never collide), split into shards, read.

``input`` is one of:

- a NIfTI file (``.nii``, ``.nii.gz``);
- a folder, searched recursively (hidden entries skipped):
  - a BIDS(-like) tree (``dataset_description.json`` or ``sub-*/[ses-*/]anat`` folders) gives the anatomical
    T1w/T2w images ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and ``*_T2w``, nothing from ``derivatives/``;
  - any other tree gives every NIfTI, except that a folder holding ``mr.nii.gz`` (mr2ct's subject layout,
    where ``ct.nii.gz`` and the label maps sit beside the MR) gives only that file; folders with DICOM files
    (``*.dcm``, ``*.ima`` or no suffix) give each of their series;
- a glob (``data/**/mr.nii.gz``, ``bids/sub-*/anat/*_T2w.nii.gz``): the NIfTI files and DICOM folders it
  matches, named relative to the folder before the first wildcard;
- a text file (``.txt``, ``.lst``, ``.list``) with one NIfTI file or DICOM folder per line (relative lines
  are read from the list's folder; blank lines and ``#`` comments are skipped). A listed path that does not
  exist becomes a failed file of the run, not a refusal of the whole list.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mr2ct.core.io import Volume, canonical_volume, from_sitk
from mr2ct.inference.acquisition import (
    UnsuitableInput,
    check_dicom_file,
    check_geometry,
    nifti_voxels,
    open_nifti,
)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
LIST_SUFFIXES = (".txt", ".lst", ".list")
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
SUBJECT_MR_NAMES = ("mr.nii.gz", "mr.nii")
BIDS_ANATOMICAL = re.compile(r"_(T1w|T2w)\.nii(\.gz)?$")
BIDS_SKIPPED = ("derivatives", "sourcedata", "code")


@dataclass(frozen=True)
class InputItem:
    """One MR volume to translate: a NIfTI file, or one DICOM series in a folder.

    ``relative`` is its path under the output folder without suffix (``sub-01/anat/sub-01_T2w``): outputs
    are ``<relative><suffix>.nii.gz``, so they mirror the input tree.
    """

    relative: str
    source: Path
    series_id: str | None = None  # set for DICOM

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    def source_files(self) -> list[Path]:
        """The files this volume is read from."""
        if self.series_id is None:
            return [self.source]
        return [Path(p) for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(self.source), self.series_id)]


# ------------------------------------------------------------------------------------------------ discovery
def nifti_stem(path: Path) -> str | None:
    """The file name without .nii/.nii.gz, or None when it is not a NIfTI name."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def relative_name(path: Path, root: Path, stem: str) -> str:
    """``path``'s folder relative to ``root`` joined with ``stem``, as a posix path."""
    folder = path.parent.relative_to(root).as_posix()
    return stem if folder == "." else f"{folder}/{stem}"


def folder_name(folder: Path, root: Path) -> str:
    """``folder`` relative to ``root`` as a posix path; the folder's own name when it is the root."""
    return folder.name if folder == root else folder.relative_to(root).as_posix()


def dicom_series(folder: Path, root: Path) -> list[InputItem]:
    """The DICOM series directly inside ``folder``: one item named after the folder (``_<k>`` if several)."""
    series = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    base = folder_name(folder, root)
    if len(series) == 1:
        return [InputItem(base, folder, series[0])]
    return [InputItem(f"{base}_{k}", folder, uid) for k, uid in enumerate(series)]


def may_hold_dicom(folder: Path) -> bool:
    """Whether ``folder`` has files that may be DICOM (``*.dcm``, ``*.ima`` or no suffix): only those
    folders are scanned for series, so a large NIfTI tree is not read file by file."""
    return any(
        p.is_file() and not p.name.startswith(".") and (p.suffix.lower() in DICOM_SUFFIXES or not p.suffix)
        for p in folder.iterdir()
    )


def is_bids(root: Path) -> bool:
    """A BIDS tree: its description file, or subject folders with ``anat`` folders (mr2ct's own subject
    folders may be named ``sub-*`` too, but hold ``mr.nii.gz`` directly)."""
    anat = [*root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")]
    return (root / "dataset_description.json").is_file() or any(p.is_dir() for p in anat)


def bids_items(root: Path) -> list[InputItem]:
    """The anatomical T1w/T2w images of a BIDS tree (with or without sessions)."""
    found = [*root.glob("sub-*/anat/*"), *root.glob("sub-*/ses-*/anat/*")]
    return [InputItem(relative_name(p, root, nifti_stem(p)), p) for p in sorted(found)
            if p.is_file() and BIDS_ANATOMICAL.search(p.name)]


def folder_items(root: Path, skip: Path | None) -> list[InputItem]:
    """Every MR volume in the tree under ``root`` (see the module docstring), ``skip`` and hidden entries left out."""
    if is_bids(root):
        return bids_items(root)
    items = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (skip is None or here / d != skip))
        subject_mr = [name for name in SUBJECT_MR_NAMES if name in files]
        names = subject_mr[:1] or sorted(f for f in files if not f.startswith(".") and nifti_stem(Path(f)))
        items += [InputItem(relative_name(here / f, root, nifti_stem(Path(f))), here / f) for f in names]
        if may_hold_dicom(here):
            items += dicom_series(here, root)
    return items


def glob_items(pattern: str) -> list[InputItem]:
    """The NIfTI files and DICOM folders matching ``pattern``, named relative to its fixed leading folder."""
    expanded = os.path.expanduser(pattern)
    parts = Path(expanded).parts
    fixed = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:fixed]).resolve() if fixed else Path.cwd()
    items = []
    for match in sorted(glob.glob(expanded, recursive=True)):
        path = Path(match).resolve()
        if path.is_file() and nifti_stem(path):
            items.append(InputItem(relative_name(path, root, nifti_stem(path)), path))
        elif path.is_dir() and may_hold_dicom(path):
            items += dicom_series(path, root)
    return items


def listed_items(list_file: Path) -> list[InputItem]:
    """The NIfTI files and DICOM folders named in a text file, relative to the folder they have in common."""
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            path = Path(line).expanduser()
            paths.append((path if path.is_absolute() else list_file.parent / path).resolve())
    if not paths:
        return []
    root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in paths]))
    items = []
    for path in paths:
        if path.is_dir():
            items += dicom_series(path, root) or [InputItem(folder_name(path, root), path)]
        else:
            items.append(InputItem(relative_name(path, root, nifti_stem(path) or path.name), path))
    return items


def discover_inputs(spec: str | Path, skip: Path | None = None) -> list[InputItem]:
    """Every MR volume that ``input=spec`` names (see the module docstring), ``skip`` (the output folder)
    left out; raises before any work when there is none or two would write the same outputs."""
    text = str(spec)
    if glob.has_magic(text):
        items = glob_items(text)
    else:
        path = Path(text).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"input={spec}: no such file or folder")
        if path.is_dir():
            items = folder_items(path, skip)
            if not items and (here := dicom_series(path, path)):
                items = here
        elif nifti_stem(path):
            items = [InputItem(nifti_stem(path), path)]
        elif path.suffix.lower() in LIST_SUFFIXES:
            items = listed_items(path)
        else:
            raise ValueError(f"input={spec}: not a NIfTI file (.nii, .nii.gz) or a list of paths "
                             f"({', '.join(LIST_SUFFIXES)}); give a file, a folder, a glob or a list")
    if skip is not None:
        items = [item for item in items if not item.source.is_relative_to(skip)]
    if not items:
        raise ValueError(f"input={spec}: no NIfTI files (*.nii, *.nii.gz) and no DICOM series found")
    duplicates = sorted(name for name, count in Counter(item.relative for item in items).items() if count > 1)
    if duplicates:
        raise ValueError(f"input={spec}: several inputs would write the same outputs: {duplicates}")
    return items


# ------------------------------------------------------------------------------------------------ sharding
def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"shard={shard}: expected i/n with 0 <= i < n, e.g. shard=0/4")
    return int(match[1]), int(match[2])


def shard_of(item: InputItem, count: int) -> int:
    """The shard an input belongs to: a stable hash of its relative name, so the split does not depend on
    which other files a job saw (two jobs never take the same file, even if their listings differ)."""
    return int(hashlib.sha256(item.relative.encode()).hexdigest(), 16) % count


def in_shard(items: list[InputItem], shard: str) -> list[InputItem]:
    index, count = parse_shard(shard)
    return [item for item in items if shard_of(item, count) == index]


# ------------------------------------------------------------------------------------------------ reading
def read_dicom(item: InputItem) -> nib.Nifti1Image:
    """A DICOM series as an in-memory NIfTI image whose affine is the series' geometry (RAS)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in item.source_files()])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise UnsuitableInput(f"unreadable DICOM series ({' '.join(str(error).split())[-200:]})") from error
    if image.GetDimension() != 3:
        raise UnsuitableInput(f"a {image.GetDimension()}D series (size {image.GetSize()}), not a volume")
    volume = from_sitk(image)
    nifti = nib.Nifti1Image(volume.array, volume.affine)
    nifti.header.set_qform(volume.affine, code=1)
    nifti.header.set_sform(volume.affine, code=1)
    return nifti


def read_input(item: InputItem) -> tuple[Volume, nib.Nifti1Image]:
    """(MR in RAS+ voxel order, the image whose header the outputs are written on), checked for use: a file
    that is not a sagittal grey-scale volume (see :mod:`mr2ct.inference.acquisition`) is refused from its
    header before its voxels are read."""
    if item.source.is_dir() and item.series_id is None:
        raise ValueError("a folder without a DICOM series")
    if item.series_id is None:
        reference = open_nifti(item.source)
        mr = nifti_voxels(reference)
    else:
        check_dicom_file(item.source_files()[0])
        reference = read_dicom(item)
        check_geometry(reference.shape, reference.affine)
        mr = canonical_volume(reference)
    check_mr(mr.array)
    return mr, reference


def check_mr(array: np.ndarray) -> None:
    """Reject what cannot be translated meaningfully: non-finite voxels and blank images."""
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{int((~finite).sum())} voxels are NaN/Inf")
    if not array.max() > max(array.min(), 0):
        raise ValueError(f"blank image (all voxels in [{array.min()}, {array.max()}], no positive contrast)")
