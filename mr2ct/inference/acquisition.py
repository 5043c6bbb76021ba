"""Whether an input is what the models were trained on: one grey-scale 3D MR volume of sagittal slices.

Decided from headers (and, for a compressed DICOM, one decoded slice) before any translation, so a wrong
input is refused in seconds, never after minutes of sampling; each refusal says what was found:

- a single slice or 2D image, or a 4D image (time series, several volumes);
- an axial or coronal acquisition: the thick axis (largest voxel spacing, the slice thickness, at least
  ``THICK_RATIO`` times the in-plane spacing) does not run left-right. The 2D methods translate left-right
  slices at the training run's in-plane spacing; slices taken in another plane would be resampled from the
  thick direction into those planes. A near-isotropic volume (a 3D acquisition) is accepted in any
  orientation, since it reslices sagittally without loss;
- a colour image (RGB NIfTI, DICOM with a colour photometric interpretation or several samples per pixel);
- a DICOM whose compressed pixel data this build cannot decode (JPEG, JPEG-LS, JPEG 2000 and RLE that
  SimpleITK's GDCM decodes are handled);
- a truncated or unreadable file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mr2ct.core.io import Volume, canonical_volume

THICK_RATIO = 1.5  # an axis this much coarser than the others is the slice axis of a 2D acquisition
WORLD_AXES = ("left-right", "anterior-posterior", "inferior-superior")
PLANE_ACROSS = ("a sagittal", "a coronal", "an axial")  # the plane of slices stacked along each world axis
GREY_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")


class UnsuitableInput(ValueError):
    """An input the models cannot translate meaningfully; the message says what was found."""


def check_geometry(shape: tuple[int, ...], affine: np.ndarray) -> None:
    """Refuse a single slice, a 4D image, or slices in another plane than sagittal (see the module docstring)."""
    dims = tuple(int(n) for n in shape)
    size = "x".join(map(str, dims))
    if len(dims) < 3 or (len(dims) == 3 and min(dims) == 1):
        raise UnsuitableInput(f"a single 2D slice (shape {size}), not a volume: a stack of sagittal slices is expected")
    if len(dims) > 3:
        raise UnsuitableInput(f"a {len(dims)}D image (shape {size}): one 3D volume per file is expected")
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    thick = int(np.argmax(spacing))
    in_plane = np.delete(spacing, thick)
    if spacing[thick] < THICK_RATIO * in_plane.max():
        return  # near-isotropic: reslices sagittally without loss
    across = int(np.argmax(np.abs(np.asarray(affine)[:3, thick])))
    if across != 0:
        raise UnsuitableInput(
            f"{PLANE_ACROSS[across]} acquisition ({spacing[thick]:.1f} mm slices stacked {WORLD_AXES[across]}, "
            f"in-plane {in_plane[0]:.2f} x {in_plane[1]:.2f} mm): the model expects sagittal slices "
            f"(the thick axis left-right)")


def open_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI image with its header checked (grey-scale, sagittal 3D, file long enough); voxels not read."""
    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise
    except Exception as error:  # nibabel raises several types for a damaged header
        raise UnsuitableInput(f"not a readable NIfTI ({type(error).__name__}: {error})") from error
    dtype = image.get_data_dtype()
    if dtype.fields is not None:
        raise UnsuitableInput(f"a colour image (voxel type {'/'.join(dtype.names)}), not a grey-scale MR")
    check_geometry(image.shape, image.affine)
    if not str(path).endswith(".gz"):
        needed = int(image.header["vox_offset"]) + int(np.prod(image.shape)) * dtype.itemsize
        if path.stat().st_size < needed:
            raise UnsuitableInput(f"truncated file: {path.stat().st_size} bytes, the header's "
                                  f"{'x'.join(map(str, image.shape))} {dtype} voxels need {needed}")
    return image


def nifti_voxels(image: nib.Nifti1Image) -> Volume:
    """The image's voxels in RAS+ order; a compressed file that ends early is reported as truncated."""
    try:
        return canonical_volume(image)
    except (EOFError, OSError, ValueError) as error:  # gzip/zlib end of stream, short reads
        raise UnsuitableInput(f"truncated or damaged file ({type(error).__name__}: {' '.join(str(error).split())})") from error


def transfer_syntax(path: Path) -> str | None:
    """The transfer syntax UID from a DICOM file's meta header (group 0002, explicit VR little endian), or
    None when the file has no meta header (implicit VR little endian, uncompressed)."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if head[128:132] != b"DICM":
        return None
    offset = 132
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return None
        vr = head[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length, start = struct.unpack_from("<I", head, offset + 8)[0], offset + 12
        else:
            length, start = struct.unpack_from("<H", head, offset + 6)[0], offset + 8
        if element == 0x0010:
            return head[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
        offset = start + length
    return None


def check_dicom_file(path: Path) -> None:
    """Refuse a colour DICOM, or compressed pixel data that cannot be decoded (tried on this one file)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise UnsuitableInput(f"{path.name}: not a readable DICOM ({' '.join(str(error).split())[-200:]})") from error
    photometric = reader.GetMetaData("0028|0004").strip() if reader.HasMetaDataKey("0028|0004") else "MONOCHROME2"
    if reader.GetNumberOfComponents() != 1 or photometric not in GREY_PHOTOMETRIC:
        raise UnsuitableInput(f"a colour DICOM ({photometric}, {reader.GetNumberOfComponents()} samples per pixel), "
                              f"not a grey-scale MR")
    syntax = transfer_syntax(path)
    if syntax is not None and syntax not in UNCOMPRESSED_SYNTAXES:
        try:
            reader.Execute()
        except RuntimeError as error:
            raise UnsuitableInput(f"a compressed DICOM (transfer syntax {syntax}) that this build cannot decode; "
                                  f"export the series uncompressed") from error
