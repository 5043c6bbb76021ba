"""mr2ct: MRI-to-CT translation of the spine and the experiment suite of Graf et al. (2023)."""

__version__ = "0.1.0"
