"""Position channels of the 3D methods: where in its volume a patch or a window lies.

A 3D network sees a patch of the volume, so it cannot tell the sacrum from the top of the lumbar spine by
content alone. As in the authors' 3D code and PatchDDM-3D, three ramps, one per array axis, rising from 0 at
the volume's first voxel to 1 at its last, are computed for the whole volume and cropped with it, and go to
the network next to the MR. Training patches and inference windows take them from this one function, on the
same RAS+ arrays (axis 0 left-right, 1 posterior-anterior, 2 inferior-superior), so the channels mean the same
in both; the reference code built its training and inference ramps on differently ordered axes.

Outside the volume (the padding of a patch or of the inference canvas) a ramp continues linearly: a ramp is
a pure function of the voxel's index in the volume, so any crop of it, padded or not, is that crop of the
full-volume ramps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITION_CHANNELS = 3  # one ramp per spatial axis


def position_ramps(
    volume_shape: Sequence[int], start: Sequence[int] | None = None, size: Sequence[int] | None = None
) -> np.ndarray:
    """The (3, *size) ramps of the crop at ``start`` (default: the origin) of size ``size`` (default: the
    volume) of a volume of ``volume_shape``: channel k holds ``index_k / (volume_shape[k] - 1)`` (0 along an
    axis of one voxel), with ``index_k`` the voxel's index in the volume, negative or past the end in padding.
    """
    if len(volume_shape) != POSITION_CHANNELS:
        raise ValueError(f"position ramps need a 3D volume shape, got {tuple(volume_shape)}")
    start = [0] * POSITION_CHANNELS if start is None else list(start)
    size = list(volume_shape) if size is None else list(size)
    if len(start) != POSITION_CHANNELS or len(size) != POSITION_CHANNELS:
        raise ValueError(f"crop start {tuple(start)} and size {tuple(size)} need one entry per axis")
    ramps = np.empty((POSITION_CHANNELS, *size), dtype=np.float32)
    for axis, (n, s, length) in enumerate(zip(volume_shape, start, size)):
        ramp = (s + np.arange(length, dtype=np.float64)) / max(n - 1, 1)
        shape = [1] * POSITION_CHANNELS
        shape[axis] = length
        ramps[axis] = ramp.reshape(shape)
    return ramps


def centred_start(volume_shape: Sequence[int], canvas_shape: Sequence[int]) -> list[int]:
    """The volume index of a canvas's first voxel when the volume is padded centred to ``canvas_shape``
    (``(c - s) // 2`` before it on each axis, as :meth:`mr2ct.methods.windows.Windows.pad` pads)."""
    return [-((c - s) // 2) for s, c in zip(volume_shape, canvas_shape)]
