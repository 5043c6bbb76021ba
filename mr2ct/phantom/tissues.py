"""Tissue classes of the phantom's label maps; contrast.py gives each its CT and MR values."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


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
    LUNG = 12
    VESSEL = 13  # flowing blood: aorta, vena cava, carotid, jugular and vertebral vessels
    LIGAMENT = 14  # ligamentum flavum
    NERVE = 15
    GAS = 16  # vacuum phenomenon in a degenerated disc
    CALCIFICATION = 17  # in the aortic wall or a degenerated annulus
    MODIC_OEDEMA = 18  # Modic type 1 endplate marrow
    MODIC_FATTY = 19  # Modic type 2 endplate marrow
    HAEMANGIOMA = 20


MARROW_TISSUES = (Tissue.CANCELLOUS, Tissue.POSTERIOR_MARROW, Tissue.MODIC_OEDEMA, Tissue.MODIC_FATTY,
                  Tissue.HAEMANGIOMA)
BONE_TISSUES = (Tissue.CORTICAL, *MARROW_TISSUES)
IS_BONE = np.isin(np.arange(256), BONE_TISSUES)
IS_MARROW = np.isin(np.arange(256), MARROW_TISSUES)
